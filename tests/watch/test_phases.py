"""Where an attempt's time went, from hand-built samples: no threads, no sleeps."""

from __future__ import annotations

from supervisor.channel import Slot, SlotState
from supervisor.watch.phases import PhaseClock
from supervisor.watch.sample import Sample


def slot(rank: int, step: int, phase: str = "", state=SlotState.RUNNING) -> Slot:
    return Slot(rank, 100 + rank, state, step, 0, -1, 0, phase)


def feed(clock: PhaseClock, *samples: tuple[float, tuple[Slot, ...]]) -> None:
    for now, slots in samples:
        assert clock.observe(Sample(slots, now)) == ()


def test_time_goes_to_init_then_steady_then_the_named_phase() -> None:
    clock = PhaseClock()
    feed(
        clock,
        (10.0, (slot(0, -1), slot(1, -1))),
        (12.0, (slot(0, -1), slot(1, -1))),  # still loading: init
        (13.0, (slot(0, 0), slot(1, -1))),  # the first step lands in this interval: init
        (16.0, (slot(0, 5), slot(1, 5))),  # steady
        (18.0, (slot(0, 5, "eval"), slot(1, 6))),  # one rank evaluates: the gang waits
        (19.0, (slot(0, 6, "checkpoint"), slot(1, 6, "eval"))),  # the lowest rank's phase
    )
    times = clock.times()
    assert times.init_s == 3.0
    assert times.steady_s == 3.0
    assert times.phases_s == {"eval": 2.0, "checkpoint": 1.0}


def test_time_after_every_rank_finished_is_not_charged() -> None:
    clock = PhaseClock()
    done = (slot(0, 9, state=SlotState.FINISHED),)
    feed(clock, (0.0, (slot(0, 1),)), (1.0, (slot(0, 2),)), (2.0, (slot(0, 3),)), (9.0, done))
    assert clock.times().steady_s == 1.0
    assert clock.times().init_s == 1.0
