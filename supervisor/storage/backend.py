"""Where checkpoint bytes go: one fsspec filesystem and the commit strategy that fits it.

This is where a checkpoint URL becomes a filesystem, a root and a commit strategy, chosen
once by protocol from `STRATEGIES` (as fsspec keeps one registry keyed by protocol):
local filesystems rename a staging directory into place (`rename_commit`), everything else
writes a create-only marker (`marker_commit`). The strategies document their failure
windows; all of them keep one readers' rule: a step exists iff `step_N/COMMITTED` exists
and pins its manifest by hash (`reader`).

fsspec is imported only in this package. Every call blocks on I/O in the calling thread.
Every failure of the storage itself (OSError, botocore errors, a missing bucket) is raised
as `StorageError`, one line saying what to do; nothing here deletes a committed step except
`trash`, which invalidates before deleting.

The run ledger's prefix. `layout.LEDGER_PREFIX` (`_ledger/` at the top of the checkpoint
URL) is reserved: `names()` never lists it, so the store, retention, cleanup and
`supervise ckpt` never see or touch it. Inside it, `create_object`, `list_objects` and
`read_object` keep small create-only records, on every kind of storage alike.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

import fsspec

from supervisor.core.errors import CheckpointError, ConfigError, StorageError
from supervisor.storage import layout
from supervisor.storage.marker_commit import (
    BucketMarkerCommit,
    InProcessMarkerCommit,
    MarkerCommit,
)
from supervisor.storage.rename_commit import RenameCommit
from supervisor.storage.strategy import CommitStrategy, Sink

# fsspec protocol -> commit strategy. Any protocol not listed is treated as an object store,
# which is safe wherever a single object's write is atomic.
STRATEGIES: dict[str, type[CommitStrategy]] = {
    "file": RenameCommit,
    "local": RenameCommit,
    "memory": InProcessMarkerCommit,
    "s3": BucketMarkerCommit,
    "s3a": BucketMarkerCommit,
    "gs": BucketMarkerCommit,
    "gcs": BucketMarkerCommit,
}
DEFAULT_STRATEGY: type[CommitStrategy] = MarkerCommit

_HINTS = {
    errno.ENOSPC: "free space or point SUPERVISE_CHECKPOINT_DIR at a larger volume",
    errno.EDQUOT: "raise the quota or point SUPERVISE_CHECKPOINT_DIR elsewhere",
    errno.EACCES: f"make it writable by this user (uid {os.getuid()}) or point "
    "SUPERVISE_CHECKPOINT_DIR elsewhere",
    errno.EPERM: "make it writable by this user or point SUPERVISE_CHECKPOINT_DIR elsewhere",
    errno.EROFS: "mount it read-write or point SUPERVISE_CHECKPOINT_DIR elsewhere",
}


def storage_error(url: str, what: str, err: BaseException) -> StorageError:
    hint = _HINTS.get(getattr(err, "errno", None) or -1, "check the URL, credentials and network")
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return StorageError(
        f"checkpoint storage {url}: {what} failed: {reason}; {hint}. Committed steps are intact."
    )


def strategy_for(fs: Any) -> type[CommitStrategy]:
    """The commit strategy for an fsspec filesystem, by its protocol names."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    for protocol in protocols:
        if protocol in STRATEGIES:
            return STRATEGIES[protocol]
    return DEFAULT_STRATEGY


# Protocols a checkpoint root cannot live on: read-only archives and web servers, and the
# caching wrappers, which keep writes in a local copy (fsspec's `implementations/`).
UNSUPPORTED = frozenset(
    {
        "zip",
        "tar",
        "libarchive",
        "http",
        "https",
        "github",
        "git",
        "reference",
        "simplecache",
        "filecache",
        "blockcache",
        "cached",
        "dir",
    }
)


def _check_url(url: str) -> None:
    """Raise `ConfigError` for a URL no checkpoint root can use: a chained one
    (`zip::s3://...`, `simplecache::...`), whose writes would go to a wrapper rather than the
    storage, or one of the `UNSUPPORTED` protocols."""
    if not url.strip():
        raise ConfigError("the checkpoint URL is empty: give a path or an fsspec URL")
    if "::" in url:
        raise ConfigError(
            f"chained checkpoint URL {url!r}: give the storage's own URL (s3://..., a path), "
            "without a `::` chain"
        )
    protocol, sep, _ = url.partition("://")
    if sep and protocol.lower() in UNSUPPORTED:
        raise ConfigError(
            f"checkpoint URL {url!r}: {protocol}:// cannot hold checkpoints (read-only or a "
            "cache); give a path or an object store URL such as s3://"
        )


class Storage:
    """One checkpoint root URL: paths under it, and every operation the store needs, each
    turning storage failures into `StorageError`."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        options = dict(storage_options or {})
        _check_url(url)
        try:
            fs, root = fsspec.core.url_to_fs(url, **options)
        except (ValueError, ImportError, TypeError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"unsupported checkpoint URL {url!r}: {reason}") from None
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        if strategy_for(fs) is RenameCommit and os.path.isfile(self.root):
            raise ConfigError(
                f"checkpoint directory {url!r} is a regular file: give a directory (it is "
                "created if missing)"
            )
        self.strategy = strategy_for(fs)(fs, self.root, options)

    def path(self, *parts: str) -> str:
        return self.strategy.path(*parts)

    def check_usable(self) -> None:
        """`ConfigError` if no save could ever write here (see `CommitStrategy.check_usable`);
        `StorageError` if finding out failed."""
        with self.guard("checking the checkpoint root"):
            self.strategy.check_usable()

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn storage failures into StorageError; our own errors pass through."""
        try:
            yield
        except (CheckpointError, ConfigError, StorageError):
            raise
        except Exception as err:
            raise storage_error(self.url, what, err) from err

    # Reading -------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Entry names directly under the root, except the reserved ledger prefix; [] if
        the root does not exist yet."""
        return [name for name in self.children(self.root) if name != layout.LEDGER_PREFIX]

    def children(self, directory: str) -> list[str]:
        """Entry names directly under `directory`, sorted; [] if it does not exist."""
        with self.guard(f"listing {directory}"):
            self.fs.invalidate_cache(directory)  # object stores cache listings
            try:
                entries = self.fs.ls(directory, detail=False)
            except FileNotFoundError:
                if directory == self.root:
                    self.strategy.check_root()
                return []  # no checkpoint yet: the first save creates the root
            return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def read(self, path: str, limit: int | None = None) -> bytes | None:
        """Whole small object, or None if absent. With `limit`, never more than `limit`
        bytes are read: a longer object raises `DamagedError`; on local filesystems
        anything but a regular file does too (see `localfile`)."""
        with self.guard(f"reading {path}"):
            try:
                if limit is None:
                    return self.fs.cat_file(path)
                data = self.strategy.read_bounded(path, limit + 1)
            except FileNotFoundError:
                return None
        if len(data) > limit:
            raise layout.DamagedError(f"{path} is larger than the {limit} bytes expected")
        return data

    def open_read(self, path: str) -> BinaryIO:
        with self.guard(f"opening {path}"):
            return self.strategy.open_read(path)

    def read_tensors(self, path: str, size: int) -> tuple[dict[int, Any], str, int]:
        """The tensors of one tensor file of `size` bytes (the manifest's), its checksum
        and actual size; nothing is allocated beyond what `size` allows."""
        with self.guard(f"reading {path}"):
            return self.strategy.read_tensors(path, path, size)

    def checksum(self, path: str) -> str:
        """The checksum of every byte of the existing file `path`."""
        with self.guard(f"reading {path}"):
            return self.strategy.checksum(path)

    def sizes(self, directory: str) -> dict[str, int]:
        """Relative path -> size for every file under `directory` (recursively)."""
        with self.guard(f"listing {directory}"):
            self.fs.invalidate_cache(directory)
            try:
                found = self.fs.find(directory, detail=True)
            except FileNotFoundError:
                return {}
            prefix = directory.rstrip("/") + "/"
            return {
                name[len(prefix) :]: int(info["size"])
                for name, info in found.items()
                if name.startswith(prefix) and info.get("type", "file") == "file"
            }

    # Writing -------------------------------------------------------------------------

    def attempt_dir(self, step: int, attempt: str) -> str:
        return self.strategy.attempt_dir(step, attempt)

    def begin(self, step: int, attempt: str) -> str:
        directory = self.attempt_dir(step, attempt)
        with self.guard(f"creating {directory}"):
            return self.strategy.begin(step, attempt)

    def sink(self, path: str, size: int | None = None) -> Sink:
        """A new file at `path`; `size` (when known) lets the strategy pick how to write."""
        with self.guard(f"creating {path}"):
            return self.strategy.sink(path, size)

    def put(self, path: str, data: bytes) -> None:
        """A small new file; durable once the step commits."""
        with self.guard(f"writing {path}"):
            self.strategy.write_new(path, data)

    def commit(self, step: int, attempt: str, marker: bytes) -> bool:
        """Publish the attempt; False if the step was already committed (nothing changed)."""
        with self.guard(f"committing {self.path(layout.step_dirname(step))}"):
            return self.strategy.commit(step, attempt, marker)

    def discard(self, step: int, attempt: str) -> None:
        """Best effort removal of an attempt that did not commit."""
        with self.guard(f"deleting attempt {attempt} of step {step}"):
            self.strategy.discard(step, attempt)

    def remove(self, target: str) -> None:
        """Delete recursively; already gone is fine."""
        with self.guard(f"deleting {target}"):
            self.strategy.remove(target)

    def trash(self, step: int) -> None:
        """Delete a committed step: invalidate atomically first, then remove the bytes."""
        with self.guard(f"deleting step {step}"):
            self.strategy.trash(step)

    # Small create-only objects under the ledger prefix (the run ledger) ----------------

    def create_object(self, key: str, data: bytes) -> None:
        """Create the object `key` (a '/'-separated path under `layout.LEDGER_PREFIX`, e.g.
        `_ledger/attempts/0003.json`) holding `data`, durable and whole on return.

        Create-only: raises FileExistsError, changing nothing, if `key` already exists
        (on object stores without a create-only put, see `marker_commit` for the window).
        A reader sees the object whole or not at all. ValueError for a key outside the
        prefix or with an empty, '.'-leading or unusual part; StorageError if storage fails."""
        path = self.path(layout.check_ledger_key(key))
        with self.guard(f"creating {path}"):
            created = self.strategy.create_only(path, data)
        if not created:
            raise FileExistsError(
                errno.EEXIST, f"{self.url}: {key} already exists and is never overwritten"
            )

    def list_objects(self, prefix: str = layout.LEDGER_PREFIX) -> list[str]:
        """Keys of every object under `prefix` (the ledger prefix or a folder in it),
        recursively, sorted; [] if there are none. Objects still being created are not
        listed. ValueError for a prefix outside the ledger prefix."""
        directory = self.path(layout.check_ledger_prefix(prefix))
        return sorted(
            f"{prefix}/{relative}"
            for relative in self.sizes(directory)
            if not relative.rsplit("/", 1)[-1].startswith(".")
        )

    def read_object(self, key: str) -> bytes | None:
        """The bytes of object `key` (see `create_object`), or None if it does not exist."""
        return self.read(self.path(layout.check_ledger_key(key)))
