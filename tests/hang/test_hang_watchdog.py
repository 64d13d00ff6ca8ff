"""The hang watchdog against real trainer processes on a real channel, plus pure cases."""

from __future__ import annotations

import threading
import time

import pytest

from supervisor.channel import Channel, Slot, SlotState
from supervisor.core.events import Found, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.hang.calibration import Calibration, Knobs
from supervisor.hang.options import HangOptions
from supervisor.hang.watchdog import HangWatchdog, LogSilenceWatchdog, find_stalls, pid_alive


class Inbox:
    def __init__(self) -> None:
        self.events: list[Found] = []
        self.arrived = threading.Event()

    def __call__(self, event) -> None:
        self.events.append(event)
        self.arrived.set()


def wait_for_line(proc, text: str = "stepped", timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
    raise AssertionError(f"the trainer never printed {text!r}")


def watch(channel: Channel, options: HangOptions, **kw) -> tuple[HangWatchdog, Inbox]:
    inbox = Inbox()
    dog = HangWatchdog(channel, options, **kw)
    dog.start(inbox, time.monotonic)
    return dog, inbox


FAST = dict(poll_interval=0.05)


def test_a_stalled_rank_is_reported_naming_rank_step_and_phase(channel, spawn) -> None:
    steady = spawn("1000", "0.02", "finish", rank=0)
    stalled = spawn("5", "0.02", "stall", "train", rank=1)
    wait_for_line(stalled)
    dog, inbox = watch(channel, HangOptions(hang_timeout=1.0, init_timeout=30, **FAST))
    try:
        assert inbox.arrived.wait(10), "no hang reported"
        started = time.monotonic()
    finally:
        dog.stop()
    (event,) = inbox.events
    finding = event.finding
    assert (finding.source, finding.kind) == ("hang", "heartbeat_stall")
    assert finding.exit_code is ExitCode.HANG and finding.urgency is Urgency.STOP
    detail = dict(finding.detail)
    assert (detail["rank"], detail["pid"], detail["step"], detail["phase"]) == (
        1,
        stalled.pid,
        4,
        "train",
    )
    assert detail["first"] == 1 and detail["timeout_from"] == "explicit"
    assert 1.0 < detail["stalled_for_s"] < 3.0
    assert [r["rank"] for r in detail["ranks"]] == [0, 1]
    assert "rank 1" in finding.summary and "step 4" in finding.summary
    assert steady.poll() is None  # the healthy rank was left alone
    assert time.monotonic() - started < 1.0  # reported once, then quiet
    assert len(inbox.events) == 1


def test_hang_before_the_first_step_uses_the_init_timeout(channel, spawn) -> None:
    proc = spawn("0", "0", "stall")
    wait_for_line(proc)
    dog, inbox = watch(channel, HangOptions(hang_timeout=0.2, init_timeout=1.5, **FAST))
    try:
        assert not inbox.arrived.wait(1.0), "judged by the steady timeout before any step"
        assert inbox.arrived.wait(5)
    finally:
        dog.stop()
    detail = dict(inbox.events[0].finding.detail)
    assert detail["timeout_from"] == "init" and detail["step"] == -1
    assert "before its first step" in inbox.events[0].finding.summary


def test_finished_and_never_started_ranks_are_not_hangs(channel, spawn) -> None:
    done = spawn("3", "0.01", "finish", rank=0)  # alive, silent, finished
    exited = spawn("3", "0.01", "exit", rank=1)  # gone, marked finished at exit
    wait_for_line(done)
    assert exited.wait(10) == 0
    # ranks 2..7 never attached at all
    dog, inbox = watch(channel, HangOptions(hang_timeout=0.3, init_timeout=0.3, **FAST))
    try:
        assert not inbox.arrived.wait(1.5)
    finally:
        dog.stop()
    states = {s.rank: s.state for s in channel.read_slots()}
    assert states == {0: SlotState.FINISHED, 1: SlotState.FINISHED}


def test_a_dead_rank_is_left_to_the_exit_status(channel, spawn) -> None:
    proc = spawn("3", "0.01", "crash")
    assert proc.wait(10) == 3
    dog, inbox = watch(channel, HangOptions(hang_timeout=0.2, init_timeout=0.2, **FAST))
    try:
        assert not inbox.arrived.wait(1.0)
    finally:
        dog.stop()
    assert channel.read_slot(0).state is SlotState.RUNNING  # type: ignore[union-attr]


@pytest.mark.slow
def test_slow_but_steady_progress_is_never_a_hang(channel, spawn) -> None:
    # Steps every 0.4 s against a 1 s timeout: each gap is well inside, for 4 s in all.
    proc = spawn("10", "0.4", "exit")
    dog, inbox = watch(channel, HangOptions(hang_timeout=1.0, init_timeout=2.0, **FAST))
    try:
        assert proc.wait(20) == 0
        assert not inbox.arrived.wait(0.5)
    finally:
        dog.stop()
    assert inbox.events == []


def test_calibration_learns_seconds_per_step_from_a_real_rank(channel, spawn) -> None:
    knobs = Knobs(min_samples=4, floor=0.5, factor=5.0)
    proc = spawn("12", "0.1", "finish")
    dog, inbox = watch(channel, HangOptions(init_timeout=30, calibration=knobs, **FAST))
    try:
        wait_for_line(proc)
        time.sleep(0.2)
    finally:
        dog.stop()
    cal = dog.calibration
    assert len(cal.intervals) >= 4
    assert all(0.05 < x < 0.5 for x in cal.intervals), cal.intervals
    timeout = dog.calibrated_timeout()
    assert timeout is not None and 0.5 <= timeout < 2.5
    assert inbox.events == []


def test_a_calibrated_timeout_detects_a_stall(channel, spawn) -> None:
    knobs = Knobs(min_samples=3, floor=0.5)
    prior = Calibration((0.1, 0.1, 0.1))  # as loaded from a previous run: 5 x 0.1 -> floor
    proc = spawn("4", "0.05", "stall")
    wait_for_line(proc)
    dog, inbox = watch(
        channel, HangOptions(init_timeout=60, calibration=knobs, **FAST), calibration=prior
    )
    try:
        assert inbox.arrived.wait(5)
    finally:
        dog.stop()
    detail = dict(inbox.events[0].finding.detail)
    assert detail["timeout_from"] == "calibrated" and detail["timeout_s"] == 0.5


def test_a_stack_collector_adds_evidence_and_can_name_the_suspect(channel, spawn) -> None:
    a = spawn("3", "0.01", "stall", rank=0)
    b = spawn("3", "0.01", "stall", rank=1)
    wait_for_line(a)
    wait_for_line(b)
    time.sleep(0.6)  # both past the timeout before the first poll
    calls = []

    def collect(pids, stalled):
        calls.append((dict(pids), sorted(stalled)))
        return {"stacks": {"0": "...", "1": "..."}, "suspects": [1]}

    dog, inbox = watch(channel, HangOptions(hang_timeout=0.5, **FAST), collect_stacks=collect)
    try:
        assert inbox.arrived.wait(5)
    finally:
        dog.stop()
    assert calls == [({0: a.pid, 1: b.pid}, [0, 1])]
    detail = dict(inbox.events[0].finding.detail)
    assert detail["rank"] == 1 and detail["named_by"] == "stacks"
    assert detail["stacks"] == {"0": "...", "1": "..."}


def slot(rank: int, beat_s: float, state=SlotState.RUNNING, step: int = 5, phase: str = "") -> Slot:
    return Slot(rank, 100 + rank, state, step, int(beat_s * 1e9), -1, 0, phase)


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
    import os

    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(2**22 + 12345)


def test_log_silence_fires_once_after_the_timeout() -> None:
    last = [time.monotonic()]
    inbox = Inbox()
    dog = LogSilenceWatchdog(lambda: last[0], timeout=0.5, poll=0.05)
    dog.start(inbox, time.monotonic)
    try:
        for _ in range(8):  # output keeps arriving: no finding
            time.sleep(0.1)
            last[0] = time.monotonic()
        assert inbox.events == []
        assert inbox.arrived.wait(3)
        time.sleep(0.3)
    finally:
        dog.stop()
    (event,) = inbox.events
    assert event.finding.kind == "log_silence" and event.finding.exit_code is ExitCode.HANG
    assert event.finding.detail["silent_for_s"] > 0.5


def test_a_broken_channel_is_reported_not_swallowed(tmp_path) -> None:
    chan = Channel.create(str(tmp_path / "chan"), slots=1)
    chan.close()  # reading a closed mapping raises inside the thread
    dog, inbox = watch(chan, HangOptions(**FAST))
    try:
        assert inbox.arrived.wait(3)
    finally:
        dog.stop()
    assert inbox.events[0].finding.kind == "watchdog_error"
