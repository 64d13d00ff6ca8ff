"""The training-side API a ported script needs: exact RNG resume, an explicit location, and
saves made by rank 0 alone. Real CheckpointStore, real torchrun with gloo ranks."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import supervisor
from supervisor.core.errors import CheckpointError
from tests.storage.conftest import free_port

WORKER = Path(__file__).with_name("api_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def draws() -> list[float]:
    return [random.random(), float(np.random.rand()), *torch.rand(3).tolist()]


def test_rng_capture_and_restore_resume_every_generator_exactly(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    store = supervisor.CheckpointStore(tmp_path / "ckpt")
    store.save(5, {"rng": supervisor.rng.capture()})
    expected = draws()
    random.seed(2), np.random.seed(2), torch.manual_seed(2)  # a fresh process's generators
    assert draws() != expected
    supervisor.rng.restore(store.load()["rng"])
    assert draws() == expected


def test_rng_restore_refuses_what_capture_did_not_make() -> None:
    for bad in ({}, {"version": 1, "ranks": []}, [1, 2], {"version": 1, "ranks": [{"x": 1}]}):
        with pytest.raises(CheckpointError, match=r"rng\.restore"):
            supervisor.rng.restore(bad)


def test_a_store_without_a_location_refuses_and_creates_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SUPERVISE_CHECKPOINT_DIR"}
    code = (
        "import supervisor\n"
        "from supervisor.core.errors import CheckpointError\n"
        "try:\n    supervisor.CheckpointStore()\n"
        "except CheckpointError as err:\n    print(err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "supervise --checkpoint-dir" in done.stdout and "SUPERVISE_CHECKPOINT_DIR" in done.stdout
    assert list(tmp_path.iterdir()) == []  # no ./checkpoints left behind


def run_ranks(scenario: str, tmp_path: Path) -> list[dict]:
    url, results = tmp_path / "ckpt", tmp_path / "results"
    results.mkdir()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        str(WORKER),
        scenario,
        str(url),
        str(results),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_rng_capture_restores_each_ranks_own_generators(tmp_path: Path) -> None:
    ranks = run_ranks("rng", tmp_path)
    for out in ranks:
        assert out["after_restore"] == out["after_save"]
    assert ranks[0]["after_save"] != ranks[1]["after_save"]  # each rank has its own stream


@pytest.mark.slow
def test_a_rank_zero_only_save_commits_with_collective_false(tmp_path: Path) -> None:
    ranks = run_ranks("rank0", tmp_path)
    assert ranks[0]["manifest"] and ranks[0]["async"]
    assert [out["latest"] for out in ranks] == [2, 2]
    assert torch.equal(
        supervisor.CheckpointStore(tmp_path / "ckpt").load()["w"], torch.full((4,), 7.0)
    )


@pytest.mark.slow
def test_a_collective_save_from_rank_zero_alone_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    ranks = run_ranks("misuse", tmp_path)
    error = ranks[0]["error"]
    assert error is not None and "collective=False" in error
    assert "Ranks 1 failed" in error  # torch's monitored barrier names the missing rank
    assert ranks[0]["seconds"] < 30
    assert supervisor.CheckpointStore(tmp_path / "ckpt").steps() == []
