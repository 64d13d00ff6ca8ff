"""torchrun's TORCHELASTIC_ERROR_FILE, read into evidence fields.

torchrun exits 1 for every worker failure and for a caught signal alike, so its exit status
says nothing about the class. When a worker fails, torchrun copies that worker's error.json
(written by `@record` / `ErrorHandler.record_exception`) into the file named by its own
TORCHELASTIC_ERROR_FILE and sets `errorCode` to the worker's exit status, negative for a
signal (torch/distributed/elastic/multiprocessing/errors/error_handler.py,
`dump_error_file`). The shape:

    {"message": {"message": "<Type>: <msg>",
                 "extraInfo": {"py_callstack": "<traceback>", "timestamp": "<unix s>"},
                 "errorCode": <int>}}

torchrun's own entry point is wrapped in `@record` too, so when torchrun itself is signalled
the file holds its `SignalException` instead (`WorkerError.torchrun_signalled`).

A worker without `@record` writes nothing, and NCCL or CUDA aborts write nothing either, so
an absent or empty file is normal and the logs remain the other witness. Newer formats may
make "message" a plain string; that is accepted too.

`read_error_file` never raises: evidence is best effort, and a malformed file yields None.
Pure: takes the file's text, returns data.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass

# The traceback can be long; the termination message has 4096 bytes for everything.
TRACEBACK_TAIL_LINES = 8


@dataclass(frozen=True)
class WorkerError:
    """The root-cause failure torchrun recorded."""

    message: str  # "<Type>: <msg>" as the worker raised it
    exception_type: str | None
    error_code: int | None  # the worker's exit status; negative means killed by a signal
    timestamp: int | None  # unix seconds, from the worker's clock
    traceback_tail: str

    @property
    def torchrun_signalled(self) -> bool:
        """True when the file records torchrun itself being signalled, not a worker failing.

        torchrun's own `main` is wrapped in `@record`, so a SIGTERM to torchrun (from
        supervise, say) leaves "SignalException: Process N got signal: 15" in the file,
        without an errorCode. That is an echo of the stop, never a root cause.
        """
        return (self.exception_type or "").rsplit(".", 1)[-1] == "SignalException"

    @property
    def signal_name(self) -> str | None:
        """SIGABRT etc. when the worker was killed by a signal."""
        if self.error_code is None or self.error_code >= 0:
            return None
        try:
            return signal.Signals(-self.error_code).name
        except ValueError:
            return f"signal {-self.error_code}"

    def as_evidence(self) -> dict[str, object]:
        """Flat, JSON-safe fields for the event log and termination message."""
        evidence: dict[str, object] = {"worker_error": self.message}
        if self.exception_type:
            evidence["worker_exception"] = self.exception_type
        if self.error_code is not None:
            evidence["worker_exit_code"] = self.error_code
        if self.signal_name:
            evidence["worker_signal"] = self.signal_name
        if self.timestamp is not None:
            evidence["worker_failed_at"] = self.timestamp
        if self.traceback_tail:
            evidence["worker_traceback"] = self.traceback_tail
        if self.torchrun_signalled:
            evidence["torchrun_signalled"] = True
        return evidence


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _exception_type(message: str) -> str | None:
    head, sep, _ = message.partition(":")
    head = head.strip()
    # "RuntimeError: ..." or "torch.distributed.DistBackendError: ..." but not prose.
    if sep and head and " " not in head and head.replace(".", "").replace("_", "").isalnum():
        return head
    return None


def read_error_file(text: str) -> WorkerError | None:
    """Parse error.json text; None when empty, malformed or without a message."""
    if not text or not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    body = data.get("message")
    extra: dict[str, object] = {}
    error_code = _as_int(data.get("errorCode"))
    if isinstance(body, dict):
        message = body.get("message")
        raw_extra = body.get("extraInfo")
        extra = raw_extra if isinstance(raw_extra, dict) else {}
        if "errorCode" in body:
            error_code = _as_int(body.get("errorCode"))
    else:
        message = body
    if not isinstance(message, str) or not message.strip():
        return None
    callstack = extra.get("py_callstack")
    tail = ""
    if isinstance(callstack, str):
        tail = "\n".join(callstack.rstrip().splitlines()[-TRACEBACK_TAIL_LINES:])
    return WorkerError(
        message=message.strip(),
        exception_type=_exception_type(message),
        error_code=error_code,
        timestamp=_as_int(extra.get("timestamp")),
        traceback_tail=tail,
    )
