"""`supervise checkpoint-now` against a real running supervise and real trainers.

Other runs of supervise may be live on this machine at the same time (other tests), so the
tests name theirs by PID, as an operator does where several run; finding the only live run
is tested on a directory of the test's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor.cli.checkpoint_now import find_run_dir
from supervisor.core.errors import ConfigError
from supervisor.core.exitcodes import ExitCode
from supervisor.run import requests, rundir
from supervisor.storage.backend import Storage
from supervisor.storage.reader import Reader
from tests.conftest import SUPERVISE

ROOT = Path(__file__).resolve().parents[2]

# Attached, beats every 50 ms, never looks at should_checkpoint; exits 0 after N steps.
DEAF = (
    "import sys, time, supervisor\n"
    "sup = supervisor.attach()\n"
    "for i in range(int(sys.argv[1])):\n"
    "    sup.step(i)\n"
    "    time.sleep(0.05)\n"
    "print('steps', i + 1, flush=True)\n"
)


def _start(tmp_path: Path, *command: str, ckpt: Path | None = None) -> subprocess.Popen:
    extra = ["--checkpoint-dir", str(ckpt)] if ckpt else []
    return subprocess.Popen(
        [
            SUPERVISE,
            "--termination-log",
            str(tmp_path / "term"),
            "--event-log",
            str(tmp_path / "events"),
            *extra,
            "--",
            *command,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _events(tmp_path: Path) -> list[dict]:
    path = tmp_path / "events"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for(tmp_path: Path, name: str, timeout: float = 30) -> dict:
    give_up = time.monotonic() + timeout
    while True:
        found = [e for e in _events(tmp_path) if e["event"] == name]
        if found:
            return found[0]
        if time.monotonic() >= give_up:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {name!r} event in {[e['event'] for e in _events(tmp_path)]}")


def _checkpoint_now(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SUPERVISE, "checkpoint-now", *args], capture_output=True, text=True, timeout=60
    )


def test_a_running_example_commits_a_requested_checkpoint_and_trains_on(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    train = [sys.executable, str(ROOT / "examples" / "train.py")]
    run = _start(tmp_path, *train, "--steps", "150", "--step-time", "0.02", ckpt=ckpt)
    try:
        _wait_for(tmp_path, "trainer_attached")
        asked = _checkpoint_now("--pid", str(run.pid), "--deadline", "30")
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert asked.returncode == 0, asked.stderr
    answered = _wait_for(tmp_path, "checkpoint_request_answered", timeout=0)
    step = answered["step"]
    assert answered["outcome"] == "committed" and 0 < step < 150
    assert f"checkpoint step {step} committed" in asked.stdout
    requested = _wait_for(tmp_path, "checkpoint_requested", timeout=0)
    assert requested["reason"] == "requested"
    # Training went on to its last step and exited 0: the request was not a stop.
    assert run.returncode == ExitCode.SUCCEEDED.code, err.decode()[-2000:]
    assert b"(requested); going on" in out
    assert not [e for e in _events(tmp_path) if e["event"] in ("leave_requested", "stopping")]
    reader = Reader(Storage(str(ckpt)))
    assert reader.assess(step).manifest.reason == "requested"
    assert reader.latest() == 150


def test_a_trainer_that_never_checks_misses_the_deadline_and_is_left_alone(
    tmp_path: Path,
) -> None:
    run = _start(tmp_path, sys.executable, "-c", DEAF, "80")  # about 4 s
    try:
        _wait_for(tmp_path, "trainer_attached")
        began = time.monotonic()
        asked = _checkpoint_now("--pid", str(run.pid), "--deadline", "1")
        waited = time.monotonic() - began
        out, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert asked.returncode == 124, asked.stderr
    assert waited < 15  # supervise's own answer at the deadline, not the asker's give-up
    (line,) = asked.stderr.splitlines()
    assert "no checkpoint was committed within the deadline" in line
    assert "sup.should_checkpoint(step)" in line and "--deadline" in line
    assert run.returncode == ExitCode.SUCCEEDED.code
    assert b"steps 80" in out  # every step ran
    assert not [e for e in _events(tmp_path) if e["event"] in ("leave_requested", "stopping")]


def test_supervise_ending_while_the_operator_waits_is_a_clear_failure(tmp_path: Path) -> None:
    run = _start(tmp_path, sys.executable, "-c", DEAF, "20")  # about 1 s
    try:
        _wait_for(tmp_path, "trainer_attached")
        asked = _checkpoint_now("--pid", str(run.pid), "--deadline", "30")
        run.communicate(timeout=60)
    finally:
        run.kill()
    assert asked.returncode == 1, asked.stderr
    (line,) = asked.stderr.splitlines()
    assert "before a checkpoint was committed" in line
    assert run.returncode == ExitCode.SUCCEEDED.code


def test_a_trainer_that_never_attached_is_refused(tmp_path: Path) -> None:
    code = "import time; print('up', flush=True); time.sleep(3)"
    run = _start(tmp_path, sys.executable, "-c", code)
    try:
        assert run.stdout is not None and run.stdout.readline() == b"up\n"
        asked = _checkpoint_now("--pid", str(run.pid), "--deadline", "10")
        run.communicate(timeout=60)
    finally:
        run.kill()
    assert asked.returncode == 1
    assert "has not attached to supervise (supervisor.attach())" in asked.stderr
    assert run.returncode == ExitCode.SUCCEEDED.code


def test_no_running_supervise_is_a_config_error_that_says_where_it_looked(
    tmp_path: Path,
) -> None:
    asked = _checkpoint_now("--pid", str(os.getpid()))
    assert asked.returncode == ExitCode.CONFIG_ERROR.code
    (line,) = asked.stderr.splitlines()
    assert f"no supervise with PID {os.getpid()} is running here" in line
    asked = _checkpoint_now("--run-dir", str(tmp_path))
    assert asked.returncode == ExitCode.CONFIG_ERROR.code
    assert f"no supervise is running in {tmp_path}" in asked.stderr
    asked = _checkpoint_now("--deadline", "0")
    assert asked.returncode == ExitCode.CONFIG_ERROR.code
    assert "--deadline must be > 0" in asked.stderr


def test_the_only_live_run_is_found_and_several_are_refused(tmp_path: Path) -> None:
    base = str(tmp_path)
    with pytest.raises(ConfigError, match="no running supervise found here"):
        find_run_dir(None, None, [base])
    first = rundir.make_run_dir(base)
    ended = rundir.make_run_dir(base)
    rundir.release(ended, remove=False)  # its supervise is gone: never a candidate
    try:
        assert find_run_dir(None, None, [base]) == first
        second = rundir.make_run_dir(base)
        try:
            with pytest.raises(ConfigError, match=r"2 supervise runs are live here.*--run-dir"):
                find_run_dir(None, None, [base])
            assert find_run_dir(second, None, [base]) == second
            with pytest.raises(ConfigError, match="no supervise with PID 1 "):
                find_run_dir(None, 1, [base])
            with pytest.raises(ConfigError, match="no supervise is running in"):
                find_run_dir(ended, None, [base])
        finally:
            rundir.release(second, remove=True)
    finally:
        rundir.release(first, remove=True)


def test_requests_are_taken_once_and_unreadable_ones_are_refused_at_once(tmp_path: Path) -> None:
    run_dir = str(tmp_path)
    folder = Path(requests.make_folder(run_dir))
    for name, body in (("bad", "not json"), ("nan", '{"deadline": NaN}'), ("list", "[1]")):
        (folder / f"{name}{requests.REQUEST}").write_text(body)
    good = requests.submit(run_dir, 5)
    withdrawn = requests.submit(run_dir, 5)
    assert requests.withdraw(run_dir, withdrawn)
    reported: list = []
    watcher = requests.RequestWatcher(run_dir, interval=0.01)
    watcher.start(reported.append, time.monotonic)
    try:
        give_up = time.monotonic() + 10
        while not reported and time.monotonic() < give_up:
            time.sleep(0.01)
        time.sleep(0.1)  # a second and later polls report nothing more
    finally:
        watcher.stop()
    assert [(event.request, event.budget) for event in reported] == [(good, 5.0)]
    for name in ("bad", "nan", "list"):
        answer = requests.read_answer(run_dir, name)
        assert answer is not None and answer["outcome"] == "refused"
        assert "could not read the request" in str(answer["message"])
    assert not list(folder.iterdir())  # every request taken, every answer collected
    assert not requests.withdraw(run_dir, good)  # taken: too late to withdraw


@pytest.mark.slow
def test_across_two_nodes_both_save_one_step_and_neither_leaves(tmp_path: Path) -> None:
    """Asked on node 1 (not the rank that writes), both ranks save the same step with reason
    `requested`, and node 0 does not take it for a peer leaving (no PEER_LEFT)."""
    from tests.process.runs import events, finish, two_nodes, wait_for_event

    ckpt = tmp_path / "ckpt"
    nodes = two_nodes(ckpt, tmp_path, "op")
    try:
        wait_for_event(tmp_path, "op1", "trainer_attached", timeout=120)
        asked = _checkpoint_now("--pid", str(nodes[1].pid), "--deadline", "60")
        codes = [finish(node) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert asked.returncode == 0, asked.stderr
    assert codes == [0, 0]
    step = next(e for e in events(tmp_path, "op1") if e["event"] == "checkpoint_request_answered")
    assert step["outcome"] == "committed"
    reader = Reader(Storage(str(ckpt)))
    assert reader.assess(step["step"]).manifest.reason == "requested"
    for index in (0, 1):
        said = {e["event"] for e in events(tmp_path, f"op{index}")}
        assert not said & {"leave_requested", "stopping", "decided"}
        committed = [
            e for e in events(tmp_path, f"op{index}") if e["event"] == "checkpoint_committed"
        ]
        assert step["step"] in [e["step"] for e in committed]  # one agreed step on both
