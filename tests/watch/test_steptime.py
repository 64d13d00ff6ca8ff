"""Step-time regression without processes or threads; and what the policy makes of it."""

from __future__ import annotations

import signal

from supervisor.channel import Slot, SlotState
from supervisor.core import policy
from supervisor.core.actions import Decided, RequestCheckpoint, SignalChild
from supervisor.core.clock import FakeClock
from supervisor.core.events import (
    ChildStarted,
    Finding,
    Found,
    Urgency,
)
from supervisor.core.exitcodes import ExitCode
from supervisor.core.outputs import Output
from supervisor.watch import steptime
from supervisor.watch.sample import Sample, StepInterval
from supervisor.watch.steptime_watchdog import KIND, StepTimeWatcher

CONFIG = steptime.Config(
    ratio=1.5, sustain=10.0, baseline_window=50, recent_window=5, min_baseline=10
)


def feed(pace: steptime.Pace, intervals: list[float], start: float, every: float = 1.0):
    fired = []
    for i, interval in enumerate(intervals):
        pace, sustained = steptime.observe(pace, interval, start + i * every, CONFIG)
        if sustained:
            fired.append(start + i * every)
    return pace, fired


def test_a_steady_pace_never_regresses() -> None:
    pace, fired = feed(steptime.Pace(), [0.10, 0.11, 0.09] * 40, 0.0)
    assert fired == [] and pace.regressed_since is None


def test_no_verdict_before_a_baseline_exists() -> None:
    _, fired = feed(steptime.Pace(), [0.1] * 3 + [1.0] * 30, 0.0)
    assert fired == []  # the slow steps became the baseline: there was nothing to compare


def test_a_sustained_slowdown_fires_once_after_the_sustain_period() -> None:
    pace, _ = feed(steptime.Pace(), [0.1] * 20, 0.0)
    pace, fired = feed(pace, [0.2] * 30, 100.0)
    # the recent median crosses 1.5x on the 3rd slow interval (at 102 s); 10 s later it counts
    assert fired == [112.0]
    assert pace.baseline_s == 0.1  # frozen while regressed


def test_a_short_slowdown_is_forgiven() -> None:
    pace, _ = feed(steptime.Pace(), [0.1] * 20, 0.0)
    pace, fired = feed(pace, [0.2] * 8 + [0.1] * 10 + [0.2] * 8, 100.0)
    assert fired == []
    assert pace.regressed_since is None or pace.regressed_since >= 118.0


def test_the_watcher_reports_a_sustained_regression_once_per_rank() -> None:
    clock = FakeClock()
    watcher = StepTimeWatcher(CONFIG)
    step = 0

    def tick(*seconds: float) -> list[Finding]:
        nonlocal step
        step += 1
        clock.advance(1.0)
        slots = [Slot(r, 100 + r, SlotState.RUNNING, step, 0, -1, 0, "") for r in range(2)]
        intervals = tuple(StepInterval(s, x) for s, x in zip(slots, seconds, strict=True))
        return watcher.observe(Sample(tuple(slots), clock.monotonic(), intervals))

    for _ in range(20):
        assert tick(0.1, 0.1) == []
    fired: list[tuple[float, Finding]] = []
    for _ in range(30):  # rank 1 slows down to 2x; rank 0 keeps its pace
        fired += [(clock.monotonic(), f) for f in tick(0.1, 0.2)]
    # its recent median crosses 1.5x on the 3rd slow interval; `sustain` (10 s) later it counts
    ((at, finding),) = fired
    assert at == 1000.0 + 23 + 10
    assert (finding.kind, finding.exit_code, finding.urgency) == (
        KIND,
        ExitCode.DEVICE_DEGRADED,
        Urgency.NOTE,
    )
    assert finding.detail["rank"] == 1 and finding.detail["pid"] == 101
    assert finding.detail["baseline_s_per_step"] == 0.1 and finding.detail["ratio"] == 2.0
    assert watcher.pace(0).regressed_since is None
    assert not watcher.done


SLOW = Finding(
    "steptime",
    policy.STEP_TIME_REGRESSION,
    "Rank 0 is 2.0x slower.",
    ExitCode.DEVICE_DEGRADED,
    Urgency.NOTE,
    {"rank": 0},
)
GPU_NOTE = Finding("gpu", "nvlink_crc", "NVLink CRC errors rose on GPU 0.", None, Urgency.NOTE)


def run_findings(config: policy.Config, *findings: Finding) -> tuple[policy.State, list]:
    state, _ = policy.step(config, policy.State(), ChildStarted(1, 0.0))
    actions: list = []
    for finding in findings:
        state, more = policy.step(config, state, Found(finding, 1.0))
        actions += [a for a in more if not isinstance(a, Output | Decided)]
    return state, actions


def test_a_slowdown_alone_is_a_warning() -> None:
    state, actions = run_findings(policy.Config(grace_period=10), SLOW)
    assert actions == [] and state.phase is policy.Phase.RUNNING


def test_a_slowdown_with_a_gpu_signal_is_degraded_in_either_order() -> None:
    for order in ((SLOW, GPU_NOTE), (GPU_NOTE, SLOW)):
        state, actions = run_findings(policy.Config(grace_period=10), *order)
        assert actions == [SignalChild(signal.SIGTERM)]  # not attached: SIGTERM, full grace
        assert state.findings[-1].exit_code is ExitCode.DEVICE_DEGRADED
        assert "NVLink CRC" in state.findings[-1].summary


def test_opting_in_makes_a_slowdown_alone_degraded() -> None:
    config = policy.Config(grace_period=10, degrade_on_step_time=True)
    state = policy.State(policy.Phase.RUNNING, attached=True)
    state, actions = policy.step(config, state, Found(SLOW, 5.0))
    assert [a for a in actions if not isinstance(a, Output | Decided)] == [
        RequestCheckpoint("degraded", 5.0 + config.degraded_deadline, 1)
    ]
