"""Local filesystems (`file://` or a plain path): stage a whole step, then rename it into place.

A save writes `step_N.tmp-<attempt>/<attempt>/...` (data files opened O_EXCL), then
`COMMITTED` beside it, fsyncs every file and directory of the staging tree (concurrently,
so they share journal commits), renames the staging directory to `step_N`, and fsyncs the
root. rename(2) onto a non-empty directory fails with ENOTEMPTY/EEXIST, so a committed step
is never replaced. A data file of at least `directsink.MIN_BYTES` on ext4 or xfs is written
with O_DIRECT (`directsink.DirectSink`, around the page cache); everything else through the
page cache (`LocalSink`). Both are made durable by the same fsync before the rename.

Failure windows: none for readers; the step appears whole or not at all. A crash leaves a
staging directory, which the store's `cleanup` removes after a later commit.
Deleting a step renames it out of the way first, so a crash mid-delete leaves no torn step.

A small create-only object (`create_only`, the run ledger's records) is written to a hidden
temporary file in the same directory, fsynced, and hard-linked to its name: link(2) fails
with EEXIST if the name exists, and the name appears only with all its bytes. A crash leaves
at most the hidden temporary file (a name starting with '.', never listed as an object).
This needs a filesystem with hard links, as every local Linux filesystem has.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from supervisor.core.errors import ConfigError
from supervisor.storage import checksum, dcp_guard, directsink, layout, localfile, tensorfile
from supervisor.storage.directsink import DirectSink
from supervisor.storage.strategy import CommitStrategy

# Writeback is started for every this many bytes written (see `localfile.start_writeback`).
# Measured on ext4 (virtio disk), 1 GiB written in 1 MiB pieces then fsynced: 8 MiB ran
# 0.99 s median against 1.52 s with no early writeback, and 32 MiB 1.14 s.
WRITEBACK_BYTES = 8 << 20


class LocalSink:
    """A new local file: O_EXCL create and write, its writeback started as it grows. Not
    yet durable: the commit fsyncs every file of the attempt at once (see
    `RenameCommit.commit`)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.offset = 0  # bytes written so far
        self.flushed = 0  # bytes whose writeback has been started

    def write(self, data: memoryview) -> None:
        while data:
            written = os.write(self.fd, data)
            data = data[written:]
            self.offset += written
        if self.offset - self.flushed >= WRITEBACK_BYTES:
            localfile.start_writeback(self.fd, self.flushed, self.offset - self.flushed)
            self.flushed = self.offset

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# Errors that say the path itself is wrong, not the disk behind it.
_UNUSABLE = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EEXIST}
)


def _unusable(root: str, why: str) -> str:
    return (
        f"checkpoint directory {root} cannot be used: {why}; point --checkpoint-dir (or "
        "SUPERVISE_CHECKPOINT_DIR) at a writable directory"
    )


class RenameCommit(CommitStrategy):
    """Local filesystems: staging directory, fsync, rename(2)."""

    writers = 1

    def check_usable(self) -> None:
        """The root is created if missing and must be writable by this user. A path no
        save can write (a read-only mount, under /proc, no permission) is a mistake in the
        configuration, so it is `ConfigError` now rather than a failed save steps later."""
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as err:
            if err.errno not in _UNUSABLE:
                raise  # the disk failing, not the path: the caller's StorageError
            raise ConfigError(_unusable(self.root, err.strerror)) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ConfigError(
                _unusable(self.root, "not writable (a read-only mount, or no permission)")
            )

    def staging_dir(self, step: int, attempt: str) -> str:
        return self.path(layout.staging_dirname(step, attempt))

    def attempt_dir(self, step: int, attempt: str) -> str:
        return f"{self.staging_dir(step, attempt)}/{attempt}"

    def begin(self, step: int, attempt: str) -> str:
        directory = self.attempt_dir(step, attempt)
        os.makedirs(directory, exist_ok=False)
        return directory

    def sink(self, path: str, size: int | None = None) -> LocalSink | DirectSink:
        # Large files on a disk filesystem bypass the page cache (see `directsink`); small
        # ones, and every file on tmpfs or an unknown filesystem, are written buffered.
        if directsink.usable(os.path.dirname(path), size):
            return DirectSink(path)
        return LocalSink(path)

    def commit(self, step: int, attempt: str, marker: bytes) -> bool:
        staging = self.staging_dir(step, attempt)
        self.write_new(f"{staging}/{layout.MARKER}", marker)
        _fsync_tree(staging)
        try:
            os.rename(staging, self.path(layout.step_dirname(step)))
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise
        _fsync_path(self.root)
        return True

    def discard(self, step: int, attempt: str) -> None:
        self.remove(self.staging_dir(step, attempt))

    def trash(self, step: int) -> None:
        doomed = self.staging_dir(step, f"deleted-{uuid.uuid4().hex}")
        os.rename(self.path(layout.step_dirname(step)), doomed)
        _fsync_path(self.root)
        self.remove(doomed)

    def open_read(self, path: str) -> BinaryIO:
        # Regular files only, inside the root: a FIFO, a device or a directory link planted
        # in a step is refused, never read (see `localfile`).
        return localfile.open_regular(localfile.confined(path, self.root))  # caller closes

    def read_bounded(self, path: str, limit: int) -> bytes:
        with localfile.open_regular(localfile.confined(path, self.root)) as stream:
            return localfile.read_bounded(stream, limit)

    def read_tensors(self, path: str, where: str, size: int) -> tuple[dict[int, Any], str, int]:
        # Mapped copy-on-write rather than copied: the caller's tensors are private pages.
        return tensorfile.map_file(localfile.confined(path, self.root), where, size)

    def checksum(self, path: str) -> str:
        # Hashed from a read-only mapping: no copy into a buffer, only the hash's own pass.
        with localfile.open_regular(localfile.confined(path, self.root)) as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return checksum.of(b"")
            mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
        try:
            digest = checksum.new()
            with memoryview(mapped) as view:
                for start in range(0, size, tensorfile.CHUNK):
                    digest.update(view[start : start + tensorfile.CHUNK])  # freed at once
            return digest.hexdigest()
        finally:
            mapped.close()

    def create_only(self, path: str, data: bytes) -> bool:
        directory, name = path.rsplit("/", 1)
        _make_dirs(directory)
        temporary = f"{directory}/.{name}.tmp-{uuid.uuid4().hex}"
        try:
            self.write_new(temporary, data)
            _fsync_path(temporary)
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
            _fsync_path(directory)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    def dcp_writer(self, path: str) -> Any:
        from torch.distributed.checkpoint import FileSystemWriter

        os.makedirs(path, exist_ok=True)
        return FileSystemWriter(path, sync_files=True, overwrite=False)

    def dcp_reader(self, path: str, files: dict[str, layout.FileEntry]) -> Any:
        from torch.distributed.checkpoint import FileSystemReader

        return dcp_guard.reader(FileSystemReader, path, files)


def _make_dirs(directory: str) -> None:
    """Create `directory` and any missing parents, each durably (its parent fsynced)."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            continue  # a concurrent writer made it
        _fsync_path(os.path.dirname(path))


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
    """fsync a file or a directory (a directory's fsync makes its entries durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
