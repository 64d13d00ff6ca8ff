"""examples/train.py, unchanged, with ground-truth bookkeeping and two injectable faults.

    python bench/soak_trainer.py [train.py's arguments]

The bench (`bench_goodput.py`) runs this in place of examples/train.py. It runs that script
as `__main__` (runpy: the example is not copied), after wrapping the two things the example
gets from `supervisor`:

- `supervisor.attach()`: its handle's `step(n)` first appends `{"event": "step", "step": n,
  "wall": ...}` to the record, then beats supervise's channel as before;
- `supervisor.CheckpointStore`: `save` and `load` append `save_start`/`save_end` (with the
  step) and `load_start`/`load_end` (with the step resumed from) around the real call.

Every record is one JSON line, flushed at once, in the file `SOAK_RECORD` names (one file per
pod; the process appends, so a pod's ranks may share it: each line carries `rank`, the local
rank). The first line is `{"event": "start", "pid": ..., "wall": ...}`, written before torch
is imported. Wall times are `time.time()`, the clock the run ledger uses.

Faults, triggered by the bench at a time of its choosing: before each `step(n)`, the file
`SOAK_CONTROL` is looked for (one `stat`); if it holds `raise`, the step raises RuntimeError
(the trainer's own bug); if it holds `hang`, the rank sleeps forever without beating, as a
rank stuck in a collective does, until someone kills it. Either way step n is not recorded.
`SOAK_PG_TIMEOUT` (seconds) sets the process group's timeout, for the baseline without
supervise, where only that timeout ends a hang.

Works whether or not the example declares `sup.phase("restore")` / `sup.phase("checkpoint")`
or takes `--checkpoint-time`: the times recorded here are the wrapper's own.
"""

from __future__ import annotations

import json
import os
import sys
import time

RECORD = os.environ.get("SOAK_RECORD")
CONTROL = os.environ.get("SOAK_CONTROL")
RANK = int(os.environ.get("LOCAL_RANK", "0"))  # within the pod: one file per pod
TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "train.py")

_out = open(RECORD, "a", buffering=1) if RECORD else None  # noqa: SIM115 (lives as long as we do)


def record(event: str, **fields: object) -> None:
    """One bookkeeping line, written through to the file at once."""
    if _out is not None:
        _out.write(json.dumps({"event": event, "rank": RANK, "wall": time.time(), **fields}) + "\n")


record("start", pid=os.getpid())

import datetime  # noqa: E402  (after the start record: importing torch takes seconds)
import runpy  # noqa: E402

import torch.distributed as dist  # noqa: E402

import supervisor  # noqa: E402


def _fault() -> str | None:
    if CONTROL is None or not os.path.exists(CONTROL):
        return None
    with open(CONTROL) as control:
        return control.read().strip() or None


class RecordingHandle:
    """The real handle, with every step recorded (and a fault injected) before the beat."""

    def __init__(self, handle: object) -> None:
        self._handle = handle

    def step(self, n: int) -> None:
        fault = _fault()
        if fault == "raise":
            raise RuntimeError(f"soak: the trainer's own bug, injected before step {n}")
        if fault == "hang":
            record("hang", step=n)
            while True:  # a rank stuck in a collective: no beat, no exit
                time.sleep(3600)
        record("step", step=n)
        self._handle.step(n)

    def __getattr__(self, name: str) -> object:
        return getattr(self._handle, name)


class RecordingStore(supervisor.CheckpointStore):
    """The real store, with each save and load timed by the wrapper."""

    def save(self, step: int, state: object, *args: object, **kwargs: object) -> object:
        record("save_start", step=step)
        manifest = super().save(step, state, *args, **kwargs)
        record("save_end", step=step)
        return manifest

    def load(self, step: int | None = None, *args: object, **kwargs: object) -> object:
        record("load_start", step=step)
        state = super().load(step, *args, **kwargs)
        resumed = state.get("step") if isinstance(state, dict) else None
        record("load_end", step=resumed)
        return state


def _with_timeout(init: object, seconds: float) -> object:
    def init_process_group(*args: object, **kwargs: object) -> object:
        kwargs.setdefault("timeout", datetime.timedelta(seconds=seconds))
        return init(*args, **kwargs)  # type: ignore[operator]

    return init_process_group


def main() -> None:
    attach = supervisor.attach
    supervisor.attach = lambda: RecordingHandle(attach())  # type: ignore[assignment]
    supervisor.CheckpointStore = RecordingStore  # type: ignore[misc]
    if os.environ.get("SOAK_PG_TIMEOUT"):
        dist.init_process_group = _with_timeout(  # type: ignore[assignment]
            dist.init_process_group, float(os.environ["SOAK_PG_TIMEOUT"])
        )
    sys.argv = [TRAIN, *sys.argv[1:]]
    try:
        runpy.run_path(TRAIN, run_name="__main__")
    except SystemExit as leaving:
        record("exit", code=leaving.code)
        raise
    except BaseException as error:
        record("exit", error=type(error).__name__)
        raise


if __name__ == "__main__":
    main()
