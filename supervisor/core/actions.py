"""What the policy asks the loop to do: plain frozen data (L0).

`policy.step` returns a tuple of these; the loop executes them in order. Outputs (what
supervise tells the world, `supervisor.core.outputs`) are actions too: the loop hands them
to the sinks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from supervisor.core.events import Finding
from supervisor.core.exitcodes import ExitCode
from supervisor.core.outputs import Output


@dataclass(frozen=True)
class SignalChild:
    """Send `signum` to the direct child only (torchrun and trainers fan out themselves)."""

    signum: int


@dataclass(frozen=True)
class KillTree:
    """SIGKILL every remaining descendant."""


@dataclass(frozen=True)
class RequestCheckpoint:
    """Ask training, through the channel, to checkpoint before `deadline` (monotonic).

    `reason` is one of the channel's checkpoint reasons; `generation` numbers a run's
    requests.
    """

    reason: str
    deadline: float
    generation: int = 1


@dataclass(frozen=True)
class RequestStop:
    """Ask training, through the channel, to exit by itself (its checkpoint is committed)."""


class Outcome(enum.StrEnum):
    """How an operator's checkpoint request (`CheckpointNow`) ended."""

    COMMITTED = "committed"  # a checkpoint answering it was committed; training goes on
    MISSED = "missed"  # its deadline passed without a commit
    REFUSED = "refused"  # it cannot be served now (the run is stopping, not attached, ...)


@dataclass(frozen=True)
class AnswerRequests:
    """Tell the operators behind `requests` how their checkpoint request ended."""

    requests: tuple[str, ...]
    outcome: Outcome
    message: str
    step: int | None = None


@dataclass(frozen=True)
class Respawn:
    """Start the training command again (an in-pod restart); `attempt` counts from 1."""

    attempt: int


@dataclass(frozen=True)
class Decided:
    """A finding or a signal stopped the run and settled its class before the child is
    stopped: the gang hears it now (a cause's verdict goes to the run ledger), not at exit.
    """

    code: ExitCode
    reason: str
    evidence: tuple[Finding, ...]


@dataclass(frozen=True)
class Exit:
    """End the run: drain output, then emit the verdict and exit with `code`."""

    code: ExitCode
    reason: str
    evidence: tuple[Finding, ...]


Action = (
    SignalChild
    | KillTree
    | RequestCheckpoint
    | RequestStop
    | AnswerRequests
    | Respawn
    | Output
    | Decided
    | Exit
)
