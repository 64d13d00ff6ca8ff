"""Goodput and badput of a whole run, from its ledger: every pod, attempt and node (L1).

`report(view)` turns the run ledger's records (`supervisor.gang.records`) into a `Report`:
where each node's wall time went, from the run's first attempt start to its last verdict,
split into buckets that add up to that time exactly.

One *lane* per node of the gang (its node rank; a pod without one is its own lane). Each
attempt on a lane covers its start (`AttemptStart.wall`) to its verdict (`Verdict.wall`):

- **init**: from the start to the first step, less any named phase run before it;
- **restore**: the phase `restore` (`with sup.phase("restore")` around the load);
- **checkpoint**: the phase `checkpoint` (around a save);
- **a named phase** (`eval`, ...), under its own name;
- **productive**: steady step time of steps that were kept: up to the step the next attempt
  on the lane resumed from (all of them for an attempt that succeeded or ends the lane);
- **lost**: steady step time after that step, which the next attempt redid;
- **stalled**: steady time after the last step any rank took, until the attempt stopped
  (a hang until it was detected, a dead peer until it was noticed);
- **teardown**: the rest of the attempt: after every rank stopped, until the verdict;
- **downtime**: on the lane, between one attempt's verdict and the next attempt's start,
  and before a lane's first start (the gang waited for it);
- **unknown**: an attempt with no verdict (its pod was killed outright), from its start to
  the next start on its lane, or to the run's end.

Every badput second is charged to a *cause*: the class of the failure that made it
(`lost`, `stalled`, `teardown` and the downtime after it; `init` and `restore` of the
attempt that followed). A PEER_LEFT attempt's badput goes to the class of the peer it
names, the incident's cause. The run's first init is charged to `start`, saves and named
phases to `routine`, and a successful attempt's teardown to `exit`.

Pure: no I/O, no clock; the same view always gives the same report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PRODUCTIVE = "productive"
INIT = "init"
RESTORE = "restore"
CHECKPOINT = "checkpoint"
LOST = "lost"
STALLED = "stalled"
TEARDOWN = "teardown"
DOWNTIME = "downtime"
UNKNOWN = "unknown"
FIXED_BUCKETS = (PRODUCTIVE, INIT, RESTORE, CHECKPOINT, LOST, STALLED, TEARDOWN, DOWNTIME, UNKNOWN)

START = "start"  # the cause of the run's first init and of downtime before a lane's start
ROUTINE = "routine"  # the cause of saves and named phases: the training's own work
EXIT = "exit"  # the cause of a successful attempt's teardown


@dataclass(frozen=True)
class Span:
    """One attempt on the timeline. Times are Unix seconds (the writing node's clock)."""

    id: str
    lane: str
    pod: str
    node: str | None  # the Kubernetes node name, where known
    start: float
    end: float  # the verdict's time; for an attempt with no verdict, where its lane went on
    name: str | None  # the class it ended with; None when it left no verdict
    cause: str | None  # the class that caused its end (a PEER_LEFT's peer's); None: success
    first_step_at: float | None = None
    resume_step: int | None = None
    last_step: int | None = None
    kept_step: int | None = None  # the last step of this attempt that was kept
    commits: tuple[tuple[int, float], ...] = ()  # (step, Unix seconds seen)
    lost: tuple[float, float] | None = None  # the stretch of steps that were redone
    stalled_from: float | None = None  # no rank stepped after this
    gpus: tuple[str, ...] = ()  # the GPUs its deciding evidence names
    buckets: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Gap:
    """Downtime on a lane: no attempt ran between `start` and `end`."""

    lane: str
    start: float
    end: float
    cause: str


@dataclass(frozen=True)
class StepTime:
    """Steady seconds per step over the run (all attempts' measured intervals pooled)."""

    mean_s: float | None = None
    stdev_s: float | None = None
    count: int = 0
    slow: tuple[tuple[str, float], ...] = ()  # (attempt, its mean over the run's) > 1.1


@dataclass(frozen=True)
class Interruptions:
    """Failures that stopped training: every ended attempt but SUCCEEDED and PEER_LEFT (a
    pod that left because a peer failed is the same interruption, counted at the peer)."""

    count: int = 0
    by_class: Mapping[str, int] = field(default_factory=dict)
    by_node: Mapping[str, int] = field(default_factory=dict)
    by_gpu: Mapping[str, int] = field(default_factory=dict)
    mtbi_s: float | None = None  # the run's wall span over the count


@dataclass(frozen=True)
class Report:
    start: float
    end: float
    lanes: tuple[str, ...]
    spans: tuple[Span, ...]
    gaps: tuple[Gap, ...]
    buckets: Mapping[str, float]  # every bucket, summed over lanes; they add up to total_s
    by_cause: Mapping[str, Mapping[str, float]]  # cause -> bucket -> seconds (badput only)
    interruptions: Interruptions
    step_time: StepTime

    @property
    def total_s(self) -> float:
        """Lane seconds: the run's wall span times its lanes."""
        return (self.end - self.start) * len(self.lanes)

    @property
    def goodput(self) -> float | None:
        """Productive seconds over all lane seconds; None for a run with no time."""
        total = self.total_s
        return self.buckets.get(PRODUCTIVE, 0.0) / total if total > 0 else None
