"""Where an attempt's time went and how far its steps got, from hand-built samples: no
threads, no sleeps."""

from __future__ import annotations

import statistics

import pytest

from supervisor.channel import Slot, SlotState
from supervisor.gang import goodput, records
from supervisor.run.gang import facts
from supervisor.watch.phases import KEPT_COMMITS, Commit, PhaseClock
from supervisor.watch.sample import Sample, StepInterval


def slot(
    rank: int,
    step: int,
    phase: str = "",
    state=SlotState.RUNNING,
    *,
    ckpt: int = -1,
    beat: float = 1e6,  # the beat's monotonic seconds: after every clock's `since` here
    pid: int | None = None,
) -> Slot:
    pid = 100 + rank if pid is None else pid
    return Slot(rank, pid, state, step, round(beat * 1e9), ckpt, 0, phase)


def feed(clock: PhaseClock, *samples: tuple[float, tuple[Slot, ...]]) -> None:
    for now, slots in samples:
        assert clock.observe(Sample(slots, now)) == ()


def test_time_goes_to_init_then_steady_then_the_named_phase() -> None:
    clock = PhaseClock()
    feed(
        clock,
        (10.0, (slot(0, -1), slot(1, -1))),
        (12.0, (slot(0, -1), slot(1, -1))),  # still loading: init
        (13.0, (slot(0, 0), slot(1, -1))),  # the first step lands in this interval: init
        (16.0, (slot(0, 5), slot(1, 5))),  # steady
        (18.0, (slot(0, 5, "eval"), slot(1, 6))),  # one rank evaluates: the gang waits
        (19.0, (slot(0, 6, "checkpoint"), slot(1, 6, "eval"))),  # the lowest rank's phase
    )
    times = clock.times()
    assert times.init_s == 3.0
    assert times.steady_s == 3.0
    assert times.phases_s == {"eval": 2.0, "checkpoint": 1.0}


def test_time_after_every_rank_finished_is_not_charged() -> None:
    clock = PhaseClock()
    done = (slot(0, 9, state=SlotState.FINISHED),)
    feed(clock, (0.0, (slot(0, 1),)), (1.0, (slot(0, 2),)), (2.0, (slot(0, 3),)), (9.0, done))
    # The first sample already shows a step: without `since` there is no earlier time to
    # charge to init.
    assert clock.times().steady_s == 2.0
    assert clock.times().init_s == 0.0


def test_a_phase_before_the_first_step_is_that_phase_not_init() -> None:
    clock = PhaseClock(since=100.0)
    feed(
        clock,
        (101.0, (slot(0, -1),)),  # imports, rendezvous: init, from the attempt's start
        (104.0, (slot(0, -1, "restore"),)),  # loading the checkpoint
        (105.0, (slot(0, -1, "init"),)),  # a phase named init is init
        (106.0, (slot(0, 41),)),  # the first step (resumed at 40) lands here: init
        (108.0, (slot(0, 45),)),
    )
    times = clock.times()
    assert (times.init_s, times.steady_s, dict(times.phases_s)) == (3.0, 2.0, {"restore": 3.0})
    progress = clock.progress()
    assert progress is not None
    assert (progress.first_step, progress.first_step_s) == (41, 6.0)
    assert (progress.last_step, progress.last_progress_s) == (45, 8.0)


def test_nothing_is_known_before_the_first_sample() -> None:
    clock = PhaseClock(since=5.0)
    assert clock.progress() is None and clock.account() is None
    feed(clock, (5.5, (slot(0, -1),)))
    progress = clock.progress()
    assert progress is not None and progress.first_step is None and progress.commits == ()
    assert progress.step_time_mean_s is None and progress.step_time_count == 0


def test_each_newer_commit_is_marked_with_the_steady_time_run_by_then() -> None:
    clock = PhaseClock(since=0.0)
    feed(
        clock,
        (1.0, (slot(0, 0), slot(1, 0))),  # init
        (3.0, (slot(0, 10), slot(1, 10))),  # 2 s steady
        (4.0, (slot(0, 10, "checkpoint"), slot(1, 10, "checkpoint"))),
        (4.5, (slot(0, 11, ckpt=10), slot(1, 11))),  # the first rank to report it counts
        (5.0, (slot(0, 12, ckpt=10), slot(1, 12, ckpt=10))),  # the same commit: no mark
        (7.0, (slot(0, 20, ckpt=10), slot(1, 20, ckpt=20))),
        (8.0, (slot(0, 22, ckpt=20), slot(1, 22, ckpt=20))),
    )
    progress = clock.progress()
    assert progress is not None
    assert progress.commits == (Commit(10, 4.5, 2.5), Commit(20, 7.0, 5.0))
    assert clock.times().phases_s == {"checkpoint": 1.0}
    account = clock.account()
    assert account is not None and account.elapsed_s == 8.0
    assert account.buckets() == {
        "init": 1.0,
        "checkpoint": 1.0,
        "committed": 5.0,
        "uncommitted": 1.0,
        "stalled": 0.0,
    }
    assert account.goodput == pytest.approx(5.0 / 8.0)


def test_only_the_newest_commit_marks_are_kept() -> None:
    clock = PhaseClock(since=0.0)
    total = KEPT_COMMITS + 10
    feed(clock, *((float(i + 1), (slot(0, i, ckpt=i),)) for i in range(total)))
    progress = clock.progress()
    assert progress is not None and len(progress.commits) == KEPT_COMMITS
    assert progress.commits[0].step == total - KEPT_COMMITS
    assert progress.commits[-1] == Commit(total - 1, float(total), float(total - 1))
    assert records.MAX_COMMIT_MARKS == KEPT_COMMITS  # what a verdict may carry


def test_steady_time_after_the_last_step_is_stalled() -> None:
    clock = PhaseClock(since=0.0)
    feed(
        clock,
        (1.0, (slot(0, 0), slot(1, 0))),
        (2.0, (slot(0, 5, ckpt=5), slot(1, 5))),
        (4.0, (slot(0, 9), slot(1, 9))),  # rank 1's last step
        (5.0, (slot(0, 10), slot(1, 9))),  # rank 0's last step: progress still
        (6.0, (slot(0, 10), slot(1, 9))),  # a hang: both running, no step
        (9.0, (slot(0, 10), slot(1, 9))),
    )
    progress = clock.progress()
    assert progress is not None
    assert (progress.last_step, progress.last_progress_s) == (10, 5.0)
    assert progress.steady_at_last_progress_s == 4.0
    account = clock.account()
    assert account is not None
    buckets = account.buckets()
    assert (buckets["committed"], buckets["uncommitted"], buckets["stalled"]) == (1.0, 3.0, 4.0)
    assert sum(buckets.values()) == pytest.approx(account.elapsed_s)


def test_a_rank_restarted_within_the_attempt_makes_progress_again_from_lower_steps() -> None:
    clock = PhaseClock(since=0.0)
    feed(
        clock,
        (1.0, (slot(0, 50),)),
        (2.0, (slot(0, 50),)),  # it died
        (3.0, (slot(0, -1, pid=999),)),  # a new process in its slot (torchrun restarted it)
        (4.0, (slot(0, 41, pid=999),)),
    )
    progress = clock.progress()
    assert progress is not None
    assert (progress.last_step, progress.last_progress_s) == (50, 4.0)


def test_step_time_is_welford_over_the_measured_intervals() -> None:
    seconds = [0.11, 0.09, 0.1, 0.25, 0.1, 0.105, 0.098, 0.3, 0.1, 0.1]
    clock = PhaseClock(since=0.0)
    for i in range(0, len(seconds), 3):  # a few intervals per sample, as from several ranks
        batch = seconds[i : i + 3]
        ranks = tuple(slot(r, i + 1) for r in range(len(batch)))
        intervals = tuple(StepInterval(s, x) for s, x in zip(ranks, batch, strict=True))
        clock.observe(Sample(ranks, float(i + 1), intervals))
    progress = clock.progress()
    assert progress is not None and progress.step_time_count == len(seconds)
    assert progress.step_time_mean_s == pytest.approx(statistics.mean(seconds), abs=1e-6)
    assert progress.step_time_stdev_s == pytest.approx(statistics.stdev(seconds), abs=1e-6)


def test_one_interval_has_a_mean_and_no_deviation() -> None:
    clock = PhaseClock(since=0.0)
    ranks = (slot(0, 3),)
    clock.observe(Sample(ranks, 1.0, (StepInterval(ranks[0], 0.2),)))
    progress = clock.progress()
    assert progress is not None
    assert (progress.step_time_mean_s, progress.step_time_stdev_s) == (0.2, None)


def test_a_restart_in_place_does_not_inherit_the_last_attempt_s_slots() -> None:
    """The channel outlives an attempt: until each new rank attaches, its slot still holds
    the old rank's steps, commit and beat. The new clock ignores beats before its start."""
    old = (slot(0, 80, ckpt=80, beat=40.0), slot(1, 80, ckpt=80, beat=40.5))
    clock = PhaseClock(since=50.0)
    feed(
        clock,
        (50.2, old),
        (51.0, (slot(0, -1, beat=50.9, pid=300), old[1])),  # rank 0 attached; 1 not yet
        (52.0, (slot(0, -1, "restore", beat=51.5, pid=300), slot(1, -1, beat=51.2, pid=301))),
        (53.0, (slot(0, 81, beat=53.0, pid=300), slot(1, 81, beat=53.0, pid=301))),
        (54.0, (slot(0, 85, ckpt=85, beat=54.0, pid=300), slot(1, 85, beat=54.0, pid=301))),
    )
    times = clock.times()
    assert (times.init_s, times.steady_s, dict(times.phases_s)) == (2.0, 1.0, {"restore": 1.0})
    progress = clock.progress()
    assert progress is not None
    assert (progress.first_step, progress.first_step_s, progress.last_step) == (81, 3.0, 85)
    assert progress.commits == (Commit(85, 4.0, 1.0),)
    # The verdict's facts read the channel the same way.
    kept = facts(clock.current(old), clock.times(), progress)
    assert kept.last_steps == {} and kept.last_committed_step is None


def test_a_verdict_carries_what_the_clock_measured_and_the_report_splits_it() -> None:
    """From samples to the ledger's bytes to `supervise report`'s buckets: the offsets are
    seconds from the attempt's start, on the same clock as its wall time."""
    clock = PhaseClock(since=1000.0)
    feed(
        clock,
        (1002.0, (slot(0, -1, "restore"),)),
        (1003.0, (slot(0, 1),)),  # init 1 s
        (1013.0, (slot(0, 100, ckpt=100),)),  # 10 s steady, then committed
        (1018.0, (slot(0, 150),)),  # 5 s of steps the next attempt redoes
        (1021.0, (slot(0, 150),)),  # 3 s hung
    )
    made = facts(clock.current([slot(0, 150, ckpt=100)]), clock.times(), clock.progress())
    assert made.progress is not None and made.progress.commits == (
        records.CommitMark(100, 13.0, 10.0),
    )
    wall = 1.7e9
    start = records.AttemptStart(id="p.r0.a1.0a", pod="p", wall=wall, node_rank=0)
    verdict = records.Verdict(
        id=start.id,
        pod="p",
        wall=wall + 22.0,  # 1 s after the last sample: teardown
        name="HANG",
        code=85,
        role=records.Role.CAUSE,
        node_rank=0,
        started_wall=wall,
        last_steps=dict(made.last_steps),
        last_committed_step=made.last_committed_step,
        times=made.times,
        progress=made.progress,
    )
    again = records.AttemptStart(
        id="p.r0.a2.0b", pod="p", wall=wall + 30.0, node_rank=0, resume_step=100
    )
    objects = {records.name_of(r): records.encode(r) for r in (start, verdict, again)}
    report = goodput.report(records.LedgerView.read(objects))
    assert report is not None
    first = report.spans[0]
    assert dict(first.buckets) == pytest.approx(
        {
            "restore": 2.0,
            "init": 1.0,
            "productive": 10.0,
            "lost": 5.0,
            "stalled": 3.0,
            "teardown": 1.0,
        }
    )
    assert first.commits == ((100, wall + 13.0),)
    assert first.lost == (wall + 13.0, wall + 18.0)


def test_a_phase_named_like_a_bucket_keeps_its_own_bucket() -> None:
    clock = PhaseClock(since=0.0)
    feed(
        clock,
        (1.0, (slot(0, 1),)),
        (2.0, (slot(0, 1, "stalled"),)),  # a user's phase, not the stalled steps
        (3.0, (slot(0, 2),)),
    )
    account = clock.account()
    assert account is not None
    buckets = account.buckets()
    assert buckets["phase:stalled"] == 1.0 and buckets["stalled"] == 0.0
    assert buckets["uncommitted"] == 1.0
