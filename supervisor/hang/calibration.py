"""Automatic calibration of the steady-state hang timeout from observed step intervals.

Pure (L1): values in, values out; no clock, no files. The watchdog feeds it the seconds per
step it measures for each rank; `HangState` in `supervisor.hang.state` saves and loads it as
JSON so that a resumed run starts calibrated instead of blind.

The formula, with its defaults:

    timeout = clamp(factor * P_q(window), floor, ceiling)

    window   the last `window` (512) step intervals of every rank, in seconds per step
    P_q      the q-th percentile by nearest rank; q = 100 (the default) is the maximum
    factor   5.0: a hang must be five times slower than the slowest recent step
    floor    30 s, so that very fast steps cannot make a hair trigger
    ceiling  1800 s, so that one pathological step cannot switch detection off
    ready    only after `min_samples` (8) intervals; until then there is no calibrated value

The maximum is the default percentile because periodic slow steps (evaluation, logging,
a synchronous checkpoint taken outside a named phase) are real and a false hang costs a
restart; q = 99 trades that safety for faster detection. The factor 5 follows NVIDIA
Resiliency Extension's timeout calculator (`fault_tolerance/timeouts_calc.py`), which
multiplies the maximum observed gap by a safety factor of 5.0. Unlike it, this needs no
collective: each node calibrates from its own ranks, and the window forgets warm-up spikes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.core.errors import ConfigError


@dataclass(frozen=True)
class Knobs:
    """The calibration's parameters. Invalid values raise ConfigError."""

    factor: float = 5.0
    percentile: float = 100.0
    window: int = 512
    min_samples: int = 8
    floor: float = 30.0
    ceiling: float = 1800.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.factor) and self.factor >= 1.0):
            raise ConfigError(f"the calibration factor must be ≥ 1, got {self.factor}")
        if not 50.0 <= self.percentile <= 100.0:
            raise ConfigError(
                f"the calibration percentile must be between 50 and 100, got {self.percentile}"
            )
        if self.window < 1 or self.min_samples < 1 or self.min_samples > self.window:
            raise ConfigError(
                f"calibration needs 1 ≤ min_samples ≤ window, got {self.min_samples} and "
                f"{self.window}"
            )
        if not (math.isfinite(self.floor) and math.isfinite(self.ceiling)):
            raise ConfigError("the calibration floor and ceiling must be finite seconds")
        if not 0 < self.floor <= self.ceiling:
            raise ConfigError(
                f"calibration needs 0 < floor ≤ ceiling, got {self.floor} and {self.ceiling}"
            )


def percentile(values: tuple[float, ...], q: float) -> float:
    """The q-th percentile by nearest rank (q in (0, 100]); the maximum at q = 100."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    index = max(0, math.ceil(q / 100.0 * len(ordered)) - 1)
    return ordered[index]


@dataclass(frozen=True)
class Calibration:
    """Step intervals seen so far (seconds per step), newest last, at most `window` of them."""

    intervals: tuple[float, ...] = ()

    def observe(self, interval: float, knobs: Knobs) -> Calibration:
        """Add one interval. Non-finite or negative intervals are ignored (a clock glitch)."""
        if not (math.isfinite(interval) and interval >= 0):
            return self
        kept = (*self.intervals, interval)[-knobs.window :]
        return Calibration(kept)

    def ready(self, knobs: Knobs) -> bool:
        return len(self.intervals) >= knobs.min_samples

    def timeout(self, knobs: Knobs) -> float | None:
        """The calibrated steady-state timeout in seconds, or None before `min_samples`."""
        if not self.ready(knobs):
            return None
        base = percentile(self.intervals[-knobs.window :], knobs.percentile)
        return min(knobs.ceiling, max(knobs.floor, knobs.factor * base))

    def to_json(self) -> dict[str, object]:
        return {"version": 1, "intervals": [round(x, 6) for x in self.intervals]}

    @classmethod
    def from_json(cls, data: Mapping[str, object], knobs: Knobs) -> Calibration:
        """Rebuild from `to_json` output. Raises ValueError on anything else."""
        if data.get("version") != 1 or not isinstance(data.get("intervals"), list):
            raise ValueError("not a calibration record (version 1 with a list of intervals)")
        values: list[float] = []
        for item in data["intervals"]:  # type: ignore[union-attr]
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise ValueError(f"a calibration interval is not a number: {item!r}")
            values.append(float(item))
        calibration = cls()
        for value in values:
            calibration = calibration.observe(value, knobs)
        return calibration
