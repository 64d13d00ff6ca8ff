"""The commit protocol as a strategy: one class per kind of storage, as in Orbax's atomicity
classes (google/orbax, `checkpoint/orbax/checkpoint/_src/path/atomicity.py`).

A strategy owns everything that differs between kinds of storage: where an attempt's files
go, how a new file is written and read back, how an attempt is committed (made visible to
readers whole, never replacing a committed step), how an attempt or a committed step is
removed, and how one small object is created only if nothing is there yet. The kinds:

- `rename_commit.RenameCommit`: local filesystems; a staging directory renamed into place.
- `marker_commit.MarkerCommit`: object stores and memory://; a create-only marker object.

`backend.Storage` picks one per URL from the fsspec protocol (`backend.STRATEGIES`, the one
place that does); no other code asks what kind of storage it is writing to.

Every strategy keeps the readers' rule (`reader`): a step exists iff `step_N/COMMITTED`
exists and pins its manifest by hash. Every method blocks on I/O in the calling thread and
raises the storage's own errors (OSError, botocore errors); `backend.Storage` turns them
into `StorageError`. Paths are absolute paths of `fs`, as `path()` builds them.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, BinaryIO, ClassVar, Protocol

from supervisor.storage import checksum, layout


class Sink(Protocol):
    """A new file being written. `close` completes it; `discard` abandons it."""

    def write(self, data: memoryview) -> None: ...
    def close(self) -> None: ...
    def discard(self) -> None: ...


class CommitStrategy(ABC):
    """How one kind of storage stages, commits, reads and removes checkpoint files."""

    #: How many files to transfer at once when saving or loading: parallel uploads pay off
    #: on object stores; on a local disk they only interleave the writes.
    writers: ClassVar[int] = 1

    def __init__(self, fs: Any, root: str, options: dict[str, Any]) -> None:
        self.fs = fs
        self.root = root
        self.options = options  # the fsspec storage options, for libraries that open their own

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def marker_path(self, step: int) -> str:
        return self.path(layout.step_dirname(step), layout.MARKER)

    # Saving an attempt -----------------------------------------------------------------

    @abstractmethod
    def attempt_dir(self, step: int, attempt: str) -> str:
        """Where the data files and the manifest of this attempt go."""

    @abstractmethod
    def begin(self, step: int, attempt: str) -> str:
        """Prepare `attempt_dir` for new files and return it."""

    @abstractmethod
    def sink(self, path: str, size: int | None = None) -> Sink:
        """A new file at `path` (which must not exist). Durable once the step commits.
        `size`, when known, is how many bytes will be written (a strategy may pick how
        to write by it); the bytes written decide the file's length, not `size`."""

    def write_new(self, path: str, data: bytes) -> None:
        """A small new file, written whole; a failed write leaves no completed file."""
        sink = self.sink(path)
        try:
            sink.write(memoryview(data))
            sink.close()
        except BaseException:
            sink.discard()
            raise

    @abstractmethod
    def commit(self, step: int, attempt: str, marker: bytes) -> bool:
        """Publish the attempt with its marker; False (nothing changed) if the step was
        already committed. Every file of the attempt is durable before the step appears."""

    @abstractmethod
    def discard(self, step: int, attempt: str) -> None:
        """Remove an attempt that did not commit; already gone is fine."""

    @abstractmethod
    def trash(self, step: int) -> None:
        """Delete a committed step: invalidate it atomically first, then remove its bytes."""

    def remove(self, target: str) -> None:
        """Delete a file or a directory tree; already gone is fine."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(target, recursive=True)

    def check_usable(self) -> None:
        """Before any work: raise `ConfigError` for a root that no save could ever write
        to. Most storage is judged by its first operation instead (a listing)."""
        return None

    def check_root(self) -> None:
        """Called when the root does not exist: raise if that is a misconfiguration rather
        than an empty checkpoint root that the first save creates."""
        return None  # most storage: the first save creates the root

    # Reading ---------------------------------------------------------------------------

    @abstractmethod
    def open_read(self, path: str) -> BinaryIO:
        """An open stream over an existing file; the caller closes it."""

    def read_bounded(self, path: str, limit: int) -> bytes:
        """At most `limit` bytes from the start of an existing file (FileNotFoundError if
        there is none): a ranged read, so a huge object costs no more than `limit`."""
        return self.fs.cat_file(path, start=0, end=limit)

    def checksum(self, path: str) -> str:
        """The checksum of every byte of an existing file, read in order to its end."""
        digest = checksum.new()
        with self.open_read(path) as stream:
            while chunk := stream.read(8 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    @abstractmethod
    def read_tensors(self, path: str, where: str, size: int) -> tuple[dict[int, Any], str, int]:
        """The tensors of one tensor file of `size` bytes (the manifest's size), its
        checksum and actual size (see `tensorfile`)."""

    # Small create-only objects (the commit marker, the run ledger) ---------------------

    @abstractmethod
    def create_only(self, path: str, data: bytes) -> bool:
        """Create `path` holding `data`, durable and whole on return; False, changing
        nothing, if something already exists there. Readers never see it partly written."""

    # torch.distributed.checkpoint ------------------------------------------------------

    @abstractmethod
    def dcp_writer(self, path: str) -> Any:
        """A `torch.distributed.checkpoint` StorageWriter into directory `path`."""

    @abstractmethod
    def dcp_reader(self, path: str, files: dict[str, layout.FileEntry]) -> Any:
        """A `torch.distributed.checkpoint` StorageReader over directory `path` that reads
        DCP's pickled index only as `dcp_guard.reader` does: checked against `files` (the
        committed manifest's entries, keyed by path under `path`) and restricted."""
