"""GPU health: the Xid catalog and rules (`catalog`), the NVML adapter (`nvml`, the only
module that imports pynvml), a scenario-driven fake of pynvml (`fake`), the watchdog that
reports findings during a run (`watchdog`) and the one-shot `doctor` report.

Importing this package imports nothing heavy; each submodule is imported where it is used.
"""
