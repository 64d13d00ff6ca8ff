"""Hang-detection options: frozen, validated by raising ConfigError, never rewritten.

The lead's CLI maps each field to a flag with a `SUPERVISE_*` twin:

    hang_timeout          --hang-timeout          SUPERVISE_HANG_TIMEOUT    auto (calibrated)
    init_timeout          --init-timeout          SUPERVISE_INIT_TIMEOUT    900 s
    log_silence_timeout   --log-silence-timeout   SUPERVISE_LOG_SILENCE_TIMEOUT  off
    phase_timeouts        --phase-timeouts N=S,...  SUPERVISE_PHASE_TIMEOUTS  (none)

Which timeout judges a rank (see `HangOptions.timeout_for`):
* no step recorded yet, or phase "init": `init_timeout`;
* phase "" (none) or "train": `hang_timeout` if given, else the calibrated value, else
  (not calibrated yet) `init_timeout`;
* any other phase ("checkpoint", "eval", custom): its `phase_timeouts` entry, else
  `init_timeout`, because an unnamed long phase must not be judged by step timing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from supervisor.core.errors import ConfigError
from supervisor.hang.calibration import Knobs

DEFAULT_INIT_TIMEOUT = 900.0  # seconds; matches torchrun's default rendezvous timeout
# The longest timeout: a week. Larger values mean "never" and overflow wait timeouts.
MAX_TIMEOUT = 7 * 86_400.0
STEADY_PHASES = frozenset({"", "train"})


def _seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        raise ConfigError(f"{name} must be seconds in (0, {MAX_TIMEOUT:g}], got {value}")


def parse_phase_timeouts(text: str) -> dict[str, float]:
    """Parse "checkpoint=1800,eval=600" (the CLI/env form). Raises ConfigError."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(
                f"--phase-timeouts expects NAME=SECONDS (e.g. checkpoint=1800), got {item!r}"
            )
        try:
            seconds = float(value)
        except ValueError:
            raise ConfigError(
                f"--phase-timeouts {name.strip()}: {value!r} is not a number of seconds"
            ) from None
        _seconds(f"--phase-timeouts {name.strip()}", seconds)
        out[name.strip()] = seconds
    return out


@dataclass(frozen=True)
class HangOptions:
    hang_timeout: float | None = None  # None: calibrate from observed steps
    init_timeout: float = DEFAULT_INIT_TIMEOUT
    log_silence_timeout: float | None = None  # None: no log-silence fallback
    phase_timeouts: Mapping[str, float] = field(default_factory=dict)
    calibration: Knobs = field(default_factory=Knobs)
    stack_timeout: float = 2.0  # seconds to wait for every rank's stack dump

    def __post_init__(self) -> None:
        if self.hang_timeout is not None:
            _seconds("--hang-timeout", self.hang_timeout)
        _seconds("--init-timeout", self.init_timeout)
        if self.log_silence_timeout is not None:
            _seconds("--log-silence-timeout", self.log_silence_timeout)
        for name, seconds in self.phase_timeouts.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"a phase timeout needs a phase name, got {name!r}")
            _seconds(f"--phase-timeouts {name}", seconds)
        _seconds("the stack-dump timeout", self.stack_timeout)
        # Freeze the mapping too, so a caller's dict cannot change a running watchdog.
        object.__setattr__(self, "phase_timeouts", dict(self.phase_timeouts))

    def timeout_for(self, phase: str, stepped: bool, calibrated: float | None) -> tuple[float, str]:
        """(seconds, where the value came from) for a rank in `phase`."""
        if phase in self.phase_timeouts:
            return self.phase_timeouts[phase], "phase"
        if not stepped or phase == "init":
            return self.init_timeout, "init"
        if phase not in STEADY_PHASES:
            return self.init_timeout, "init"
        if self.hang_timeout is not None:
            return self.hang_timeout, "explicit"
        if calibrated is not None:
            return calibrated, "calibrated"
        return self.init_timeout, "init"
