"""The termination message: the verdict, where `kubectl describe pod` shows it.

One JSON object of at most 4096 bytes (the kubelet truncates longer ones), written once,
when the `Exited` output arrives, to `--termination-log`. Every way a run ends (the loop's
verdict, a failed preflight, an error before the command starts) goes through
`TerminationLog`, so the message has one shape. The file is opened non-blocking (a FIFO
without a reader is refused, not waited for) and written with a bound. Writing raises
`OSError` to the router, which reports it as a warning; it never changes the exit code.
"""

from __future__ import annotations

import json
import os

from supervisor.core.outputs import Exited, Output
from supervisor.outputs.eventlog import open_nonblocking, write_all

TERMINATION_MESSAGE_LIMIT = 4096  # bytes; the kubelet truncates beyond this
_FIELD_LIMIT = 300  # characters kept per string field when the message must shrink


class TerminationLog:
    name = "--termination-log"

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, output: Output, wall: float, mono: float) -> None:
        if isinstance(output, Exited):
            fd = open_nonblocking(self.path, os.O_TRUNC)
            try:
                write_all(fd, termination_message(output).encode())
            finally:
                os.close(fd)

    def close(self) -> None:
        pass


def termination_message(verdict: Exited) -> str:
    """The JSON text, shrunk to fit `TERMINATION_MESSAGE_LIMIT` bytes.

    Shrinks in steps, each only if still needed: long strings in evidence are cut, then
    evidence items are dropped from the end (the first ones decided the class), and
    `evidenceDropped` says how many went; the full record stays on the event log.
    """
    code = verdict.code
    message: dict[str, object] = {
        "exitCode": code.code,
        "name": code.name,
        "action": code.action.value,
        "reason": verdict.reason,
    }
    items = [finding.as_dict() for finding in verdict.evidence]

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
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:  # only `reason` is left to cut
        message["reason"] = _shorten(verdict.reason)
        text = render([], dropped)
    return text


def _shorten(value: object) -> object:
    if isinstance(value, str) and len(value) > _FIELD_LIMIT:
        return value[: _FIELD_LIMIT - 1] + "…"
    if isinstance(value, list | tuple) and len(value) > 10:
        return [*value[:10], f"… {len(value) - 10} more"]
    return value
