"""The event log: every output as one JSON line, on stderr or appended to `--event-log`.

Every line has the same envelope (documented in the README), then the output's fields:

    {"time": "2026-11-28T01:02:03.456Z", "mono": 12.345, "source": "supervise",
     "event": "<name>", ...fields}

`time` is wall-clock UTC for people; `mono` is the monotonic clock the decisions used.
Writes to stderr take the lock the stderr log pump holds while it writes, so an event line
is never spliced into the middle of a chunk of the child's output. Any thread may write.
A failed write raises `OSError` to the router, which reports it once.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import IO

from supervisor.core.outputs import Output


class EventLog:
    name = "--event-log"

    def __init__(self, file: IO[str] | None, path: str, lock: threading.Lock) -> None:
        self._file = file
        self.path = path
        self._lock = lock

    @classmethod
    def open(cls, path: str | None, *, lock: threading.Lock) -> EventLog:
        """Append to `path`, or write to stderr for None or "-". Raises `OSError`."""
        if path is None or path == "-":
            return cls(None, "-", lock)
        return cls(open(path, "a", buffering=1, encoding="utf-8"), path, lock)

    def write(self, output: Output, wall: float, mono: float) -> None:
        record: dict[str, object] = {
            "time": _iso(wall),
            "mono": round(mono, 3),
            "source": "supervise",
            "event": output.name,
            **output.fields(),
        }
        line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)
            else:
                _write_all(2, line.encode())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _iso(wall: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
    return f"{seconds}.{int(wall % 1 * 1000):03d}Z"


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
