"""Writing a large checkpoint file around the page cache: O_DIRECT from a few reused buffers.

A buffered write copies every byte into the page cache first. On a VM whose free memory is
handed back to the host (free-page reporting), that copy is where a save spends its time:
each fresh page-cache page is faulted back in by the host, and perf shows the writer inside
`copy_folio_from_iter_atomic` for most of a 1 GiB save (measured here: 1.4 to 8.9 s for the
same buffered 1 GiB write+fsync, round to round). `DirectSink` never touches the page cache:
the caller's pieces are copied into one of `BUFFERS` page-aligned buffers (anonymous mmap,
reused from save to save), and a writer thread writes each full buffer with O_DIRECT while
the caller fills the next one.

Guarantees (the same as `rename_commit.LocalSink`, which it stands in for):
- The file is created with O_EXCL; bytes reach it in order, each exactly once.
- Not yet durable: the commit fsyncs every file of the attempt (`RenameCommit.commit`),
  which also covers the size set by `close`.
- The tail (the last partial block) is written padded to the block size and the file is
  then truncated to its true length, so the file holds exactly the bytes written.
- A write error on the writer thread (ENOSPC, EIO) is raised, as the same OSError, by the
  caller's next `write` or by `close`; `backend.Storage` turns it into `StorageError`.
- Where the filesystem refuses O_DIRECT (EINVAL from fcntl or from a write, e.g. a device
  with larger blocks than our alignment), the sink drops O_DIRECT and carries on with
  buffered writes from the same buffers, the bytes unchanged.
- `discard` stops the writer thread and closes the file, raising nothing; the attempt's
  directory is removed by the caller.

Used only for files of at least `MIN_BYTES` on a filesystem in `FILESYSTEMS` (see
`usable`): tmpfs has no disk to bypass, and a small file is not worth the buffers.

Memory: `BUFFERS` x `BUFFER_BYTES` (64 MiB) per sink open at once; one such set is kept
after a save for the next one (`_Pool`), so the pages are faulted in once per process.
Threads: the caller's thread fills buffers; one writer thread per open sink writes them.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import queue
import threading

from supervisor.storage import localfile

ALIGN = 4096  # the logical block size O_DIRECT needs on every common disk
BUFFER_BYTES = 16 << 20
BUFFERS = 4
MIN_BYTES = 8 << 20  # smaller files (manifests, skeletons, small shards) stay buffered
FILESYSTEMS = frozenset({"ext4", "xfs"})


def filesystem_of(path: str) -> str:
    """The filesystem type of the mount holding `path` (which must exist), from
    /proc/self/mountinfo: the longest mount point that contains it. '' if unknown."""
    real = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                point = _unescape(fields[4])
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):  # later mounts hide earlier ones
                    best, kind = point, right.split()[0]
    except OSError:
        return ""
    return kind


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040...)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def usable(directory: str, size: int | None) -> bool:
    """Whether a file of `size` bytes in `directory` should be written by `DirectSink`."""
    if size is None or size < MIN_BYTES or not hasattr(os, "O_DIRECT"):
        return False
    return filesystem_of(directory) in FILESYSTEMS


class _Pool:
    """Sets of page-aligned buffers, kept for reuse so their pages are faulted in once."""

    keep = 1  # idle sets kept; local saves write one file at a time (`RenameCommit.writers`)

    def __init__(self) -> None:
        self._idle: list[list[tuple[mmap.mmap, memoryview]]] = []
        self._lock = threading.Lock()

    def take(self, count: int, size: int) -> list[tuple[mmap.mmap, memoryview]]:
        with self._lock:
            for i, found in enumerate(self._idle):
                if len(found) == count and len(found[0][1]) == size:
                    return self._idle.pop(i)
        made = []
        for _ in range(count):
            region = mmap.mmap(-1, size)  # anonymous maps start on a page boundary
            made.append((region, memoryview(region)))
        return made

    def give(self, buffers: list[tuple[mmap.mmap, memoryview]]) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(buffers)
                return
        for region, view in buffers:
            view.release()
            region.close()


_POOL = _Pool()

_STOP = None  # sentinel on the writer's queue


class DirectSink:
    """A new local file written with O_DIRECT from reused aligned buffers (see module)."""

    def __init__(
        self,
        path: str,
        *,
        alignment: int = ALIGN,
        buffers: int = BUFFERS,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> None:
        if buffer_bytes % ALIGN or alignment > ALIGN or ALIGN % alignment:
            raise ValueError("buffers must be whole pages and the alignment divide a page")
        self.alignment = alignment
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            self.direct = _set_direct(self.fd, True)
            self._buffers = _POOL.take(buffers, buffer_bytes)
        except BaseException:
            os.close(self.fd)  # the file itself goes with the caller's attempt directory
            raise
        self.size = 0  # bytes handed to write() so far
        self._free: queue.Queue[int] = queue.Queue()
        for i in range(1, buffers):
            self._free.put(i)
        self._current, self._fill = 0, 0
        self._jobs: queue.Queue[tuple[int, int, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._abandoned = False  # set by discard: queued buffers are dropped, not written
        self._writer = threading.Thread(target=self._drain, name="supervise-direct", daemon=True)
        self._writer.start()

    # The caller's thread ----------------------------------------------------------------

    def write(self, data: memoryview) -> None:
        view = self._buffers[self._current][1]
        while data:
            self._check()
            take = min(len(data), len(view) - self._fill)
            view[self._fill : self._fill + take] = data[:take]
            data = data[take:]
            self._fill += take
            self.size += take
            if self._fill == len(view):
                self._submit()
                view = self._buffers[self._current][1]

    def close(self) -> None:
        """Write what is buffered, wait for the writer and set the file's true length."""
        if self._fill:
            self._submit()
        self._finish()
        self._check()
        try:
            if os.fstat(self.fd).st_size != self.size:
                os.ftruncate(self.fd, self.size)  # drop the tail's padding
        finally:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def discard(self) -> None:
        self._abandoned = True
        self._finish()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _submit(self) -> None:
        offset = self.size - self._fill
        self._jobs.put((self._current, self._fill, offset))
        self._current, self._fill = self._free.get(), 0  # blocks while every buffer is busy

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _finish(self) -> None:
        """Stop the writer after the queued buffers and give the buffers back (once)."""
        if self._writer.is_alive():
            self._jobs.put(_STOP)
            self._writer.join()
        if self._buffers:
            buffers, self._buffers = self._buffers, []
            _POOL.give(buffers)

    # The writer thread ------------------------------------------------------------------

    def _drain(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            index, length, offset = job
            try:
                if self._error is None and not self._abandoned:
                    self._write_out(self._buffers[index][1], length, offset)
            except BaseException as err:  # handed to the caller's thread, raised there
                self._error = err
            finally:
                self._free.put(index)

    def _write_out(self, view: memoryview, length: int, offset: int) -> None:
        padded = length + (-length % self.alignment) if self.direct else length
        view[length:padded] = bytes(padded - length)  # no stale bytes, even briefly
        done = 0
        while done < padded:
            try:
                written = os.pwrite(self.fd, view[done:padded], offset + done)
            except OSError as err:
                if err.errno != errno.EINVAL or not self.direct:
                    raise
                self.direct = _set_direct(self.fd, False)  # refused: go on buffered
                padded = length
                continue
            if written == 0:
                raise OSError(errno.EIO, "write made no progress")
            done += written
        if not self.direct:
            localfile.start_writeback(self.fd, offset, length)


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for `fd`; whether it is on afterwards. EINVAL (the
    filesystem has no direct I/O) leaves it off; any other error is raised."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    wanted = flags | os.O_DIRECT if on else flags & ~os.O_DIRECT
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, wanted)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        return False
    return on
