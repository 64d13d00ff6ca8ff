"""The reserved `_ledger/` prefix and its create-only objects, on every backend: records
are written once and whole, and checkpoints never see or touch them."""

from __future__ import annotations

import threading

import pytest
import torch

from supervisor.storage import layout
from tests.storage.conftest import Backend

RECORD = "_ledger/attempts/0001.json"
STEP_LIKE = "_ledger/step_000000000009/COMMITTED"  # a record named like a step


def test_objects_are_create_only_and_read_back_whole(backend: Backend) -> None:
    storage = backend.store().storage
    assert storage.list_objects() == []
    assert storage.read_object(RECORD) is None
    storage.create_object(RECORD, b'{"attempt": 1}')
    with pytest.raises(FileExistsError, match="never overwritten"):
        storage.create_object(RECORD, b'{"attempt": "other"}')
    assert storage.read_object(RECORD) == b'{"attempt": 1}'
    storage.create_object("_ledger/verdicts/pod-0.json", b"{}")
    # A record still being written (a crash leaves one on local disks) is never listed.
    storage.fs.pipe_file(storage.path("_ledger/verdicts/.pod-1.json.tmp-dead"), b"{")
    assert storage.list_objects() == [RECORD, "_ledger/verdicts/pod-0.json"]
    assert storage.list_objects("_ledger/verdicts") == ["_ledger/verdicts/pod-0.json"]
    assert storage.list_objects("_ledger/none-yet") == []


def test_one_of_many_concurrent_creators_wins(backend: Backend) -> None:
    storage = backend.store().storage
    outcomes: list[bytes | None] = [None] * 8

    def create(i: int) -> None:
        try:
            storage.create_object(RECORD, b"writer %d" % i)
            outcomes[i] = b"writer %d" % i
        except FileExistsError:
            pass

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(outcomes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1
    assert storage.read_object(RECORD) == winners[0]


def test_checkpoints_never_see_or_touch_the_ledger(backend: Backend) -> None:
    store = backend.store(keep_last=2)
    storage = store.storage
    storage.create_object(RECORD, b"{}")
    storage.create_object(STEP_LIKE, b"not a marker")
    for step in range(1, 5):  # retention and cleanup run after every commit
        store.save(step, {"w": torch.full((4,), float(step))})
    assert store.prune(keep_last=2) == []
    assert store.cleanup() == []
    assert store.steps() == [3, 4]
    assert store.latest() == 4
    assert store.load()["w"][0].item() == 4.0
    assert layout.LEDGER_PREFIX not in storage.names()
    assert storage.list_objects() == [RECORD, STEP_LIKE]
    assert storage.read_object(STEP_LIKE) == b"not a marker"


@pytest.mark.parametrize(
    "key",
    [
        "attempts/0001.json",  # outside the prefix
        "_ledger",  # the prefix itself
        "_ledger/",
        "_ledger//x.json",
        "_ledger/../step_000000000001/COMMITTED",
        "_ledger/.hidden",
        "/_ledger/x.json",
        "_ledger/x.json\n",
        "_ledger/a b.json",
    ],
)
def test_keys_outside_the_prefix_or_odd_are_refused(tmp_path, key: str) -> None:
    storage = Backend("local", str(tmp_path / "ckpt")).store().storage
    with pytest.raises(ValueError, match="ledger key"):
        storage.create_object(key, b"{}")
    with pytest.raises(ValueError, match="ledger key"):
        storage.read_object(key)
    assert not (tmp_path / "ckpt").exists()
