"""`supervise ckpt ls|verify|prune` through the installed console script."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import torch

from supervisor.storage import CheckpointStore, layout
from supervisor.storage.backend import Storage
from tests.conftest import SUPERVISE


def ckpt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SUPERVISE, "ckpt", *args], capture_output=True, text=True, timeout=120)


def test_ls_prints_a_table_with_committed_and_uncommitted_steps(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    store = CheckpointStore(url)
    store.save(10, {"w": torch.ones(256)}, reason="periodic")
    store.save(20, {"w": torch.ones(256)}, reason="preempted")
    store.storage.begin(30, "inflight")  # a save still running (or dead)
    result = ckpt("ls", url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["STEP", "STATE", "REASON", "SIZE"]
    rows = [line.split() for line in lines[1:]]
    assert [r[:3] for r in rows] == [
        ["10", "committed", "periodic"],
        ["20", "committed", "preempted"],
        ["30", "uncommitted", "-"],
    ]


def test_verify_exits_0_valid_1_corrupt_2_none(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    assert ckpt("verify", url).returncode == 2
    store = CheckpointStore(url)
    store.save(1, {"w": torch.arange(100.0)})
    store.save(2, {"w": torch.arange(100.0)})
    store.wait()  # retention after the save lists step 2: done before the file is rewritten
    ok = ckpt("verify", url)
    assert ok.returncode == 0
    assert re.fullmatch(r"step 2: valid \(\d+ B checked\)", ok.stdout.strip()), ok.stdout
    assert ckpt("verify", url, "--step", "7").returncode == 2
    manifest = store.manifest(2)
    tensors = Path(store.reader.attempt_dir(manifest)) / "tensors-00000.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0x80
    tensors.write_bytes(bytes(data))
    bad = ckpt("verify", url)
    assert bad.returncode == 1
    assert "CORRUPT" in bad.stdout and "checksum mismatch" in bad.stdout
    assert ckpt("verify", url, "--step", "1").returncode == 0


def test_verify_shows_progress_on_large_checkpoints(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    CheckpointStore(url).save(1, {"w": torch.zeros(20 << 20)})  # 80 MiB
    result = ckpt("verify", url)
    assert result.returncode == 0
    progress = [line for line in result.stderr.splitlines() if line.startswith("verifying")]
    assert progress[-1] == "verifying: 100% of 80.0 MiB", result.stderr
    assert len(progress) >= 3


def test_prune_keeps_the_newest_n(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    store = CheckpointStore(url, keep_last=10)
    for step in range(1, 6):
        store.save(step, {"s": torch.tensor(step)})
    store.storage.begin(2, "dead")  # leftovers of a failed save of an old step
    result = ckpt("prune", url, "--keep", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["deleted step 1", "deleted step 2", "deleted step 3"]
    assert store.steps() == [4, 5]
    assert sorted(p.name for p in Path(url).iterdir()) == [
        layout.step_dirname(4),
        layout.step_dirname(5),
    ]
    too_few = ckpt("prune", url, "--keep", "1")
    assert too_few.returncode == 81 and "--keep must be >= 2" in too_few.stderr
    assert store.steps() == [4, 5]


def test_ls_and_prune_leave_the_ledger_prefix_alone(tmp_path: Path) -> None:
    url = str(tmp_path / "ckpt")
    storage = Storage(url)
    storage.create_object("_ledger/verdicts/pod-0.json", b"{}")
    assert ckpt("ls", url).stdout == f"no checkpoints under {url}\n"
    store = CheckpointStore(url, keep_last=10)
    for step in range(1, 4):
        store.save(step, {"s": torch.tensor(step)})
    listed = ckpt("ls", url)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["STEP", "1", "2", "3"]
    pruned = ckpt("prune", url, "--keep", "2")
    assert pruned.returncode == 0, pruned.stderr
    assert store.steps() == [2, 3]
    assert storage.list_objects() == ["_ledger/verdicts/pod-0.json"]
    assert sorted(p.name for p in Path(url).iterdir()) == [
        layout.LEDGER_PREFIX,
        layout.step_dirname(2),
        layout.step_dirname(3),
    ]


def test_unreachable_storage_is_one_line_and_infra_failed(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = ckpt("ls", str(tmp_path / "file" / "ckpt"))
    assert result.returncode == 86, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Not a directory" in result.stderr
    bad = ckpt("ls", "nosuchproto://x")
    assert bad.returncode == 81 and "unsupported checkpoint URL" in bad.stderr
