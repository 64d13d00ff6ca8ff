"""Watches each rank's pace from its heartbeats and reports a sustained step-time regression.

One daemon thread per attempt polls the channel slots every `interval` seconds, turns
progress between polls into seconds per step (steady phases only: no phase or "train"),
and feeds `supervisor.steptime`. It reports one NOTE finding per rank when a regression has
lasted `sustain` seconds; the policy decides whether that means DEVICE_DEGRADED.
`stop()` returns within one interval.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from supervisor import steptime
from supervisor.channel import Channel, Slot, SlotState
from supervisor.events import Finding, Found, Report, Urgency
from supervisor.exitcodes import ExitCode

STEADY_PHASES = frozenset({"", "train"})
KIND = "step_time_regression"


class StepTimeWatchdog:
    name = "step-time"

    def __init__(self, channel: Channel, config: steptime.Config, interval: float = 0.25):
        self._channel = channel
        self._config = config
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, report: Report, clock_monotonic: Callable[[], float]) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(report, clock_monotonic), name="step-time", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._interval + 1.0)

    def _run(self, report: Report, now: Callable[[], float]) -> None:
        last: dict[int, Slot] = {}
        paces: dict[int, steptime.Pace] = {}
        while not self._stop.wait(self._interval):
            for slot in self._channel.read_slots():
                before, last[slot.rank] = last.get(slot.rank), slot
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
                    paces.get(slot.rank, steptime.Pace()), per_step, now(), self._config
                )
                paces[slot.rank] = pace
                if sustained:
                    report(Found(self._finding(slot, pace), now()))

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
