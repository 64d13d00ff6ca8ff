"""A committed marker on S3 is never replaced: the second create-only write is refused.

Against a real S3 API server (moto, see conftest). s3fs sends `If-None-Match: *` for mode
"xb"; for objects small enough to go up in one PUT (every marker, every ledger record) only
from s3fs 2025.7.0 (fsspec/s3fs#973, fixed by #974). Before that a second writer silently
replaced the first writer's marker, so these tests fail on an older s3fs. (An *empty*
"xb" object still goes up unconditionally, through `touch`, in s3fs 2026.9; a marker or a
ledger record is never empty.)
"""

from __future__ import annotations

import pytest

from supervisor.storage import layout
from supervisor.storage.backend import Storage
from supervisor.storage.marker_commit import BucketMarkerCommit

s3fs = pytest.importorskip("s3fs")


def _no_check_then_write(*_args: object, **_kwargs: object) -> bool:
    # `create_only` falls back to exists()-then-write only where "xb" is not supported; on
    # S3 the refusal must come from the server's conditional PUT, never from that check.
    raise AssertionError("create-only on S3 fell back to check-then-write")


def _writer(server, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Storage:
    """One writer (a pod): its own Storage and its own s3fs instance, no shared cache."""
    storage = Storage(f"s3://{bucket}/run", server.options())
    assert isinstance(storage.strategy, BucketMarkerCommit)
    monkeypatch.setattr(storage.fs, "exists", _no_check_then_write)
    return storage


def test_s3fs_refuses_a_second_xb_open_of_a_small_object(s3_server) -> None:
    fs = s3fs.S3FileSystem(**s3_server.options())
    path = f"{s3_server.bucket()}/run/{layout.step_dirname(1)}/{layout.MARKER}"
    with fs.open(path, "xb") as f:
        f.write(b"first")
    with pytest.raises(FileExistsError), fs.open(path, "xb") as f:
        f.write(b"second")
    assert fs.cat_file(path) == b"first"


def test_s3fs_refuses_the_later_of_two_racing_xb_writes(s3_server) -> None:
    # Both writers open before either has written: nothing is checked at open, so only the
    # conditional PUT at close can tell them apart.
    fs = s3fs.S3FileSystem(**s3_server.options())
    path = f"{s3_server.bucket()}/run/{layout.step_dirname(1)}/{layout.MARKER}"
    first, second = fs.open(path, "xb"), fs.open(path, "xb")
    first.write(b"first")
    second.write(b"second")
    first.close()
    with pytest.raises(FileExistsError):
        second.close()
    assert fs.cat_file(path) == b"first"


def test_the_store_commits_a_step_marker_once(s3_server, monkeypatch) -> None:
    bucket = s3_server.bucket()
    one, two = _writer(s3_server, bucket, monkeypatch), _writer(s3_server, bucket, monkeypatch)
    assert one.commit(7, "attempt-a", b'{"attempt": "a"}') is True
    assert two.commit(7, "attempt-b", b'{"attempt": "b"}') is False
    assert one.commit(7, "attempt-a", b'{"attempt": "a", "again": true}') is False
    assert two.read(two.strategy.marker_path(7)) == b'{"attempt": "a"}'


def test_the_store_creates_a_ledger_record_once(s3_server, monkeypatch) -> None:
    bucket = s3_server.bucket()
    one, two = _writer(s3_server, bucket, monkeypatch), _writer(s3_server, bucket, monkeypatch)
    key = f"{layout.LEDGER_PREFIX}/attempts/0001.json"
    one.create_object(key, b'{"pod": "one"}')
    with pytest.raises(FileExistsError):
        two.create_object(key, b'{"pod": "two"}')
    assert two.read_object(key) == b'{"pod": "one"}'
