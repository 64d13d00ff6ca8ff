"""A trainer that dies of a checkpoint storage failure is INFRA_FAILED, learnt through the
channel (the rank marks its slot as it dies), not by reading its traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.core.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parents[2]

TRAINER = """
import sys, torch, supervisor
sup = supervisor.attach()
for step in range(3):
    sup.step(step)
store = supervisor.CheckpointStore("/proc/no-such-dir")  # every write fails: ENOENT
how = sys.argv[1]
if how == "storage":
    store.save(3, {"w": torch.ones(2)})
elif how == "wrapped":
    try:
        store.save(3, {"w": torch.ones(2)})
    except Exception as err:
        raise RuntimeError("could not save the model") from err
else:
    raise RuntimeError("a bug in the training code")
"""


@pytest.fixture
def trainer(tmp_path: Path) -> Path:
    path = tmp_path / "trainer.py"
    path.write_text(TRAINER)
    return path


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("storage", ExitCode.INFRA_FAILED),
        ("wrapped", ExitCode.INFRA_FAILED),  # the cause chain is followed
        ("bug", ExitCode.TRAINING_FAILED),  # the control: not every death is storage
    ],
)
def test_a_storage_failure_in_the_trainer_exits_infra_failed(
    supervise, trainer: Path, how: str, expected: ExitCode
) -> None:
    run = supervise("--", sys.executable, str(trainer), how, timeout=120)
    assert run.returncode == expected.code, run.stderr.decode()[-2000:]
    assert run.termination["exitCode"] == expected.code
    kinds = [e.get("kind") for e in run.termination["evidence"]]
    assert ("storage_failed" in kinds) == (expected is ExitCode.INFRA_FAILED)


@pytest.mark.slow
def test_under_torchrun_the_rank_that_failed_is_named(supervise, trainer: Path) -> None:
    run = supervise("--nproc-per-node", "2", "--", str(trainer), "storage", timeout=180)
    assert run.returncode == ExitCode.INFRA_FAILED.code, run.stderr.decode()[-2000:]
    failed = [e for e in run.termination["evidence"] if e.get("kind") == "storage_failed"]
    assert sorted(e["rank"] for e in failed) in ([0], [1], [0, 1])


@pytest.mark.parametrize("where", ["/proc/no-such-dir", "read-only"])
def test_a_checkpoint_dir_no_save_can_write_is_config_error_before_any_work(
    supervise, tmp_path: Path, where: str
) -> None:
    if where == "read-only":
        mount = tmp_path / "ro"
        mount.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)], check=True
        )
        where = str(mount / "ckpt")
    started = tmp_path / "started"
    try:
        run = supervise(
            "--checkpoint-dir", where, "--", sys.executable, "-c", f"open({str(started)!r}, 'w')"
        )
    finally:
        if where.endswith("/ckpt"):
            subprocess.run(["umount", str(tmp_path / "ro")], check=True)
    assert run.returncode == ExitCode.CONFIG_ERROR.code
    assert not started.exists()  # nothing was started
    assert b"cannot be used" in run.stderr and b"--checkpoint-dir" in run.stderr
    assert run.termination["exitCode"] == ExitCode.CONFIG_ERROR.code
