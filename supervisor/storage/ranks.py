"""The few torch.distributed collectives that checkpointing needs, on a gloo group.

- `world_size()` / `rank()`: 1 and 0 unless a process group is initialised.
- `rank_zero(work, step, arrival_timeout=None)`: every rank calls it. With a timeout,
  every rank must first arrive within `arrival_timeout` seconds (a monitored barrier: rank
  0 names the ranks that did not, instead of blocking forever when a script calls a
  collective save from rank 0 alone); then rank 0 runs `work`, and one int is broadcast
  so the other ranks return (None) only once rank 0 has finished, or raise
  `CheckpointError` if rank 0 failed (rank 0 raises its own error).
- `agree`, `all_ok`, `share`, `gather_to_all`: one flag, one string or one object per rank,
  across ranks.

The collectives run on a dedicated gloo group (created on first use, collectively), never
on the training NCCL group, so a slow checkpoint write never trips NCCL's watchdog; others
keep checkpoint I/O off the training group for the same reason (ByteDance-Seed/VeOmni#492,
NVIDIA-NeMo/Automodel#3108).

Every function blocks; the collectives must be called by every rank in the same order.
torch is imported inside functions only, so importing this module never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from supervisor.core.errors import CheckpointError

T = TypeVar("T")

_GROUP: Any = None


def dist() -> Any:
    """`torch.distributed` if a process group is initialised, else None."""
    import torch.distributed as torch_dist

    return torch_dist if torch_dist.is_available() and torch_dist.is_initialized() else None


def world_size() -> int:
    group = dist()
    return group.get_world_size() if group is not None else 1


def rank() -> int:
    group = dist()
    return group.get_rank() if group is not None else 0


def _gloo_group() -> Any:
    global _GROUP
    torch_dist = dist()
    if torch_dist.get_backend() == "gloo":
        return None  # the default group already runs on CPU
    if _GROUP is None:
        _GROUP = torch_dist.new_group(backend="gloo")
    return _GROUP


def agree(ok: bool, src: int = 0) -> bool:
    """Rank `src`'s `ok`, on every rank."""
    import torch

    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    dist().broadcast(flag, src=src, group=_gloo_group())
    return bool(flag.item())


def all_ok(ok: bool) -> bool:
    """True on every rank iff `ok` was True on every rank."""
    import torch

    flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
    dist().all_reduce(flag, group=_gloo_group())
    return flag.item() == 0


def share(value: str) -> str:
    """Rank 0's `value`, on every rank."""
    box = [value]
    dist().broadcast_object_list(box, src=0, group=_gloo_group())
    return box[0]


def gather_to_all(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank (pickled in transit only)."""
    values: list[Any] = [None] * world_size()
    dist().all_gather_object(values, value, group=_gloo_group())
    return values


def arrive(step: int, arrival_timeout: float) -> None:
    """Return once every rank has called this; raise `CheckpointError` after
    `arrival_timeout` seconds, naming the ranks that did not come."""
    try:
        dist().monitored_barrier(
            group=_gloo_group(), timeout=timedelta(seconds=arrival_timeout), wait_all_ranks=True
        )
    except RuntimeError as err:
        raise CheckpointError(
            f"saving step {step} is a collective: every rank calls save() for it, and not "
            f"every rank did within {arrival_timeout:g} s ({err}). A script that saves from "
            "one rank (`if rank == 0: store.save(...)`) should pass collective=False"
        ) from err


def rank_zero(work: Callable[[], T], step: int, arrival_timeout: float | None = None) -> T | None:
    """Run `work` on rank 0 (once every rank has arrived, given `arrival_timeout`); every
    rank returns once it has finished (others get None)."""
    if arrival_timeout is not None:
        arrive(step, arrival_timeout)
    result, error = None, None
    if dist().get_rank() == 0:
        try:
            result = work()
        except BaseException as err:  # reported to the other ranks, then re-raised
            error = err
    succeeded = agree(error is None)
    if error is not None:
        raise error
    if not succeeded:
        raise CheckpointError(f"rank 0 failed to save checkpoint step {step}; see rank 0's log")
    return result
