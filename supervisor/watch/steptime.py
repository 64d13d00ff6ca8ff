"""Step-time regression: is a rank's training getting slower than its own baseline? (L1)

Per rank, from heartbeat intervals (seconds per step):

* the **baseline** is the median of the last `baseline_window` intervals seen while the rank
  was not regressed (it freezes during a regression, so a slow GPU cannot become normal);
* the **current** pace is the median of the last `recent_window` intervals;
* the rank is **regressed** while current > `ratio` x baseline, and a regression is
  **sustained** once it has lasted `sustain` seconds without a break.

A sustained regression alone is a warning: slow input pipelines, evaluation or a noisy
neighbour all look the same. With a corroborating GPU signal (any GPU finding: a throttle
bit, rising correctable errors, a link that retrains) the policy turns it into
DEVICE_DEGRADED; `--degrade-on-step-time` lets it do so without one.

Pure: time arrives as arguments; the same inputs give the same verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

DEFAULT_RATIO = 1.5
DEFAULT_SUSTAIN = 180.0  # seconds: longer than an evaluation pass or a checkpoint stall


@dataclass(frozen=True)
class Config:
    ratio: float = DEFAULT_RATIO
    sustain: float = DEFAULT_SUSTAIN
    baseline_window: int = 200
    recent_window: int = 10
    min_baseline: int = 20  # intervals before any verdict: no baseline, no regression


@dataclass(frozen=True)
class Pace:
    """One rank's pace. `regressed_since` is monotonic seconds, or None."""

    baseline: tuple[float, ...] = ()
    recent: tuple[float, ...] = ()
    regressed_since: float | None = None
    reported: bool = False  # the sustained regression was already reported

    @property
    def baseline_s(self) -> float | None:
        return _median(self.baseline) if self.baseline else None

    @property
    def current_s(self) -> float | None:
        return _median(self.recent) if self.recent else None


def _median(values: tuple[float, ...]) -> float:
    # (statistics.median would do, but importing it costs PID 1 a few ms at every start)
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def observe(pace: Pace, interval: float, at: float, config: Config) -> tuple[Pace, bool]:
    """Add one interval seen at `at`; True when a sustained regression begins to count."""
    recent = (*pace.recent, interval)[-config.recent_window :]
    pace = replace(pace, recent=recent)
    base = pace.baseline_s
    ready = len(pace.baseline) >= config.min_baseline and len(recent) == config.recent_window
    regressed = ready and base is not None and _median(recent) > config.ratio * base
    if not regressed:
        baseline = (*pace.baseline, interval)[-config.baseline_window :]
        return Pace(baseline, recent), False
    since = pace.regressed_since if pace.regressed_since is not None else at
    pace = replace(pace, regressed_since=since)
    if not pace.reported and at - since >= config.sustain:
        return replace(pace, reported=True), True
    return pace, False
