"""What supervise tells the world, as typed data: one class per output event, registered here.

Inputs to the policy are typed events (`supervisor.core.events`); its outputs are typed too.
Every output is a frozen dataclass subclassing `Output`, with a `name` (the `event` field
of its JSON line) and a docstring whose first line says what it means. Defining the class
registers it in `REGISTRY`, so this module is the one list of everything supervise says:
the README's event table is generated from it (`markdown_table`), and a test keeps them
equal.

The policy returns outputs among its actions; the loop and the session emit their own.
None of them knows where an output goes: the sinks in `supervisor.outputs` (the event log,
the termination message, and later metrics and the run ledger) each take what they need.
Adding a sink is adding a file there, not editing the producers.

`fields()` is the output as JSON-ready facts; by default every dataclass field under its
own name. Plain data only (L0): no I/O here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode

REGISTRY: dict[str, type[Output]] = {}
"""Output event name -> its class, in the order the classes are defined."""


@dataclass(frozen=True)
class Output:
    """Base of every output event. Subclasses set `name` and a one-line docstring."""

    name: ClassVar[str] = ""
    # The JSON keys `fields()` writes, where they differ from the dataclass fields.
    keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.name or not (cls.__doc__ or "").strip():
            raise TypeError(f"output {cls.__name__} needs a name and a docstring")
        if cls.name in REGISTRY:
            raise TypeError(f"output name {cls.name!r} is registered twice")
        REGISTRY[cls.name] = cls

    def fields(self) -> dict[str, object]:
        """The output's facts, JSON-ready (the event log writes them beside the envelope)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def meaning(cls) -> str:
        return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


# ------------------------------------------------------------------- the run's course


@dataclass(frozen=True)
class Note(Output):
    """Something supervise worked around or wants a person to know (NVML missing, ...)."""

    name = "note"
    message: str


@dataclass(frozen=True)
class Started(Output):
    """Attempt `attempt` (0 first) of the command is being spawned, with this argv."""

    name = "started"
    command: tuple[str, ...]
    attempt: int

    def fields(self) -> dict[str, object]:
        return {"command": list(self.command), "attempt": self.attempt}


@dataclass(frozen=True)
class ChildStarted(Output):
    """The command is running as `pid`; `attempt` counts from 1."""

    name = "child_started"
    pid: int
    attempt: int


@dataclass(frozen=True)
class TrainerAttached(Output):
    """A training rank claimed a heartbeat slot: it can be asked to checkpoint."""

    name = "trainer_attached"
    ranks: int


@dataclass(frozen=True)
class FindingReported(Output):
    """One piece of evidence from any source; its fields are the finding's (see below)."""

    name = "finding"
    keys = ("source", "kind", "class", "summary", "...facts")
    finding: Finding

    def fields(self) -> dict[str, object]:
        return self.finding.as_dict()


@dataclass(frozen=True)
class CheckpointRequested(Output):
    """Training was asked to checkpoint (`reason`), within `deadline_in_s`."""

    name = "checkpoint_requested"
    reason: str
    why: str
    generation: int
    deadline_in_s: float


@dataclass(frozen=True)
class CheckpointCommitted(Output):
    """A rank reported a committed checkpoint `step`, answering request `generation`."""

    name = "checkpoint_committed"
    step: int
    generation: int


@dataclass(frozen=True)
class Stopping(Output):
    """The child was sent SIGTERM (or the stop signal received); SIGKILL in `kill_in_s`."""

    name = "stopping"
    reason: str
    kill_in_s: float


@dataclass(frozen=True)
class SignalForwarded(Output):
    """A signal from outside was passed on to the child."""

    name = "signal_forwarded"
    signal: str


@dataclass(frozen=True)
class SignalReceived(Output):
    """A stop signal arrived while a checkpoint was being taken; the save goes on."""

    name = "signal_received"
    signal: str


@dataclass(frozen=True)
class SignalIgnored(Output):
    """A signal supervise does not forward arrived and was ignored."""

    name = "signal_ignored"
    signal: str


@dataclass(frozen=True)
class GraceExpired(Output):
    """The grace period ended with the child still alive: the tree is SIGKILLed."""

    name = "grace_expired"


@dataclass(frozen=True)
class TreeKilled(Output):
    """`processes` descendants were SIGKILLed."""

    name = "tree_killed"
    processes: int


@dataclass(frozen=True)
class RestartScheduled(Output):
    """The attempt ended with a restartable `class`; the command restarts in place."""

    name = "restart_scheduled"
    keys = ("class", "reason", "attempt", "restart_in_s", "restarts_left")
    klass: str
    reason: str
    attempt: int
    restart_in_s: float
    restarts_left: int

    def fields(self) -> dict[str, object]:
        out = super().fields()
        out["class"] = out.pop("klass")
        return out


# ------------------------------------------------------------ outputs and housekeeping


@dataclass(frozen=True)
class OutputLost(Output):
    """Our own stdout or stderr went away; the child's bytes on `stream` are dropped."""

    name = "output_lost"
    stream: str
    error: str


@dataclass(frozen=True)
class OutputUnwritable(Output):
    """An output (`sink`) could not be written at `path`; the run goes on without it."""

    name = "output_unwritable"
    sink: str
    path: str
    error: str


@dataclass(frozen=True)
class CalibrationNotSaved(Output):
    """The hang calibration could not be saved at `path`; the next run starts blind."""

    name = "calibration_not_saved"
    path: str
    error: str


@dataclass(frozen=True)
class RunDirKept(Output):
    """The run directory (stack dumps, Flight Recorder files) is kept at `path` as evidence."""

    name = "run_dir_kept"
    path: str


# -------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Exited(Output):
    """The last event: the class supervise exits with, why, and every finding.

    `evidence` is in the termination message's order (the finding that decided first);
    the termination message is this output, shrunk to fit the kubelet's 4096 bytes.
    """

    name = "exit"
    keys = ("exitCode", "name", "reason", "evidence", "orphansReaped", "outputDrained")
    code: ExitCode
    reason: str
    evidence: tuple[Finding, ...] = ()
    orphans_reaped: int = 0
    output_drained: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "evidence", decisive_first(self.code, self.evidence))

    def fields(self) -> dict[str, object]:
        return {
            "exitCode": self.code.code,
            "name": self.code.name,
            "reason": self.reason,
            "evidence": [finding.as_dict() for finding in self.evidence],
            "orphansReaped": self.orphans_reaped,
            "outputDrained": self.output_drained,
        }


def decisive_first(code: ExitCode, evidence: Sequence[Finding]) -> tuple[Finding, ...]:
    """The finding that decided first, then others of its class, the child's status, the rest.

    Stable: within each group the order of arrival is kept.
    """

    def rank(finding: Finding) -> int:
        if finding.exit_code is code:
            return 0 if finding.urgency in (Urgency.STOP, Urgency.CHECKPOINT) else 1
        return 2 if finding.source == "child" else 3

    return tuple(sorted(evidence, key=rank))


def markdown_table() -> str:
    """Every output event as the Markdown table the README embeds (a test keeps them equal)."""
    lines = ["| event | fields | meaning |", "|---|---|---|"]
    for name, cls in REGISTRY.items():
        keys = cls.keys or tuple(f.name for f in dataclasses.fields(cls))
        shown = ", ".join(f"`{key}`" for key in keys) or "-"
        lines.append(f"| `{name}` | {shown} | {cls.meaning()} |")
    return "\n".join(lines)


def refused(code: ExitCode, message: str) -> Exited:
    """The verdict when supervise stops before (or instead of) starting the command."""
    finding = Finding("supervise", code.name.lower(), message, code, Urgency.STOP)
    return Exited(code, message, (finding,))
