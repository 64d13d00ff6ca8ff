"""DirectSink on real filesystems: every byte round-trips at every block and buffer boundary,
a device that refuses our alignment falls back to buffered writes, and a full disk fails a
save with the same StorageError while leaving nothing visible.

The loop-mounted ext4 images need root (mount, losetup); those tests skip, saying why,
where that is impossible. The rest need the test's tmp dir on ext4 or xfs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from supervisor.core.errors import StorageError
from supervisor.storage import CheckpointStore, directsink
from supervisor.storage.backend import Storage
from supervisor.storage.directsink import DirectSink
from supervisor.storage.rename_commit import LocalSink

MIB = 1 << 20


def direct_dir(path: Path) -> Path:
    kind = directsink.filesystem_of(str(path))
    if kind not in directsink.FILESYSTEMS:
        pytest.skip(f"the tmp dir is on {kind or 'an unknown filesystem'}, not ext4/xfs")
    return path


def payload(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]  # period 251: misplaced bytes show


def write_in_pieces(sink: DirectSink, data: bytes, piece: int) -> None:
    view = memoryview(data)
    try:
        for start in range(0, len(data), piece):
            sink.write(view[start : start + piece])
        sink.close()
    except BaseException:
        sink.discard()  # as the writer does: no thread or descriptor left behind
        raise


@pytest.mark.parametrize(
    "size",
    [0, 1, 4095, 4096, 4097, 16 * MIB - 1, 16 * MIB, 16 * MIB + 1, 5 * 16 * MIB + 12345],
)
def test_bytes_round_trip_at_block_and_buffer_boundaries(tmp_path: Path, size: int) -> None:
    path = direct_dir(tmp_path) / "file"
    data = payload(size)
    sink = DirectSink(str(path))
    write_in_pieces(sink, data, MIB + 7)  # pieces that straddle every buffer boundary
    assert sink.direct  # ext4/xfs took O_DIRECT: the page cache was bypassed
    assert path.read_bytes() == data


@pytest.mark.parametrize("piece", [1, 4095, 8192, 3 * 8192 + 5])
def test_many_small_buffers_keep_order(tmp_path: Path, piece: int) -> None:
    # Two 8 KiB buffers, so the writer thread and the caller trade buffers hundreds of times.
    path = direct_dir(tmp_path) / "file"
    data = payload(200_003 if piece > 1 else 20_003)
    sink = DirectSink(str(path), buffers=2, buffer_bytes=8192)
    write_in_pieces(sink, data, piece)
    assert path.read_bytes() == data


def test_an_existing_file_is_never_replaced(tmp_path: Path) -> None:
    path = direct_dir(tmp_path) / "file"
    path.write_bytes(b"committed")
    with pytest.raises(FileExistsError):
        DirectSink(str(path))
    assert path.read_bytes() == b"committed"


def test_discard_stops_without_raising_and_leaves_the_file_to_the_caller(tmp_path: Path) -> None:
    path = direct_dir(tmp_path) / "file"
    sink = DirectSink(str(path), buffers=2, buffer_bytes=8192)
    sink.write(memoryview(payload(50_000)))
    sink.discard()
    sink.discard()  # twice is fine
    assert sink.fd == -1


def test_only_large_files_on_a_disk_filesystem_take_the_direct_sink(tmp_path: Path) -> None:
    strategy = Storage(str(direct_dir(tmp_path))).strategy
    cases = [("large", directsink.MIN_BYTES, DirectSink), ("small", 4096, LocalSink)]
    cases.append(("unknown", None, LocalSink))  # a size not given: the manifest, the marker
    for name, size, kind in cases:
        sink = strategy.sink(str(tmp_path / name), size)
        sink.discard()
        assert type(sink) is kind, name


def test_tmpfs_keeps_the_buffered_sink() -> None:
    if directsink.filesystem_of("/dev/shm") != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm here")
    assert not directsink.usable("/dev/shm", 1 << 30)


def run_root(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True)


@pytest.fixture
def ext4_mount(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A small ext4 filesystem on a loop device: 24 MiB, or the size and logical sector
    size given by `request.param` as (MiB, sector)."""
    mib, sector = getattr(request, "param", (24, 512))
    image, mount = tmp_path / "ext4.img", tmp_path / "mnt"
    mount.mkdir()
    with image.open("wb") as f:
        f.truncate(mib * MIB)
    attach = run_root("losetup", "--find", "--show", "--sector-size", str(sector), str(image))
    if attach.returncode != 0:
        pytest.skip(f"cannot attach a loop device here: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    try:
        made = run_root("mkfs.ext4", "-q", "-F", "-b", "4096", device)
        if made.returncode != 0:
            pytest.skip(f"cannot make an ext4 filesystem here: {made.stderr.strip()}")
        mounted = run_root("mount", device, str(mount))
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount an ext4 loop device here: {mounted.stderr.strip()}")
        try:
            yield mount
        finally:
            run_root("umount", "--lazy", str(mount))  # lazy: a failed test may hold a file
    finally:
        run_root("losetup", "--detach", device)  # with a lazy umount, detaches when free


@pytest.mark.parametrize("ext4_mount", [(24, 4096)], indirect=True)
def test_a_refused_direct_write_falls_back_to_buffered(ext4_mount: Path) -> None:
    # The device's logical sector is 4096 bytes; a sink aligned to 512 pads its tail to a
    # multiple of 512 only, which the kernel refuses with EINVAL (a real refusal, not a
    # fake). The sink must go on buffered and still write exactly these bytes.
    path = ext4_mount / "file"
    data = payload(3 * 8192 + 1000)
    sink = DirectSink(str(path), alignment=512, buffers=2, buffer_bytes=8192)
    write_in_pieces(sink, data, 5000)
    assert not sink.direct
    assert path.read_bytes() == data


def test_a_full_disk_fails_the_save_and_leaves_nothing_visible(ext4_mount: Path) -> None:
    store = CheckpointStore(ext4_mount)
    store.save(1, {"w": torch.full((1000,), 1.0)})
    big = {"w": torch.full((8 * MIB,), 2.0)}  # 32 MiB into about 20 MiB free
    assert directsink.usable(str(ext4_mount), 32 * MIB)  # this save goes through DirectSink
    with pytest.raises(StorageError, match=r"No space left on device.*free space"):
        store.save(2, big)
    assert store.steps() == [1]
    assert store.verify(1).ok
    assert store.load()["w"].eq(1.0).all()
    left = sorted(p.name for p in ext4_mount.iterdir() if p.name != "lost+found")
    assert left == ["step_000000000001"]  # no staging directory, no temporary file
    store.save(2, {"w": torch.full((3 * MIB,), 2.0)})  # the failed attempt freed its space
    assert store.steps() == [1, 2]
    assert store.load(2)["w"].eq(2.0).all()


def test_a_store_round_trips_large_files_through_the_direct_sink(tmp_path: Path) -> None:
    root = direct_dir(tmp_path) / "ckpt"
    state = {"a": torch.randn(3 * MIB + 3), "b": torch.arange(5 * MIB, dtype=torch.int64)}
    store = CheckpointStore(root, shard_bytes=16 * MIB)
    store.save(1, state)
    assert store.verify(1).ok
    back = store.load(1)
    assert torch.equal(back["a"], state["a"]) and torch.equal(back["b"], state["b"])
    sizes = [os.path.getsize(p) for p in (root / "step_000000000001").rglob("*.safetensors")]
    assert max(sizes) >= directsink.MIN_BYTES  # at least one file took the direct path
