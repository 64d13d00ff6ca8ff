"""The latest look at the channel, kept for a reader on another thread (the metrics endpoint).

`LiveView` is a watcher (`supervisor.watch.sample`) fed by the attempt's sampler like the
others. It keeps, per rank, what the newest sample showed (step, last heartbeat, whether it
still runs) and the rank's latest steady step time (`Sample.intervals`, computed once, by
the sampler), and it points at the attempt's `PhaseClock` for where the time went and how
much of it is committed. It decides nothing and reports nothing.

Guarantees: `observe` and `begin` run on one thread at a time (the sampler's, the loop's
between attempts); `ranks`, `times`, `account` and `gpus` may be read from any thread and
return what one sample showed, never a mix of two (each sample replaces the whole table in
one assignment; the phase clock answers under its lock). The values are as old as the last
sample (the sampler reads every 0.1 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from supervisor.channel import SlotState
from supervisor.watch.phases import Account, PhaseClock, Times
from supervisor.watch.sample import Sample, Seen


class RankView(NamedTuple):
    """One rank as the newest sample saw it. `beat_ns` is CLOCK_MONOTONIC nanoseconds;
    `step_s` is its latest steady seconds per step, None until one was measured."""

    rank: int
    step: int
    beat_ns: int
    running: bool
    step_s: float | None


class LiveView:
    name = "live"
    done = False  # watches every attempt it is given

    def __init__(self) -> None:
        self._ranks: dict[int, RankView] = {}
        self._phases: PhaseClock | None = None
        # (index, uuid) of every GPU the GPU watchdog watches; set once it is built.
        self.gpus: tuple[tuple[int, str], ...] = ()

    def begin(self, phases: PhaseClock) -> None:
        """A new attempt: its ranks start afresh, and `phases` measures its time."""
        self._ranks = {}
        self._phases = phases

    def observe(self, sample: Sample) -> Sequence[Seen]:
        measured = {interval.slot.rank: interval.seconds for interval in sample.intervals}
        before = self._ranks
        ranks = {}
        phases = self._phases  # its attempt's slots: not those a restart in place left
        for slot in phases.current(sample.slots) if phases is not None else sample.slots:
            last = before.get(slot.rank)
            step_s = measured.get(slot.rank, last.step_s if last is not None else None)
            running = slot.state is SlotState.RUNNING
            ranks[slot.rank] = RankView(slot.rank, slot.step, slot.beat_ns, running, step_s)
        self._ranks = ranks  # one assignment: a reader sees one sample, whole
        return ()

    def ranks(self) -> tuple[RankView, ...]:
        """Every rank of the current (or last) attempt, by rank."""
        return tuple(sorted(self._ranks.values()))

    def times(self) -> Times | None:
        """Where the current attempt's time went so far; None before the first attempt."""
        phases = self._phases
        return phases.times() if phases is not None else None

    def account(self) -> Account | None:
        """The current attempt's times, progress and elapsed time, from one sample; None
        before its first."""
        phases = self._phases
        return phases.account() if phases is not None else None
