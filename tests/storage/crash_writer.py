"""A writer to kill: forks savers from one warm process so hundreds of trials stay fast.

Reads commands from stdin, one per line, and answers each on stdout:

    trial <delay_seconds> <url> <json storage options>
        fork a child that saves step after step (continuing after the newest committed
        step, with retention pruning every commit) into <url>; SIGKILL it after
        <delay_seconds>; reap it; print "killed <steps the child reported committing>".

    calibrate <url> <json storage options>
        run one child on <url> and print "calibrated <seconds from fork to the first
        commit> <seconds per save after that>", so delays suit the backend.

On start it prints "ready". Run by tests/storage/test_crash.py.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time

import torch

from supervisor.storage import CheckpointStore


def make_state(step: int) -> dict:
    """Deterministic per step, so the test can check what it loads bit for bit."""
    gen = torch.Generator().manual_seed(step)
    return {
        "model": {f"layer{i}.weight": torch.randn(64, 64, generator=gen) for i in range(6)},
        "optim": {"state": {0: {"step": torch.tensor(float(step))}}, "lr": 0.1 / (step + 1)},
        "step": step,
    }


def open_store(url: str, options: dict | None) -> CheckpointStore:
    # Small shards: a step is several files, so kills land between files too.
    return CheckpointStore(url, keep_last=2, shard_bytes=40 << 10, storage_options=options or None)


def saver(url: str, options: dict | None, report: int) -> None:
    store = open_store(url, options)
    steps = store.steps()
    step = (steps[-1] if steps else 0) + 1
    while True:
        store.save(step, make_state(step))
        os.write(report, f"{step}\n".encode())
        step += 1


def main() -> None:
    torch.set_num_threads(1)  # no OpenMP pool in the parent: forking stays safe
    # Imports everything before forking; closed before the directory goes.
    with tempfile.TemporaryDirectory() as scratch, open_store(scratch, None) as store:
        store.save(0, make_state(0))
    print("ready", flush=True)
    for line in sys.stdin:
        if line.startswith("calibrate "):
            _, url, options = line.split(" ", 2)
            first, per_save = calibrate(url, json.loads(options))
            print(f"calibrated {first:.6f} {per_save:.6f}", flush=True)
            continue
        _, delay, url, options = line.split(" ", 3)
        pid, reports = spawn(url, json.loads(options))
        time.sleep(float(delay))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with os.fdopen(reports) as stream:
            committed = stream.read().split()
        print(f"killed {','.join(committed) or '-'}", flush=True)


def spawn(url: str, options: dict | None) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            saver(url, options, write_end)
        finally:
            os._exit(1)
    os.close(write_end)
    return pid, read_end


def calibrate(url: str, options: dict | None) -> tuple[float, float]:
    """Time from fork to the first commit, and per save after that, of a real child."""
    start = time.perf_counter()
    pid, reports = spawn(url, options)
    with os.fdopen(reports) as stream:
        stream.readline()
        first = time.perf_counter() - start
        for _ in range(5):
            stream.readline()
        per_save = (time.perf_counter() - start - first) / 5
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return first, per_save


if __name__ == "__main__":
    main()
