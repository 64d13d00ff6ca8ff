"""Hang detection on the supervisor side: options, calibration, and the watchdogs.

`HangWatchdog` reads every rank's heartbeat slot in the shared-memory channel and reports a
HANG finding when a rank makes no progress within its phase's timeout. `LogSilenceWatchdog`
is the opt-in fallback for programs that are not instrumented. See the submodules for the
guarantees each one gives.
"""
