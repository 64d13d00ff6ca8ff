"""Operators' checkpoint requests: files in a live run directory, and the thread that reads them.

`supervise checkpoint-now` runs in the same container as the supervise it asks, often in
another process tree (`kubectl exec`). It leaves a request in the run directory's
`requests/` folder; supervise's `RequestWatcher` takes it and reports a `CheckpointNow`
event; the policy decides; the session writes the answer beside it. The folder is the whole
interface: no signal is sent (SIGHUP and SIGUSR1/2 belong to the trainer and are forwarded
to it unchanged), and nothing listens on a socket.

    requests/<id>.request   {"deadline": seconds}                    the asker's
    requests/<id>.answer    {"outcome": ..., "step": ..., "message": ...}   supervise's

Guarantees:

* Both files appear whole: each is written under a dot-name, then renamed in the folder.
* `RequestWatcher` polls the folder every `POLL_INTERVAL` seconds on its own thread (one
  `scandir` of a directory on `/dev/shm`). It takes a request by unlinking it, so a request
  is reported once, and reports one `CheckpointNow` per request. It never raises: a
  request it cannot read is answered refused at once, without reaching the policy.
* A folder that does not exist means a supervise that takes no requests (an older release,
  or a run that is ending): `submit` raises `FileNotFoundError` then.
* `submit` and `answer` raise `OSError` when the folder cannot be written; `read_answer`
  returns None until the answer is there.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Sequence

from supervisor.core.actions import AnswerRequests, Outcome
from supervisor.core.events import CheckpointNow, Report

FOLDER = "requests"
REQUEST = ".request"
ANSWER = ".answer"
MAX_DEADLINE = 86_400.0  # seconds; NaN and the infinities are refused too
POLL_INTERVAL = 0.25  # seconds: a person waits on it, a scandir of tmpfs costs microseconds


def folder(run_dir: str) -> str:
    return os.path.join(run_dir, FOLDER)


def make_folder(run_dir: str) -> str:
    """Create the requests folder (mode 0700) in `run_dir`; returns its path."""
    path = folder(run_dir)
    os.mkdir(path, 0o700)
    return path


def submit(run_dir: str, deadline: float) -> str:
    """Ask the supervise of `run_dir` for a checkpoint within `deadline` seconds; returns
    the request's id (what `read_answer` and `withdraw` take)."""
    request = f"{os.getpid()}-{os.urandom(4).hex()}"
    _write(folder(run_dir), request + REQUEST, {"deadline": deadline})
    return request


def withdraw(run_dir: str, request: str) -> bool:
    """Take back a request nobody has taken yet; False when supervise already took it."""
    try:
        os.unlink(os.path.join(folder(run_dir), request + REQUEST))
        return True
    except FileNotFoundError:
        return False


def read_answer(run_dir: str, request: str) -> dict[str, object] | None:
    """The answer to `request` (and it is removed), or None while there is none."""
    path = os.path.join(folder(run_dir), request + ANSWER)
    try:
        with open(path, encoding="utf-8") as f:
            answer = json.load(f)
    except (OSError, ValueError):
        return None
    with contextlib.suppress(OSError):
        os.unlink(path)
    return answer if isinstance(answer, dict) else None


def answer(run_dir: str, action: AnswerRequests) -> None:
    """Write `action`'s answer for each of its requests. Raises nothing: an asker that
    cannot be answered finds out when its own deadline passes."""
    body = {"outcome": action.outcome.value, "step": action.step, "message": action.message}
    for request in action.requests:
        with contextlib.suppress(OSError):
            _write(folder(run_dir), request + ANSWER, body)


def _write(where: str, name: str, body: dict[str, object]) -> None:
    hidden = os.path.join(where, "." + name)
    # Readable by all, inside a 0700 folder: an asker running as root (`kubectl exec` as
    # another user) and a supervise running as the image's user can read each other's.
    fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(body).encode())
    finally:
        os.close(fd)
    os.rename(hidden, os.path.join(where, name))


class RequestWatcher:
    """A `Watchdog` for the whole run: reports each request in the folder as `CheckpointNow`."""

    name = "requests"

    def __init__(self, run_dir: str, interval: float = POLL_INTERVAL) -> None:
        self.run_dir = run_dir
        self.interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, report: Report, clock_monotonic: Callable[[], float]) -> None:
        self._thread = threading.Thread(
            target=self._watch, args=(report, clock_monotonic), name="requests", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def _watch(self, report: Report, monotonic: Callable[[], float]) -> None:
        while not self._stopping.wait(self.interval):
            for request, deadline in self.take():
                if deadline is None:
                    refused = (
                        "supervise could not read the request; run checkpoint-now as the "
                        "container's user"
                    )
                    answer(self.run_dir, AnswerRequests((request,), Outcome.REFUSED, refused))
                else:
                    report(CheckpointNow(request, deadline, monotonic()))

    def take(self) -> Sequence[tuple[str, float | None]]:
        """The requests waiting, each removed: (id, deadline in seconds, None if unreadable)."""
        taken: list[tuple[str, float | None]] = []
        with contextlib.suppress(OSError), os.scandir(folder(self.run_dir)) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.endswith(REQUEST):
                    continue
                try:
                    with open(entry.path, encoding="utf-8") as f:
                        raw = json.load(f).get("deadline")
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue  # withdrawn by its asker meanwhile
                except (OSError, ValueError, AttributeError):
                    raw = None
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                deadline = float(raw) if _sane(raw) else None
                taken.append((entry.name[: -len(REQUEST)], deadline))
        return taken


def _sane(deadline: object) -> bool:
    """A deadline the loop can wait for: a number of seconds from 0 to a day."""
    number = isinstance(deadline, int | float) and not isinstance(deadline, bool)
    return number and 0 <= deadline <= MAX_DEADLINE  # type: ignore[operator]
