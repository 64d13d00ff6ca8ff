"""The hang and log-silence watchers, driven by hand-built samples on a fake clock.

No threads and no sleeps: a sample is what the sampler would have read at `clock` time,
and a rank's beat is placed on the same clock. The sampler thread and real trainer
processes are tested in test_sampler.py and end to end in test_hang_supervised.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from supervisor.channel import Slot, SlotState
from supervisor.core.clock import FakeClock
from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.hang.calibration import Calibration, Knobs
from supervisor.hang.options import HangOptions
from supervisor.hang.watchdog import HangWatcher, LogSilenceWatcher, find_stalls, pid_alive
from supervisor.watch.sample import Sample, step_intervals


def slot(
    rank: int,
    beat_s: float,
    state: SlotState = SlotState.RUNNING,
    step: int = 5,
    phase: str = "",
    pid: int | None = None,
) -> Slot:
    pid = 100 + rank if pid is None else pid
    return Slot(rank, pid, state, step, int(beat_s * 1e9), -1, 0, phase)


class Ranks:
    """Builds the samples the sampler would: slots read at the clock's time, with intervals."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._last: dict[int, Slot] = {}

    def sample(self, slots: Iterable[Slot]) -> Sample:
        slots = tuple(slots)
        self._last, intervals = step_intervals(self._last, slots)
        return Sample(slots, self.clock.monotonic(), intervals)


def alive(pid: int) -> bool:
    return True


def test_a_stalled_rank_is_reported_naming_rank_step_and_phase_then_done() -> None:
    clock = FakeClock()
    ranks = Ranks(clock)
    watcher = HangWatcher(HangOptions(hang_timeout=1.0, init_timeout=30), alive=alive)
    t0 = clock.monotonic()
    assert watcher.observe(ranks.sample([slot(0, t0), slot(1, t0, step=4, phase="train")])) == []
    clock.advance(0.9)
    steady = slot(0, clock.monotonic(), step=6)
    assert watcher.observe(ranks.sample([steady, slot(1, t0, step=4, phase="train")])) == []
    clock.advance(0.6)  # rank 1: 1.5 s since its beat; rank 0: 0.6 s
    seen = watcher.observe(ranks.sample([steady, slot(1, t0, step=4, phase="train")]))
    (finding,) = seen
    assert isinstance(finding, Finding)
    assert (finding.source, finding.kind) == ("hang", "heartbeat_stall")
    assert finding.exit_code is ExitCode.HANG and finding.urgency is Urgency.STOP
    detail = dict(finding.detail)
    assert (detail["rank"], detail["pid"], detail["step"], detail["phase"]) == (1, 101, 4, "train")
    assert detail["first"] == 1 and detail["timeout_from"] == "explicit"
    assert detail["stalled_for_s"] == 1.5 and detail["timeout_s"] == 1.0
    assert [r["rank"] for r in detail["ranks"]] == [0, 1]
    assert [s["rank"] for s in detail["stalled"]] == [1]
    assert "rank 1" in finding.summary and "step 4" in finding.summary
    assert watcher.done  # reported once: the sampler stops feeding it


def test_hang_before_the_first_step_uses_the_init_timeout() -> None:
    clock = FakeClock()
    ranks = Ranks(clock)
    watcher = HangWatcher(HangOptions(hang_timeout=0.2, init_timeout=1.5), alive=alive)
    claimed = slot(0, clock.monotonic(), step=-1)
    clock.advance(1.0)  # far past the steady timeout, inside the init timeout
    assert watcher.observe(ranks.sample([claimed])) == []
    clock.advance(0.6)
    (finding,) = watcher.observe(ranks.sample([claimed]))
    assert finding.detail["timeout_from"] == "init" and finding.detail["step"] == -1
    assert "before its first step" in finding.summary


def test_finished_and_never_started_ranks_are_not_hangs() -> None:
    clock = FakeClock()
    ranks = Ranks(clock)
    watcher = HangWatcher(HangOptions(hang_timeout=0.3, init_timeout=0.3), alive=alive)
    # rank 0 finished long ago; ranks 1.. never attached, so the sampler never sees them
    done = slot(0, clock.monotonic(), state=SlotState.FINISHED)
    for _ in range(5):
        clock.advance(10)
        assert watcher.observe(ranks.sample([done])) == []
    assert watcher.observe(ranks.sample([])) == []
    assert not watcher.done


def test_a_dead_rank_is_left_to_the_exit_status() -> None:
    clock = FakeClock()
    ranks = Ranks(clock)
    dead = slot(0, clock.monotonic(), pid=4242)
    watcher = HangWatcher(
        HangOptions(hang_timeout=0.2, init_timeout=0.2), alive=lambda pid: pid != 4242
    )
    clock.advance(60)
    assert watcher.observe(ranks.sample([dead])) == []
    alive_twin = slot(1, dead.beat_ns / 1e9)  # the same silence from a live process is a hang
    (finding,) = watcher.observe(ranks.sample([dead, alive_twin]))
    assert finding.detail["rank"] == 1 and len(finding.detail["stalled"]) == 1


def test_slow_but_steady_progress_is_never_a_hang() -> None:
    clock = FakeClock()
    ranks = Ranks(clock)
    watcher = HangWatcher(HangOptions(hang_timeout=1.0, init_timeout=2.0), alive=alive)
    beat, step = clock.monotonic(), 0
    for tick in range(200):  # 0.1 s ticks, a step every 0.9 s: each gap inside the timeout
        clock.advance(0.1)
        if tick % 9 == 8:
            beat, step = clock.monotonic(), step + 1
        assert watcher.observe(ranks.sample([slot(0, beat, step=step)])) == []
    assert step == 22


def test_calibration_learns_seconds_per_step_and_then_judges_by_it() -> None:
    knobs = Knobs(min_samples=4, floor=0.5, factor=5.0)
    clock = FakeClock()
    ranks = Ranks(clock)
    watcher = HangWatcher(HangOptions(init_timeout=30, calibration=knobs), alive=alive)
    assert watcher.calibrated_timeout() is None
    for step in range(8):  # two steps per 0.1 s tick: 0.05 s per step
        clock.advance(0.1)
        watcher.observe(ranks.sample([slot(0, clock.monotonic(), step=2 * step)]))
    assert len(watcher.calibration.intervals) == 7  # the first read has nothing before it
    assert all(abs(x - 0.05) < 1e-9 for x in watcher.calibration.intervals)
    assert watcher.calibrated_timeout() == 0.5  # 5 x 0.05 = 0.25, raised to the floor
    last = slot(0, clock.monotonic(), step=14)
    clock.advance(0.4)
    assert watcher.observe(ranks.sample([last])) == []
    clock.advance(0.2)
    (finding,) = watcher.observe(ranks.sample([last]))
    assert finding.detail["timeout_from"] == "calibrated" and finding.detail["timeout_s"] == 0.5


def test_a_calibration_from_a_previous_run_is_used_at_once() -> None:
    knobs = Knobs(min_samples=3, floor=0.5)
    prior = Calibration((0.1, 0.1, 0.1))  # as loaded from a previous run: 5 x 0.1 -> floor
    clock = FakeClock()
    watcher = HangWatcher(
        HangOptions(init_timeout=60, calibration=knobs), calibration=prior, alive=alive
    )
    stepped = slot(0, clock.monotonic(), step=3)
    clock.advance(0.7)
    (finding,) = watcher.observe(Ranks(clock).sample([stepped]))
    assert finding.detail["timeout_from"] == "calibrated" and finding.detail["timeout_s"] == 0.5


def test_non_steady_phases_and_restarts_do_not_feed_the_calibration() -> None:
    clock = FakeClock(start=1.0)
    ranks = Ranks(clock)
    watcher = HangWatcher(HangOptions(init_timeout=30), alive=alive)
    reads = [
        slot(0, 1.0, step=-1),  # claimed
        slot(0, 2.0, step=0),  # the first step includes start-up
        slot(0, 3.0, step=1),  # 1 s per step: counted
        slot(0, 4.0, step=2, phase="eval"),  # the phase changed
        slot(0, 5.0, step=3, phase="eval"),  # not a steady phase
        slot(0, 6.0, step=4, pid=999),  # a new process in the slot
        slot(0, 6.5, step=5, pid=999),  # 0.5 s per step: counted
        slot(0, 7.0, step=6, pid=999, state=SlotState.FINISHED),  # done
    ]
    for read in reads:
        clock.advance(read.beat_ns / 1e9 - clock.monotonic())  # read as soon as it beat
        assert watcher.observe(ranks.sample([read])) == []
    assert watcher.calibration.intervals == (1.0, 0.5)


def test_a_stack_collector_adds_evidence_and_can_name_the_suspect() -> None:
    clock = FakeClock()
    calls = []

    def collect(pids, stalled):
        calls.append((dict(pids), sorted(stalled)))
        return {"stacks": {"0": "...", "1": "..."}, "suspects": [1]}

    watcher = HangWatcher(HangOptions(hang_timeout=0.5), collect_stacks=collect, alive=alive)
    t0 = clock.monotonic()
    clock.advance(0.6)  # both past the timeout; rank 0 stalled first
    sample = Ranks(clock).sample(
        [slot(0, t0), slot(1, t0 + 0.05), slot(2, t0, state=SlotState.FINISHED)]
    )
    (finding,) = watcher.observe(sample)
    assert calls == [({0: 100, 1: 101}, [0, 1])]  # running ranks only
    detail = dict(finding.detail)
    assert detail["rank"] == 1 and detail["named_by"] == "stacks" and detail["first"] == 0
    assert detail["stacks"] == {"0": "...", "1": "..."}


def test_find_stalls_orders_by_oldest_beat_and_respects_phases() -> None:
    opts = HangOptions(hang_timeout=10, init_timeout=100, phase_timeouts={"checkpoint": 50})
    slots = [
        slot(0, 85.0),  # 15 s stale, steady: stalled
        slot(1, 80.0),  # 20 s stale: stalled, and first
        slot(2, 60.0, phase="checkpoint"),  # 40 s < 50 s
        slot(3, 50.0, step=-1),  # 50 s < init 100 s
        slot(4, 0.0, state=SlotState.FINISHED),
        slot(5, 99.5),
    ]
    stalls = find_stalls(slots, int(100e9), opts, None, alive=lambda pid: True)
    assert [s.slot.rank for s in stalls] == [1, 0]
    assert find_stalls(slots, int(100e9), opts, None, alive=lambda pid: pid != 101) == [stalls[1]]


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(2**22 + 12345)


def test_log_silence_fires_once_after_the_timeout() -> None:
    clock = FakeClock()
    last = [clock.monotonic()]
    watcher = LogSilenceWatcher(lambda: last[0], timeout=0.5)
    ranks = Ranks(clock)
    for _ in range(8):  # output keeps arriving: no finding
        clock.advance(0.4)
        assert watcher.observe(ranks.sample([])) == []
        last[0] = clock.monotonic()
    clock.advance(0.45)
    assert watcher.observe(ranks.sample([])) == []
    clock.advance(0.1)
    (finding,) = watcher.observe(ranks.sample([]))
    assert finding.kind == "log_silence" and finding.exit_code is ExitCode.HANG
    assert finding.urgency is Urgency.STOP
    assert finding.detail == {"silent_for_s": 0.55, "timeout_s": 0.5}
    assert watcher.done
