"""One contract, every backend: memory://, a local directory, and S3 on a real server."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import OrderedDict

import numpy as np
import pytest
import torch

from supervisor.core.errors import CheckpointError
from supervisor.storage import layout
from tests.storage.conftest import Backend

DTYPES = [
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.float8_e4m3fn,
]


def mixed_state(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    tensors = {str(dtype): (torch.randn(5, 3, generator=gen) * 50).to(dtype) for dtype in DTYPES}
    odict = OrderedDict(w=torch.arange(6.0).reshape(2, 3), b=torch.tensor(7))
    odict._metadata = {"": {"version": 2}}
    return {
        "tensors": tensors,
        "scalar": torch.tensor(3.25),
        "empty": torch.empty(0, 4),
        "strided": torch.arange(12).reshape(3, 4).t(),  # not contiguous
        "module": odict,
        "by_int": {0: {"step": torch.tensor(1.0)}, 1: [1, 2]},
        "tuple": (1, "two", None, (3.5, False)),
        "floats": [math.inf, -math.inf, math.nan, 0.1, -0.0, 1e308],
        "big": 2**100,
        "bytes": b"\x00\xffraw",
        "dollar": {"$tensor": "not a tag"},
        "np_rng": np.random.RandomState(seed).get_state(),
        "np_gen": np.random.default_rng(seed).bit_generator.state,
        "py_rng": random.Random(seed).getstate(),
        "np_scalar": np.float32(1.5),
        "torch_rng": torch.Generator().manual_seed(seed).get_state(),
    }


def assert_same(a, b, path="state"):
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        raw = [t.contiguous().reshape(-1).view(torch.uint8) for t in (a, b)]
        assert raw[0].equal(raw[1]), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
        if isinstance(a, OrderedDict):
            assert getattr(a, "_metadata", None) == getattr(b, "_metadata", None), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path
        if isinstance(a, float):
            assert math.copysign(1, a) == math.copysign(1, b), path


def test_round_trip_is_bitwise(backend: Backend) -> None:
    store = backend.store()
    state = mixed_state()
    store.save(7, state, metadata={"loss": 1.5}, reason="preempted")
    assert_same(state, store.load(7))
    manifest = store.manifest(7)
    assert (manifest.reason, manifest.metadata, manifest.world_size) == (
        "preempted",
        {"loss": 1.5},
        1,
    )


def test_latest_and_steps_see_committed_steps_only(backend: Backend) -> None:
    store = backend.store(keep_last=10)
    assert (store.steps(), store.latest()) == ([], None)
    for step in (3, 1, 20):
        store.save(step, {"x": torch.full((4,), float(step))})
    # A torn attempt of a newer step: data and manifest but no marker.
    torn = store.storage.attempt_dir(30, "torn")
    store.storage.begin(30, "torn")
    store.storage.put(f"{torn}/{layout.MANIFEST}", b"{}")
    assert store.steps() == [1, 3, 20]
    assert store.latest() == 20
    assert store.load()["x"][0].item() == 20.0


def test_same_step_again_is_allowed_only_with_identical_content(backend: Backend) -> None:
    store = backend.store()
    store.save(5, {"w": torch.ones(3)})
    store.save(5, {"w": torch.ones(3)})  # identical: a no-op
    with pytest.raises(CheckpointError, match="never overwritten"):
        store.save(5, {"w": torch.zeros(3)})
    assert store.load(5)["w"].equal(torch.ones(3))
    assert store.verify(5).ok
    assert store.steps() == [5]
    attempts = store.storage.sizes(store.reader.step_dir(5))
    # Beside the marker: the winning attempt and the reader's verification records only.
    names = {"COMMITTED", "VERIFIED", "DAMAGED", store.manifest(5).attempt}
    assert {p.split("/")[0] for p in attempts} <= names


def test_retention_keeps_last_n_and_every_kth_after_a_newer_commit(backend: Backend) -> None:
    store = backend.store(keep_last=2, keep_every=5)
    for step in range(1, 13):
        store.save(step, {"s": torch.tensor(step)})
    assert store.steps() == [5, 10, 11, 12]
    assert store.prune(keep_last=2) == [5, 10]
    assert store.steps() == [11, 12]
    assert store.load(11)["s"].item() == 11


def test_verify_and_load_catch_a_flipped_byte_and_fall_back(backend: Backend) -> None:
    store = backend.store()
    store.save(1, {"w": torch.arange(1000.0)})
    store.save(2, {"w": torch.arange(1000.0) + 1})
    # Retention runs after each save and lists the step; a listing caught halfway through
    # the rewrite below would see a short file. Let it finish before tampering.
    store.wait()
    manifest = store.manifest(2)
    path = f"{store.reader.attempt_dir(manifest)}/tensors-00000.safetensors"
    data = bytearray(store.storage.fs.cat_file(path))
    data[-3] ^= 0x01
    store.storage.fs.pipe_file(path, bytes(data))
    result = store.verify(2)
    assert not result.ok and "checksum" in result.problems[0]
    with pytest.raises(CheckpointError, match="checksum"):
        store.load(2)
    with pytest.warns(UserWarning, match="skipping checkpoint step 2"):
        assert store.load()["w"][0].item() == 0.0
    assert store.verify(1).ok


def test_latest_skips_a_step_with_a_missing_file(backend: Backend) -> None:
    store = backend.store()
    store.save(1, {"w": torch.ones(2)})
    store.save(2, {"w": torch.ones(2)})
    manifest = store.manifest(2)
    store.storage.fs.rm_file(f"{store.reader.attempt_dir(manifest)}/tensors-00000.safetensors")
    assert store.latest() == 1
    assert not store.verify(2).ok
    with pytest.warns(UserWarning, match="is missing; step 2 is corrupt"):
        assert store.load()["w"].equal(torch.ones(2))


def test_async_save_snapshots_state_before_returning(backend: Backend) -> None:
    store = backend.store()
    weights = torch.zeros(1000)
    handle = store.save_async(1, {"w": weights, "n": [1]})
    weights.add_(1)  # the caller keeps training at once (pytorch #144657)
    handle2 = store.save_async(2, {"w": weights})
    assert handle.done()  # at most one save in flight: the second waited for the first
    assert handle.wait().step == 1
    store.close()
    assert handle2.done()
    assert store.load(1)["w"].sum().item() == 0
    assert store.load(2)["w"].sum().item() == 1000


def test_unsupported_objects_need_explicit_pickle(backend: Backend) -> None:
    store = backend.store()
    with pytest.raises(CheckpointError, match="allow_pickle"):
        store.save(1, {"odd": {1, 2}})
    assert store.steps() == []
    pickled = backend.store(allow_pickle=True)
    pickled.save(1, {"odd": torch.Size([2, 3]), "w": torch.ones(2)})
    back = pickled.load(1)
    assert back["odd"] == torch.Size([2, 3]) and back["w"].equal(torch.ones(2))
    files = [f.path for f in pickled.manifest(1).files]
    assert layout.PICKLES in files


def test_large_state_spans_several_files_and_verifies(backend: Backend) -> None:
    store = backend.store(shard_bytes=64 << 10)
    state = {f"t{i}": torch.randn(4096) for i in range(10)}  # 16 KiB each, 160 KiB total
    manifest = store.save(1, state)
    assert sum(f.path.endswith(".safetensors") for f in manifest.files) >= 3
    assert_same(state, store.load(1))
    seen = []
    assert store.verify(1, progress=lambda done, total: seen.append((done, total))).ok
    assert seen[-1][0] == seen[-1][1] == manifest.total_bytes


def test_async_saves_reuse_one_snapshot_buffer(tmp_path) -> None:
    """Memory stays bounded: one host copy of the state, reused by every async save."""
    store = Backend("local", str(tmp_path / "ckpt")).store()
    state = {"w": torch.randn(1 << 16), "b": torch.randn(10)}
    store.save_async(1, state).wait()
    buffer = store._host_buffer.slab.data_ptr()
    store.save_async(2, state).wait()
    assert store._host_buffer.slab.data_ptr() == buffer
    store.close()
    assert store._host_buffer.slab is None


def test_default_url_comes_from_the_environment(tmp_path, monkeypatch) -> None:
    from supervisor.storage import CheckpointStore

    monkeypatch.setenv("SUPERVISE_CHECKPOINT_DIR", str(tmp_path / "from-env"))
    store = CheckpointStore()
    store.save(1, {"w": torch.ones(1)})
    assert (tmp_path / "from-env" / layout.step_dirname(1) / layout.MARKER).exists()
    monkeypatch.delenv("SUPERVISE_CHECKPOINT_DIR")
    with pytest.raises(CheckpointError, match="needs a location"):
        CheckpointStore()


def test_bad_step_reason_and_metadata_are_refused(tmp_path) -> None:
    store = Backend("local", str(tmp_path / "ckpt")).store()
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(CheckpointError, match="non-negative int"):
            store.save(bad, {})
    for bad in ("", "Eval", "a b", "-x", "x" * 33, 3, None):
        with pytest.raises(CheckpointError, match="1 to 32 of a-z 0-9"):
            store.save(1, {}, reason=bad)
    with pytest.raises(CheckpointError, match="JSON"):
        store.save(1, {}, metadata={"x": object()})
    assert store.steps() == []


def test_on_commit_is_told_each_committed_step(tmp_path) -> None:
    seen: list[int] = []
    store = Backend("local", str(tmp_path / "ckpt")).store(on_commit=seen.append)
    store.save(1, {"w": torch.ones(1)})
    store.save_async(2, {"w": torch.ones(1)}).wait()
    with pytest.raises(CheckpointError):
        store.save(2, {"w": torch.zeros(1)})  # refused: not a commit
    assert seen == [1, 2]


def test_on_commit_is_told_once_however_an_async_save_settles(backend: Backend) -> None:
    seen: list[int] = []
    store = backend.store(on_commit=seen.append)
    handle = store.save_async(1, {"w": torch.ones(4)})
    while not handle.done():
        time.sleep(0.01)
    assert store.latest() == 1
    assert seen == [1]  # a call that does not wait still settles a finished save
    assert handle.wait().step == 1
    store.wait()
    assert seen == [1]
    store.save_async(2, {"w": torch.ones(4)})
    store.save_async(3, {"w": torch.ones(4)})  # settles step 2 first
    assert seen == [1, 2]
    store.close()
    store.close()
    assert seen == [1, 2, 3]
    failing = store.save_async(3, {"w": torch.zeros(4)})  # different content: refused
    with pytest.raises(CheckpointError, match="never overwritten"):
        failing.wait()
    with pytest.raises(CheckpointError, match="never overwritten"):
        failing.wait()  # a handle answers every time; the store raised it once
    store.close()
    assert seen == [1, 2, 3]


def test_async_wait_can_time_out_and_try_again(tmp_path) -> None:
    store = Backend("local", str(tmp_path / "ckpt")).store()
    handle = store.save_async(1, {"w": torch.zeros(1 << 20)})
    with contextlib.suppress(TimeoutError):  # still writing: nothing settles, wait again
        handle.wait(timeout=0)
    assert handle.wait(timeout=60).step == 1
    store.close()


def test_reasons_match_what_supervise_can_request() -> None:
    from supervisor.child_contract import CHECKPOINT_REASONS

    assert set(layout.REASONS) == set(CHECKPOINT_REASONS)


def test_any_short_label_is_a_reason_and_the_known_ones_stay(backend: Backend) -> None:
    store = backend.store(keep_last=20)
    labels = ["eval", "best-val", "epoch.3", "x_1", "0", "a" * 32, *layout.REASONS]
    for step, label in enumerate(labels):
        store.save(step, {"w": torch.ones(1)}, reason=label)
        assert store.manifest(step).reason == label
    with pytest.raises(CheckpointError, match="1 to 32 of a-z 0-9"):
        store.save_async(99, {"w": torch.ones(1)}, reason="Eval Run")
    assert store.steps() == list(range(len(labels)))
