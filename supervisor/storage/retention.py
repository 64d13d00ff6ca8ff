"""Which committed steps to delete: a pure decision over step numbers (L1).

Keep the newest `keep_last` committed steps, every step that is a multiple of `keep_every`,
and anything `protected` (the step being loaded, the one just committed). Everything else
among the committed steps may go. The caller runs this only right after a newer step was
committed, and passes committed (marker-bearing) steps only, so an in-flight or torn step
never counts toward `keep_last`. Counting every step directory lets retention delete the
last durable step while a newer one is still being written (pytorch/torchtitan#4197,
NVIDIA-NeMo/Megatron-Bridge#5184).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from supervisor.core.errors import ConfigError


@dataclass(frozen=True)
class Retention:
    """keep_last >= 2: the newest step may be unreadable on a later load, so its predecessor
    must survive until a newer one exists. keep_every=None keeps no extra milestones."""

    keep_last: int = 3
    keep_every: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int):
            raise ConfigError(f"keep_last must be an int >= 2, got {self.keep_last!r}")
        if self.keep_last < 2:
            raise ConfigError(
                f"keep_last must be >= 2 (got {self.keep_last}): the previous step is the "
                "fallback if the newest one turns out unreadable"
            )
        if self.keep_every is not None and (
            isinstance(self.keep_every, bool)
            or not isinstance(self.keep_every, int)
            or self.keep_every < 1
        ):
            raise ConfigError(f"keep_every must be a positive int or None, got {self.keep_every!r}")


def to_delete(
    committed: Iterable[int], retention: Retention, protected: Iterable[int] = ()
) -> list[int]:
    """Committed steps that retention lets go, oldest first."""
    steps = sorted(set(committed))
    keep = set(steps[-retention.keep_last :]) | set(protected)
    if retention.keep_every:
        keep |= {s for s in steps if s % retention.keep_every == 0}
    return [s for s in steps if s not in keep]
