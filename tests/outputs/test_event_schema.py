"""The event log is one documented schema: every line of real runs is checked against the
output registry (the README's table is generated from it), and the facts that must agree
across events do (attempt numbers, resume steps, evidence order)."""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path

from supervisor.core.events import Source
from supervisor.core.exitcodes import ExitCode
from supervisor.core.outputs import REGISTRY
from tests.process.runs import events, finish, supervised, termination, wait_for_line

ENVELOPE = {"time", "mono", "source", "event"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CLASSES = {code.name for code in ExitCode}

STORAGE_DIES = """
import torch, supervisor
supervisor.attach().step(1)
supervisor.CheckpointStore("/proc/no-such-dir").save(1, {"w": torch.ones(1)})
"""


def check_finding(finding: dict) -> None:
    assert {"source", "kind", "summary"} <= finding.keys(), finding
    assert finding["source"] in {s.value for s in Source}, finding
    assert finding.get("class", "SUCCEEDED") in CLASSES, finding


def check_line(record: dict) -> None:
    """One event line against the registry: the envelope, then exactly the declared keys."""
    assert record.keys() >= ENVELOPE, record
    assert record["source"] == "supervise", record
    assert TIME.match(record["time"]) and isinstance(record["mono"], float), record
    output = REGISTRY[record["event"]]
    assert record.keys() - ENVELOPE == set(output.keys or output._fields), record
    if record["event"] == "finding":
        check_finding(record["finding"])
    if record["event"] == "exit":
        for finding in record["evidence"]:
            check_finding(finding)


def check_run(log: list[dict], term: dict) -> None:
    for record in log:
        check_line(record)
    started = [e["attempt"] for e in log if e["event"] == "started"]
    assert started == list(range(1, len(started) + 1))
    assert started == [e["attempt"] for e in log if e["event"] == "child_started"]
    ended = [e["attempt"] for e in log if e["event"] == "restart_scheduled"]
    assert ended == started[:-1]  # each restart names the attempt that ended
    exit_event = log[-1]
    assert exit_event["event"] == "exit"
    assert exit_event["evidence"] == term["evidence"]  # one order, one shape
    assert exit_event["exitCode"] == term["exitCode"]


def test_a_preempted_run_and_its_resumption_follow_the_schema(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = supervised(ckpt, tmp_path, "first", "--grace-period", "20")
    wait_for_line(first, b"step    50")
    first.send_signal(signal.SIGTERM)
    assert finish(first) == 85
    log = events(tmp_path, "first")
    check_run(log, termination(tmp_path, "first"))
    assert [e["resume_step"] for e in log if e["event"] == "started"] == [None]
    committed = next(e["step"] for e in log if e["event"] == "checkpoint_committed")
    assert any(e["event"] == "finding" and e["finding"]["kind"] == "external_signal" for e in log)

    second = supervised(ckpt, tmp_path, "second")
    assert finish(second) == 0
    log = events(tmp_path, "second")
    check_run(log, termination(tmp_path, "second"))
    assert [e["resume_step"] for e in log if e["event"] == "started"] == [committed]


def test_a_stop_names_the_signal_sent_and_restarts_count_from_one(tmp_path: Path) -> None:
    script = tmp_path / "dies.py"
    script.write_text(STORAGE_DIES)
    command = [sys.executable, str(script)]
    run = supervised(
        tmp_path / "ckpt", tmp_path, "restarts", "--max-restarts", "1", command=command
    )
    assert finish(run) == ExitCode.INFRA_FAILED.code
    check_run(events(tmp_path, "restarts"), termination(tmp_path, "restarts"))

    sleeper = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    stopped = supervised(tmp_path / "ckpt", tmp_path, "stopped", command=sleeper)
    wait_for_line(stopped, b"up")
    time.sleep(0.2)
    stopped.send_signal(signal.SIGINT)
    assert finish(stopped) == 85
    log = events(tmp_path, "stopped")
    check_run(log, termination(tmp_path, "stopped"))
    stopping = next(e for e in log if e["event"] == "stopping")
    assert stopping["signal"] == "SIGINT"  # what the child was sent, by name
