"""Where an attempt's time went: init, named phases, and steady steps, from the samples.

`PhaseClock` is a watcher (`supervisor.watch.sample`) that charges the time between two
samples to one bucket:

- **init** until any rank has taken its first step (imports, rendezvous, loading);
- a **named phase** (`with sup.phase("eval")`, `"checkpoint"`) while a running rank is in
  one: the lowest such rank's phase, since a gang waits for its slowest member;
- **steady** steps otherwise, while any rank runs.

Time after every rank finished is not charged. The totals go into the attempt's verdict in
the run ledger. Pure: time comes only from `sample.now`; it reports nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from supervisor.channel import SlotState
from supervisor.hang.options import STEADY_PHASES
from supervisor.watch.sample import Sample, Seen


class Times(NamedTuple):
    """Seconds in init, in steady steps, and in each named phase."""

    init_s: float
    steady_s: float
    phases_s: Mapping[str, float]


class PhaseClock:
    name = "phases"
    done = False

    def __init__(self) -> None:
        self._last: float | None = None
        self._stepped = False
        self._init = 0.0
        self._steady = 0.0
        self._phases: dict[str, float] = {}

    def observe(self, sample: Sample) -> Sequence[Seen]:
        last, self._last = self._last, sample.now
        if last is None:
            return ()
        elapsed = max(0.0, sample.now - last)
        if not self._stepped:
            self._init += elapsed
            self._stepped = any(slot.step >= 0 for slot in sample.slots)
            return ()
        running = sorted(
            (s for s in sample.slots if s.state is SlotState.RUNNING), key=lambda s: s.rank
        )
        named = [s.phase for s in running if s.phase not in STEADY_PHASES]
        if named:
            self._phases[named[0]] = self._phases.get(named[0], 0.0) + elapsed
        elif running:
            self._steady += elapsed
        return ()

    def times(self) -> Times:
        """The totals so far, rounded to milliseconds. Safe to call from any thread."""
        phases = {name: round(seconds, 3) for name, seconds in dict(self._phases).items()}
        return Times(round(self._init, 3), round(self._steady, 3), phases)
