"""What one look at the channel saw, and the one way progress between looks is measured.

A `Sample` is handed, once per tick of the sampler (`supervisor.watch.sampler`), to every
`Watcher` of an attempt: hang detection, step-time regression, the checkpoint handshake,
log silence. A watcher is a small state object whose `observe(sample)` returns what it saw,
and reads no clock, channel or thread of its own: time arrives as `sample.now`. Tests drive
watchers with samples built by hand, without threads or sleeps.

Pure: no clock, no I/O, no threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from supervisor.channel import Slot, SlotState
from supervisor.core.events import Event, Finding
from supervisor.hang.options import STEADY_PHASES


@dataclass(frozen=True)
class StepInterval:
    """Seconds per step of one rank between two samples (`slot` is the later read)."""

    slot: Slot
    seconds: float


@dataclass(frozen=True)
class Sample:
    """One read of every used slot (RUNNING or FINISHED, read cleanly), and when it was taken.

    `now` is monotonic seconds from the clock the loop injects, read just after the slots.
    A rank's `beat_ns` is CLOCK_MONOTONIC, the clock `SystemClock` reads, so in production
    `now_ns - slot.beat_ns` is how long the rank has been silent. `intervals` are the steady
    step times since the previous sample (`step_intervals`).
    """

    slots: tuple[Slot, ...]
    now: float
    intervals: tuple[StepInterval, ...] = ()

    @property
    def now_ns(self) -> int:
        return int(self.now * 1e9)


def step_intervals(
    last: Mapping[int, Slot], slots: Iterable[Slot]
) -> tuple[dict[int, Slot], tuple[StepInterval, ...]]:
    """(the latest read per rank, the steady step intervals since `last`).

    A rank contributes an interval when it stepped since its previous read, in the same
    steady phase (none or "train"), in the same process, and not from its first step (which
    includes start-up). The interval is the time between the two beats over the steps taken:
    with steps slower than a tick it is exactly one step's time.
    """
    latest = dict(last)
    measured = []
    for slot in slots:
        before, latest[slot.rank] = latest.get(slot.rank), slot
        if (
            before is None
            or slot.state is not SlotState.RUNNING
            or before.pid != slot.pid  # the rank was restarted: a new series
            or before.step < 0  # the first step includes start-up, not a step
            or slot.step <= before.step
            or slot.phase not in STEADY_PHASES
            or before.phase != slot.phase
        ):
            continue
        seconds = (slot.beat_ns - before.beat_ns) / 1e9 / (slot.step - before.step)
        measured.append(StepInterval(slot, seconds))
    return latest, tuple(measured)


Seen = Finding | Event
"""What a watcher returns: a `Finding` (the sampler stamps it with the time it reports it,
after any evidence the watcher gathered) or an event already stamped with `sample.now`."""


class Watcher(Protocol):
    """One concern watched from the channel samples. Runs on the sampler's thread only."""

    name: str

    @property
    def done(self) -> bool:
        """True once there is nothing more to watch: the sampler stops calling `observe`."""
        ...

    def observe(self, sample: Sample) -> Sequence[Seen]:
        """What this sample shows. An exception drops the watcher (reported as a NOTE)."""
        ...
