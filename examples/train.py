"""A small but real training script, supervised; single process or DDP over gloo.

The three lines that involve supervise are marked `# supervise`. Without supervise,
`attach()` returns a no-op handle, so this file runs unchanged either way:

    python examples/train.py --steps 200
    supervise -- python examples/train.py --steps 200
    supervise --nproc-per-node 2 -- examples/train.py --steps 200     # DDP, gloo on CPU
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import supervisor  # supervise


def make_data(seed: int, n: int = 4096) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    w = torch.randn(32, 1, generator=g)
    y = torch.sin(x @ w) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-time", type=float, default=0.0, help="extra seconds per step")
    args = parser.parse_args()

    sup = supervisor.attach()  # supervise
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:  # launched by torchrun: one process per rank, gloo on CPU
        dist.init_process_group("gloo")
    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Dropout(0.1), nn.Linear(64, 1))
    if distributed:
        model = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    data = make_data(args.seed)
    if distributed:
        sampler = DistributedSampler(data, shuffle=True, seed=args.seed)
        loader = DataLoader(data, batch_size=64, sampler=sampler)
    else:
        generator = torch.Generator().manual_seed(args.seed)
        loader = DataLoader(data, batch_size=64, shuffle=True, generator=generator)
    rank = dist.get_rank() if distributed else 0

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True  # finish the current step, then leave cleanly

    signal.signal(signal.SIGTERM, stop)
    step, epoch, batches = 0, 0, iter(loader)
    while step < args.steps and not stopping:
        try:
            x, y = next(batches)
        except StopIteration:
            epoch += 1
            if distributed:
                sampler.set_epoch(epoch)
            batches = iter(loader)
            continue
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        sup.step(step)  # supervise
        if rank == 0 and (step % 50 == 0 or step == args.steps):
            print(f"step {step:>5}  loss {loss.item():.4f}", flush=True)
        if args.step_time:
            time.sleep(args.step_time)
    if stopping:
        print(f"rank {rank}: SIGTERM, stopping at step {step}", flush=True)
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
