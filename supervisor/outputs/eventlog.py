"""What supervise tells people and machines: the event log and the termination message.

Event log: one JSON object per line, on stderr by default or appended to `--event-log`.
Every line has the same envelope (documented in the README):

    {"time": "2026-11-28T01:02:03.456Z", "mono": 12.345, "source": "supervise",
     "event": "<name>", ...fields}

`time` is wall-clock UTC for people; `mono` is the monotonic clock the decisions used.
Writes to stderr take the same lock as the stderr log pump, so an event line is never
spliced into the middle of a chunk of the child's output. Any thread may call `emit`.

Termination message: one JSON object of at most 4096 bytes (the kubelet truncates longer
ones), written once at exit to `--termination-log`. A path that cannot be written is a
warning on the event log, never a failure.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode

TERMINATION_MESSAGE_LIMIT = 4096  # bytes; the kubelet truncates beyond this
_FIELD_LIMIT = 300  # characters kept per string field when the message must shrink


class EventLog:
    def __init__(
        self,
        path: str | None,
        *,
        lock: threading.Lock,
        monotonic: Callable[[], float],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._lock = lock
        self._monotonic = monotonic
        self._wall = wall
        self._file: IO[str] | None = None
        if path is not None and path != "-":
            self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def emit(self, event: str, fields: Mapping[str, object] | None = None) -> None:
        record: dict[str, object] = {
            "time": _iso(self._wall()),
            "mono": round(self._monotonic(), 3),
            "source": "supervise",
            "event": event,
        }
        if fields:
            record.update(fields)
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
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass  # nowhere left to complain to


def termination_message(
    code: ExitCode, reason: str, evidence: Sequence[Finding], extra: Mapping[str, object] = {}
) -> str:
    """The JSON text, shrunk to fit `TERMINATION_MESSAGE_LIMIT` bytes.

    Shrinks in steps, each only if still needed: long strings in evidence are cut, then
    evidence items are dropped from the end (the first ones decided the class), and
    `evidenceDropped` says how many went; the full record stays on the event log.
    """
    message: dict[str, object] = {
        "exitCode": code.code,
        "name": code.name,
        "action": code.action.value,
        "reason": reason,
        **extra,
    }
    items = [finding.as_dict() for finding in _decisive_first(code, evidence)]

    def render(items: list[dict[str, object]], dropped: int) -> str:
        body = {**message, "evidence": items}
        if dropped:
            body["evidenceDropped"] = dropped
        return json.dumps(body, default=str, separators=(",", ":"))

    text = render(items, 0)
    if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
        return text
    items = [{k: _shorten(v) for k, v in item.items()} for item in items]
    dropped = 0
    while True:
        text = render(items, dropped)
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT or not items:
            break
        items.pop()
        dropped += 1
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:  # only `reason` or `extra` is left
        message["reason"] = _shorten(reason)
        text = render([], dropped)
    return text


def _decisive_first(code: ExitCode, evidence: Sequence[Finding]) -> list[Finding]:
    """The finding that decided first, then others of its class, the child's status, the rest."""

    def rank(finding: Finding) -> int:
        if finding.exit_code is code:
            return 0 if finding.urgency in (Urgency.STOP, Urgency.CHECKPOINT) else 1
        return 2 if finding.source == "child" else 3

    return sorted(evidence, key=rank)


def _shorten(value: object) -> object:
    if isinstance(value, str) and len(value) > _FIELD_LIMIT:
        return value[: _FIELD_LIMIT - 1] + "…"
    if isinstance(value, list | tuple) and len(value) > 10:
        return [*value[:10], f"… {len(value) - 10} more"]
    return value


def write_termination_message(path: str, text: str) -> OSError | None:
    """Write the message; returns the error instead of raising when the path is unwritable."""
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return None
    except OSError as err:
        return err
