"""Checkpoint save and load against torch.save/torch.load and the raw disk, side by side.

Every figure is a ratio of two measurements of the same state taken in the same round;
the sides take turns within a round (their order rotates from round to round, so page-cache
writeback or a neighbour's burst does not always land on the same side), and each ratio is
reported as the median over rounds with its spread (lowest and highest round), after one
warm-up round that is not counted:

* save: `CheckpointStore.save` against `torch.save` + fsync into one file, and against a
  raw write of the same tensor bytes + one fsync (1 MiB writes into one file: the plain
  way to put these bytes on this disk);
* async stall: how long `save_async` blocks (the snapshot) against a sync save;
* load: `CheckpointStore.load` (checksums verified) against `torch.load(weights_only=True)`.

Every side writes a new file and deletes its own previous one right after its own timed
write (our retention does the same after each commit), and every load reads from the disk:
the files are dropped from the page cache first (fadvise DONTNEED).

Each location is measured on its own: tmpfs (/dev/shm, the disk out of the picture) and a
directory on a disk (default /var/tmp; the filesystem type of each is printed). Targets:
save >= 1.5x torch.save+fsync on disk, >= 0.9x raw on disk and tmpfs, stall <= 0.05x sync,
load >= 1x torch.load. The state is model-like: float32 weights plus two AdamW moments.

    python bench/bench_checkpoint.py [--mib 1024] [--rounds 5] [--dir DIR ...] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from supervisor.storage import CheckpointStore
from supervisor.storage.tensorfile import tensor_memory

RAW_CHUNK = 1 << 20


def make_state(mib: int) -> dict:
    """About `mib` MiB: weights, exp_avg and exp_avg_sq of 16 MiB layers."""
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


def timed(fn: Callable[[], object]) -> float:
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
            whole = tensor_memory(t)
            for start in range(0, len(whole), RAW_CHUNK):
                view = whole[start : start + RAW_CHUNK]
                while view:
                    view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fs_type(path: str) -> str:
    """The filesystem type of `path`, from /proc/mounts (longest mount point that holds it)."""
    real, best, kind = os.path.realpath(path), "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                point = parts[1]
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, parts[2]
    except OSError:
        pass
    return kind


def evict(root: Path) -> None:
    """Drop every file under `root` from the page cache (written back first), so each load
    reads from the disk whichever side wrote through the cache. A no-op on tmpfs, where the
    page cache is the storage."""
    os.sync()
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def measure(directory: str, state: dict, tensors: list, rounds: int) -> dict[str, list[float]]:
    """Every side's time per round (the warm-up round dropped) for one location."""
    root = Path(tempfile.mkdtemp(prefix="bench-ckpt-", dir=directory))
    names = ("ours", "torch", "raw", "stall", "load", "torch_load")
    times: dict[str, list[float]] = {k: [] for k in names}
    try:
        store = CheckpointStore(root / "store", keep_last=2)
        store.save_async(0, state)  # allocates the snapshot buffer, reused from then on
        store.wait()
        for r in range(rounds + 1):
            step = 2 * r + 1
            # Each side writes a new file and deletes its previous one right after its own
            # timed write, untimed, as our retention does after a commit. Freed pages are
            # what the next writer allocates (and on a VM, what the host may have taken
            # back), so a side that deleted just before its timer would pay differently.
            fresh = {side: root / f"{side}-{r % 2}" for side in ("torch", "raw")}
            stale = {side: root / f"{side}-{1 - r % 2}" for side in ("torch", "raw")}
            jobs = [
                ("torch", lambda f=fresh: torch_save(state, f["torch"])),
                ("raw", lambda f=fresh: raw_write(tensors, f["raw"])),
                ("ours", lambda s=step: store.save(s, state)),
            ]
            jobs = jobs[r % 3 :] + jobs[: r % 3]
            for name, job in jobs:
                os.sync()
                times[name].append(timed(job))
                if name in stale:
                    stale[name].unlink(missing_ok=True)
                store.wait()  # our retention, started by the commit
            os.sync()
            times["stall"].append(timed(lambda s=step: store.save_async(s + 1, state)))
            store.wait()
            # Freed memory is reused by the next allocation, so whichever loads second
            # skips page faults: alternate. Both read from the disk (see `evict`).
            loads = [
                ("load", lambda s=step: store.load(s)),
                ("torch_load", lambda f=fresh: torch.load(f["torch"], weights_only=True)),
            ]
            for name, job in loads if r % 2 == 0 else loads[::-1]:
                evict(root)
                times[name].append(timed(job))
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {k: v[1:] for k, v in times.items()}


# (label, numerator, denominator, target text, bound, higher is better, where it applies)
RATIOS = [
    ("save vs torch.save+fsync", "torch", "ours", ">= 1.5x", 1.5, True, "disk"),
    ("save vs raw write+fsync", "raw", "ours", ">= 0.9x", 0.9, True, "both"),
    ("async stall / sync save", "stall", "ours", "<= 0.05x", 0.05, False, "both"),
    ("load vs torch.load", "torch_load", "load", ">= 1.0x", 1.0, True, "both"),
]


def report(label: str, directory: str, times: dict[str, list[float]], gib: float) -> None:
    kind = fs_type(directory)
    tmpfs = kind == "tmpfs"
    print(f"{label}: {directory} ({kind}), {len(times['ours'])} rounds")
    for name, what in [
        ("ours", "CheckpointStore.save"),
        ("torch", "torch.save + fsync"),
        ("raw", "raw write + fsync"),
        ("stall", "save_async stall"),
        ("load", "CheckpointStore.load"),
        ("torch_load", "torch.load"),
    ]:
        values = times[name]
        med = statistics.median(values)
        print(
            f"  {what:<22} {med:7.3f} s median ({min(values):.3f}-{max(values):.3f})  "
            f"{gib / med:6.2f} GiB/s"
        )
    print("  ratios, per round (median, lowest-highest round):")
    for what, top, bottom, target, bound, higher, where in RATIOS:
        per_round = [a / b for a, b in zip(times[top], times[bottom], strict=True)]
        value = statistics.median(per_round)
        applies = where == "both" or (where == "disk") != tmpfs
        met = (value >= bound if higher else value <= bound) if applies else None
        verdict = "n/a here" if met is None else ("met" if met else "MISSED")
        print(
            f"    {what:<26} {value:6.2f}x  ({min(per_round):.2f}-{max(per_round):.2f})  "
            f"target {target:<8} {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="state size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds (default 5)")
    parser.add_argument(
        "--dir",
        action="append",
        default=None,
        help="where to write; repeat for several (default: /dev/shm and /var/tmp)",
    )
    parser.add_argument("--quick", action="store_true", help="256 MiB, 3 rounds")
    parser.add_argument("--verbose", action="store_true", help="print every measurement")
    args = parser.parse_args()
    if args.quick:
        args.mib, args.rounds = 256, 3
    dirs = args.dir or [d for d in ("/dev/shm", "/var/tmp") if os.path.isdir(d)]

    torch.manual_seed(0)
    state = make_state(args.mib)
    tensors = tensors_of(state)
    gib = sum(t.numel() * t.element_size() for t in tensors) / (1 << 30)
    print(f"state: {gib:.2f} GiB in {len(tensors)} tensors; medians over rounds")
    for directory in dirs:
        times = measure(directory, state, tensors, args.rounds)
        if args.verbose:
            for name, values in times.items():
                print(f"  {name:<10} " + " ".join(f"{v:.3f}" for v in values))
        report("tmpfs" if fs_type(directory) == "tmpfs" else "disk", directory, times, gib)


if __name__ == "__main__":
    main()
