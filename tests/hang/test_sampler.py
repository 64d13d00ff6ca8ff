"""The sampler: one read of a real channel per tick, fed to every watcher of an attempt.

Most tests turn the sampler by hand (`tick`) with a fake clock placed on the ranks' beats,
so time is exact and nothing sleeps. The last ones run the real thread against real
trainer processes, waiting on events with a bound, to show the thread delivers.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from supervisor.channel import Channel, Slot, SlotState, SlotWriter
from supervisor.core.clock import FakeClock
from supervisor.core.events import Attached, CheckpointCommitted, Event, Found
from supervisor.core.exitcodes import ExitCode
from supervisor.hang.options import HangOptions
from supervisor.hang.watchdog import HangWatcher
from supervisor.watch import steptime
from supervisor.watch.handshake import HandshakeWatcher
from supervisor.watch.sample import Sample
from supervisor.watch.sampler import Sampler
from supervisor.watch.steptime_watchdog import StepTimeWatcher


class Inbox:
    """A `report` for the loop's inbox: keeps events, and wakes a waiting test."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.arrived = threading.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.arrived.set()

    def findings(self) -> list:
        return [e.finding for e in self.events if isinstance(e, Found)]


def on_beat(channel: Channel, rank: int = 0) -> FakeClock:
    """A fake clock set to the instant rank `rank` last beat."""
    slot = channel.read_slot(rank)
    assert slot is not None
    return FakeClock(start=slot.beat_ns / 1e9)


@pytest.fixture
def chan(tmp_path: Path):
    channel = Channel.create(str(tmp_path / "channel"), slots=4)
    yield channel
    channel.close()


def test_one_tick_reads_the_channel_once_for_every_watcher(chan: Channel) -> None:
    writer = SlotWriter(chan, 0)
    writer.claim(pid=os.getpid())
    writer.beat(0)
    clock = on_beat(chan)
    inbox = Inbox()
    hang = HangWatcher(HangOptions(hang_timeout=5.0))
    sampler = Sampler(chan, [hang, HandshakeWatcher(), StepTimeWatcher(steptime.Config())])

    assert sampler.tick(inbox, clock.monotonic)
    assert inbox.events == [Attached(1, clock.monotonic())]

    writer.set_checkpoint(10, 0)
    clock.advance(4.0)
    assert sampler.tick(inbox, clock.monotonic)
    assert inbox.events[1:] == [CheckpointCommitted(10, 0, clock.monotonic())]

    clock.advance(1.5)  # 5.5 s since the last beat: the hang watcher reports, then is done
    assert sampler.tick(inbox, clock.monotonic)
    stall = inbox.events[-1]
    assert isinstance(stall, Found) and stall.at == clock.monotonic()
    assert stall.finding.exit_code is ExitCode.HANG
    assert stall.finding.detail["stalled_for_s"] == 5.5
    assert [w.name for w in sampler.watchers] == ["handshake", "step-time"]

    clock.advance(100)
    assert sampler.tick(inbox, clock.monotonic)
    assert len(inbox.events) == 3  # nothing new: no second stall, the same commit


def test_a_finding_is_stamped_when_it_is_reported_after_its_evidence(chan: Channel) -> None:
    writer = SlotWriter(chan, 0)
    writer.claim(pid=os.getpid())
    clock = on_beat(chan)

    def collect(pids, stalled):
        clock.advance(2.0)  # the stack dumps took two seconds
        return {"stacks": {}}

    hang = HangWatcher(HangOptions(init_timeout=1.0), collect_stacks=collect)
    clock.advance(1.5)
    inbox = Inbox()
    assert not Sampler(chan, [hang]).tick(inbox, clock.monotonic)  # hang done: none left
    (found,) = inbox.events
    assert isinstance(found, Found) and found.at == clock.monotonic()
    assert found.finding.detail["stalled_for_s"] == 1.5  # judged at the sample's time


def test_the_step_intervals_are_measured_once_for_the_hang_and_step_time_watchers(
    chan: Channel,
) -> None:
    writer = SlotWriter(chan, 0)
    writer.claim(pid=os.getpid())
    hang = HangWatcher(HangOptions(init_timeout=60))
    pace = StepTimeWatcher(steptime.Config())
    sampler = Sampler(chan, [hang, pace])
    clock = on_beat(chan)
    inbox = Inbox()
    for step in range(6):
        writer.beat(step)
        clock.advance(0.25)
        sampler.tick(inbox, clock.monotonic)
    # five intervals of real time between beats; both watchers saw exactly the same ones
    assert len(hang.calibration.intervals) == 5
    assert pace.pace(0).baseline == hang.calibration.intervals
    assert inbox.events == []


class Broken:
    name = "broken"
    done = False

    def observe(self, sample: Sample) -> list:
        raise RuntimeError("bug")


def test_a_watcher_that_raises_is_reported_and_dropped_and_the_others_carry_on(
    chan: Channel,
) -> None:
    SlotWriter(chan, 1).claim(pid=os.getpid())
    clock = on_beat(chan, 1)
    inbox = Inbox()
    sampler = Sampler(chan, [Broken(), HandshakeWatcher()])
    assert sampler.tick(inbox, clock.monotonic)
    broken, attached = inbox.events
    assert isinstance(broken, Found)
    assert (broken.finding.source, broken.finding.kind) == ("broken", "watchdog_error")
    assert "RuntimeError('bug')" in broken.finding.summary
    assert attached == Attached(1, clock.monotonic())
    assert [w.name for w in sampler.watchers] == ["handshake"]


def test_handshake_reports_attach_once_and_each_newer_commit_once() -> None:
    watcher = HandshakeWatcher()

    def sample(now: float, *ckpts: tuple[int, int, bool]) -> Sample:
        slots = tuple(
            Slot(rank, 100 + rank, SlotState.RUNNING, 5, 0, step, ack, "", peer)
            for rank, (step, ack, peer) in enumerate(ckpts)
        )
        return Sample(slots, now)

    assert watcher.observe(Sample((), 1.0)) == []  # nobody attached yet
    assert watcher.observe(sample(2.0, (-1, 0, False), (-1, 0, False))) == [Attached(2, 2.0)]
    assert watcher.observe(sample(3.0, (-1, 0, False), (-1, 0, False))) == []
    # rank 0 commits step 40 for request 3; rank 1 reports the same commit later
    assert watcher.observe(sample(4.0, (40, 3, False), (-1, 0, False))) == [
        CheckpointCommitted(40, 3, 4.0)
    ]
    assert watcher.observe(sample(5.0, (40, 3, False), (40, 3, False))) == []
    assert watcher.observe(sample(6.0, (50, 3, True), (40, 3, False))) == [
        CheckpointCommitted(50, 3, 6.0, for_peer=True)
    ]
    assert not watcher.done


# ------------------------------------------------------------------ the real thread


def test_the_thread_reports_a_real_stalled_trainer_and_stops_promptly(channel, spawn) -> None:
    steady = spawn("1000", "0.02", "finish", rank=0)
    stalled = spawn("5", "0.02", "stall", "train", rank=1)
    assert "stepped" in stalled.stdout.readline()
    inbox = Inbox()
    sampler = Sampler(channel, [HangWatcher(HangOptions(hang_timeout=1.0))], interval=0.05)
    sampler.start(inbox, time.monotonic)
    sampler.start(inbox, time.monotonic)  # idempotent: still one thread
    try:
        assert inbox.arrived.wait(10), "no hang reported"
    finally:
        started = time.monotonic()
        sampler.stop()
        sampler.stop()
        assert time.monotonic() - started < 1.0
    (found,) = inbox.events
    assert isinstance(found, Found)
    detail = found.finding.detail
    assert (detail["rank"], detail["pid"], detail["step"], detail["phase"]) == (
        1,
        stalled.pid,
        4,
        "train",
    )
    assert 1.0 < detail["stalled_for_s"] < 5.0
    assert steady.poll() is None  # the healthy rank was left alone


def test_an_unreadable_channel_is_reported_once_by_the_thread(tmp_path: Path) -> None:
    chan = Channel.create(str(tmp_path / "chan"), slots=1)
    chan.close()  # reading a closed mapping raises inside the thread
    inbox = Inbox()
    sampler = Sampler(chan, [HandshakeWatcher()], interval=0.01)
    sampler.start(inbox, time.monotonic)
    try:
        assert inbox.arrived.wait(5)
    finally:
        sampler.stop()
    (found,) = inbox.events
    assert isinstance(found, Found)
    assert (found.finding.source, found.finding.kind) == ("channel", "watchdog_error")
    assert "handshake" in found.finding.summary
