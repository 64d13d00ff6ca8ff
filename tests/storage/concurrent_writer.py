"""One of two processes that save the same steps at the same moment.

    python -m tests.storage.concurrent_writer URL OPTIONS_JSON SEED MEGABYTES

Builds its state (`make_state(step, seed, megabytes)`: the same seed gives the same bytes),
opens a store, prints "ready", then for each line "save <step>" on stdin saves that step and
prints one line: "committed", "refused <CheckpointError>" or "failed <type> <error>".
Run by tests/storage/test_concurrent_writers.py, which releases both writers together.
"""

from __future__ import annotations

import json
import sys

import torch

from supervisor.core.errors import CheckpointError
from supervisor.storage import CheckpointStore


def make_state(step: int, seed: int, megabytes: int) -> dict:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    count = max(1, megabytes * 4)  # 256 KiB tensors: many files, so the write takes a while
    return {
        "model": {f"w{i}": torch.randn(256, 256, generator=gen) for i in range(count)},
        "step": step,
    }


def main() -> None:
    url, options, seed, megabytes = sys.argv[1], json.loads(sys.argv[2]), *map(int, sys.argv[3:])
    torch.set_num_threads(1)
    store = CheckpointStore(url, shard_bytes=1 << 20, storage_options=options or None)
    print("ready", flush=True)
    for line in sys.stdin:
        step = int(line.split()[1])
        try:
            store.save(step, make_state(step, seed, megabytes))
            answer = "committed"
        except CheckpointError as err:
            answer = f"refused {err}"
        except Exception as err:
            answer = f"failed {type(err).__name__} {err}"
        print(answer.replace("\n", " "), flush=True)
    store.close()


if __name__ == "__main__":
    main()
