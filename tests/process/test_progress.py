"""Each attempt's verdict carries its progress, measured by the real `supervise` around the
example trainer, and `supervise report` splits the run's time by it.

Two pods in turn over one checkpoint directory: the first trains from scratch to step 150,
the second resumes there (its load is the `restore` phase) and trains on to step 250. Both
save every 50 steps, each save and load stretched by `--checkpoint-time`.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

import supervisor
from supervisor.gang import records
from supervisor.storage.ledger import FsLedger
from tests.process.runs import TRAIN, events, finish, supervised

pytestmark = pytest.mark.slow

SAVE_S = 0.3  # --checkpoint-time: each save takes at least this long
STEP_S = 0.01


def _train(steps: int) -> list[str]:
    return [
        *(sys.executable, TRAIN, "--steps", str(steps), "--checkpoint-every", "50"),
        *("--step-time", str(STEP_S), "--checkpoint-time", str(SAVE_S)),
    ]


def _verdicts(ckpt: Path) -> list[records.Verdict]:
    ledger = FsLedger(str(ckpt / "_ledger"))
    objects = {name: ledger.read(name) for name in ledger.list(records.VERDICTS)}
    view = records.LedgerView.read(objects)
    return sorted((v for _, v in view.verdicts()), key=lambda v: v.wall)


@pytest.fixture(scope="module")
def two_pods(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("progress")
    ckpt = tmp / "ckpt"
    assert finish(supervised(ckpt, tmp, "first", command=_train(150))) == 0
    assert supervisor.CheckpointStore(str(ckpt)).steps() == [50, 100, 150]
    assert finish(supervised(ckpt, tmp, "second", command=_train(250))) == 0
    return ckpt, tmp


def test_each_verdict_carries_the_progress_of_its_attempt(two_pods: tuple[Path, Path]):
    ckpt, tmp = two_pods
    first, second = _verdicts(ckpt)
    assert first.progress is not None and second.progress is not None
    # The commits each attempt saw are the steps it saved, as on disk and in its event log.
    on_disk = supervisor.CheckpointStore(str(ckpt)).steps()  # the newest three are kept
    assert on_disk == [150, 200, 250]
    for verdict, name, saved in ((first, "first", [50, 100, 150]), (second, "second", [200, 250])):
        progress = verdict.progress
        assert progress is not None
        assert [mark.step for mark in progress.commits] == saved
        logged = [e["step"] for e in events(tmp, name) if e["event"] == "checkpoint_committed"]
        assert logged == saved
        assert verdict.last_committed_step == saved[-1]
        # Offsets from the attempt's start, on the clock of its start and verdict times.
        lasted = verdict.wall - (verdict.started_wall or 0.0)
        assert progress.first_step_s is not None and progress.last_progress_s is not None
        assert 0 < progress.first_step_s < progress.last_progress_s <= lasted
        marks = progress.commits
        assert all(
            a.at_s < b.at_s and a.steady_s <= b.steady_s for a, b in itertools.pairwise(marks)
        )
        assert marks[-1].at_s <= lasted + 0.1
        assert marks[-1].steady_s <= verdict.times.steady_s
        # The trainer stepped every 10 ms or so; a sleep never makes a step shorter.
        assert progress.step_time_count >= 5  # one interval per rank and look (0.1 s)
        assert progress.step_time_mean_s is not None and progress.step_time_mean_s >= STEP_S
        assert progress.step_time_stdev_s is not None
        # Every save sat in the `checkpoint` phase, not in steady steps.
        assert verdict.times.phases_s["checkpoint"] >= len(saved) * SAVE_S - 0.2
    # The first step seen is the one the first look (every 0.1 s) found: a few steps in.
    assert first.progress.first_step is not None and 1 <= first.progress.first_step < 30
    assert first.progress.last_step == 150
    assert "restore" not in first.times.phases_s
    assert second.progress.first_step is not None and 150 < second.progress.first_step < 180
    assert second.progress.last_step == 250
    assert second.times.phases_s["restore"] >= SAVE_S - 0.1  # loading is not init


def test_the_report_counts_the_steady_steps_of_both_as_productive(two_pods: tuple[Path, Path]):
    ckpt, _ = two_pods
    first, second = _verdicts(ckpt)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("supervise")), "report", str(ckpt), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    buckets = report["buckets"]
    assert [a["class"] for a in report["attempts"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert sum(buckets.values()) == pytest.approx(report["total_s"], abs=0.01)
    # Both succeeded: every steady second up to the last step is kept.
    steady = sum(v.progress.steady_at_last_progress_s for v in (first, second) if v.progress)
    assert buckets["productive"] == pytest.approx(steady, abs=0.01)
    assert 250 * STEP_S <= buckets["productive"] < report["total_s"]
    assert buckets.get("lost", 0) == 0
    assert buckets["checkpoint"] >= 5 * SAVE_S - 0.2
    assert buckets["restore"] == pytest.approx(second.times.phases_s["restore"], abs=0.01)
