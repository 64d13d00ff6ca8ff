"""The process's signal receiver: installed once, first thing in a run, kept until exit.

Each watched signal gets a do-nothing Python handler, and `signal.set_wakeup_fd` makes the
C-level handler write the signal number into a pipe, which the loop reads as data (the tini
model, in Python).

Guarantees:

* `install` runs before anything that can block (storage, the run ledger, NVML), so a
  SIGTERM during start-up is heard. Without it the default disposition would kill the
  process with the signal (exit 143, not a class), and as PID 1 the kernel would drop the
  signal altogether.
* The default dispositions are never restored. A second SIGTERM a few milliseconds after
  the first, while the verdict is being written, must not kill the process with the signal:
  signals that arrive after the loop ended stay unread in the pipe, and at exit (an
  `atexit` hook, before the interpreter's own teardown would put SIG_DFL back) they are
  set to SIG_IGN, so the process exits with the class whatever arrives when.
* `interruptible(call)` runs a blocking start-up step on a daemon thread while the main
  thread waits in `select` on the pipe: a stop signal raises `Interrupted` at once (the step
  is abandoned; its thread ends with the process) and stays pending, so the loop still
  hears it if a caller carries on.

Main thread only: Python runs handlers and accepts `set_wakeup_fd` only there.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

from supervisor.core.errors import Interrupted
from supervisor.core.events import FORWARDED_SIGNALS, STOP_SIGNALS

T = TypeVar("T")
WATCHED = sorted(FORWARDED_SIGNALS | {signal.SIGCHLD})


class Signals:
    """Watched signals as bytes in a pipe, plus those read but not yet handled."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pending: list[int] = []
        for signum in WATCHED:
            signal.signal(signum, _noop)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        # A parent may have started us with these blocked; PID 1 must hear them anyway.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
        atexit.register(_ignore_late_signals)

    @property
    def pending(self) -> bool:
        """Signals were read from the pipe and not yet taken by `drain`."""
        return bool(self._pending)

    def drain(self) -> list[int]:
        """Every signal received so far and not yet taken, oldest first. Never blocks."""
        self._read()
        taken, self._pending = self._pending, []
        return taken

    def keep(self, signum: int) -> None:
        """Put a signal taken by `drain` back, for the next `drain`."""
        self._pending.append(signum)

    def check(self) -> None:
        """Raise `Interrupted` if a stop signal has arrived (it stays pending)."""
        self._read()
        stop = next((s for s in self._pending if s in STOP_SIGNALS), None)
        if stop is not None:
            raise Interrupted(stop)

    def interruptible(self, call: Callable[[], T]) -> T:
        """`call()` on a daemon thread; its result or its exception, or `Interrupted` as
        soon as a stop signal arrives. Blocks the calling (main) thread until one of them."""
        self.check()
        done_r, done_w = os.pipe2(os.O_CLOEXEC)
        box: dict[str, object] = {}

        def run() -> None:
            try:
                box["result"] = call()
            except BaseException as err:  # handed to the waiting thread
                box["error"] = err
            finally:
                os.close(done_w)

        threading.Thread(target=run, name="startup-step", daemon=True).start()
        try:
            while True:
                readable, _, _ = select.select([self.read_fd, done_r], [], [])
                if done_r in readable:
                    break
                self.check()
        finally:
            os.close(done_r)
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["result"]  # type: ignore[return-value]

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.read_fd, 4096)
            except BlockingIOError:
                return
            if not data:
                return
            self._pending.extend(data)


_installed: Signals | None = None


def install() -> Signals:
    """The process's receiver, installed on the first call; later calls return it."""
    global _installed
    if _installed is None:
        _installed = Signals()
    return _installed


def _ignore_late_signals() -> None:
    """The verdict is out: a signal now changes nothing, and must not become the exit code.
    (CPython's finalization resets every signal with a Python handler to SIG_DFL, but
    leaves SIG_IGN alone.) SIGCHLD keeps its handler: SIG_IGN would change how children
    are reaped."""
    for signum in WATCHED:
        if signum != signal.SIGCHLD:
            signal.signal(signum, signal.SIG_IGN)


def _noop(signum: int, frame: object) -> None:
    """Python-level handler: the C level has already written `signum` to the wakeup pipe."""
