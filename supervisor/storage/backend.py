"""Where checkpoint bytes go: one fsspec filesystem and the commit strategy that fits it.

This is the only module (with its package) that imports fsspec. Two strategies, one reader
rule (a step exists iff `step_N/COMMITTED` exists and pins its manifest by hash):

- Local filesystems (`file://` or a plain path) stage a whole step in
  `step_N.tmp-<attempt>/`, write `COMMITTED` there with O_EXCL, fsync every file and
  directory of the staging tree (concurrently, so they share journal commits), `rename` the
  staging directory to `step_N`, and fsync the root.
  rename(2) onto a non-empty directory fails with ENOTEMPTY/EEXIST, so a committed step is
  never replaced. Failure windows: none for readers (the step appears whole or not at all);
  a crash leaves a staging directory that `cleanup` removes.
- Object stores and memory:// write data and manifest under `step_N/<attempt>/` and then
  `COMMITTED` with a create-only put: mode "xb", which s3fs sends as `If-None-Match: *`
  (S3 answers 412, surfaced as FileExistsError) and memory:// and gcsfs also honour. A
  filesystem that rejects mode "x" falls back to check-then-write; between the check and
  the write a concurrent writer of the *same step* could also commit, and the later marker
  wins. Single-object PUTs are atomic and S3 reads are strongly consistent, so readers
  never see a partial marker.

Every call blocks on I/O in the calling thread. Every failure of the storage itself (OSError,
botocore errors, a missing bucket) is raised as `StorageError`, one line saying what to do;
nothing here deletes a committed step except `trash`, which invalidates before deleting.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from supervisor.core.errors import CheckpointError, StorageError
from supervisor.storage import layout

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


class LocalSink:
    """A new local file: O_EXCL create and write. Not yet durable: the local commit fsyncs
    every file of the attempt at once (see `_commit_local`)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def write(self, data: memoryview) -> None:
        while data:
            written = os.write(self.fd, data)
            data = data[written:]

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FsspecSink:
    """A new object; the upload completes (and becomes visible) on close."""

    def __init__(self, fs: Any, path: str) -> None:
        self.file = fs.open(path, "wb")

    def write(self, data: memoryview) -> None:
        self.file.write(data)

    def close(self) -> None:
        self.file.close()

    def discard(self) -> None:
        # s3fs: abort the multipart upload rather than completing a partial object.
        with contextlib.suppress(Exception):
            discard = getattr(self.file, "discard", None)
            if discard is not None:
                discard()
            else:
                self.file.close()


class Storage:
    """One checkpoint root URL."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        try:
            fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ValueError, ImportError) as err:
            from supervisor.core.errors import ConfigError

            raise ConfigError(f"unsupported checkpoint URL {url!r}: {err}") from err
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.local = isinstance(fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn storage failures into StorageError; our own errors pass through."""
        try:
            yield
        except (CheckpointError, StorageError):
            raise
        except Exception as err:
            raise storage_error(self.url, what, err) from err

    # Reading -------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Entry names directly under the root; [] if the root does not exist yet."""
        with self.guard("listing"):
            if not self.local:
                self.fs.invalidate_cache(self.root)
            try:
                entries = self.fs.ls(self.root, detail=False)
            except FileNotFoundError:
                self._check_bucket()
                return []  # no checkpoint yet: the first run creates the root
            return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def _check_bucket(self) -> None:
        """A missing bucket is a misconfiguration, not an empty checkpoint root."""
        if not {"s3", "gs", "gcs"} & set(_protocols(self.fs)):
            return
        bucket = self.root.split("/", 1)[0]
        if not self.fs.exists(bucket):
            raise FileNotFoundError(f"bucket {bucket!r} does not exist")

    def read(self, path: str) -> bytes | None:
        """Whole small object, or None if absent."""
        with self.guard(f"reading {path}"):
            try:
                return self.fs.cat_file(path)
            except FileNotFoundError:
                return None

    def open_read(self, path: str) -> BinaryIO:
        with self.guard(f"opening {path}"):
            if self.local:
                return open(path, "rb", buffering=0)  # the caller closes it
            return self.fs.open(path, "rb", block_size=8 << 20, cache_type="readahead")

    def sizes(self, directory: str) -> dict[str, int]:
        """Relative path -> size for every file under `directory` (recursively)."""
        with self.guard(f"listing {directory}"):
            if not self.local:
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
        if self.local:
            return self.path(layout.staging_dirname(step, attempt), attempt)
        return self.path(layout.step_dirname(step), attempt)

    def begin(self, step: int, attempt: str) -> str:
        directory = self.attempt_dir(step, attempt)
        with self.guard(f"creating {directory}"):
            if self.local:
                os.makedirs(directory, exist_ok=False)
        return directory

    def sink(self, path: str) -> LocalSink | FsspecSink:
        with self.guard(f"creating {path}"):
            return LocalSink(path) if self.local else FsspecSink(self.fs, path)

    def put(self, path: str, data: bytes) -> None:
        """A small new file, durable on return."""
        sink = self.sink(path)
        with self.guard(f"writing {path}"):
            try:
                sink.write(memoryview(data))
                sink.close()
            except BaseException:
                sink.discard()
                raise

    def commit(self, step: int, attempt: str, marker: bytes) -> bool:
        """Publish the attempt; False if the step was already committed (nothing changed)."""
        if self.local:
            return self._commit_local(step, attempt, marker)
        final = self.path(layout.step_dirname(step), layout.MARKER)
        with self.guard(f"committing {final}"):
            try:
                with self.fs.open(final, "xb") as f:
                    f.write(marker)
                return True
            except FileExistsError:
                return False
            except (ValueError, NotImplementedError):
                # No create-only mode: check then write (window documented above).
                if self.fs.exists(final):
                    return False
                self.fs.pipe_file(final, marker)
                return True

    def _commit_local(self, step: int, attempt: str, marker: bytes) -> bool:
        staging = self.path(layout.staging_dirname(step, attempt))
        final = self.path(layout.step_dirname(step))
        with self.guard(f"committing {final}"):
            self.put(f"{staging}/{layout.MARKER}", marker)
            _fsync_tree(staging)
            try:
                os.rename(staging, final)
            except OSError as err:
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False
                raise
            _fsync_dir(self.root)
            return True

    def discard(self, step: int, attempt: str) -> None:
        """Best effort removal of an attempt that did not commit."""
        target = (
            self.path(layout.staging_dirname(step, attempt))
            if self.local
            else self.path(layout.step_dirname(step), attempt)
        )
        self.remove(target)

    def remove(self, target: str) -> None:
        """Delete recursively; already gone is fine."""
        with self.guard(f"deleting {target}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm(target, recursive=True)

    def trash(self, step: int) -> None:
        """Delete a committed step: invalidate atomically first, then remove the bytes."""
        final = self.path(layout.step_dirname(step))
        with self.guard(f"deleting step {step}"):
            if self.local:
                doomed = self.path(layout.staging_dirname(step, f"deleted-{uuid.uuid4().hex}"))
                os.rename(final, doomed)
                _fsync_dir(self.root)
                self.remove(doomed)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(f"{final}/{layout.MARKER}")
                self.remove(final)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _fsync_tree(root: str) -> None:
    """fsync every file and directory under `root`, concurrently.

    One fsync per file as each is closed costs a journal commit each on ext4/xfs; issued
    together they share commits, which on a small checkpoint is most of the save."""
    paths = []
    for directory, _, files in os.walk(root):
        paths.append(directory)
        paths.extend(os.path.join(directory, name) for name in files)
    with ThreadPoolExecutor(min(8, len(paths))) as pool:
        list(pool.map(_fsync_path, paths))


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
