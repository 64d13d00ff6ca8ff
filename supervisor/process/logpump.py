"""Copies the child's stdout and stderr to ours, unchanged, and shows lines to a matcher.

Guarantees:

* Bytes arrive unchanged and in order per stream. Each chunk is written as soon as it is
  read (no line buffering), so a person watching sees no added latency. Order *between*
  stdout and stderr is not preserved; it never is once two pipes are involved.
* The bytes do not pass through user space twice: each chunk is duplicated with tee(2)
  into a private pipe, moved to our fd with splice(2) (no copy) and read from the private
  pipe for the matcher, which so sees exactly the bytes that were forwarded. Where our fd
  refuses splice (a file opened for appending) the pump reads and writes instead, from
  that chunk on, losing and repeating nothing.
* One daemon thread per stream, blocked in tee(2) or `os.read`. The child never blocks on a
  full pipe because of us: if our own output is gone (EPIPE, a closed terminal), we keep
  reading and drop the bytes, and say so once on the event log.
* `join` returns once the pipe reaches EOF (every writer in the tree has exited) or the
  timeout passes; the loop joins before exiting, so nothing is lost at exit.
* A `SharedStream` is the fd the pump shares with the event log (our stderr): both write
  under its lock, and it knows whether the last byte written ended a line, so an event
  never lands on the tail of a child's unfinished line (a progress bar without a newline).
* The matcher sees whole lines. Its `prefilter` is searched over each complete chunk of
  lines first; lines are split and decoded only when it hits, so a run without matches pays
  for one regex scan per chunk, and output without newlines for none.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import threading
from collections.abc import Callable
from typing import Protocol

from supervisor.core.events import Finding

CHUNK = 1 << 20  # matches the pipe size children.spawn asks for
MAX_LINE = 1 << 16  # a longer unterminated line is cut for matching (still copied whole)
_F_SETPIPE_SZ = 1031  # linux/fcntl.h


def _load_tee() -> Callable[[int, int, int, int], int] | None:
    """tee(2) from the C library (Python's `os` has splice but not tee), or None."""
    try:
        tee = ctypes.CDLL(None, use_errno=True).tee
    except (OSError, AttributeError):  # pragma: no cover - every Linux libc has it
        return None
    tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
    tee.restype = ctypes.c_ssize_t
    return tee


_tee = _load_tee()


class Prefilter(Protocol):
    def search(self, data: bytes) -> object | None: ...


class Matcher(Protocol):
    prefilter: Prefilter  # cheap: None means no line in `data` can match

    def match(self, line: str) -> Finding | None: ...


class Activity:
    """When the child last wrote anything, on either stream (monotonic seconds).

    Written by the pump threads, read by the log-silence watchdog; a float assignment is
    atomic in CPython, so no lock is needed.
    """

    def __init__(self, now: float) -> None:
        self.last_output = now


class SharedStream:
    """One of our fds and its writers' common state: the lock each holds while it writes,
    and whether the last byte written left a line open (no newline yet)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.line_open = False  # guarded by `lock`


class LogPump:
    def __init__(
        self,
        name: str,
        source: int,
        sink: int,
        *,
        stream: SharedStream,
        activity: Activity,
        monotonic: Callable[[], float],
        matcher: Matcher | None = None,
        on_finding: Callable[[Finding], None] = lambda finding: None,
        on_sink_lost: Callable[[str, OSError], None] = lambda name, err: None,
    ) -> None:
        self.name = name
        self._source = source
        self._sink = sink
        self._stream = stream
        self._activity = activity
        self._monotonic = monotonic
        self._matcher = matcher
        self._on_finding = on_finding
        self._on_sink_lost = on_sink_lost
        self._sink_ok = True
        self._partial = b""
        self._thread = threading.Thread(target=self._run, name=f"logpump-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for EOF; True if the stream was drained completely."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            if _tee is not None:
                self._run_spliced(_tee)
            self._run_copied()
            if self._matcher is not None and self._partial:
                self._scan_lines(self._partial + b"\n")
        finally:
            os.close(self._source)

    def _run_copied(self) -> None:
        """Read and write, until EOF."""
        while True:
            try:
                chunk = os.read(self._source, CHUNK)
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
            if not chunk:
                return
            self._activity.last_output = self._monotonic()
            self._write(chunk)
            if self._matcher is not None:
                self._scan(chunk)

    def _run_spliced(self, tee: Callable[[int, int, int, int], int]) -> None:
        """tee, splice, read the copy: until EOF, or until the sink is lost or refuses
        splice (the copying loop then goes on from the next unread byte)."""
        try:
            copy_read, copy_write = os.pipe2(os.O_CLOEXEC)
        except OSError:  # out of fds: copy instead
            return
        try:
            # Above the user's pipe quota the default size stays: it only costs more calls.
            with contextlib.suppress(OSError):
                fcntl.fcntl(copy_write, _F_SETPIPE_SZ, CHUNK)
            while self._sink_ok:
                size = tee(self._source, copy_write, CHUNK, 0)
                if size < 0:
                    if ctypes.get_errno() == errno.EINTR:
                        continue
                    return  # not a pipe after all: nothing was taken from it
                if size == 0:
                    return  # EOF: the copying loop reads it again and ends
                chunk = _read_exactly(copy_read, size)
                self._activity.last_output = self._monotonic()
                spliced = self._splice(chunk)
                if self._matcher is not None:
                    self._scan(chunk)
                if not spliced:
                    return
        finally:
            os.close(copy_read)
            os.close(copy_write)

    def _splice(self, chunk: bytes) -> bool:
        """Move `chunk`, the next bytes of the source (duplicated by tee), to the sink with
        splice; False (having written the rest the copying way) where the sink refuses."""
        size, moved = len(chunk), 0
        with self._stream.lock:
            try:
                while moved < size:
                    step = os.splice(self._source, self._sink, size - moved)
                    if step <= 0:  # pragma: no cover - a pipe with data always gives some
                        break
                    moved += step
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    self._lost(err)
            _read_exactly(self._source, size - moved)  # what splice did not take
            if moved < size and self._sink_ok:
                self._write_locked(chunk[moved:])
                return False
            if self._sink_ok:
                self._stream.line_open = not chunk.endswith(b"\n")
        return moved == size

    def _write(self, chunk: bytes) -> None:
        if not self._sink_ok:
            return
        with self._stream.lock:
            self._write_locked(chunk)

    def _write_locked(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        try:
            while view:
                written = os.write(self._sink, view)
                view = view[written:]
            self._stream.line_open = not chunk.endswith(b"\n")
        except OSError as err:
            self._lost(err)

    def _lost(self, err: OSError) -> None:
        self._sink_ok = False
        self._on_sink_lost(self.name, err)

    def _scan(self, chunk: bytes) -> None:
        end = chunk.rfind(b"\n") + 1
        if not end:  # no line ends here: keep the tail, copying at most MAX_LINE bytes
            tail = chunk[-MAX_LINE:]
            self._partial = (self._partial + tail)[-MAX_LINE:] if len(tail) < MAX_LINE else tail
            return
        lines = self._partial + chunk[:end] if self._partial else chunk[:end]
        self._partial = chunk[end:][-MAX_LINE:]
        self._scan_lines(lines)

    def _scan_lines(self, lines: bytes) -> None:
        assert self._matcher is not None
        prefilter = self._matcher.prefilter
        if prefilter.search(lines) is None:
            return
        for line in lines.splitlines():
            if prefilter.search(line) is None:
                continue
            finding = self._matcher.match(line.decode("utf-8", "replace"))
            if finding is not None:
                self._on_finding(finding)


def _read_exactly(fd: int, size: int) -> bytes:
    """`size` bytes that are already in the pipe `fd` (so this never blocks)."""
    data = os.read(fd, size) if size else b""
    while len(data) < size:  # pragma: no cover - a pipe hands over what it holds at once
        data += os.read(fd, size - len(data))
    return data
