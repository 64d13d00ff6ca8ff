"""One rank of the training-API tests, run under real torchrun with gloo on CPU.

argv: <scenario> <checkpoint dir> <result dir>. Writes <result dir>/rank<N>.json.

- `rng`: every rank draws, captures every rank's generators, saves, draws on; then
  restores from the loaded checkpoint and draws again. The two draws must match per rank.
- `rank0`: a script that saves from rank 0 alone, with `collective=False`.
- `misuse`: the same script without `collective=False`; rank 0 must get a clear error.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import supervisor
from supervisor.core.errors import CheckpointError


def draws() -> list[float]:
    """Numbers from every global generator, the way dropout and augmentation consume them."""
    return [random.random(), float(np.random.rand()), *torch.rand(3).tolist()]


def main() -> None:
    scenario, url, results = sys.argv[1:4]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    random.seed(rank)
    np.random.seed(rank)
    torch.manual_seed(rank)
    out: dict = {"rank": rank}
    store = supervisor.CheckpointStore(url, arrival_timeout=3)
    if scenario == "rng":
        draws()
        store.save(1, {"rng": supervisor.rng.capture(), "step": 1})
        out["after_save"] = draws()
        draws()  # the run goes on, then is "resumed"
        supervisor.rng.restore(store.load()["rng"])
        out["after_restore"] = draws()
    elif scenario == "rank0":
        if rank == 0:
            state = {"w": torch.full((4,), 7.0), "rng": supervisor.rng.capture(gather=False)}
            out["manifest"] = store.save(1, state, collective=False) is not None
            out["async"] = store.save_async(2, state, collective=False).wait() is not None
        dist.barrier()
        out["latest"] = store.latest()
    elif scenario == "misuse":
        if rank == 0:
            started = time.monotonic()
            try:
                store.save(1, {"w": torch.ones(2)})
                out["error"] = None
            except CheckpointError as err:
                out["error"] = str(err)
            out["seconds"] = time.monotonic() - started
        else:
            time.sleep(6)  # busy elsewhere, never calling save: the misuse
    (Path(results) / f"rank{rank}.json").write_text(json.dumps(out))
    store.close()


if __name__ == "__main__":
    main()
