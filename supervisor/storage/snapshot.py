"""Turning the caller's state into bytes ready to write, before any I/O.

`prepare` encodes the state (`codec`: tensors plus a JSON skeleton), plans the tensor files
(`tensorfile`) and points each file's body at the tensors' bytes, in one of two ways:

- direct (sync `save`): the bodies are the caller's own tensors (CPU copies only of device
  tensors). The caller must not modify them until the write returns, which a blocking save
  guarantees.
- snapshot (`save_async`): every tensor is copied into one host buffer laid out like the
  files' bodies (`HostBuffer`, pinned when any tensor is on a GPU), and device copies are
  synchronised. After `prepare` returns, the caller may modify its state freely.

Runs on the calling (training) thread and blocks for the copies. The host buffer is reused
by every async save of a store (and grown when the state grows), so memory stays bounded
by one copy of the state. Both ways store the values a tensor shows, bit for bit: lazy
conjugate and negative views are resolved (`values`), views are made contiguous. Raises
`CheckpointError` for a bad step, reason or metadata and for state it cannot encode (see
`codec`, which names the path in the state); nothing has been written by then.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from supervisor.core.errors import CheckpointError
from supervisor.storage import codec, layout, tensorfile


@dataclass
class Prepared:
    """Everything a write needs, already independent of the caller's live state."""

    step: int
    reason: str
    metadata: dict[str, Any]
    plans: list[tensorfile.Plan]
    bodies: list[list[memoryview]]
    skeleton: bytes
    pickles: bytes | None
    tensor_bytes: int
    world_size: int
    versions: dict[str, str]
    keepalive: list[Any] = field(default_factory=list)  # tensors the memoryviews point into


class HostBuffer:
    """One reused host buffer that async saves copy their tensors into."""

    def __init__(self) -> None:
        self.slab: Any = None  # a uint8 torch tensor, or None until the first snapshot

    def copy(self, tensors: list[Any], plans: list[tensorfile.Plan]) -> tuple[list, list]:
        """Copy every tensor into the buffer laid out like the files' bodies."""
        import torch

        bases, total = [], 0
        for plan in plans:
            bases.append(total)
            total += -(-plan.body_size // 64) * 64  # 64-byte aligned bases keep views legal
        on_gpu = any(t.device.type == "cuda" for t in tensors)
        # Pinned memory makes the device-to-host copies asynchronous (one synchronize for
        # all); a buffer first made for a CPU-only state is replaced once tensors are on a GPU.
        unpinned = on_gpu and not self.slab.is_pinned() if self.slab is not None else False
        if self.slab is None or self.slab.numel() < total or unpinned:
            self.slab = None  # free the old buffer before allocating the new one
            self.slab = torch.empty(max(total, 1), dtype=torch.uint8, pin_memory=on_gpu)
        slab = self.slab
        bodies = []
        for plan, base in zip(plans, bases, strict=True):
            for entry in plan.entries:
                if entry.end > entry.begin:
                    src = values(tensors[entry.index])
                    dst = slab[base + entry.begin : base + entry.end].view(src.dtype)
                    dst.view(src.shape).copy_(src, non_blocking=on_gpu)
            bodies.append([tensorfile.tensor_memory(slab[base : base + plan.body_size])])
        if on_gpu:
            torch.cuda.synchronize()
        return bodies, [slab]

    def release(self) -> None:
        self.slab = None


def values(t: Any) -> Any:
    """`t` detached, with its lazy conjugate and negative bits resolved: a tensor whose memory
    holds the values `t` shows. Both saves read tensors through this. Without it a raw copy
    of the memory (the sync save's) stores `x` for `x.conj()` or `torch._neg_view(x)`;
    `copy_` (the async save's) would resolve them itself, but the two paths must not
    depend on that difference."""
    return t.detach().resolve_conj().resolve_neg()


def direct(tensors: list[Any], plans: list[tensorfile.Plan]) -> tuple[list, list]:
    """Bodies that point straight at the caller's tensors (CPU copies only where needed)."""
    keepalive, bodies = [], []
    for plan in plans:
        views = []
        for entry in plan.entries:
            t = values(tensors[entry.index])
            if t.device.type != "cpu":
                t = t.cpu()
            t = t.contiguous()
            keepalive.append(t)
            views.append(tensorfile.tensor_memory(t))
        bodies.append(views)
    return bodies, keepalive


def prepare(
    step: int,
    state: Any,
    metadata: dict[str, Any] | None,
    reason: str,
    *,
    allow_pickle: bool,
    shard_bytes: int,
    world_size: int,
    buffer: HostBuffer | None,
) -> Prepared:
    """Validate and encode `state`; snapshot it into `buffer`, or point at it if None."""
    import torch

    layout.check_step(step)
    layout.check_reason(reason)
    try:
        json.dumps(metadata or {})
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint metadata must be JSON-serialisable: {err}") from err
    encoded = codec.encode(state, allow_pickle)
    plans = tensorfile.plan_files(encoded.tensors, shard_bytes)
    if buffer is not None:
        bodies, keepalive = buffer.copy(encoded.tensors, plans)
    else:
        bodies, keepalive = direct(encoded.tensors, plans)
    pickles = codec.dump_pickles(encoded.pickles) if encoded.pickles else None
    return Prepared(
        step=step,
        reason=reason,
        metadata=dict(metadata or {}),
        plans=plans,
        bodies=bodies,
        skeleton=json.dumps(encoded.skeleton, separators=(",", ":")).encode(),
        pickles=pickles,
        tensor_bytes=sum(p.body_size for p in plans),
        world_size=world_size,
        versions={"torch": torch.__version__},
        keepalive=keepalive,
    )
