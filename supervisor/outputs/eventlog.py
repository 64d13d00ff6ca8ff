"""The event log: every output as one JSON line, on stderr or appended to `--event-log`.

Every line has the same envelope (documented in the README), then the output's fields:

    {"time": "2026-11-28T01:02:03.456Z", "mono": 12.345, "source": "supervise",
     "event": "<name>", ...fields}

`time` is wall-clock UTC for people; `mono` is the monotonic clock the decisions used.
On stderr, a line is written under the lock the stderr log pump holds while it writes, so
an event line is never spliced into a chunk of the child's output, and starts on a line of
its own (a newline first, if the child's last bytes left a line open).

A file is opened non-blocking and never waited on for long: a FIFO without a reader is
refused at once (ENXIO), and a write that cannot go on within `WRITE_TIMEOUT` seconds (a
reader that stopped reading) fails. Any thread may write. A failed open or write raises
`OSError` to the router, which reports it once; the run goes on.
"""

from __future__ import annotations

import json
import os
import select
import time

from supervisor.core.outputs import Output
from supervisor.process.logpump import SharedStream

WRITE_TIMEOUT = 2.0  # seconds a non-blocking output may stay full before it counts as lost


class EventLog:
    name = "--event-log"

    def __init__(self, fd: int | None, path: str, stderr: SharedStream) -> None:
        self._fd = fd
        self.path = path
        self._stderr = stderr

    @classmethod
    def open(cls, path: str | None, *, stderr: SharedStream) -> EventLog:
        """Append to `path`, or write to stderr for None or "-". Raises `OSError`."""
        if path is None or path == "-":
            return cls(None, "-", stderr)
        return cls(open_nonblocking(path, os.O_APPEND), path, stderr)

    def write(self, output: Output, wall: float, mono: float) -> None:
        record: dict[str, object] = {
            "time": _iso(wall),
            "mono": round(mono, 3),
            "source": "supervise",
            "event": output.name,
            **output.fields(),
        }
        line = (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode()
        if self._fd is not None:
            write_all(self._fd, line)
            return
        stderr_line(self._stderr, line)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def stderr_line(stderr: SharedStream, line: bytes) -> None:
    """Write `line` (ending in a newline) on stderr, on a line of its own: after a newline
    if the child's last bytes left its line open. Raises `OSError`."""
    with stderr.lock:
        if stderr.line_open:
            line = b"\n" + line
        write_all(2, line)
        stderr.line_open = False


def open_nonblocking(path: str, flags: int) -> int:
    """`os.open` for writing that cannot hang: O_NONBLOCK makes a FIFO without a reader
    fail with ENXIO instead of waiting for one. Raises `OSError`."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | flags, 0o644)


def write_all(fd: int, data: bytes, timeout: float = WRITE_TIMEOUT) -> None:
    """Write every byte, waiting at most `timeout` seconds in all for a full pipe to drain.
    Raises `OSError` (`TimeoutError` when it stayed full)."""
    deadline = time.monotonic() + timeout
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise TimeoutError(f"nothing read it for {timeout:g} s") from None


def _iso(wall: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
    return f"{seconds}.{int(wall % 1 * 1000):03d}Z"
