"""Black-box: in-place restarts with --max-restarts, through the real binary."""

from __future__ import annotations

import sys

HANGS_ON_FIRST_ATTEMPT = """
import os, time, supervisor
sup = supervisor.attach()
attempt = int(os.environ["SUPERVISE_RESTART_COUNT"])
print(f"attempt {attempt}", flush=True)
for step in range(5):
    time.sleep(0.02)
    sup.step(step)
if attempt < {hang_until}:
    time.sleep(600)  # stall: no more heartbeats
"""

FAST = ["--hang-timeout", "1", "--failure-grace-period", "1"]


CHECKPOINTS_THEN_HANGS_ONCE = """
import time, supervisor
sup = supervisor.attach()
store = supervisor.CheckpointStore(on_commit=sup.committed)
attempt, start = sup.restart_count, sup.resume_step or 0
print(f"attempt {attempt} resumes at {start}", flush=True)
for step in range(start + 1, 21):
    time.sleep(0.02)
    sup.step(step)
    if step % 5 == 0:
        with sup.phase("checkpoint"):  # the first save imports fsspec: slower than a step
            store.save(step, {"step": step})
    if attempt == 0 and step == 12:
        time.sleep(600)  # stall after committing step 10
"""


def test_a_trainer_that_hangs_once_is_restarted_resumes_and_succeeds(supervise, tmp_path):
    result = supervise(
        *FAST,
        "--max-restarts",
        "2",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--",
        sys.executable,
        "-c",
        CHECKPOINTS_THEN_HANGS_ONCE,
    )
    assert result.returncode == 0
    assert result.stdout.decode().splitlines() == [
        "attempt 0 resumes at 0",
        "attempt 1 resumes at 10",  # the restart resumed from the latest commit
    ]
    scheduled = [e for e in result.events if e["event"] == "restart_scheduled"]
    assert [e["class"] for e in scheduled] == ["HANG"]
    assert result.termination["name"] == "SUCCEEDED"
    assert any(e["kind"] == "restarts" for e in result.termination["evidence"])


def test_a_trainer_that_always_hangs_spends_the_budget_then_exits_hang(supervise) -> None:
    script = HANGS_ON_FIRST_ATTEMPT.replace("{hang_until}", "99")
    result = supervise(*FAST, "--max-restarts", "2", "--", sys.executable, "-c", script)
    assert result.returncode == 84
    assert result.stdout.decode().split() == ["attempt", "0", "attempt", "1", "attempt", "2"]
    restarts = next(e for e in result.termination["evidence"] if e["kind"] == "restarts")
    assert restarts["previous"] == ["HANG", "HANG"]


def test_training_failures_are_not_restarted_unless_asked(supervise) -> None:
    script = "import os; print(os.environ['SUPERVISE_RESTART_COUNT']); raise SystemExit(3)"
    plain = supervise("--max-restarts", "2", "--", sys.executable, "-c", script)
    assert plain.returncode == 80
    assert plain.stdout.split() == [b"0"]
    opted = supervise(
        "--max-restarts", "1", "--restart-on-training-failure", "--", sys.executable, "-c", script
    )
    assert opted.returncode == 80
    assert opted.stdout.split() == [b"0", b"1"]


def test_the_backoff_between_attempts_is_not_mistaken_for_log_silence(supervise) -> None:
    # Attempt 0 dies of a transport error (restartable); the 1 s backoff is twice the silence
    # timeout, so a log-silence watchdog left running across it would end the run as a HANG.
    script = (
        "import os, sys\n"
        "attempt = int(os.environ['SUPERVISE_RESTART_COUNT'])\n"
        "print('attempt', attempt, flush=True)\n"
        "if attempt == 0:\n"
        "    sys.exit('ncclRemoteError: A call failed possibly due to a network error')\n"
    )
    result = supervise(
        "--log-silence-timeout", "0.5", "--max-restarts", "1", "--", sys.executable, "-c", script
    )
    assert result.returncode == 0
    assert result.stdout.decode().splitlines() == ["attempt 0", "attempt 1"]
    scheduled = [e for e in result.events if e["event"] == "restart_scheduled"]
    assert [e["class"] for e in scheduled] == ["INFRA_FAILED"]
