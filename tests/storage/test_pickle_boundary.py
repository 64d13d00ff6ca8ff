"""No pickle on a load path runs code: planted `objects.pt` and DCP `.metadata` files.

Each plant is a whole forged step: the planted file, a manifest that lists it with the right
checksum, and a marker that pins that manifest, as anyone who can write the storage could
make. The payload's `__reduce__` would create a marker file; the tests check it never
appears (and, as a control, that unpickling the payload plainly does create it).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from supervisor.core.errors import CheckpointError
from supervisor.storage import CheckpointStore, checksum, dcp_guard, layout
from tests.storage.conftest import Backend


class Plant:
    """Unpickling this calls open(marker, "w"): code from storage, if it ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def forge(store: CheckpointStore, step: int, files: dict[str, bytes]) -> None:
    """Rewrite `files` of committed `step` and re-commit it consistently: new manifest
    entries with the right checksums, a marker pinning the new manifest."""
    manifest = store.manifest(step)
    directory = store.reader.attempt_dir(manifest)
    fs = store.storage.fs
    entries = {f.path: f for f in manifest.files}
    for path, data in files.items():
        fs.pipe_file(f"{directory}/{path}", data)
        entries[path] = layout.FileEntry(path, len(data), checksum.of(data))
    forged = dataclasses.replace(manifest, files=tuple(entries.values()))
    raw = forged.to_json()
    fs.pipe_file(f"{directory}/{layout.MANIFEST}", raw)
    marker = layout.Marker.for_manifest(forged, raw).to_json()
    fs.pipe_file(store.storage.strategy.marker_path(step), marker)


def torch_saved(obj: object) -> bytes:
    stream = io.BytesIO()
    torch.save(obj, stream)
    return stream.getvalue()


def test_the_payload_runs_when_unpickled_plainly(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Plant(marker))).close()
    assert marker.exists()  # so the tests below, which check it stays absent, can fail


@pytest.mark.parametrize("allow_pickle", [False, True])
@pytest.mark.parametrize("kind", ["torch.save", "plain pickle"])
def test_a_planted_objects_pt_never_runs(
    backend: Backend, tmp_path: Path, allow_pickle: bool, kind: str
) -> None:
    marker = tmp_path / "ran"
    payload = [Plant(marker)]
    planted = torch_saved(payload) if kind == "torch.save" else pickle.dumps(payload)
    writer = backend.store()
    writer.save(1, {"w": torch.ones(2)})
    forge(writer, 1, {layout.PICKLES: planted, layout.SKELETON: b'{"w":{"$pickle":0}}'})
    assert writer.verify(1).ok  # the forgery is consistent: checksums alone cannot tell
    reader = backend.store(allow_pickle=allow_pickle)
    expected = "weights-only unpickler refuses" if allow_pickle else "allow_pickle=True"
    with pytest.raises(CheckpointError, match=expected):
        reader.load(1)
    with (
        pytest.warns(UserWarning, match="skipping checkpoint step 1"),
        pytest.raises(CheckpointError, match="no loadable checkpoint"),
    ):
        reader.load()
    assert not marker.exists()


def test_without_allow_pickle_objects_pt_is_refused_before_any_file_is_read(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(str(tmp_path / "ckpt"), allow_pickle=True)
    store.save(1, {"odd": {1, 2}})
    attempt = Path(store.reader.attempt_dir(store.manifest(1)))
    opened: list[str] = []
    recording = True

    def audit(event: str, args: tuple) -> None:
        if recording and event == "open" and isinstance(args[0], str | bytes | Path):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(audit)  # hooks cannot be removed: `recording` switches this one off
    try:
        with pytest.raises(CheckpointError, match="holds pickled objects"):
            CheckpointStore(str(tmp_path / "ckpt")).load(1)
    finally:
        recording = False
    data = [p for p in opened if p.startswith(str(attempt)) and not p.endswith(layout.MANIFEST)]
    assert not data, data  # the manifest said enough: no data file, no pickle, was opened


@pytest.fixture
def process_group(tmp_path: Path) -> Iterator[None]:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture(params=["local", "memory"])
def sharded_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return Backend("local", str(tmp_path / "ckpt"))
    return Backend("memory", f"memory://pb-{uuid.uuid4().hex[:12]}")


def test_a_sharded_step_loads_its_tensors_and_values(
    sharded_backend: Backend, process_group: None
) -> None:
    from supervisor.storage import load_sharded, save_sharded

    store = sharded_backend.store()
    save_sharded(store, 1, {"w": torch.arange(6.0), "step": 5, "extra": {"lr": 0.5}})
    target = {"w": torch.zeros(6), "step": 0, "extra": {"lr": 0.0}}
    assert load_sharded(store, target) == 1
    assert target["w"].equal(torch.arange(6.0)) and target["step"] == 5
    assert target["extra"] == {"lr": 0.5}


def test_a_planted_dcp_metadata_never_runs(
    sharded_backend: Backend, process_group: None, tmp_path: Path
) -> None:
    from supervisor.storage import load_sharded, save_sharded

    marker = tmp_path / "ran"
    store = sharded_backend.store()
    save_sharded(store, 1, {"w": torch.arange(6.0)})
    forge(store, 1, {f"dcp/{dcp_guard.METADATA}": pickle.dumps(Plant(marker))})
    assert store.verify(1).ok  # consistent forgery
    with pytest.raises(CheckpointError, match="open is not allowed"):
        load_sharded(store, {"w": torch.zeros(6)})
    assert not marker.exists()


def test_a_tampered_dcp_metadata_is_refused_by_its_checksum(
    sharded_backend: Backend, process_group: None, tmp_path: Path
) -> None:
    from supervisor.storage import load_sharded, save_sharded

    marker = tmp_path / "ran"
    store = sharded_backend.store()
    save_sharded(store, 1, {"w": torch.arange(6.0)})
    directory = store.reader.attempt_dir(store.manifest(1))
    store.storage.fs.pipe_file(f"{directory}/dcp/.metadata", pickle.dumps(Plant(marker)))
    with pytest.raises(CheckpointError, match=r"step 1 is not valid: dcp/\.metadata"):
        load_sharded(store, {"w": torch.zeros(6)}, step=1)
    with pytest.raises(CheckpointError, match="no committed checkpoint"):
        load_sharded(store, {"w": torch.zeros(6)})  # the newest valid step: none
    assert not marker.exists()


def test_each_rank_checks_the_metadata_bytes_it_unpickles(tmp_path: Path) -> None:
    # What a rank reads after rank 0 verified the step: checked again, by the same bytes.
    marker = tmp_path / "ran"
    good = b"not what the manifest pinned"
    entry = layout.FileEntry(".metadata", len(good), checksum.of(good))
    with pytest.raises(CheckpointError, match="checksum"):
        dcp_guard.load_metadata(pickle.dumps(Plant(marker)), entry, "x/.metadata")
    with pytest.raises(CheckpointError, match="not in the step's manifest"):
        dcp_guard.load_metadata(good, None, "x/__0.metadata")
    assert not marker.exists()


def test_a_planted_dcp_value_is_read_weights_only(tmp_path: Path) -> None:
    # DCP's default planner reads non-tensor values with weights_only=False.
    from torch.distributed.checkpoint.metadata import MetadataIndex
    from torch.distributed.checkpoint.planner import LoadItemType, ReadItem

    marker = tmp_path / "ran"
    planner = dcp_guard.planner()
    state = {"step": 0}
    planner.set_up_planner(state, None, True)
    item = ReadItem(
        LoadItemType.BYTE_IO,
        MetadataIndex("step"),
        torch.Size([]),
        MetadataIndex("step"),
        torch.Size([]),
        torch.Size([]),
    )
    with pytest.raises(CheckpointError, match="'step' holds objects"):
        planner.load_bytes(item, io.BytesIO(torch_saved(Plant(marker))))
    assert not marker.exists()
    planner.load_bytes(item, io.BytesIO(torch_saved(7)))
    assert state["step"] == 7
