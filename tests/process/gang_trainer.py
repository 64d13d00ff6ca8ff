"""A DDP "trainer" for the gang tests: gloo all-reduces, one per step, and one way to fail.

    gang_trainer.py [--steps N] [--raise-on R] [--block-on R] [--at STEP] [--attach]

At step STEP, on the node whose torchrun node rank (GROUP_RANK) is R:
- `--raise-on`: the trainer's own bug, an exception;
- `--block-on`: it waits on the rendezvous store for a key nobody sets, as a rank stuck in
  a barrier does; nothing there notices a peer's death, and it times out after 10 min.
Every rank prints "step N" after each step; `--attach` makes it beat supervise's channel.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import torch
import torch.distributed as dist

import supervisor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--raise-on", type=int)
    parser.add_argument("--block-on", type=int)
    parser.add_argument("--at", type=int, default=20)
    parser.add_argument("--attach", action="store_true")
    args = parser.parse_args()
    sup = supervisor.attach() if args.attach else None
    dist.init_process_group("gloo")
    node = int(os.environ["GROUP_RANK"])
    t = torch.ones(4)
    for step in range(args.steps):
        if step == args.at and node == args.raise_on:
            raise RuntimeError(f"the trainer's own bug at step {step}")
        if step == args.at and node == args.block_on:
            print(f"blocked at step {step}", flush=True)
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]),
                is_master=False,
                timeout=datetime.timedelta(minutes=10),
            )
            store.wait(["a key nobody sets"])
        dist.all_reduce(t)
        if sup is not None:
            sup.step(step)
        print(f"step {step}", flush=True)
        time.sleep(0.02)  # the step time: slow enough that a failure lands mid-run
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
