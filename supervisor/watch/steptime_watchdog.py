"""Watches each rank's pace from its heartbeats and reports a sustained step-time regression.

One daemon thread per attempt polls the channel slots every `interval` seconds, turns
progress between polls into seconds per step (steady phases only: no phase or "train"),
and feeds `supervisor.watch.steptime`. It reports one NOTE finding per rank when a regression has
lasted `sustain` seconds; the policy decides whether that means DEVICE_DEGRADED.
It runs on a `Poller` thread.
"""

from __future__ import annotations

from supervisor.channel import Channel, Slot, SlotState
from supervisor.core.events import Finding, Found, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.hang.options import STEADY_PHASES
from supervisor.watch import steptime
from supervisor.watch.poller import Poller

KIND = "step_time_regression"


class StepTimeWatchdog(Poller):
    def __init__(self, channel: Channel, config: steptime.Config, interval: float = 0.25):
        super().__init__("step-time", interval)
        self._channel = channel
        self._config = config
        self._last: dict[int, Slot] = {}
        self._paces: dict[int, steptime.Pace] = {}

    def poll(self) -> bool:
        for slot in self._channel.read_slots():
            before, self._last[slot.rank] = self._last.get(slot.rank), slot
            if (
                slot.state is not SlotState.RUNNING
                or before is None
                or before.pid != slot.pid
                or before.step < 0
                or slot.step <= before.step
                or slot.phase not in STEADY_PHASES
                or before.phase != slot.phase
            ):
                continue
            per_step = (slot.beat_ns - before.beat_ns) / 1e9 / (slot.step - before.step)
            pace, sustained = steptime.observe(
                self._paces.get(slot.rank, steptime.Pace()), per_step, self._now(), self._config
            )
            self._paces[slot.rank] = pace
            if sustained:
                self._report(Found(self._finding(slot, pace), self._now()))
        return False

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
