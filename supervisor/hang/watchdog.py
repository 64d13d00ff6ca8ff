"""Hang detection from the channel samples: missing progress becomes a HANG finding.

`HangWatcher` is a `Watcher` fed by the attempt's sampler (`supervisor.watch.sampler`).
A rank is stalled when its last beat is older than the timeout of its phase
(`HangOptions.timeout_for`) at the sample's time. Not stalled, ever:
* a slot no rank has claimed (the rank has not started);
* a FINISHED slot (the rank said it is done);
* a rank whose process no longer exists (it died: the child's exit status tells that
  story, and calling it a hang would hide the real cause).

On the first stall it returns one `Finding(source="hang", kind="heartbeat_stall",
exit_code=HANG, urgency=STOP)` and is done. The detail names the rank that stalled first
(oldest last beat) and lists every rank's state. When a `collect_stacks` callable is given,
the watcher asks for every running rank's stacks before returning (blocking the sampler's
thread for at most the callable's own timeout) and merges what it returns into the detail;
if the stacks single out one stalled rank as the suspect (the one not waiting inside a
collective), that rank is the one named.

Every sample's steady step intervals feed the calibration, which `calibration` exposes
for the session to persist; it is replaced whole on each sample, so any thread may read it.

`LogSilenceWatcher` returns `kind="log_silence"` once the child has written nothing for its
timeout, then is done.

Neither reads a clock, a thread or the channel: time is the sample's, and the only effects
are the injected `alive` and `collect_stacks` callables (and `last_output`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from supervisor.channel import Slot, SlotState
from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.hang.calibration import Calibration
from supervisor.hang.options import HangOptions
from supervisor.watch.sample import Sample

StackCollector = Callable[[Mapping[int, int], Iterable[int]], Mapping[str, object]]
"""(pids by rank, stalled ranks) -> facts to merge into the finding (stacks, suspects...)."""


@dataclass(frozen=True)
class Stall:
    slot: Slot
    stalled_for: float  # seconds since the last beat
    timeout: float
    timeout_source: str  # "init", "explicit", "calibrated", "phase"

    def as_dict(self) -> dict[str, object]:
        return {
            "rank": self.slot.rank,
            "pid": self.slot.pid,
            "step": self.slot.step,
            "phase": self.slot.phase,
            "stalled_for_s": round(self.stalled_for, 3),
            "timeout_s": round(self.timeout, 3),
            "timeout_from": self.timeout_source,
        }


def find_stalls(
    slots: Iterable[Slot],
    now_ns: int,
    options: HangOptions,
    calibrated: float | None,
    alive: Callable[[int], bool],
) -> list[Stall]:
    """The stalled ranks among `slots`, oldest last beat first. Pure apart from `alive`."""
    stalls = []
    for slot in slots:
        if slot.state is not SlotState.RUNNING:
            continue
        timeout, source = options.timeout_for(slot.phase, slot.step >= 0, calibrated)
        stalled_for = (now_ns - slot.beat_ns) / 1e9
        if stalled_for > timeout and alive(slot.pid):
            stalls.append(Stall(slot, stalled_for, timeout, source))
    stalls.sort(key=lambda s: s.slot.beat_ns)
    return stalls


def pid_alive(pid: int) -> bool:
    """Whether `pid` still exists (a zombie counts: it has not been reaped yet)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rank_summary(slot: Slot, now_ns: int) -> dict[str, object]:
    return {
        "rank": slot.rank,
        "pid": slot.pid,
        "state": slot.state.name.lower(),
        "step": slot.step,
        "phase": slot.phase,
        "last_beat_s_ago": round((now_ns - slot.beat_ns) / 1e9, 3),
    }


def stall_finding(
    stalls: list[Stall], slots: list[Slot], now_ns: int, extra: Mapping[str, object]
) -> Finding:
    """The HANG finding for `stalls` (non-empty), naming the rank to blame."""
    first = stalls[0]
    named, named_by = first, "oldest_beat"
    suspects = extra.get("suspects")
    if isinstance(suspects, list) and len(suspects) == 1:
        for stall in stalls:
            if stall.slot.rank == suspects[0]:
                named, named_by = stall, "stacks"
    detail: dict[str, object] = {
        **named.as_dict(),
        "first": first.slot.rank,
        "named_by": named_by,
        "stalled": [s.as_dict() for s in stalls],
        "ranks": [_rank_summary(s, now_ns) for s in slots],
        **{k: v for k, v in extra.items() if k not in {"rank", "first"}},
    }
    phase = f" in phase {named.slot.phase!r}" if named.slot.phase else ""
    step = f"at step {named.slot.step}" if named.slot.step >= 0 else "before its first step"
    summary = (
        f"rank {named.slot.rank} (pid {named.slot.pid}) made no progress for "
        f"{named.stalled_for:.1f} s {step}{phase} (timeout {named.timeout:g} s, "
        f"{named.timeout_source}); {len(stalls)} of {len(slots)} ranks stalled"
    )
    return Finding(
        source="hang",
        kind="heartbeat_stall",
        summary=summary,
        exit_code=ExitCode.HANG,
        urgency=Urgency.STOP,
        detail=detail,
    )


class HangWatcher:
    """Heartbeat staleness per rank, from the channel samples; see the module docstring."""

    name = "hang"

    def __init__(
        self,
        options: HangOptions,
        calibration: Calibration | None = None,
        collect_stacks: StackCollector | None = None,
        alive: Callable[[int], bool] = pid_alive,
    ) -> None:
        self._options = options
        self._collect = collect_stacks
        self._alive = alive
        self.calibration = calibration or Calibration()
        self.done = False

    def calibrated_timeout(self) -> float | None:
        return self.calibration.timeout(self._options.calibration)

    def observe(self, sample: Sample) -> list[Finding]:
        knobs = self._options.calibration
        calibration = self.calibration
        for interval in sample.intervals:
            calibration = calibration.observe(interval.seconds, knobs)
        self.calibration = calibration
        slots = list(sample.slots)
        now_ns = sample.now_ns
        stalls = find_stalls(slots, now_ns, self._options, self.calibrated_timeout(), self._alive)
        if not stalls:
            return []
        self.done = True
        extra: Mapping[str, object] = {}
        if self._collect is not None:
            running = {s.rank: s.pid for s in slots if s.state is SlotState.RUNNING}
            extra = self._collect(running, [s.slot.rank for s in stalls])
        return [stall_finding(stalls, slots, now_ns, extra)]


class LogSilenceWatcher:
    """Opt-in fallback for uninstrumented programs: no output for `timeout` s is a hang.

    `last_output()` is when the child last wrote, on the loop's clock (`Activity`).
    """

    name = "log-silence"

    def __init__(self, last_output: Callable[[], float], timeout: float) -> None:
        self._last_output = last_output
        self._timeout = timeout
        self.done = False

    def observe(self, sample: Sample) -> list[Finding]:
        silent_for = sample.now - self._last_output()
        if silent_for <= self._timeout:
            return []
        self.done = True
        finding = Finding(
            source="hang",
            kind="log_silence",
            summary=(
                f"the training command wrote nothing for {silent_for:.1f} s "
                f"(--log-silence-timeout {self._timeout:g} s)"
            ),
            exit_code=ExitCode.HANG,
            urgency=Urgency.STOP,
            detail={"silent_for_s": round(silent_for, 3), "timeout_s": self._timeout},
        )
        return [finding]
