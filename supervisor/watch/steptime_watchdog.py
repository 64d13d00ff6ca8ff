"""Watches each rank's pace and reports a sustained step-time regression.

`StepTimeWatcher` is a `Watcher` fed by the attempt's sampler: it takes the steady step
intervals of each sample (seconds per step, measured once by `sample.step_intervals`) and
feeds them, per rank, to the pure decision in `supervisor.watch.steptime`. It reports one
NOTE finding per rank when a regression has lasted `sustain` seconds; the policy decides
whether that means DEVICE_DEGRADED. No clock of its own: time is `sample.now`.
"""

from __future__ import annotations

from supervisor.channel import Slot
from supervisor.core.events import STEP_TIME_REGRESSION, Finding, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.watch import steptime
from supervisor.watch.sample import Sample

KIND = STEP_TIME_REGRESSION  # the policy reads this kind (core.policy)


class StepTimeWatcher:
    name = "step-time"
    done = False  # watches the whole attempt; reports each rank at most once

    def __init__(self, config: steptime.Config) -> None:
        self._config = config
        self._paces: dict[int, steptime.Pace] = {}

    def pace(self, rank: int) -> steptime.Pace:
        """What the watcher knows of `rank`'s pace so far."""
        return self._paces.get(rank, steptime.Pace())

    def observe(self, sample: Sample) -> list[Finding]:
        seen = []
        for interval in sample.intervals:
            rank = interval.slot.rank
            pace, sustained = steptime.observe(
                self.pace(rank), interval.seconds, sample.now, self._config
            )
            self._paces[rank] = pace
            if sustained:
                seen.append(self._finding(interval.slot, pace))
        return seen

    def _finding(self, slot: Slot, pace: steptime.Pace) -> Finding:
        base, current = pace.baseline_s or 0.0, pace.current_s or 0.0
        ratio = current / base if base else float("inf")
        return Finding(
            "steptime",
            KIND,
            f"Rank {slot.rank} has been {ratio:.1f}x slower than its baseline "
            f"({current:.3f} s/step against {base:.3f} s/step) for "
            f"{self._config.sustain:g} s.",
            ExitCode.DEVICE_DEGRADED,
            Urgency.NOTE,
            {
                "rank": slot.rank,
                "pid": slot.pid,
                "step": slot.step,
                "baseline_s_per_step": round(base, 6),
                "current_s_per_step": round(current, 6),
                "ratio": round(ratio, 3),
            },
        )
