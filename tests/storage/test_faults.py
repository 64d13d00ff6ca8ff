"""Faults: a full disk, permission denied, S3 down or missing. Each is one clear
`StorageError` and the previous checkpoint stays committed, verified and loadable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from supervisor.core.errors import StorageError
from supervisor.core.exitcodes import ExitCode
from supervisor.storage import CheckpointStore
from tests.storage.conftest import S3Server, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs. Needs mount privileges (root in the CI container)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def assert_intact(store: CheckpointStore, step: int, value: float) -> None:
    assert store.steps() == [step]
    assert store.latest() == step
    assert store.verify(step).ok
    assert store.load()["w"].eq(value).all()


def test_full_disk_is_a_clear_error_and_keeps_the_previous_step(small_disk: Path) -> None:
    store = CheckpointStore(small_disk)
    store.save(1, {"w": torch.full((1000,), 1.0)})
    with pytest.raises(StorageError, match=r"No space left on device.*free space") as err:
        store.save(2, {"w": torch.full((1 << 20,), 2.0)})  # 4 MiB into 1 MiB
    assert err.value.exit_code is ExitCode.INFRA_FAILED
    assert_intact(store, 1, 1.0)
    assert [p.name for p in small_disk.iterdir()] == ["step_000000000001"]  # nothing left over
    # The space is usable again: the failed attempt freed what it wrote.
    store.save(2, {"w": torch.full((1000,), 2.0)})
    assert store.steps() == [1, 2]


def test_async_errors_surface_on_the_next_call_and_at_close(small_disk: Path) -> None:
    store = CheckpointStore(small_disk)
    store.save(1, {"w": torch.full((1000,), 1.0)})
    failing = store.save_async(2, {"w": torch.full((1 << 20,), 2.0)})
    while not failing.done():
        time.sleep(0.01)
    with pytest.raises(StorageError, match="No space left"):
        store.latest()  # the next call, whatever it is
    assert_intact(store, 1, 1.0)  # raised once, then the store is usable
    handle = store.save_async(3, {"w": torch.full((1 << 20,), 3.0)})
    with pytest.raises(StorageError, match="No space left"):
        handle.wait()
    store.save_async(4, {"w": torch.full((1 << 20,), 4.0)})
    with pytest.raises(StorageError, match="No space left"):
        store.close()
    assert_intact(store, 1, 1.0)


def test_permission_denied_is_a_clear_error_and_readers_still_load(tmp_path: Path) -> None:
    """The writer runs without CAP_DAC_OVERRIDE, so a read-only directory stops it even
    though tests run as root here (setpriv, util-linux)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    root = tmp_path / "ckpt"
    store = CheckpointStore(root)
    store.save(1, {"w": torch.full((10,), 1.0)})
    root.chmod(0o555)
    try:
        code = (
            "import torch\n"
            "from supervisor.storage import CheckpointStore\n"
            "from supervisor.core.errors import StorageError\n"
            f"store = CheckpointStore({str(root)!r})\n"
            "assert store.load()['w'].eq(1).all()\n"  # reading needs no write access
            "try:\n"
            "    store.save(2, {'w': torch.zeros(10)})\n"
            "except StorageError as err:\n"
            "    print(err)\n"
        )
        result = subprocess.run(
            [setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "Permission denied" in result.stdout and "make it writable" in result.stdout
        assert_intact(store, 1, 1.0)
    finally:
        root.chmod(0o755)


def test_missing_bucket_is_a_clear_error(s3_server: S3Server) -> None:
    store = CheckpointStore("s3://no-such-bucket/run", storage_options=s3_server.options())
    with pytest.raises(StorageError, match="bucket does not exist"):
        store.save(1, {"w": torch.ones(3)})
    with pytest.raises(StorageError, match="s3://no-such-bucket/run"):
        store.steps()


def test_s3_going_away_mid_run_keeps_the_previous_step() -> None:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(f"http://127.0.0.1:{port}", server)
    options = s3.options(config_kwargs={"retries": {"max_attempts": 1}})
    store = CheckpointStore(f"s3://{s3.bucket()}/run", storage_options=options)
    store.save(1, {"w": torch.full((100,), 1.0)})
    assert store.steps() == [1]  # and retention after the save has run
    server.stop()
    start = time.monotonic()
    with pytest.raises(StorageError, match="Could not connect"):
        store.save(2, {"w": torch.full((100,), 2.0)})
    assert time.monotonic() - start < 30  # a functional bound: it fails, it does not hang
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()  # the same in-process S3 state comes back
    try:
        assert_intact(store, 1, 1.0)
    finally:
        server.stop()


def test_a_root_that_is_a_file_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    store = CheckpointStore(tmp_path / "file" / "ckpt")
    with pytest.raises(StorageError, match="Not a directory"):
        store.save(1, {"w": torch.ones(2)})
    assert os.listdir(tmp_path) == ["file"]
