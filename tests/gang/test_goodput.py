"""The goodput report's arithmetic, from ledger records encoded as supervise writes them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from supervisor.gang import goodput, records
from supervisor.gang.records import (
    AttemptStart,
    CommitMark,
    PeerRef,
    PhaseTimes,
    Progress,
    Role,
    Verdict,
)


def view(*items: records.Record) -> records.LedgerView:
    """The ledger as a reader sees it: every record encoded, listed and decoded."""
    return records.LedgerView.read({records.name_of(r): records.encode(r) for r in items})


def attempt(pod: str, wall: float, rank: int | None = 0, resume: int | None = None, n=1):
    key = records.attempt_id(pod, 0, n, "ab")
    return AttemptStart(id=key, pod=pod, wall=wall, node_rank=rank, resume_step=resume)


def ended(start: AttemptStart, wall: float, name: str, *, times, progress, **more) -> Verdict:
    codes = {"SUCCEEDED": 0, "PREEMPTED": 85, "DEVICE_FAILED": 82, "PEER_LEFT": 87, "HANG": 84}
    return Verdict(
        id=start.id,
        pod=start.pod,
        wall=wall,
        name=name,
        code=codes[name],
        role=None if name == "SUCCEEDED" else Role.CAUSE,
        node_rank=start.node_rank,
        started_wall=start.wall,
        times=times,
        progress=progress,
        **more,
    )


def assert_adds_up(report: goodput.Report) -> None:
    assert sum(report.buckets.values()) == pytest.approx(report.total_s, abs=0.01)
    for span in report.spans:
        assert sum(span.buckets.values()) == pytest.approx(span.end - span.start, abs=1e-6)


def test_one_attempt_that_succeeds_keeps_every_step():
    a = attempt("pod-a", 100.0)
    v = ended(
        a,
        200.0,
        "SUCCEEDED",
        times=PhaseTimes(init_s=10, steady_s=80, phases_s={"checkpoint": 5}),
        progress=Progress(
            first_step=1,
            first_step_s=10,
            last_step=800,
            last_progress_s=95,
            steady_at_last_progress_s=80,
        ),
    )
    report = goodput.report(view(a, v))
    assert report is not None
    assert report.buckets["productive"] == 80
    assert report.buckets["init"] == 10
    assert report.buckets["checkpoint"] == 5
    assert report.buckets["teardown"] == 5
    assert report.goodput == pytest.approx(0.8)
    assert report.by_cause == {
        "start": {"init": 10},
        "routine": {"checkpoint": 5},
        "exit": {"teardown": 5},
    }
    assert report.interruptions.count == 0 and report.interruptions.mtbi_s is None
    assert_adds_up(report)


def test_a_preempted_attempt_loses_the_steps_after_the_commit_the_next_one_resumed_from():
    a1 = attempt("pod-a", 0.0)
    v1 = ended(
        a1,
        100.0,
        "PREEMPTED",
        times=PhaseTimes(init_s=10, steady_s=80),
        progress=Progress(
            first_step=1,
            first_step_s=10,
            last_step=80,
            last_progress_s=80,
            steady_at_last_progress_s=70,
            commits=(CommitMark(50, 55.0, 40.0),),
        ),
    )
    a2 = attempt("pod-b", 130.0, resume=50)
    v2 = ended(
        a2,
        230.0,
        "SUCCEEDED",
        times=PhaseTimes(init_s=5, steady_s=85, phases_s={"restore": 5}),
        progress=Progress(
            first_step=51,
            first_step_s=10,
            last_step=200,
            last_progress_s=95,
            steady_at_last_progress_s=85,
        ),
    )
    report = goodput.report(view(a1, v1, a2, v2))
    assert report is not None
    assert report.lanes == ("node 0",)
    first, _ = report.spans
    assert first.buckets == {
        "init": 10,
        "productive": 40,
        "lost": 30,
        "stalled": 10,
        "teardown": 10,
    }
    assert first.kept_step == 50 and first.lost == (55.0, 80.0) and first.stalled_from == 80.0
    assert first.commits == ((50, 55.0),)
    assert report.gaps == (goodput.Gap("node 0", 100.0, 130.0, "PREEMPTED"),)
    assert report.buckets["productive"] == 125
    assert report.by_cause["PREEMPTED"] == {
        "downtime": 30,
        "init": 5,
        "lost": 30,
        "restore": 5,
        "stalled": 10,
        "teardown": 10,
    }
    assert report.goodput == pytest.approx(125 / 230)
    assert report.interruptions.count == 1
    assert report.interruptions.by_class == {"PREEMPTED": 1}
    assert report.interruptions.mtbi_s == 230
    assert_adds_up(report)


def test_a_peer_that_left_charges_its_badput_to_the_incident_s_cause_and_is_not_counted():
    a0, a1 = attempt("pod-0", 0.0, rank=0), attempt("pod-1", 2.0, rank=1)
    steps = Progress(
        first_step=1,
        first_step_s=5,
        last_step=30,
        last_progress_s=40,
        steady_at_last_progress_s=35,
        commits=(CommitMark(20, 30.0, 25.0),),
    )
    gpu = {"source": "gpu", "kind": "xid", "class": "DEVICE_FAILED", "gpu_uuid": "GPU-7"}
    v1 = ended(
        a1,
        50.0,
        "DEVICE_FAILED",
        times=PhaseTimes(5, 35),
        progress=steps,
        evidence=(gpu,),
        node="node-b",
    )
    peer = PeerRef(via="verdict", id=a1.id, pod="pod-1", node_rank=1, name="DEVICE_FAILED")
    v0 = ended(
        a0, 52.0, "PEER_LEFT", times=PhaseTimes(5, 37), progress=steps, peer=peer, node="node-a"
    )
    report = goodput.report(view(a0, a1, v0, v1))
    assert report is not None
    assert report.lanes == ("node 0", "node 1")
    assert report.spans[1].gpus == ("GPU-7",)
    assert set(report.by_cause) == {"start", "DEVICE_FAILED"}
    assert report.by_cause["start"]["downtime"] == 2.0  # node 1 started 2 s after node 0
    assert report.interruptions.count == 1
    assert report.interruptions.by_node == {"node-b": 1}
    assert report.interruptions.by_gpu == {"GPU-7": 1}
    # neither lane has a next attempt: each keeps up to its own last commit (step 20)
    assert [s.kept_step for s in report.spans] == [None, None]
    assert_adds_up(report)


def test_a_verdict_written_early_ends_where_its_pod_wrote_the_end_record():
    # A preempted pod writes its verdict when it decides, then saves and stops its tree:
    # the `ended` record has the real end and the save, which the run then keeps.
    a1 = attempt("pod-a", 0.0)
    steps = Progress(
        first_step=1,
        first_step_s=10,
        last_step=80,
        last_progress_s=80,
        steady_at_last_progress_s=70,
        commits=(CommitMark(50, 55.0, 40.0),),
    )
    early = ended(
        a1, 90.0, "PREEMPTED", times=PhaseTimes(10, 70), progress=steps, last_committed_step=50
    )
    saved = replace(steps, commits=(*steps.commits, CommitMark(80, 85.0, 70.0)))
    at_exit = records.Ended.of(
        early,
        wall=96.0,
        times=PhaseTimes(10, 70, {"checkpoint": 5}),
        last_committed_step=80,
        progress=saved,
    )
    report = goodput.report(view(a1, early, at_exit))
    assert report is not None
    (span,) = report.spans
    assert span.end == 96.0 and span.kept_step == 80
    assert span.buckets == {"init": 10, "checkpoint": 5, "productive": 70, "teardown": 11}
    without = goodput.report(view(a1, early))  # its pod died before the end record
    assert without is not None and without.spans[0].end == 90.0
    assert without.spans[0].kept_step == 50
    assert_adds_up(report)


def test_a_peer_left_naming_no_peer_is_charged_to_the_nearest_failure_on_another_lane():
    # A pod that left with the gang through the checkpoint agreement knows only that a
    # peer was told to leave; the report finds the peer's verdict for it.
    a0, a1 = attempt("pod-0", 0.0, rank=0), attempt("pod-1", 0.0, rank=1)
    early = attempt("pod-2", 0.0, rank=2)
    times = PhaseTimes(5, 30)
    v1 = ended(a1, 40.0, "PREEMPTED", times=times, progress=None)
    v2 = ended(early, 10.0, "HANG", times=PhaseTimes(5, 4), progress=None)
    v0 = ended(a0, 41.5, "PEER_LEFT", times=times, progress=None)
    report = goodput.report(view(a0, a1, early, v0, v1, v2))
    assert report is not None
    assert [s.cause for s in report.spans] == ["PREEMPTED", "PREEMPTED", "HANG"]
    assert "PEER_LEFT" not in report.by_cause
    alone = goodput.report(view(a0, v0))  # no failure anywhere else: it stays PEER_LEFT
    assert alone is not None and alone.spans[0].cause == "PEER_LEFT"
    assert_adds_up(report)


def test_an_attempt_with_no_verdict_is_unknown_until_its_lane_goes_on():
    a1 = attempt("pod-a", 0.0)
    a2 = attempt("pod-b", 60.0, resume=0)
    v2 = ended(
        a2,
        100.0,
        "SUCCEEDED",
        times=PhaseTimes(5, 30),
        progress=Progress(last_step=10, steady_at_last_progress_s=30),
    )
    report = goodput.report(view(a1, a2, v2))
    assert report is not None
    assert report.spans[0].name is None and report.spans[0].buckets == {"unknown": 60.0}
    assert report.by_cause["unknown"] == {"init": 5, "unknown": 60.0}
    assert_adds_up(report)


def test_more_time_charged_than_the_attempt_had_gives_way_from_teardown_and_stalls():
    a1 = attempt("pod-a", 0.0)
    a2 = attempt("pod-b", 95.0, resume=0)  # began before the first one's verdict at 100
    v1 = ended(
        a1,
        100.0,
        "HANG",
        times=PhaseTimes(10, 88),
        progress=Progress(last_step=9, steady_at_last_progress_s=8),
    )
    v2 = ended(
        a2,
        120.0,
        "SUCCEEDED",
        times=PhaseTimes(1, 10),
        progress=Progress(last_step=20, steady_at_last_progress_s=10),
    )
    report = goodput.report(view(a1, v1, a2, v2))
    assert report is not None
    first = report.spans[0]
    assert first.end == 95.0
    assert first.buckets["stalled"] == pytest.approx(80 - 3)  # 3 s gave way, from stalls
    assert_adds_up(report)


def test_a_verdict_without_progress_splits_its_steps_evenly():
    a1 = attempt("pod-a", 0.0, resume=100)
    v1 = ended(
        a1,
        60.0,
        "PREEMPTED",
        times=PhaseTimes(10, 40),
        progress=None,
        last_steps={0: 200},
        last_committed_step=150,
    )
    a2 = attempt("pod-b", 60.0, resume=150)
    report = goodput.report(view(a1, v1, a2))
    assert report is not None
    assert report.spans[0].buckets["productive"] == pytest.approx(20)
    assert report.spans[0].buckets["lost"] == pytest.approx(20)


def test_step_time_pools_the_attempts_and_names_the_slow_one():
    def run(pod, wall, mean, count):
        a = attempt(pod, wall)
        progress = Progress(
            last_step=count,
            steady_at_last_progress_s=1,
            step_time_mean_s=mean,
            step_time_stdev_s=0.0,
            step_time_count=count,
        )
        return a, ended(a, wall + 10, "SUCCEEDED", times=PhaseTimes(1, 1), progress=progress)

    report = goodput.report(view(*run("pod-a", 0, 0.1, 300), *run("pod-b", 20, 0.2, 100)))
    assert report is not None
    assert report.step_time.count == 400
    assert report.step_time.mean_s == pytest.approx(0.125)
    assert report.step_time.stdev_s == pytest.approx(
        (0.75 * 0.025**2 + 0.25 * 0.075**2) ** 0.5, abs=1e-6
    )
    assert [key.split(".")[0] for key, _ in report.step_time.slow] == ["pod-b"]


def test_an_empty_ledger_has_no_report():
    assert goodput.report(view()) is None
