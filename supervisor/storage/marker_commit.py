"""Object stores (s3://, gs://, memory://, any other fsspec protocol): a create-only marker.

A save writes its data files and manifest under `step_N/<attempt>/`, then `step_N/COMMITTED`
with a create-only put: mode "xb", which s3fs sends as `If-None-Match: *` (S3 answers 412,
surfaced as FileExistsError) and which gcsfs also honours; memory:// gets an exact
in-process version (`InProcessMarkerCommit`). Single-object PUTs are atomic and S3 reads
are strongly consistent, so readers never see a partial marker, and an object's upload
completes (becomes visible) only when its writer closes it.

Failure windows: a filesystem that rejects mode "x" falls back to check-then-write; between
the check and the write a concurrent writer of the *same step* (or the same ledger record)
could also create it, and the later write wins. A crash leaves an attempt directory without
a marker (invisible to readers), removed by the store's `cleanup` after a later commit.
Deleting a step removes its marker first, so a crash mid-delete leaves no torn step.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, BinaryIO

from supervisor.storage import dcp_guard, layout, tensorfile
from supervisor.storage.strategy import CommitStrategy


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


class MarkerCommit(CommitStrategy):
    """Object stores: attempts side by side under the step, one create-only marker."""

    writers = 8

    def attempt_dir(self, step: int, attempt: str) -> str:
        return self.path(layout.step_dirname(step), attempt)

    def begin(self, step: int, attempt: str) -> str:
        return self.attempt_dir(step, attempt)  # object stores have no directories to make

    def sink(self, path: str, size: int | None = None) -> FsspecSink:
        return FsspecSink(self.fs, path)

    def commit(self, step: int, attempt: str, marker: bytes) -> bool:
        return self.create_only(self.marker_path(step), marker)

    def discard(self, step: int, attempt: str) -> None:
        self.remove(self.attempt_dir(step, attempt))

    def trash(self, step: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.marker_path(step))
        self.remove(self.path(layout.step_dirname(step)))

    def open_read(self, path: str) -> BinaryIO:
        return self.fs.open(path, "rb", block_size=8 << 20, cache_type="readahead")

    def read_tensors(self, path: str, where: str, size: int) -> tuple[dict[int, Any], str, int]:
        with self.open_read(path) as stream:
            return tensorfile.read_file(stream, where, size)

    def create_only(self, path: str, data: bytes) -> bool:
        try:
            with self.fs.open(path, "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError):
            # No create-only mode: check then write (the window in the module docstring).
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
            return True

    def dcp_writer(self, path: str) -> Any:
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter

        url = self.fs.unstrip_protocol(path)
        return FsspecWriter(url, sync_files=True, overwrite=False, **self.options)

    def dcp_reader(self, path: str, files: dict[str, layout.FileEntry]) -> Any:
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

        url = self.fs.unstrip_protocol(path)
        return dcp_guard.reader(FsspecReader, url, files, **self.options)


class BucketMarkerCommit(MarkerCommit):
    """S3 and GCS: as `MarkerCommit`, and a missing bucket is a misconfiguration, not an
    empty checkpoint root."""

    def check_root(self) -> None:
        bucket = self.root.split("/", 1)[0]
        if not self.fs.exists(bucket):
            raise FileNotFoundError(f"bucket {bucket!r} does not exist")


class InProcessMarkerCommit(MarkerCommit):
    """memory://: as `MarkerCommit`, with create-only made exact. fsspec's memory filesystem
    checks for mode "x" and then inserts an empty file that the write fills in place, so a
    reader could see it empty and two threads could both create it; one lock per process
    and a whole-object insert (`pipe_file`) close both windows."""

    _create_lock = threading.Lock()

    def create_only(self, path: str, data: bytes) -> bool:
        with self._create_lock:
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
            return True
