"""One rank of the distributed checkpoint test, run under real torchrun with gloo.

argv: <checkpoint dir> <result dir>. Writes <result dir>/rank<N>.json with what it saw.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from supervisor.core.errors import CheckpointError
from supervisor.storage import CheckpointStore, load_sharded, save_sharded


def main() -> None:
    url, results = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out: dict = {"rank": rank}
    committed: list[int] = []  # what on_commit told this rank, in order
    store = CheckpointStore(url, keep_last=10, on_commit=committed.append)

    # DDP: every rank calls save; rank 0 writes; all return after the commit.
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(8, 8))
    manifest = store.save(1, {"model": model.module.state_dict(), "step": 1})
    out["ddp_manifest"] = manifest is not None
    out["latest_after_ddp_save"] = store.latest()  # every rank sees the commit at once
    out["ddp_world_size"] = store.manifest(1).world_size

    # Rank 0 failing must fail every rank, not leave them waiting.
    try:
        store.save(2, {"bad": {1, 2}} if rank == 0 else {"fine": 1})
        out["rank0_failure"] = "no error"
    except CheckpointError as err:
        out["rank0_failure"] = type(err).__name__

    # Async under DDP: only rank 0 writes; every rank's handle settles together, and
    # on_commit runs on every rank: after the handle's wait, the next save, and close.
    handle = store.save_async(2, {"model": model.module.state_dict(), "step": 2})
    out["async_result_is_manifest"] = handle.wait() is not None
    out["committed_after_wait"] = list(committed)
    store.save_async(3, {"step": torch.tensor(3)})
    store.save_async(4, {"step": torch.tensor(4)})  # settles step 3 first
    out["committed_before_close"] = list(committed)
    store.close()
    out["committed_after_close"] = list(committed)

    # A background write that fails (step 1 again, other content) fails every rank's handle.
    failing = store.save_async(1, {"other": torch.zeros(3)})
    try:
        failing.wait()
        out["async_failure"] = "no error"
    except CheckpointError as err:
        out["async_failure"] = type(err).__name__
    store.close()
    out["committed_after_failure"] = list(committed)
    dist.barrier()
    out["latest_after_async"] = store.latest()

    # Sharded: each rank owns a shard, DCP writes them, our marker commits.
    shards = {f"shard{rank}": torch.full((1000,), float(rank + 1)), "shared": torch.arange(10.0)}
    save_sharded(store, 5, shards, reason="preempted")
    empty = {f"shard{rank}": torch.zeros(1000), "shared": torch.zeros(10)}
    out["sharded_step"] = load_sharded(store, empty)
    out["sharded_ok"] = bool(
        empty[f"shard{rank}"].eq(rank + 1).all() and empty["shared"].equal(torch.arange(10.0))
    )
    out["committed"] = committed
    dist.barrier()
    with open(f"{results}/rank{rank}.json", "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
