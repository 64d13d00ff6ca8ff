"""Events that reach the policy, and the evidence that decides a class.

Everything here is plain frozen data (L0). Edges (the child reaper, the signal loop, the log
pump, the GPU and hang watchdogs) turn what they see into `Event`s; the pure policy turns
events into actions (`supervisor.core.actions`); the loop executes actions. Watchdogs never
pick an exit code directly: they report a `Finding` that argues for a class with an
`Urgency`, and the policy weighs all findings by one precedence table. That is how later
watchdogs add classes without special cases.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from supervisor.core.exitcodes import ExitCode


class Urgency(enum.StrEnum):
    """What a finding asks the supervisor to do now."""

    STOP = "stop"  # stop the run now: a failed device, a hang
    CHECKPOINT = "checkpoint"  # ask training to checkpoint, then stop: a degraded device
    ON_EXIT = "on_exit"  # explains the failure if the child then dies: a matched log line
    NOTE = "note"  # record only


class Source(enum.StrEnum):
    """Where a finding came from (its `source` field)."""

    SIGNAL = "signal"
    CHILD = "child"
    LOG = "log"
    GPU = "gpu"
    HANG = "hang"
    STEPTIME = "steptime"
    CHECKPOINT = "checkpoint"
    TORCHRUN = "torchrun"
    RESTART = "restart"
    SUPERVISE = "supervise"


# Finding kinds that a decision in another module reads (the rest are for people).
STEP_TIME_REGRESSION = "step_time_regression"  # a sustained slowdown (watch.steptime_watchdog)


@dataclass(frozen=True)
class Finding:
    """One piece of evidence, from any source.

    `exit_code` is the class the evidence argues for, or None when it only informs.
    `detail` holds JSON-serialisable facts (GPU UUID, Xid, rank, the matched line...).
    """

    source: str  # a `Source`
    kind: str  # a short machine name: "xid", "nccl_timeout", "external_signal"...
    summary: str  # one sentence a person can read in a termination message
    exit_code: ExitCode | None = None
    urgency: Urgency = Urgency.NOTE
    detail: Mapping[str, object] = field(default_factory=dict, hash=False, compare=False)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"source": self.source, "kind": self.kind}
        if self.exit_code is not None:
            out["class"] = self.exit_code.name
        out["summary"] = self.summary
        out.update(self.detail)
        return out


@dataclass(frozen=True)
class ChildStatus:
    """How the child ended: exactly one of `exit_status` and `signal` is set."""

    exit_status: int | None = None
    signal: int | None = None

    def __post_init__(self) -> None:
        if (self.exit_status is None) == (self.signal is None):
            raise ValueError("ChildStatus needs exactly one of exit_status and signal")

    @classmethod
    def from_wait_status(cls, status: int) -> ChildStatus:
        """Decode a raw `waitpid` status (an exited or signalled process)."""
        import os  # local: keeps this module free of OS imports at load time

        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status))
        return cls(exit_status=os.WEXITSTATUS(status))

    @property
    def succeeded(self) -> bool:
        return self.exit_status == 0

    def describe(self) -> str:
        if self.signal is not None:
            return f"was killed by {signal_name(self.signal)}"
        return f"exited with status {self.exit_status}"

    def as_dict(self) -> dict[str, object]:
        if self.signal is not None:
            return {"signal": signal_name(self.signal), "signum": self.signal}
        return {"exitStatus": self.exit_status}


# Signals supervise relays to the child. TERM and INT from outside also mean "the pod is
# being told to leave" (eviction, preemption, drain, deletion, Ctrl-C), so they stop the run
# and classify it PREEMPTED; the others are passed through and change nothing.
STOP_SIGNALS: frozenset[int] = frozenset({signal.SIGTERM, signal.SIGINT})
FORWARDED_SIGNALS: frozenset[int] = STOP_SIGNALS | {
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
}
SIGTERM: int = signal.SIGTERM


def signal_name(signum: int) -> str:
    """`SIGTERM` for 15; `signal 64` for numbers Python has no name for."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class ChildStarted:
    pid: int
    at: float


@dataclass(frozen=True)
class SpawnFailed:
    reason: str  # one line: what to fix
    at: float


@dataclass(frozen=True)
class SignalReceived:
    signum: int
    at: float


@dataclass(frozen=True)
class ChildExited:
    status: ChildStatus
    at: float


@dataclass(frozen=True)
class Tick:
    """Time passed; the loop sends one when a deadline in the state is due."""

    at: float


@dataclass(frozen=True)
class Attached:
    """A training rank claimed a slot on the channel: the trainer speaks the handshake."""

    ranks: int
    at: float


@dataclass(frozen=True)
class CheckpointCommitted:
    """A rank reported a committed checkpoint `step`, acknowledging request `generation`
    (0 for a save nobody requested: a periodic checkpoint)."""

    step: int
    generation: int
    at: float
    for_peer: bool = False  # it answered another rank's request: this trainer leaves too


@dataclass(frozen=True)
class CheckpointNow:
    """An operator asked for a checkpoint now (`supervise checkpoint-now`), to be committed
    within `budget` seconds; training goes on after it. `request` names the asker, so its
    answer reaches it."""

    request: str
    budget: float
    at: float


@dataclass(frozen=True)
class Found:
    """A watchdog or matcher reported evidence."""

    finding: Finding
    at: float


Event = (
    ChildStarted
    | SpawnFailed
    | SignalReceived
    | ChildExited
    | Tick
    | Attached
    | CheckpointCommitted
    | CheckpointNow
    | Found
)


class Report(Protocol):
    """Thread-safe sink a watchdog calls to hand an event to the loop. Never blocks."""

    def __call__(self, event: Event) -> None: ...


class Watchdog(Protocol):
    """An edge that watches something in its own thread and reports `Found` events.

    `start` returns promptly; `stop` returns within a second and is safe to call twice.
    """

    name: str

    def start(self, report: Report, clock_monotonic: Callable[[], float]) -> None: ...

    def stop(self) -> None: ...
