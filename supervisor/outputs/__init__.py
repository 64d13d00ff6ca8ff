"""Where outputs go: sinks, and the one router every producer emits through.

Producers (the policy's actions, the loop, the session, the CLI's early exits) build typed
outputs (`supervisor.core.outputs`) and call `Outputs.emit`. Each sink takes what it needs:

- `eventlog.EventLog`: every output, as one JSON line (stderr or `--event-log`);
- `termination.TerminationLog`: the `Exited` verdict, as the kubelet's termination message;
- `console.Console`: one human line on stderr for a verdict a person must act on
  (CONFIG_ERROR, a refusal before the command started);
- `metrics.Metrics`: counts for the Prometheus endpoint of `--metrics-port`.

A new sink is one module with a `write` and a `close`, added in `open_outputs`, or with
`Outputs.add` where opening it may refuse the run (a port in use); no producer changes.

Guarantees: `emit` may be called from any thread and never raises for a sink's failure. A
sink that cannot be opened or written is reported once (an `output_unwritable` event on the
other sinks, and one line on stderr), and the run and its exit code go on without it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Protocol

from supervisor.core.clock import Clock, SystemClock
from supervisor.core.options import DEFAULT_TERMINATION_LOG
from supervisor.core.outputs import Output, OutputUnwritable
from supervisor.process.logpump import SharedStream


class Sink(Protocol):
    """One destination. `write` may raise `OSError`; the router reports it, once."""

    name: str  # the flag that names it, for messages: "--event-log"
    path: str

    def write(self, output: Output, wall: float, mono: float) -> None: ...

    def close(self) -> None: ...


class Outputs:
    """Routes each output to every sink, stamped once with wall and monotonic time."""

    def __init__(
        self,
        sinks: list[Sink],
        *,
        clock: Clock | None = None,
        stderr: SharedStream | None = None,
    ) -> None:
        self._sinks = list(sinks)
        self._clock = clock or SystemClock()
        self._failed: set[str] = set()
        self._lock = threading.Lock()
        # Shared with the stderr log pump, so an event line never splits a chunk of the
        # child's output and never lands on the tail of its unfinished line.
        self.stderr = stderr or SharedStream()

    def add(self, sink: Sink) -> None:
        """One more sink, for outputs from now on. Call before the outputs are shared
        with other threads (before the run starts)."""
        self._sinks.append(sink)

    def emit(self, output: Output) -> None:
        wall, mono = self._clock.wall(), self._clock.monotonic()
        for sink in self._sinks:
            if sink.name in self._failed:
                continue
            try:
                sink.write(output, wall, mono)
            except OSError as err:
                self.lost(sink.name, sink.path, err)

    def lost(self, name: str, path: str, error: BaseException) -> None:
        """Say once that the sink `name` is gone; it is not written again."""
        with self._lock:
            if name in self._failed:
                return
            self._failed.add(name)
        self.warn(f"cannot write {name} {path}: {error}")
        self.emit(OutputUnwritable(sink=name, path=path, error=str(error)))

    def warn(self, message: str) -> None:
        """One line on stderr for a person, on a line of its own; silent if stderr is gone."""
        from supervisor.outputs.eventlog import stderr_line

        with contextlib.suppress(OSError):
            stderr_line(self.stderr, f"supervise: warning: {message}\n".encode())

    def close(self) -> None:
        for sink in self._sinks:
            try:
                sink.close()
            except OSError as err:
                self.lost(sink.name, sink.path, err)


def termination_sinks(path: str | None) -> list[Sink]:
    """The termination message's sink, if it is wanted: any path the user gave, and the
    kubelet's default only where the kubelet made the file (in a container). On a
    developer's machine supervise does not create `/dev/termination-log`."""
    from supervisor.outputs.termination import TerminationLog

    if path is None or (path == DEFAULT_TERMINATION_LOG and not os.path.exists(path)):
        return []
    return [TerminationLog(path)]


def open_outputs(
    event_log: str | None,
    termination_log: str | None,
    *,
    clock: Clock | None = None,
) -> Outputs:
    """The run's sinks. `event_log` None or "-" means stderr; `termination_log` None, none
    (and the kubelet's default path only where it exists).

    Never raises: an event log that cannot be opened falls back to stderr, said once.
    """
    from supervisor.outputs.console import Console
    from supervisor.outputs.eventlog import EventLog

    stderr = SharedStream()
    # The termination log first: if it fails, the warning reaches the event log before
    # the `exit` line, which stays the last.
    sinks = termination_sinks(termination_log)
    problem: tuple[str, OSError] | None = None
    try:
        sinks.append(EventLog.open(event_log, stderr=stderr))
    except OSError as err:
        problem = (event_log or "-", err)
        sinks.append(EventLog.open(None, stderr=stderr))
    sinks.append(Console(stderr))  # last: after the `exit` line, for a person
    outputs = Outputs(sinks, clock=clock, stderr=stderr)
    if problem is not None:
        path, err = problem
        outputs.warn(f"cannot open --event-log {path}: {err}; writing events to stderr")
        outputs.emit(OutputUnwritable(sink="--event-log", path=path, error=str(err)))
    return outputs


__all__ = ["Outputs", "Sink", "open_outputs"]
