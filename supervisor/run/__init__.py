"""The run, assembled once and then executed.

- `supervise`: `supervise()`, the run as a table of contents.
- `plan`: the frozen `Plan`: argv, environment, paths and policy, decided before anything
  starts.
- `session`: the plan's resources (channel, watchdogs, calibration), the loop's `Edges`.
- `loop`: the one thread that decides: signals and events in, the policy's actions out.
- `gang`: this pod's side of the run ledger: its records, and the peers' verdicts it reads.
"""
