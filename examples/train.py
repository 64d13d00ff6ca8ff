"""A small but real training script that survives eviction; single process or DDP on gloo.

It has a model with dropout, AdamW, a cosine LR schedule and a shuffling data loader, and it
resumes deterministically: a run that is stopped and resumed ends with the same parameters,
bit for bit, as one that was never interrupted. The lines that involve supervise are marked
`# supervise`; without supervise, `attach()` is a no-op and the script runs the same way.

    python examples/train.py --steps 200 --checkpoint-dir /tmp/ckpt
    supervise --checkpoint-dir /tmp/ckpt -- python examples/train.py --steps 200
    supervise --nproc-per-node 2 --checkpoint-dir /tmp/ckpt -- examples/train.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler, TensorDataset

import supervisor  # supervise

BATCH = 64


def make_data(seed: int, n: int = 4096) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g)
    w = torch.randn(32, 1, generator=g)
    y = torch.sin(x @ w) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


class ResumableShuffle(Sampler[int]):
    """A fresh permutation per epoch from (seed, epoch), so any step's batch can be found
    again after a restart without saving the sampler: resuming at step s skips to it."""

    def __init__(self, n: int, seed: int, rank: int, world: int, first_step: int) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.per_epoch = n // world // BATCH  # whole batches per rank per epoch
        self.first_step = first_step

    def __iter__(self):
        step = self.first_step
        while True:
            epoch, offset = divmod(step, self.per_epoch)
            order = torch.randperm(
                self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            )
            mine = order[self.rank :: self.world][: self.per_epoch * BATCH]
            yield from mine[offset * BATCH :].tolist()
            step = (epoch + 1) * self.per_epoch

    def __len__(self) -> int:  # the loader asks; the stream itself is endless
        return sys.maxsize


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-time", type=float, default=0.0, help="extra seconds per step")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument(
        "--checkpoint-time",
        type=float,
        default=0.0,
        help="extra seconds per save and per load, as a large model's checkpoint takes",
    )
    parser.add_argument(
        "--checkpoint-dir",
        default=os.environ.get("SUPERVISE_CHECKPOINT_DIR"),
        help="where checkpoints go (default: what `supervise --checkpoint-dir` passes)",
    )
    args = parser.parse_args()

    sup = supervisor.attach()  # supervise
    store = supervisor.CheckpointStore(args.checkpoint_dir, on_commit=sup.committed)  # supervise
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:  # launched by torchrun: one process per rank, gloo on CPU
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)

    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Dropout(0.1), nn.Linear(64, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)

    step = 0
    if store.latest() is not None:  # a rescheduled pod continues where the last one stopped
        with sup.phase("restore"):  # supervise: this time is restore, not init
            time.sleep(args.checkpoint_time)  # stands in for a large model's load
            state = store.load()
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            supervisor.rng.restore(state["rng"])  # this rank's dropout stream, exactly
            step = state["step"]
        if rank == 0:
            print(f"resumed from step {step}", flush=True)
    net = DistributedDataParallel(model) if distributed else model
    data = make_data(args.seed)
    # The loader gets its own generator: left to the global one, creating the iterator
    # would draw from the RNG that dropout uses, and a resumed run would drift.
    loader = DataLoader(
        data,
        batch_size=BATCH,
        drop_last=True,
        generator=torch.Generator(),
        sampler=ResumableShuffle(len(data), args.seed, rank, world, step),
    )

    def save(reason: str) -> None:
        with sup.phase("checkpoint"):  # supervise: this time is saving, not training
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": supervisor.rng.capture(),  # every rank's generators (a collective)
                "step": step,
            }
            time.sleep(args.checkpoint_time)  # stands in for a large model's save
            store.save(step, state, reason=reason)  # on every rank; on_commit tells supervise

    batches = iter(loader)
    while step < args.steps:
        x, y = next(batches)
        loss = nn.functional.mse_loss(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        sup.step(step)  # supervise
        if rank == 0 and (step % 50 == 0 or step == args.steps):
            print(f"step {step:>5}  loss {loss.item():.4f}", flush=True)
        if sup.should_checkpoint(step):  # supervise: every rank agrees on this step
            reason = sup.checkpoint_reason or "preempted"  # "degraded", "requested", ...
            save(reason)
            if reason != "requested":  # supervise: an operator's checkpoint-now goes on
                if rank == 0:
                    print(f"checkpoint at step {step} ({reason}); leaving", flush=True)
                break
            if rank == 0:
                print(f"checkpoint at step {step} (requested); going on", flush=True)
        elif step % args.checkpoint_every == 0 or step == args.steps:
            save("final" if step == args.steps else "periodic")
        if args.step_time:
            time.sleep(args.step_time)
    store.close()
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
