"""A 2-rank gloo "trainer" for the torchrun hang tests. Usage: dist_trainer.py MODE

MODE "python": rank 1 stalls in plain Python at step 5 while rank 0 waits in all_reduce.
MODE "collective": rank 1 enters an all_reduce at step 5 that rank 0 never joins; rank 0
keeps stepping without collectives, healthy. Either way the stalled rank prints
"STALL <rank> <CLOCK_MONOTONIC seconds>" just before it stalls.
"""

import sys
import time

import torch
import torch.distributed as dist

import supervisor

STALL_RANK, STALL_STEP = 1, 5


def stall_in_python() -> None:
    time.sleep(600)  # real process: the stall under test (killed by supervise)


def main() -> None:
    mode = sys.argv[1]
    sup = supervisor.attach()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    t = torch.ones(8)
    for step in range(3000):
        if rank == STALL_RANK and step == STALL_STEP:
            print(f"STALL {rank} {time.monotonic():.3f}", flush=True)
            if mode == "python":
                stall_in_python()
        if mode == "collective" and rank != STALL_RANK and step >= STALL_STEP:
            time.sleep(0.05)  # healthy but no longer joining collectives
            sup.step(step)
            continue
        dist.all_reduce(t)
        sup.step(step)
        time.sleep(0.05)  # real process: the step time of a healthy rank


if __name__ == "__main__":
    main()
