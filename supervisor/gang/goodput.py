"""Goodput and badput of a whole run, from its ledger: every pod, attempt and node (L1).

`report(view)` turns the run ledger's records (`supervisor.gang.records`) into a `Report`:
where each node's wall time went, from the run's first attempt start to its last verdict,
split into buckets that add up to that time exactly.

One *lane* per node of the gang, by node rank (a pod that has none runs a single-node job:
node 0). Each attempt on a lane covers its start (`AttemptStart.wall`) to its end: its
verdict (`Verdict.wall`), or, for a pod that wrote its verdict early (a cause, before
stopping its tree), the `Ended` record it wrote at exit, whose steps and commits it uses:

- **init**: from the start to the first step, less any named phase run before it;
- **restore**: the phase `restore` (`with sup.phase("restore")` around the load);
- **checkpoint**: the phase `checkpoint` (around a save);
- **a named phase** (`eval`, ...), under its own name;
- **productive**: steady step time of steps that were kept: up to the step the next attempt
  on the lane resumed from (all of them for an attempt that succeeded or ends the lane);
- **lost**: steady step time after that step, which the next attempt redid;
- **stalled**: steady time after the last step any rank took, until the attempt stopped
  (a hang until it was detected, a dead peer until it was noticed);
- **teardown**: the rest of the attempt: after every rank stopped, until its end;
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
from dataclasses import dataclass, field, replace

from supervisor.gang.records import AttemptStart, LedgerView, Progress, Verdict

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


SLOW = 1.1  # an attempt whose mean step time is this much over the run's is listed as slow
_NOT_INTERRUPTIONS = frozenset({"SUCCEEDED", "PEER_LEFT"})
# The order in which an attempt's buckets give way when they add up to more than the time
# it had (sampling rounding, or a next attempt that started before this one's verdict).
_YIELD_ORDER = (TEARDOWN, STALLED, LOST, PRODUCTIVE, INIT)


def report(view: LedgerView) -> Report | None:
    """The run's goodput report from one read of its ledger; None when it holds no attempt.

    Attempts are placed on their node's lane by start time. Every lane covers the run's
    whole span (its first start to its last verdict), so the buckets of all lanes add up to
    `Report.total_s` exactly.
    """
    starts = {record.id: record for _, record in view.attempts()}
    verdicts = {record.id: record for _, record in view.verdicts()}
    verdicts.update((record.id, record) for _, record in view.ended())  # the same, at exit
    entries = [_Entry.of(starts.get(key), verdicts.get(key)) for key in {*starts, *verdicts}]
    if not entries:
        return None
    entries = _name_incidents(entries)
    lanes: dict[str, list[_Entry]] = {}
    for entry in sorted(entries, key=lambda e: (e.start, e.id)):
        lanes.setdefault(entry.lane, []).append(entry)
    run_start = min(entry.start for entry in entries)
    run_end = max(max(entry.known_end or entry.start for entry in entries), run_start)

    spans: list[Span] = []
    gaps: list[Gap] = []
    totals: dict[str, float] = dict.fromkeys(FIXED_BUCKETS, 0.0)
    by_cause: dict[str, dict[str, float]] = {}

    def charge(cause: str, bucket: str, seconds: float) -> None:
        totals[bucket] = totals.get(bucket, 0.0) + seconds
        if bucket != PRODUCTIVE and seconds > 0:
            causes = by_cause.setdefault(cause, {})
            causes[bucket] = causes.get(bucket, 0.0) + seconds

    for lane in sorted(lanes, key=_lane_order):
        before_cause, edge = START, run_start
        entries_here = lanes[lane]
        for index, entry in enumerate(entries_here):
            following = entries_here[index + 1] if index + 1 < len(entries_here) else None
            if entry.start > edge:
                gaps.append(Gap(lane, edge, entry.start, before_cause))
                charge(before_cause, DOWNTIME, entry.start - edge)
            limit = following.start if following is not None else run_end
            span = entry.span(lane, following, limit, max(edge, entry.start))
            for bucket, seconds in span.buckets.items():
                charge(_cause_of(bucket, span, before_cause), bucket, seconds)
            spans.append(span)
            before_cause = span.cause or (EXIT if span.name else UNKNOWN)
            edge = max(edge, span.end)
        if run_end > edge:
            gaps.append(Gap(lane, edge, run_end, before_cause))
            charge(before_cause, DOWNTIME, run_end - edge)

    return Report(
        start=run_start,
        end=run_end,
        lanes=tuple(sorted(lanes, key=_lane_order)),
        spans=tuple(spans),
        gaps=tuple(gaps),
        buckets={name: round(seconds, 3) for name, seconds in totals.items()},
        by_cause={
            cause: {name: round(s, 3) for name, s in sorted(buckets.items())}
            for cause, buckets in sorted(by_cause.items())
        },
        interruptions=_interruptions(spans, run_end - run_start),
        step_time=_step_time(entries),
    )


def lane_of(node_rank: int | None) -> str:
    """A node's lane, `node <rank>`: every pod that node rank had, in turn."""
    return f"node {node_rank if node_rank is not None else 0}"


# ------------------------------------------------------------------------------ internals


@dataclass(frozen=True)
class _Entry:
    """An attempt as the ledger has it: its start record, its verdict, or both."""

    id: str
    lane: str
    pod: str
    node: str | None
    start: float
    resume_step: int | None
    verdict: Verdict | None
    incident: str | None = None  # for a PEER_LEFT naming no peer: the class found for it

    @classmethod
    def of(cls, start: AttemptStart | None, verdict: Verdict | None) -> _Entry:
        some = start if start is not None else verdict
        assert some is not None
        began = start.wall if start is not None else verdict.started_wall  # type: ignore[union-attr]
        return cls(
            id=some.id,
            lane=lane_of(some.node_rank),
            pod=some.pod,
            node=(start.node if start is not None else None) or (verdict and verdict.node),
            start=began if began is not None else some.wall,
            resume_step=start.resume_step if start is not None else None,
            verdict=verdict,
        )

    @property
    def known_end(self) -> float | None:
        return self.verdict.wall if self.verdict is not None else None

    def span(self, lane: str, following: _Entry | None, limit: float, start: float) -> Span:
        """This attempt on its lane, from `start` to its verdict (never past `limit`, where
        the lane's next attempt began or the run ended)."""
        verdict = self.verdict
        if verdict is None:
            end = max(limit, start)
            buckets = {UNKNOWN: end - start}
            return Span(
                self.id,
                lane,
                self.pod,
                self.node,
                start,
                end,
                None,
                UNKNOWN,
                resume_step=self.resume_step,
                buckets=buckets,
            )
        end = min(max(verdict.wall, start), max(limit, start))
        progress = verdict.progress or Progress()
        kept = _kept_step(verdict, following)
        buckets = _buckets(verdict, progress, kept, self.resume_step, end - start)
        origin = verdict.started_wall if verdict.started_wall is not None else self.start
        lost = None
        if buckets.get(LOST, 0.0) > 0 and progress.last_progress_s is not None:
            lost_from = _mark_at(progress, kept)
            lost = (origin + (lost_from or 0.0), origin + progress.last_progress_s)
        return Span(
            id=self.id,
            lane=lane,
            pod=self.pod,
            node=self.node,
            start=start,
            end=end,
            name=verdict.name,
            cause=self.incident or _end_cause(verdict),
            first_step_at=_offset(origin, progress.first_step_s),
            resume_step=self.resume_step,
            last_step=progress.last_step if progress.last_step is not None else _last(verdict),
            kept_step=kept,
            commits=tuple((m.step, origin + m.at_s) for m in progress.commits),
            lost=lost,
            stalled_from=_offset(origin, progress.last_progress_s)
            if buckets.get(STALLED, 0.0) > 0
            else None,
            gpus=_gpus(verdict),
            buckets=buckets,
        )


def _lane_order(lane: str) -> int:
    return int(lane.removeprefix("node "))


def _end_cause(verdict: Verdict) -> str | None:
    if verdict.name == "SUCCEEDED":
        return None
    if verdict.name == "PEER_LEFT" and verdict.peer is not None and verdict.peer.name:
        return verdict.peer.name
    return verdict.name


INCIDENT_WINDOW_S = 60.0  # how far after its own verdict a PEER_LEFT's peer may decide


def _name_incidents(entries: list[_Entry]) -> list[_Entry]:
    """Each PEER_LEFT verdict that names no peer (a pod that left with the gang through
    the checkpoint agreement knows only that a peer was told to leave) charged to the
    failure on another lane that decided nearest to it, within its attempt and up to
    `INCIDENT_WINDOW_S` after it. Unmatched ones keep PEER_LEFT as their cause."""
    failures = [
        (e.verdict.wall, e.lane, e.verdict.name)
        for e in entries
        if e.verdict is not None and e.verdict.name not in _NOT_INTERRUPTIONS
    ]
    named = []
    for entry in entries:
        verdict = entry.verdict
        if verdict is not None and _end_cause(verdict) == "PEER_LEFT":  # names no peer
            near = [
                (abs(wall - verdict.wall), name)
                for wall, lane, name in failures
                if lane != entry.lane and entry.start <= wall <= verdict.wall + INCIDENT_WINDOW_S
            ]
            if near:
                entry = replace(entry, incident=min(near)[1])
        named.append(entry)
    return named


def _cause_of(bucket: str, span: Span, before: str) -> str:
    """Whom `bucket` of `span` is charged to (see the module docstring)."""
    if bucket in (INIT, RESTORE):
        return before
    if bucket in (LOST, STALLED, TEARDOWN, UNKNOWN):
        return span.cause or EXIT
    return ROUTINE  # checkpoint saves and named phases


def _last(verdict: Verdict) -> int | None:
    return max(verdict.last_steps.values()) if verdict.last_steps else None


def _kept_step(verdict: Verdict, following: _Entry | None) -> int | None:
    """The last step of this attempt that the run kept: everything, for one that succeeded;
    else the step the lane's next attempt resumed from, or (for the lane's last attempt)
    its own last commit."""
    last = verdict.progress.last_step if verdict.progress is not None else None
    last = last if last is not None else _last(verdict)
    if verdict.name == "SUCCEEDED":
        return last
    if following is not None and following.resume_step is not None:
        return following.resume_step if last is None else min(following.resume_step, last)
    return verdict.last_committed_step


def _mark_at(progress: Progress, kept: int | None) -> float | None:
    """When the commit of step `kept` was seen (None: before any commit of this attempt)."""
    if kept is None:
        return None
    marks = [m for m in progress.commits if m.step <= kept]
    return marks[-1].at_s if marks else progress.first_step_s


def _buckets(
    verdict: Verdict, progress: Progress, kept: int | None, resume: int | None, seconds: float
) -> dict[str, float]:
    """Where an attempt's `seconds` went, adding up to `seconds` exactly."""
    times = verdict.times
    steady = times.steady_s
    moving = min(progress.steady_at_last_progress_s, steady) if verdict.progress else steady
    productive = _kept_steady(verdict, progress, kept, moving, resume)
    buckets: dict[str, float] = {INIT: times.init_s}
    for phase, spent in times.phases_s.items():
        name = (
            phase
            if phase not in FIXED_BUCKETS or phase in (RESTORE, CHECKPOINT)
            else (f"phase:{phase}")
        )
        buckets[name] = buckets.get(name, 0.0) + spent
    buckets[PRODUCTIVE] = productive
    buckets[LOST] = moving - productive
    buckets[STALLED] = steady - moving
    charged = sum(buckets.values())
    buckets[TEARDOWN] = max(0.0, seconds - charged)
    excess = charged - seconds
    for name in _YIELD_ORDER:  # more charged than the attempt had: trim, least sure first
        if excess <= 0:
            break
        cut = min(excess, buckets.get(name, 0.0))
        buckets[name] -= cut
        excess -= cut
    return {name: value for name, value in buckets.items() if value > 0}


def _kept_steady(
    verdict: Verdict, progress: Progress, kept: int | None, moving: float, resume: int | None
) -> float:
    """Steady seconds of the steps up to `kept`."""
    last = progress.last_step if progress.last_step is not None else _last(verdict)
    if kept is None or last is None:
        return 0.0
    if kept >= last:
        return moving
    if verdict.progress is not None:
        marks = [m.steady_s for m in progress.commits if m.step <= kept]
        return min(marks[-1], moving) if marks else 0.0
    # A verdict from before `progress` existed: as if every step took as long.
    first = resume if resume is not None else 0
    if last <= first or kept <= first:
        return 0.0
    return moving * (kept - first) / (last - first)


def _offset(origin: float, seconds: float | None) -> float | None:
    return origin + seconds if seconds is not None else None


def _gpus(verdict: Verdict) -> tuple[str, ...]:
    """The GPUs the verdict's deciding evidence names: by UUID, else as `<node>/gpu<index>`."""
    found = []
    for item in verdict.evidence:
        if item.get("source") != "gpu" or item.get("class") is None:
            continue
        gpu = item.get("gpu_uuid")
        if gpu is None and item.get("gpu_index") is not None:
            gpu = f"{verdict.node or verdict.pod}/gpu{item['gpu_index']}"
        if gpu is not None and str(gpu) not in found:
            found.append(str(gpu))
    return tuple(found)


def _interruptions(spans: list[Span], wall: float) -> Interruptions:
    counted = [s for s in spans if s.name is not None and s.name not in _NOT_INTERRUPTIONS]
    by_class: dict[str, int] = {}
    by_node: dict[str, int] = {}
    by_gpu: dict[str, int] = {}
    for span in counted:
        assert span.name is not None
        by_class[span.name] = by_class.get(span.name, 0) + 1
        node = span.node or span.pod
        by_node[node] = by_node.get(node, 0) + 1
        for gpu in span.gpus:
            by_gpu[gpu] = by_gpu.get(gpu, 0) + 1
    return Interruptions(
        count=len(counted),
        by_class=_by_count(by_class),
        by_node=_by_count(by_node),
        by_gpu=_by_count(by_gpu),
        mtbi_s=round(wall / len(counted), 3) if counted and wall > 0 else None,
    )


def _by_count(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _step_time(entries: list[_Entry]) -> StepTime:
    """The run's step time, pooled from each attempt's mean, deviation and count."""
    measured = [
        (e.id, e.verdict.progress)
        for e in entries
        if e.verdict is not None
        and e.verdict.progress is not None
        and e.verdict.progress.step_time_count > 0
        and e.verdict.progress.step_time_mean_s is not None
    ]
    count = sum(p.step_time_count for _, p in measured)
    if not count:
        return StepTime()
    mean = sum(p.step_time_mean_s * p.step_time_count for _, p in measured) / count  # type: ignore[operator]
    square = sum(
        p.step_time_count * ((p.step_time_stdev_s or 0.0) ** 2 + p.step_time_mean_s**2)  # type: ignore[operator]
        for _, p in measured
    )
    stdev = max(0.0, square / count - mean**2) ** 0.5
    slow = tuple(
        (key, round(p.step_time_mean_s / mean, 3))  # type: ignore[operator]
        for key, p in measured
        if mean > 0 and p.step_time_mean_s > SLOW * mean  # type: ignore[operator]
    )
    return StepTime(round(mean, 6), round(stdev, 6), count, slow)
