"""The thread every polling watchdog runs on (heartbeats, log silence, handshake, pace).

A subclass implements `poll()`; `Poller` calls it every `interval` seconds on one daemon
thread until `stop()` or until `poll()` returns True (its job is done). `poll()` reports
through `self._report` (thread-safe, never blocks) and reads time from `self._now`.
Guarantees: `start` returns at once and is idempotent; `stop` returns within about a
second and is safe to call twice or from the poller's own thread; an exception in `poll()`
is reported as a NOTE finding (`watchdog_error`) instead of silently ending the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from supervisor.core.events import Finding, Found, Report, Urgency


def _never_started(event: object) -> None:
    raise RuntimeError("a poller reported before start()")


class Poller:
    def __init__(self, name: str, interval: float) -> None:
        self.name = name
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._report: Report = _never_started
        self._now: Callable[[], float] = lambda: 0.0

    def start(self, report: Report, clock_monotonic: Callable[[], float]) -> None:
        if self._thread is not None:
            return
        self._report = report
        self._now = clock_monotonic
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def poll(self) -> bool:
        """One look; True when there is nothing more to watch."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if self.poll():
                    return
            except Exception as err:  # a watchdog must say it broke, not vanish
                finding = Finding(
                    self.name,
                    "watchdog_error",
                    f"the {self.name} watchdog stopped: {err!r}",
                    urgency=Urgency.NOTE,
                )
                self._report(Found(finding, self._now()))
                return
