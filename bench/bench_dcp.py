"""A sharded save on 2 gloo ranks: ours (DCP writes, our manifest and marker commit) against
plain `torch.distributed.checkpoint.save` of the same state, side by side.

Two CPU processes (spawned, gloo) each hold their own shard of a model-like state. Every
round times both sides, in an order that alternates from round to round, from a barrier to
the barrier after the save (so the slowest rank counts):

* ours: `save_sharded` (every rank's files written by DCP's `FileSystemWriter` with
  fsync, then rank 0 checksums every file, writes the manifest and commits the marker);
* plain: `dcp.save(state, checkpoint_id=DIR)`, DCP's own default (files fsynced too).

The ratio is reported per round as its median with the lowest and highest round, after one
warm-up round that is not counted. Target: ours within 1.1x of plain DCP.

    python bench/bench_dcp.py [--mib 512] [--rounds 5] [--dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORLD = 2


def shard(rank: int, mib: int) -> dict[str, torch.Tensor]:
    """About `mib` MiB for this rank: 16 MiB weights with their two AdamW moments."""
    layers = max(1, (mib << 20) // (3 * 16 << 20))
    torch.manual_seed(rank)
    out: dict[str, torch.Tensor] = {}
    for i in range(layers):
        out[f"rank{rank}.layer{i}.weight"] = torch.randn(2048, 2048)
        out[f"rank{rank}.layer{i}.exp_avg"] = torch.randn(2048, 2048)
        out[f"rank{rank}.layer{i}.exp_avg_sq"] = torch.rand(2048, 2048)
    out["step"] = torch.tensor(10.0)  # replicated: DCP writes it once
    return out


def worker(rank: int, port: int, root: str, mib: int, rounds: int, result: str) -> None:
    import torch.distributed.checkpoint as dcp

    from supervisor.storage import CheckpointStore, save_sharded

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    state = shard(rank, mib)
    store = CheckpointStore(f"{root}/store", keep_last=2)
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    plain_dir = f"{root}/plain"

    def ours(step: int) -> None:
        save_sharded(store, step, state)

    def plain(step: int) -> None:
        dcp.save(state, checkpoint_id=f"{plain_dir}-{step}")

    try:
        for r in range(rounds + 1):
            jobs = [("ours", ours), ("plain", plain)]
            for name, job in jobs if r % 2 == 0 else jobs[::-1]:
                # Each side writes fresh files: deleting the last ones (our retention runs
                # in the background) stays out of the timer.
                store.wait()
                if rank == 0:
                    shutil.rmtree(f"{plain_dir}-{r - 1}", ignore_errors=True)
                    os.sync()
                dist.barrier()
                start = time.perf_counter()
                job(r + 1)
                dist.barrier()
                elapsed = time.perf_counter() - start
                if r:
                    times[name].append(elapsed)
        store.close()
        if rank == 0:
            with open(result, "w") as f:
                json.dump(times, f)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="MiB per rank (default 512)")
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds (default 5)")
    parser.add_argument("--dir", default="/var/tmp", help="where to write (default /var/tmp)")
    parser.add_argument("--quick", action="store_true", help="128 MiB per rank, 3 rounds")
    parser.add_argument("--verbose", action="store_true", help="print every measurement")
    args = parser.parse_args()
    if args.quick:
        args.mib, args.rounds = 128, 3
    root = tempfile.mkdtemp(prefix="bench-dcp-", dir=args.dir)
    result = f"{root}/result.json"
    try:
        mp.spawn(
            worker,
            args=(free_port(), root, args.mib, args.rounds, result),
            nprocs=WORLD,
            join=True,
        )
        with open(result) as f:
            times = json.load(f)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.verbose:
        for name, values in times.items():
            print(f"  {name:<6} " + " ".join(f"{v:.3f}" for v in values))
    gib = WORLD * args.mib / 1024
    print(f"sharded state: {gib:.2f} GiB on {WORLD} gloo ranks in {args.dir}, {args.rounds} rounds")
    for name, what in [("ours", "save_sharded (ours)"), ("plain", "dcp.save")]:
        values = times[name]
        med = statistics.median(values)
        print(f"  {what:<20} {med:7.3f} s median ({min(values):.3f}-{max(values):.3f})")
    per_round = [a / b for a, b in zip(times["ours"], times["plain"], strict=True)]
    value = statistics.median(per_round)
    print(
        f"  ours / plain DCP     {value:6.2f}x  ({min(per_round):.2f}-{max(per_round):.2f})  "
        f"target <= 1.1x {'met' if value <= 1.1 else 'MISSED'} (by the median)"
    )


if __name__ == "__main__":
    main()
