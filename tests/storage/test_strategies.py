"""One commit strategy per kind of storage, chosen by protocol in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.storage.backend import DEFAULT_STRATEGY, STRATEGIES, Storage
from supervisor.storage.marker_commit import (
    BucketMarkerCommit,
    InProcessMarkerCommit,
    MarkerCommit,
)
from supervisor.storage.rename_commit import RenameCommit
from tests.storage.conftest import S3Server


@pytest.mark.parametrize(
    ("url", "strategy"),
    [
        ("{tmp}/ckpt", RenameCommit),
        ("file://{tmp}/ckpt", RenameCommit),
        ("memory://run", InProcessMarkerCommit),
        # An fsspec protocol not in the registry is an object store: single-object writes.
        ("simplecache::memory://run", DEFAULT_STRATEGY),
    ],
)
def test_the_strategy_is_chosen_by_protocol(tmp_path: Path, url: str, strategy: type) -> None:
    assert type(Storage(url.format(tmp=tmp_path)).strategy) is strategy


def test_s3_is_an_object_store_with_buckets(s3_server: S3Server) -> None:
    storage = Storage(f"s3://{s3_server.bucket()}/run", s3_server.options())
    assert type(storage.strategy) is BucketMarkerCommit
    assert issubclass(BucketMarkerCommit, MarkerCommit)
    assert {STRATEGIES[p] for p in ("s3", "s3a", "gs", "gcs")} == {BucketMarkerCommit}
