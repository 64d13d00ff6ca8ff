"""The attempt's watch thread: one read of the channel per tick, handed to every watcher.

`Sampler` is the `Watchdog` (`supervisor.core.events`) the loop starts and stops once per
attempt. Every `interval` seconds its daemon thread reads all the slots once
(`Channel.read_slots`), takes the time from the clock the loop gave `start`, measures the
steady step intervals since the previous tick (`sample.step_intervals`, the one place
that is computed), and passes the `Sample` to each watcher in turn. It reports what they
return: a `Finding` as `Found(finding, now)`, stamped when reported (so after any evidence
the watcher gathered, such as the hang watcher's stack dumps), an event as it is.

Guarantees:
* `start` returns at once and is idempotent; `stop` returns within about a second, is safe
  to call twice and from the sampler's own thread. `report` is called from the thread.
* Watchers run one after the other on this thread: a watcher that blocks (the hang
  watcher collecting stacks, bounded by its timeout) delays the others by that much.
* A watcher that is `done` is not called again; when none is left, the thread ends.
* A watcher that raises is dropped and reported as a NOTE finding (`watchdog_error`,
  source its name); the others carry on. If the channel itself cannot be read, one
  `watchdog_error` from source "channel" is reported and the thread ends.
* `tick(report, clock)` is one turn of the thread's loop; tests call it directly, with a
  fake clock and without the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from supervisor.channel import Channel, Slot
from supervisor.core.events import Finding, Found, Report, Urgency
from supervisor.watch.sample import Sample, Watcher, step_intervals

DEFAULT_INTERVAL = 0.1  # seconds between reads: a commit or a stall is seen within this


def _never_started(event: object) -> None:
    raise RuntimeError("the sampler reported before start()")


def _broken(name: str, err: BaseException, what: str) -> Finding:
    return Finding(name, "watchdog_error", f"the {what} stopped: {err!r}", urgency=Urgency.NOTE)


class Sampler:
    """Reads `channel` every `interval` seconds and feeds `watchers`; see the module doc."""

    name = "channel"

    def __init__(
        self, channel: Channel, watchers: Sequence[Watcher], interval: float = DEFAULT_INTERVAL
    ) -> None:
        self._channel = channel
        self._watchers = list(watchers)
        self._interval = interval
        self._last: dict[int, Slot] = {}  # the latest clean read of each rank's slot
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._report: Report = _never_started
        self._now: Callable[[], float] = lambda: 0.0

    @property
    def watchers(self) -> tuple[Watcher, ...]:
        """The watchers still being fed."""
        return tuple(self._watchers)

    def start(self, report: Report, clock_monotonic: Callable[[], float]) -> None:
        if self._thread is not None:
            return
        self._report = report
        self._now = clock_monotonic
        self._thread = threading.Thread(target=self._run, name="supervise-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def tick(self, report: Report, clock_monotonic: Callable[[], float]) -> bool:
        """Read the channel once and feed every watcher; False when none is left.

        Raises what the channel read raises; a watcher's exception is reported instead.
        """
        slots = self._channel.read_slots()
        now = clock_monotonic()
        self._last, intervals = step_intervals(self._last, slots)
        sample = Sample(tuple(slots), now, intervals)
        for watcher in list(self._watchers):
            try:
                seen = watcher.observe(sample)
            except Exception as err:  # a watcher must say it broke, not vanish
                self._watchers.remove(watcher)
                broken = _broken(watcher.name, err, f"{watcher.name} watcher")
                report(Found(broken, clock_monotonic()))
                continue
            for item in seen:
                report(Found(item, clock_monotonic()) if isinstance(item, Finding) else item)
            if watcher.done:
                self._watchers.remove(watcher)
        return bool(self._watchers)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self.tick(self._report, self._now):
                    return
            except Exception as err:  # the channel is unreadable: nothing can be watched
                names = ", ".join(w.name for w in self._watchers)
                broken = _broken(self.name, err, f"channel sampler (watching {names})")
                self._report(Found(broken, self._now()))
                return
