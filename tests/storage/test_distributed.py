"""DDP (rank 0 saves, the others wait for the commit), async saves settled on every rank,
and DCP sharded saves committed by our manifest and marker, on two real gloo ranks under
torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.core.errors import CheckpointError
from supervisor.storage import CheckpointStore, layout
from tests.storage.conftest import free_port

WORKER = Path(__file__).with_name("dist_worker.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ddp_and_sharded_checkpoints_on_two_gloo_ranks(tmp_path: Path) -> None:
    url, results = tmp_path / "ckpt", tmp_path / "results"
    results.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        str(WORKER),
        str(url),
        str(results),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1)]
    for out in ranks:
        assert out["latest_after_ddp_save"] == 1
        assert out["ddp_world_size"] == 2
        assert out["rank0_failure"] == "CheckpointError"
        assert out["sharded_step"] == 5 and out["sharded_ok"]
        # on_commit is told every committed step once, on every rank, async saves included.
        assert out["committed_after_wait"] == [1, 2]
        assert out["committed_before_close"] == [1, 2, 3]
        assert out["committed_after_close"] == [1, 2, 3, 4]
        assert out["async_failure"] == "CheckpointError"
        assert out["committed_after_failure"] == [1, 2, 3, 4]
        assert out["committed"] == [1, 2, 3, 4, 5]
    assert [out["ddp_manifest"] for out in ranks] == [True, False]
    assert [out["async_result_is_manifest"] for out in ranks] == [True, False]
    assert [out["latest_after_async"] for out in ranks] == [4, 4]

    store = CheckpointStore(url)
    assert store.steps() == [1, 2, 3, 4, 5]  # the failed first save of step 2 left nothing
    written = set(store.storage.sizes(store.reader.step_dir(2))) - set(layout.RECORDS)
    assert len(written) == 4  # one writer: 3 files + marker
    manifest = store.manifest(5)
    assert (manifest.kind, manifest.reason, manifest.world_size) == ("dcp", "preempted", 2)
    names = {f.path for f in manifest.files}
    assert "dcp/.metadata" in names and any(n.endswith(".distcp") for n in names)
    assert store.verify(5).ok
    with pytest.raises(CheckpointError, match="load_sharded"):
        store.load(5)
    # A torn shard is caught before DCP reads anything.
    shard = next(Path(store.reader.attempt_dir(manifest), "dcp").glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert not store.verify(5).ok
