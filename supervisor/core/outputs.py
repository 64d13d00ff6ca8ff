"""What supervise tells the world, as typed data: one class per output event, registered here.

Inputs to the policy are typed events (`supervisor.core.events`); its outputs are typed too.
Every output is a frozen record subclassing `Output`: its annotated attributes are its
fields (in order; a class attribute gives a default), `name` is the `event` field of its
JSON line, and its docstring's first line says what it means. Defining the class
registers it in `REGISTRY`, so this module is the one list of everything supervise says:
the README's event table is generated from it (`markdown_table`), and a test keeps them
equal.

The policy returns outputs among its actions; the loop and the session emit their own.
None of them knows where an output goes: the sinks in `supervisor.outputs` (the event log,
the termination message, and later metrics and the run ledger) each take what they need.
Adding a sink is adding a file there, not editing the producers.

`fields()` is the output as JSON-ready facts; by default every field under its own name.
Plain data only (L0): no I/O here. `Output` is a small record base rather than a frozen
dataclass on purpose: every start of supervise defines these classes, and twenty frozen
dataclasses cost ~10 ms there; these cost well under one.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import ClassVar

from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode

REGISTRY: dict[str, type[Output]] = {}
"""Output event name -> its class, in the order the classes are defined."""


_MISSING = object()


class Output:
    """Base of every output event. Subclasses set `name` and a one-line docstring.

    Instances are immutable, compare equal field by field, and take their fields by
    position or by keyword.
    """

    name: ClassVar[str] = ""
    # The JSON keys `fields()` writes, where they differ from the fields.
    keys: ClassVar[tuple[str, ...]] = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.name or not (cls.__doc__ or "").strip():
            raise TypeError(f"output {cls.__name__} needs a name and a docstring")
        if cls.name in REGISTRY:
            raise TypeError(f"output name {cls.name!r} is registered twice")
        own = inspect.get_annotations(cls)  # this class's own, in order
        cls._fields = tuple(n for n, kind in own.items() if not str(kind).startswith("ClassVar"))
        REGISTRY[cls.name] = cls

    def __init__(self, *args: object, **kwargs: object) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__} takes {len(self._fields)} fields")
        values = dict(zip(self._fields, args, strict=False))
        for key, value in kwargs.items():
            if key not in self._fields or key in values:
                raise TypeError(f"{type(self).__name__}: unexpected or repeated field {key!r}")
            values[key] = value
        for key in self._fields:
            value = values.get(key, getattr(type(self), key, _MISSING))
            if value is _MISSING:
                raise TypeError(f"{type(self).__name__}: missing field {key!r}")
            object.__setattr__(self, key, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        """Normalise fields after they are set (with `object.__setattr__`)."""

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, key) == getattr(other, key) for key in self._fields
        )

    def __hash__(self) -> int:
        return hash((type(self), self.name))

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={getattr(self, key)!r}" for key in self._fields)
        return f"{type(self).__name__}({shown})"

    def fields(self) -> dict[str, object]:
        """The output's facts, JSON-ready (the event log writes them beside the envelope)."""
        return {key: getattr(self, key) for key in self._fields}

    @classmethod
    def meaning(cls) -> str:
        return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


# ------------------------------------------------------------------- the run's course


class Note(Output):
    """Something supervise worked around or wants a person to know (NVML missing, ...)."""

    name = "note"
    message: str


class Started(Output):
    """Attempt `attempt` (1 first) was spawned with this argv, told to resume from
    `resume_step` (null: from scratch)."""

    name = "started"
    command: tuple[str, ...]
    attempt: int
    resume_step: int | None = None

    def fields(self) -> dict[str, object]:
        return {
            "command": list(self.command),
            "attempt": self.attempt,
            "resume_step": self.resume_step,
        }


class ChildStarted(Output):
    """The command is running as `pid`; `attempt` counts from 1, as everywhere."""

    name = "child_started"
    pid: int
    attempt: int


class TrainerAttached(Output):
    """A training rank claimed a heartbeat slot: it can be asked to checkpoint."""

    name = "trainer_attached"
    ranks: int


class FindingReported(Output):
    """One piece of evidence, as the `exit` event's and the termination message's
    `evidence` items hold it (see below)."""

    name = "finding"
    finding: Finding

    def fields(self) -> dict[str, object]:
        # Nested, not spread: the finding's own `source` must not replace the envelope's.
        return {"finding": self.finding.as_dict()}


class CheckpointRequested(Output):
    """Training was asked to checkpoint (`reason`), within `deadline_in_s`."""

    name = "checkpoint_requested"
    reason: str
    why: str
    generation: int
    deadline_in_s: float


class CheckpointCommitted(Output):
    """A rank reported a committed checkpoint `step`, answering request `generation`."""

    name = "checkpoint_committed"
    step: int
    generation: int


class CheckpointRequestAnswered(Output):
    """An operator's checkpoint request (`supervise checkpoint-now`) ended: `outcome` is
    committed (at `step`), missed (its deadline passed) or refused (`message` says why)."""

    name = "checkpoint_request_answered"
    requests: tuple[str, ...]
    outcome: str
    step: int | None
    message: str

    def fields(self) -> dict[str, object]:
        out = super().fields()
        out["requests"] = list(self.requests)
        return out


class Stopping(Output):
    """The child was sent `signal` to stop (SIGTERM, or the stop signal supervise received);
    the tree is SIGKILLed in `kill_in_s`."""

    name = "stopping"
    reason: str
    signal: str
    kill_in_s: float


class LeaveRequested(Output):
    """The checkpoint is in: the trainer was asked to exit by itself; SIGTERM in `term_in_s`."""

    name = "leave_requested"
    reason: str
    term_in_s: float


class SignalForwarded(Output):
    """A signal from outside was passed on to the child unchanged. A stop signal is not
    forwarded as such: it is a `finding` and then a `stopping` (or a checkpoint first)."""

    name = "signal_forwarded"
    signal: str


class SignalReceived(Output):
    """A stop signal arrived while a checkpoint was being taken; the save goes on."""

    name = "signal_received"
    signal: str


class SignalIgnored(Output):
    """A signal supervise does not forward arrived and was ignored."""

    name = "signal_ignored"
    signal: str


class GraceExpired(Output):
    """The grace period ended with the child still alive: the tree is SIGKILLed."""

    name = "grace_expired"


class TreeKilled(Output):
    """`processes` descendants were SIGKILLed."""

    name = "tree_killed"
    processes: int


class RestartScheduled(Output):
    """Attempt `attempt` ended with a restartable `class`; the command restarts in place."""

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


class OutputLost(Output):
    """Our own stdout or stderr went away; the child's bytes on `stream` are dropped."""

    name = "output_lost"
    stream: str
    error: str


class OutputUnwritable(Output):
    """An output (`sink`) could not be written at `path`; the run goes on without it."""

    name = "output_unwritable"
    sink: str
    path: str
    error: str


class CalibrationNotSaved(Output):
    """The hang calibration could not be saved at `path`; the next run starts blind."""

    name = "calibration_not_saved"
    path: str
    error: str


class RunDirKept(Output):
    """The run directory is kept at `path`: it `holds` evidence (stacks, flight_recorder)."""

    name = "run_dir_kept"
    path: str
    holds: tuple[str, ...] = ()


# -------------------------------------------------------------------------- the verdict


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
        keys = cls.keys or cls._fields
        shown = ", ".join(f"`{key}`" for key in keys) or "-"
        lines.append(f"| `{name}` | {shown} | {cls.meaning()} |")
    return "\n".join(lines)


def refused(code: ExitCode, message: str) -> Exited:
    """The verdict when supervise stops before (or instead of) starting the command."""
    finding = Finding("supervise", code.name.lower(), message, code, Urgency.STOP)
    return Exited(code, message, (finding,))
