"""Checkpoint save and load against torch.save/torch.load and the raw disk, side by side.

Every figure is a ratio of two measurements of the same state in this run, interleaved
round by round so that noise from other work on the machine hits both sides alike; each
figure is the median over rounds (the best of rounds is printed beside it), after one
warm-up round that is not counted:

* save: `CheckpointStore.save` against `torch.save` + fsync into one file, and against a
  raw `os.write` of the same tensor bytes + fsync (the physical limit of this disk);
* async stall: how long `save_async` blocks (the snapshot) against a sync save;
* load: `CheckpointStore.load` (checksums verified) against `torch.load(weights_only=True)`.

Targets (issue 5): save >= 1.5x torch.save+fsync, >= 0.8x raw, stall <= 0.1x sync,
load >= 1x torch.load. The state is model-like: float32 weights plus two AdamW moments.

    python bench/bench_checkpoint.py [--mib 1024] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supervisor.storage import CheckpointStore
from supervisor.storage.tensorfile import tensor_memory


def make_state(mib: int) -> dict:
    """About `mib` MiB: weights, exp_avg and exp_avg_sq of 4 MiB..16 MiB layers."""
    per_layer = 3 * 16 << 20
    layers = max(1, (mib << 20) // per_layer)
    params = {f"layer{i}.weight": torch.randn(2048, 2048) for i in range(layers)}
    optim_state = {
        i: {
            "step": torch.tensor(10.0),
            "exp_avg": torch.randn(2048, 2048),
            "exp_avg_sq": torch.rand(2048, 2048),
        }
        for i in range(layers)
    }
    return {
        "model": params,
        "optim": {"state": optim_state, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999)}]},
        "rng": torch.get_rng_state(),
        "step": 10,
    }


def tensors_of(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors_of(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors_of(v)]
    return []


FRESH = {"torch": "torch.pt", "raw": "raw.bin"}  # the file each side writes


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def torch_save(state: dict, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def raw_write(tensors: list[torch.Tensor], path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for t in tensors:
            view = tensor_memory(t)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="state size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--verbose", action="store_true", help="print every measurement")
    args = parser.parse_args()

    torch.manual_seed(0)
    state = make_state(args.mib)
    tensors = tensors_of(state)
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    root = Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir=args.dir))
    times: dict[str, list[float]] = {
        k: [] for k in ("ours", "torch", "raw", "stall", "load", "torch_load", "torch_mmap")
    }
    try:
        store = CheckpointStore(root / "store", keep_last=2)
        first_stall = timed(lambda: store.save_async(0, state))
        store.wait()
        for r in range(args.rounds + 1):  # round 0 warms caches and allocators; dropped
            step = 2 * r + 1
            # Order rotates each round so page-cache writeback from one side does not
            # always land on the same next one.
            jobs = [
                ("torch", lambda: torch_save(state, root / "torch.pt")),
                ("raw", lambda: raw_write(tensors, root / "raw.bin")),
                ("ours", lambda s=step: store.save(s, state)),
            ]
            jobs = jobs[r % 3 :] + jobs[: r % 3]
            for name, job in jobs:
                # Every side writes a fresh file: truncating or deleting the previous one
                # (our retention runs in the background) is kept out of every timer.
                (root / FRESH.get(name, "-")).unlink(missing_ok=True)
                store.wait()
                os.sync()
                times[name].append(timed(job))
            store.wait()
            os.sync()
            times["stall"].append(timed(lambda s=step: store.save_async(s + 1, state)))
            store.wait()
            # Freed memory is reused by the next allocation (glibc raises its mmap threshold
            # after a free), so whichever loads second skips page faults: alternate.
            loads = [
                ("load", lambda s=step: store.load(s)),
                ("torch_load", lambda: torch.load(root / "torch.pt", weights_only=True)),
                ("torch_mmap", lambda: torch.load(root / "torch.pt", weights_only=True, mmap=True)),
            ]
            for name, job in loads if r % 2 == 0 else loads[::-1]:
                os.sync()
                times[name].append(timed(job))
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    times = {k: v[1:] for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    if args.verbose:
        for name, values in times.items():
            print(f"  {name:<10} " + " ".join(f"{v:.3f}" for v in values))
    gib = nbytes / (1 << 30)
    print(f"state: {gib:.2f} GiB in {len(tensors)} tensors, {args.rounds} rounds, medians")
    for name, label in [
        ("ours", "CheckpointStore.save"),
        ("torch", "torch.save + fsync"),
        ("raw", "raw write + fsync"),
        ("stall", "save_async stall"),
        ("load", "CheckpointStore.load"),
        ("torch_load", "torch.load"),
        ("torch_mmap", "torch.load(mmap=True)"),
    ]:
        print(f"  {label:<22} {med[name]:7.3f} s  {gib / med[name]:6.2f} GiB/s")
    print(f"  first save_async stall (allocates its buffer): {first_stall:.3f} s")
    # Medians, and bests: on a shared disk another tenant's writeback can triple one
    # measurement, and the best of N is what the code itself can do.
    best = {k: min(v) for k, v in times.items()}
    rows = [
        ("save vs torch.save+fsync", "torch", "ours", ">= 1.5x", 1.5, True),
        ("save vs raw write+fsync", "raw", "ours", ">= 0.8x", 0.8, True),
        ("async stall / sync save", "stall", "ours", "<= 0.1x", 0.1, False),
        ("load vs torch.load", "torch_load", "load", ">= 1.0x", 1.0, True),
    ]
    print("ratios (median of rounds, best of rounds):")
    for label, top, bottom, target, bound, higher in rows:
        value = med[top] / med[bottom]
        met = value >= bound if higher else value <= bound
        print(
            f"  {label:<26} {value:6.2f}x  best {best[top] / best[bottom]:6.2f}x  "
            f"target {target:<8} {'met' if met else 'MISSED'} (by the median)"
        )


if __name__ == "__main__":
    main()
