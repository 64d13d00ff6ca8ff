"""Loading a committed step back into the state that was saved, every checksum verified.

- `load_step(step)` reads the step's manifest (pinned by its marker, see `reader`), then
  every file, `width` at a time, comparing each file's size and checksum while reading,
  and decodes the state (`codec`). Tensor files on local disks are mapped copy-on-write
  rather than copied (the commit strategy's `read_tensors`): the loaded tensors are private
  to the caller, and writing to them never touches the checkpoint. Other storage is read
  into fresh tensors.
- `load_newest()` tries committed steps newest first and returns the first that loads; a
  corrupt newer step is skipped with a warning (`UserWarning`).

Pickle: a step holding `objects.pt` is refused before any of its files is read unless the
store allows pickle; then it is read by torch's weights-only unpickler (`codec.load_pickles`).

Blocks in the calling thread. Raises `CheckpointError` for a missing, corrupt or
mismatched step (and when no step loads), `StorageError` when storage fails. Nothing here
writes.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from supervisor.core.errors import CheckpointError, StorageError
from supervisor.storage import checksum, codec, fanout, layout
from supervisor.storage.backend import Storage
from supervisor.storage.reader import Reader


def load_step(
    storage: Storage,
    reader: Reader,
    step: int,
    map_location: Any,
    width: int,
    allow_pickle: bool = False,
) -> Any:
    manifest = reader.manifest(step)
    if manifest.kind != "state":
        raise CheckpointError(
            f"step {step} is a {manifest.kind} checkpoint; load it with load_sharded()"
        )
    if not allow_pickle and any(f.path == layout.PICKLES for f in manifest.files):
        # Refused before any file is read: without allow_pickle no pickle is ever opened.
        raise CheckpointError(
            f"step {step} holds pickled objects ({layout.PICKLES}); open the store with "
            "allow_pickle=True to load it (read with torch's weights-only unpickler)"
        )
    base = reader.attempt_dir(manifest)
    tensors: dict[int, Any] = {}
    skeleton: Any = None
    pickles: list[Any] = []

    def read(entry: layout.FileEntry) -> None:
        nonlocal skeleton, pickles
        where = f"{base}/{entry.path}"
        if entry.path.endswith(".safetensors"):
            found, digest, size = storage.read_tensors(where)
            _check(entry, digest, size, where)
            tensors.update(found)
            return
        raw = storage.read(where)
        if raw is None:
            raise CheckpointError(f"{where} is missing; step {step} is corrupt")
        _check(entry, checksum.of(raw), len(raw), where)
        if entry.path == layout.SKELETON:
            skeleton = json.loads(raw)
        elif entry.path == layout.PICKLES:
            pickles = codec.load_pickles(raw, where)

    def read_or_corrupt(entry: layout.FileEntry) -> None:
        try:
            read(entry)
        except StorageError as err:
            if isinstance(err.__cause__, FileNotFoundError):
                raise CheckpointError(
                    f"{base}/{entry.path} is missing; step {step} is corrupt"
                ) from err
            raise

    fanout.run(read_or_corrupt, manifest.files, width)
    if len(tensors) != manifest.tensor_count:
        raise CheckpointError(
            f"step {step}: {len(tensors)} tensors, manifest says {manifest.tensor_count}"
        )
    ordered = [tensors[i] for i in range(len(tensors))]
    if str(map_location) != "cpu":
        ordered = [t.to(map_location) for t in ordered]
    return codec.decode(skeleton, ordered, pickles)


def load_newest(
    storage: Storage, reader: Reader, map_location: Any, width: int, allow_pickle: bool = False
) -> Any:
    candidates = reader.steps()
    for candidate in reversed(candidates):
        try:
            return load_step(storage, reader, candidate, map_location, width, allow_pickle)
        except CheckpointError as err:
            # stacklevel 3: the warning names the caller of CheckpointStore.load
            warnings.warn(f"skipping checkpoint step {candidate}: {err}", stacklevel=3)
    raise CheckpointError(
        f"no loadable checkpoint under {storage.url} (committed steps: {candidates or 'none'})"
    )


def _check(entry: layout.FileEntry, digest: str, size: int, where: str) -> None:
    if size != entry.size or digest != entry.xxh3:
        raise CheckpointError(f"{where} fails its checksum; the step is corrupt")
