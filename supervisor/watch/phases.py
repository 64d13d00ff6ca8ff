"""Where an attempt's time went, and how far its steps got, from the samples.

`PhaseClock` is a watcher (`supervisor.watch.sample`) that charges the time between two
samples to one bucket, by what the later sample shows:

- a **named phase** (`with sup.phase("restore")`, `"eval"`, `"checkpoint"`) while a running
  rank is in one: the lowest such rank's phase, since a gang waits for its slowest member.
  This holds before the first step too: loading a checkpoint inside `sup.phase("restore")`
  is restore time, not init;
- **init** otherwise, until any rank has taken its first step (imports, rendezvous);
- **steady** steps otherwise, while any rank runs.

Time after every rank finished is not charged. Alongside, it follows the attempt's progress
(`StepProgress`): the first and last step and when they were seen, when a rank last took a
step and the steady seconds run by then (steady time after it is *stalled*: a hang until
the watchdog fired), a `Commit` mark each time the newest committed checkpoint step (over
the ranks) grew, with the steady seconds run by then, and the steady step time's mean and
deviation (Welford, over the intervals the sampler measured, `Sample.intervals`).

The attempt begins at `since` (monotonic seconds, the clock of `sample.now`): every offset
is measured from it, the time until the first sample is charged like the first interval,
and a slot whose last beat is older is ignored. After a restart in place the channel
still holds the previous attempt's slots until each new rank attaches; they must not give
the new attempt its steps or commits. Without `since`, offsets are from the first sample
and every slot counts.

The totals go into the attempt's verdict in the run ledger (`supervisor.run.gang`
converts them to `supervisor.gang.records`, which this module does not import: a run
without a ledger never loads it) and to the metrics endpoint (`Account.buckets`).

Threads: `observe` runs on the sampler's thread; `times`, `progress` and `account` may be
called from any thread and return one sample's state, whole (a lock held for a few
microseconds per sample). Pure otherwise: time comes only from `sample.now`.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from supervisor.channel import Slot, SlotState
from supervisor.hang.options import STEADY_PHASES
from supervisor.watch.sample import Sample, Seen

# Commit marks kept: the newest, since a report splits kept from lost time at the newest
# commit at or before the step the next attempt resumed from, which is almost always one of
# the last few. Equal to `supervisor.gang.records.MAX_COMMIT_MARKS` (a test pins it).
KEPT_COMMITS = 256

INIT = "init"  # a phase of this name before the first step is simply init
COMMITTED = "committed"
UNCOMMITTED = "uncommitted"
STALLED = "stalled"
_FIXED = frozenset({INIT, COMMITTED, UNCOMMITTED, STALLED})


class Times(NamedTuple):
    """Seconds in init, in steady steps, and in each named phase."""

    init_s: float
    steady_s: float
    phases_s: Mapping[str, float]


class Commit(NamedTuple):
    """The newest committed step grew to `step`, seen `at_s` seconds after the attempt
    began, when it had run `steady_s` steady seconds."""

    step: int
    at_s: float
    steady_s: float


class StepProgress(NamedTuple):
    """How far the attempt's steps went, in time; offsets are seconds from its start.
    The fields are `supervisor.gang.records.Progress`'s, which it becomes in a verdict."""

    first_step: int | None
    first_step_s: float | None
    last_step: int | None
    last_progress_s: float | None
    steady_at_last_progress_s: float
    commits: tuple[Commit, ...]  # in order; the newest KEPT_COMMITS
    step_time_mean_s: float | None
    step_time_stdev_s: float | None  # the sample deviation (n - 1); None below 2 intervals
    step_time_count: int  # intervals measured (one per rank and tick that stepped)


class Account(NamedTuple):
    """One sample's whole picture of the attempt: its times, its progress, and the seconds
    from its start to that sample."""

    times: Times
    progress: StepProgress
    elapsed_s: float

    def buckets(self) -> dict[str, float]:
        """The attempt's seconds by bucket: `init`, each named phase (as `phase:NAME` where
        the name is one of these buckets'), and its steady time split three ways:
        `committed` up to the newest commit mark, `uncommitted` from there to the last
        step, `stalled` after the last step. They add up to the charged time."""
        times, progress = self.times, self.progress
        moving = min(progress.steady_at_last_progress_s, times.steady_s)
        last = progress.commits[-1].steady_s if progress.commits else 0.0
        committed = min(last, moving)
        buckets = {INIT: times.init_s}
        for name, seconds in times.phases_s.items():
            key = f"phase:{name}" if name in _FIXED else name
            buckets[key] = buckets.get(key, 0.0) + seconds
        buckets[COMMITTED] = committed
        buckets[UNCOMMITTED] = moving - committed
        buckets[STALLED] = times.steady_s - moving
        return {name: round(seconds, 3) for name, seconds in buckets.items()}

    @property
    def goodput(self) -> float | None:
        """Committed seconds over the attempt's elapsed seconds; None before any time."""
        if self.elapsed_s <= 0:
            return None
        return self.buckets()[COMMITTED] / self.elapsed_s


class PhaseClock:
    """See the module docstring. One per attempt; `since` is when the attempt began."""

    name = "phases"
    done = False

    def __init__(self, since: float | None = None) -> None:
        self.since = since
        self._since_ns = round(since * 1e9) if since is not None else None
        self._lock = threading.Lock()
        self._origin = since
        self._last: float | None = None
        self._stepped = False
        self._init = 0.0
        self._steady = 0.0
        self._phases: dict[str, float] = {}
        self._steps: dict[int, int] = {}  # pid -> the highest step that process reported
        self._first_step: int | None = None
        self._first_step_at: float | None = None
        self._top_step = -1
        self._moved_at: float | None = None
        self._steady_at_moved = 0.0
        self._top_commit = -1
        self._commits: deque[Commit] = deque(maxlen=KEPT_COMMITS)
        self._count = 0  # Welford's running count, mean and sum of squared deviations
        self._mean = 0.0
        self._m2 = 0.0

    def observe(self, sample: Sample) -> Sequence[Seen]:
        now = sample.now
        slots = self.current(sample.slots)
        with self._lock:
            last, self._last = self._last, now
            if self._origin is None:
                self._origin = now
            if last is None:
                last = self._origin
            elapsed = max(0.0, now - last)
            phase, phase_rank, running, moved = None, 0, False, False
            top_step, top_commit = self._top_step, self._top_commit
            steps = self._steps
            for s in slots:
                step = s.step
                if step > steps.get(s.pid, -1):  # by process: a restarted rank starts anew
                    steps[s.pid] = step
                    moved = True
                    if step > top_step:
                        top_step = step
                if s.ckpt_step > top_commit:
                    top_commit = s.ckpt_step
                if s.state is SlotState.RUNNING:
                    running = True
                    if s.phase not in STEADY_PHASES and (phase is None or s.rank < phase_rank):
                        phase, phase_rank = s.phase, s.rank
            self._charge(elapsed, phase, running)
            at = now - self._origin
            if moved:
                if not self._stepped:
                    self._stepped = True
                    self._first_step = min(s.step for s in slots if s.step >= 0)
                    self._first_step_at = at
                self._top_step = top_step
                self._moved_at, self._steady_at_moved = at, self._steady
            if top_commit > self._top_commit:
                self._top_commit = top_commit
                self._commits.append(Commit(top_commit, at, self._steady))
            if sample.intervals:  # only this attempt's: the sampler is new with it
                count, mean, m2 = self._count, self._mean, self._m2
                for interval in sample.intervals:
                    count += 1
                    delta = interval.seconds - mean
                    mean += delta / count
                    m2 += delta * (interval.seconds - mean)
                self._count, self._mean, self._m2 = count, mean, m2
        return ()

    def current(self, slots: Sequence[Slot]) -> Sequence[Slot]:
        """The slots this attempt's ranks wrote: none whose last beat is before `since`."""
        since_ns = self._since_ns
        if since_ns is None:
            return slots
        return [slot for slot in slots if slot.beat_ns >= since_ns]

    def _charge(self, elapsed: float, phase: str | None, running: bool) -> None:
        """The interval that ended at this sample goes where the sample shows the ranks."""
        if phase is not None and not (phase == INIT and not self._stepped):
            self._phases[phase] = self._phases.get(phase, 0.0) + elapsed
        elif not self._stepped:
            self._init += elapsed
        elif running:
            self._steady += elapsed

    def times(self) -> Times:
        """The totals so far, rounded to milliseconds."""
        with self._lock:
            return self._times()

    def progress(self) -> StepProgress | None:
        """The attempt's progress so far; None before the first sample."""
        with self._lock:
            return self._progress() if self._last is not None else None

    def account(self) -> Account | None:
        """Times, progress and elapsed time from one sample; None before the first."""
        with self._lock:
            if self._last is None or self._origin is None:
                return None
            return Account(self._times(), self._progress(), round(self._last - self._origin, 3))

    def _times(self) -> Times:
        phases = {name: round(seconds, 3) for name, seconds in self._phases.items()}
        return Times(round(self._init, 3), round(self._steady, 3), phases)

    def _progress(self) -> StepProgress:
        count = self._count
        stdev = math.sqrt(self._m2 / (count - 1)) if count > 1 else None
        return StepProgress(
            first_step=self._first_step,
            first_step_s=_ms(self._first_step_at),
            last_step=self._top_step if self._top_step >= 0 else None,
            last_progress_s=_ms(self._moved_at),
            steady_at_last_progress_s=round(self._steady_at_moved, 3),
            commits=tuple(
                Commit(c.step, round(c.at_s, 3), round(c.steady_s, 3)) for c in self._commits
            ),
            step_time_mean_s=round(self._mean, 6) if count else None,
            step_time_stdev_s=round(stdev, 6) if stdev is not None else None,
            step_time_count=count,
        )


def _ms(seconds: float | None) -> float | None:
    return round(seconds, 3) if seconds is not None else None
