"""`supervise report` over ledgers written by real supervised runs, on disk and on S3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor.gang import records
from supervisor.gang.records import AttemptStart, PhaseTimes, Progress, Verdict
from supervisor.storage.ledger import FsLedger
from tests.conftest import SUPERVISE
from tests.storage.conftest import s3_server  # noqa: F401  (the S3 API server fixture)

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(ROOT / "examples" / "train.py"), "--steps", "400"]


def _supervise(tmp_path: Path, ckpt: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            SUPERVISE,
            "--termination-log",
            os.devnull,
            "--event-log",
            str(tmp_path / name),
            "--checkpoint-dir",
            str(ckpt),
            "--",
            *TRAIN,
            "--checkpoint-every",
            "50",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_commit(events: Path, timeout: float = 60) -> None:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if events.exists() and '"checkpoint_committed"' in events.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint commit within {timeout} s")


def _report(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SUPERVISE, "report", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture(scope="module")
def preempted_then_finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run told to leave after its first commit, then resumed to the end by a new pod."""
    tmp_path = tmp_path_factory.mktemp("run")
    ckpt = tmp_path / "ckpt"
    first = _supervise(tmp_path, ckpt, "events-1")
    _wait_for_commit(tmp_path / "events-1")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 85
    time.sleep(1.0)  # the gap between the two pods: downtime
    second = _supervise(tmp_path, ckpt, "events-2")
    assert second.wait(timeout=120) == 0
    return ckpt


def test_the_report_of_a_preempted_and_resumed_run_adds_up(preempted_then_finished: Path):
    done = _report(str(preempted_then_finished), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["format"] == "supervise-report" and report["version"] == 1
    assert [a["class"] for a in report["attempts"]] == ["PREEMPTED", "SUCCEEDED"]
    assert report["lanes"] == ["node 0"]
    assert sum(report["buckets"].values()) == pytest.approx(report["total_s"], abs=0.01)
    assert report["total_s"] == pytest.approx(report["wall_s"], abs=0.01)  # one node
    assert 0 < report["goodput"] < 1
    assert report["goodput"] == pytest.approx(
        report["buckets"]["productive"] / report["total_s"], abs=1e-4
    )
    assert report["buckets"]["downtime"] >= 1.0  # the pause between the pods
    assert report["by_cause"]["PREEMPTED"]["downtime"] == report["buckets"]["downtime"]
    assert report["interruptions"]["count"] == 1
    assert report["interruptions"]["by_class"] == {"PREEMPTED": 1}
    first, second = report["attempts"]
    assert second["resume_step"] is not None and second["resume_step"] > 0
    assert first["end"] <= second["start"]
    # The preempted pod wrote its verdict as it decided, and its end after its last save:
    # the attempt ends there, and the step it saved on the way out is the one resumed.
    ledger = preempted_then_finished / "_ledger"
    (early,) = (
        json.loads(p.read_text())
        for p in (ledger / "verdicts").glob("*.json")
        if json.loads(p.read_text())["name"] == "PREEMPTED"
    )
    (end,) = (json.loads(p.read_text()) for p in (ledger / "ended").glob("*.json"))
    assert end["id"] == early["id"] and end["wall"] >= early["wall"]
    assert first["end"] == pytest.approx(end["wall"], abs=1e-3)
    assert end["last_committed_step"] == second["resume_step"]
    # The same ledger named directly gives the same report.
    direct = json.loads(_report(str(preempted_then_finished / "_ledger"), "--json").stdout)
    assert direct["buckets"] == report["buckets"]


def test_the_text_report_names_goodput_buckets_and_causes(preempted_then_finished: Path):
    done = _report(str(preempted_then_finished))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(f"run ledger {preempted_then_finished}/_ledger\ngoodput ")
    assert "productive" in text and "downtime" in text
    assert "badput by cause" in text and "PREEMPTED" in text
    assert "interruptions: 1, one every" in text


def test_no_ledger_is_a_config_error_that_says_what_to_give(tmp_path: Path):
    done = _report(str(tmp_path))
    assert done.returncode == 81
    assert f"no run ledger at {tmp_path}" in done.stderr
    assert "--checkpoint-dir" in done.stderr


def _records() -> list[records.Record]:
    start = AttemptStart(id="pod-0.r0.a1.ab12", pod="pod-0", wall=1000.0, node_rank=0)
    progress = Progress(
        first_step=1,
        first_step_s=5.0,
        last_step=90,
        last_progress_s=90.0,
        steady_at_last_progress_s=80.0,
    )
    verdict = Verdict(
        id=start.id,
        pod="pod-0",
        wall=1100.0,
        name="SUCCEEDED",
        code=0,
        role=None,
        node_rank=0,
        started_wall=1000.0,
        times=PhaseTimes(5.0, 80.0, {"eval": 10.0}),
        progress=progress,
    )
    return [start, verdict]


def test_a_ledger_on_s3_reads_as_the_same_ledger_on_disk(tmp_path: Path, request):
    server = request.getfixturevalue("s3_server")
    bucket = server.bucket()
    remote = FsLedger(f"s3://{bucket}/run/_ledger", server.options())
    local = FsLedger(str(tmp_path / "_ledger"))
    for record in _records():
        for ledger in (remote, local):
            assert ledger.create(records.name_of(record), records.encode(record))
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    on_s3 = _report(f"s3://{bucket}/run", "--json", env=env)
    assert on_s3.returncode == 0, on_s3.stderr
    on_disk = json.loads(_report(str(tmp_path), "--json").stdout)
    from_s3 = json.loads(on_s3.stdout)
    assert from_s3.pop("ledger") == f"s3://{bucket}/run/_ledger"
    on_disk.pop("ledger")
    assert from_s3 == on_disk
    assert from_s3["buckets"]["eval"] == 10.0 and from_s3["goodput"] == 0.8
