"""Hang detection on the supervisor side: options, calibration, the watchers and stacks.

`HangWatcher` judges every rank's heartbeat slot, as sampled from the shared-memory channel
by the attempt's sampler, and returns a HANG finding when a rank makes no progress within
its phase's timeout. `LogSilenceWatcher` is the opt-in fallback for programs that are not
instrumented. See the submodules for the guarantees each one gives.
"""
