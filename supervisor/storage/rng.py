"""Every global random generator, captured for a checkpoint and restored for an exact resume.

    state = {"model": ..., "rng": rng.capture(), "step": step}
    store.save(step, state)
    ...
    rng.restore(store.load()["rng"])

What is captured, per process: Python's `random`, NumPy's global generator (only when the
trainer has imported numpy), torch's CPU generator, and every CUDA device's generator (only
when CUDA is already initialised, so capturing never creates a CUDA context). Not captured:
generators the trainer made itself (`torch.Generator()`, `np.random.default_rng()`, a
DataLoader's `generator=`) and the position in the data stream. Save those next to the
state: `examples/train.py` derives its data order from (seed, step), so the step is enough.

Under torch.distributed with more than one rank, every rank draws from its own generators
(dropout masks differ per rank), so `capture()` is a collective: every rank calls it, and
each gets every rank's states, ready for rank 0 to save. For a save made by one rank alone
(`save(..., collective=False)`), pass `gather=False`: only the caller's states are kept,
and `restore` on another rank leaves that rank's generators as they are, with a warning.

`restore` puts torch's states back on the CPU before setting them, so it works after
`load(map_location="cuda")` moved every tensor, RNG ByteTensors included. A world size
that differs from the saving run's restores what matches by rank and warns about the rest.

The result holds only ints, tuples, NumPy arrays and uint8 tensors, so it is saved without
pickle. torch is imported inside the functions, numpy only if the trainer imported it.
"""

from __future__ import annotations

import random
import sys
import warnings
from typing import Any

from supervisor.core.errors import CheckpointError
from supervisor.storage import ranks

VERSION = 1


def capture(gather: bool = True) -> dict[str, Any]:
    """The generators' states of this process, or of every rank (see the module docstring).

    A collective under torch.distributed unless `gather=False`."""
    mine = _this_process()
    if gather and ranks.world_size() > 1:
        return {"version": VERSION, "ranks": ranks.gather_to_all(mine)}
    return {"version": VERSION, "ranks": [mine], "rank": ranks.rank()}


def restore(saved: dict[str, Any]) -> None:
    """Set this process's generators from `capture()`'s result. Never a collective.

    Raises `CheckpointError` if `saved` is not what `capture` returns."""
    if not isinstance(saved, dict) or saved.get("version") != VERSION:
        raise CheckpointError("rng.restore: expected the dict that rng.capture() returned")
    entries = saved.get("ranks")
    if not isinstance(entries, list) or not entries:
        raise CheckpointError("rng.restore: the saved states hold no rank")
    rank, world = ranks.rank(), ranks.world_size()
    if "rank" in saved:  # one rank's states, saved alone
        if saved["rank"] != rank:
            warnings.warn(
                f"rng.restore: the states were saved by rank {saved['rank']} alone; rank "
                f"{rank} keeps its generators as they are (capture with every rank for an "
                "exact resume)",
                stacklevel=2,
            )
            return
        _set(entries[0])
        return
    if len(entries) != world:
        warnings.warn(
            f"rng.restore: the states were saved by {len(entries)} ranks and are restored "
            f"on {world}; ranks without a saved state keep their generators as they are",
            stacklevel=2,
        )
    if rank < len(entries):
        _set(entries[rank])


def _this_process() -> dict[str, Any]:
    import torch

    states: dict[str, Any] = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": None,
        "cuda": None,
    }
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states["numpy"] = numpy.random.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set(states: dict[str, Any]) -> None:
    import torch

    try:
        random.setstate(_tuples(states["python"]))
        torch.set_rng_state(states["torch"].cpu())
        if states.get("numpy") is not None:
            import numpy

            numpy.random.set_state(states["numpy"])
        cuda = states.get("cuda")
        if cuda is not None:
            _set_cuda(torch, cuda)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"rng.restore: the saved states do not fit: {err}") from err


def _set_cuda(torch: Any, saved: list[Any]) -> None:
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices != len(saved):
        warnings.warn(
            f"rng.restore: {len(saved)} CUDA generators were saved and {devices} devices are "
            "visible; the devices present get the saved states in order",
            stacklevel=3,
        )
    for device, state in enumerate(saved[:devices]):
        torch.cuda.set_rng_state(state.cpu(), device)


def _tuples(value: Any) -> Any:
    """`random.setstate` wants tuples all the way down; a round trip may give lists."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value
