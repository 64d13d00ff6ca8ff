"""Copies the child's stdout and stderr to ours, unchanged, and shows lines to a matcher.

Guarantees:

* Bytes arrive unchanged and in order per stream. Each chunk is written as soon as it is
  read (no line buffering), so a person watching sees no added latency. Order *between*
  stdout and stderr is not preserved; it never is once two pipes are involved.
* One daemon thread per stream, blocked in `os.read`. The child never blocks on a full pipe
  because of us: if our own output is gone (EPIPE, a closed terminal), we keep reading and
  drop the bytes, and say so once on the event log.
* `join` returns once the pipe reaches EOF (every writer in the tree has exited) or the
  timeout passes; the loop joins before exiting, so nothing is lost at exit.
* A `SharedStream` is the fd the pump shares with the event log (our stderr): both write
  under its lock, and it knows whether the last byte written ended a line, so an event
  never lands on the tail of a child's unfinished line (a progress bar without a newline).
* The matcher sees whole lines. Its `prefilter` is searched over each complete chunk of
  lines first; lines are split and decoded only when it hits, so a run without matches pays
  for one regex scan per chunk.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol

from supervisor.core.events import Finding

CHUNK = 1 << 20  # matches the pipe size children.spawn asks for
MAX_LINE = 1 << 16  # a longer unterminated line is cut for matching (still copied whole)


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
            while True:
                try:
                    chunk = os.read(self._source, CHUNK)
                except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                    continue
                if not chunk:
                    break
                self._activity.last_output = self._monotonic()
                self._write(chunk)
                if self._matcher is not None:
                    self._scan(chunk)
            if self._matcher is not None and self._partial:
                self._scan_lines(self._partial + b"\n")
        finally:
            os.close(self._source)

    def _write(self, chunk: bytes) -> None:
        if not self._sink_ok:
            return
        view = memoryview(chunk)
        with self._stream.lock:
            try:
                while view:
                    written = os.write(self._sink, view)
                    view = view[written:]
                self._stream.line_open = not chunk.endswith(b"\n")
            except OSError as err:
                self._sink_ok = False
                self._on_sink_lost(self.name, err)

    def _scan(self, chunk: bytes) -> None:
        data = self._partial + chunk if self._partial else chunk
        end = data.rfind(b"\n") + 1
        self._partial = data[end:][-MAX_LINE:]
        if end:
            self._scan_lines(data[:end])

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
