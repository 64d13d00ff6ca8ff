"""Checkpoint storage: atomic, checksummed, pickle-free checkpoints over any fsspec URL.

Training code uses `CheckpointStore` (also exported as `supervisor.CheckpointStore`):

    store = CheckpointStore("s3://bucket/run-7")   # or a path; default $SUPERVISE_CHECKPOINT_DIR
    store.save(step, {"model": model.state_dict(), "optim": opt.state_dict(), ...})
    state = store.load()                           # newest committed step that verifies

The supervisor process uses the module functions `steps`, `latest`, `verify`, which never
import torch. The guarantees and failure windows are in `store` (an overview, and the
modules of each duty), `backend` with `rename_commit` and `marker_commit` (the commit
protocol per storage kind), `sharded` (DCP saves) and `reader` (what counts as committed,
and as verified: the step `latest`, `load` and supervise's resume step all agree on).
`_ledger/` at the top of a checkpoint URL is reserved for the run ledger (see `backend`).

Importing this package costs fsspec but never torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from supervisor.storage import rng
from supervisor.storage.backend import Storage
from supervisor.storage.layout import Manifest
from supervisor.storage.lifecycle import SaveHandle
from supervisor.storage.reader import Reader, Verification
from supervisor.storage.sharded import load_sharded, save_sharded
from supervisor.storage.store import CheckpointStore

__all__ = [
    "CheckpointStore",
    "Manifest",
    "SaveHandle",
    "Verification",
    "latest",
    "load_sharded",
    "rng",
    "save_sharded",
    "steps",
    "verify",
]


def _reader(url: str, storage_options: dict[str, Any] | None) -> Reader:
    return Reader(Storage(url, storage_options))


def steps(url: str, storage_options: dict[str, Any] | None = None) -> list[int]:
    """Committed steps under `url`, oldest first. Torch-free."""
    return _reader(url, storage_options).steps()


def latest(url: str, storage_options: dict[str, Any] | None = None) -> int | None:
    """The newest verified step (every byte checked once, then recorded; see `reader`),
    or None; the step `CheckpointStore.load()` returns. Torch-free; never raises for a
    damaged step, `StorageError` when storage fails."""
    return _reader(url, storage_options).latest()


def verify(
    url: str,
    step: int,
    progress: Callable[[int, int], None] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Verification:
    """Deep-check one step (every byte against its checksum, headers and skeleton against
    the manifest); damage found is recorded, so `latest` skips the step. Torch-free."""
    return _reader(url, storage_options).verify(step, progress)
