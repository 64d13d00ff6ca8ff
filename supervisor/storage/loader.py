"""Loading a committed step back into the state that was saved, every checksum verified.

- `load_step(step)` reads the step's manifest (pinned by its marker, see `reader`), then
  every file, `width` at a time, comparing each file's size and checksum while reading,
  and decodes the state (`codec`). Every read is bounded by the manifest's size for that
  file and every tensor file header is checked against it before a tensor is allocated
  (`tensorfile`). Tensor files on local disks are mapped copy-on-write rather than copied
  (the commit strategy's `read_tensors`): the loaded tensors are private to the caller,
  and writing to them never touches the checkpoint. Other storage is read into fresh
  tensors. A step recorded damaged is refused without reading it.
- `load_newest()` walks the committed steps newest first with the reader's verdicts
  (`Reader.assess`, the one `latest()` uses) and returns the first that loads, so it loads
  the step `latest()` names. A damaged step is skipped with a warning (`UserWarning`).
  Loading reads every byte anyway, so a step not judged yet is judged by the load itself
  (no second pass) and the outcome recorded: damage found by a load (bytes that rotted
  after the step was recorded verified, too) makes every later reader skip the step.

Pickle: a step holding `objects.pt` is refused before any of its files is read unless the
store allows pickle; then it is read by torch's weights-only unpickler (`codec.load_pickles`).

Blocks in the calling thread. Raises `CheckpointError` for a missing, corrupt or
mismatched step (and when no step loads), `StorageError` when storage fails. Nothing here
writes but the reader's best-effort `VERIFIED`/`DAMAGED` records.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from supervisor.core.errors import CheckpointError, StorageError
from supervisor.storage import checksum, codec, fanout, layout
from supervisor.storage.backend import Storage
from supervisor.storage.layout import DamagedError
from supervisor.storage.reader import Reader, Verification


def load_step(
    storage: Storage,
    reader: Reader,
    step: int,
    map_location: Any,
    width: int,
    allow_pickle: bool = False,
) -> Any:
    """The state of `step`; `CheckpointError` if it is not committed, not a state save,
    holds pickles the store does not allow, or is damaged (then saying which step would
    load instead)."""
    verdict = reader.assess(step, read_bytes=False)
    if not verdict.found:
        raise CheckpointError(f"step {step} is not committed under {storage.url}")
    if verdict.problems:
        raise _damaged(reader, step, verdict.problems)
    try:
        state = _read(storage, reader, verdict, map_location, width, allow_pickle)
    except DamagedError as err:
        reader.settle(step, str(verdict.manifest_sha256), [str(err)])
        raise _damaged(reader, step, [str(err)]) from err
    reader.settle(step, str(verdict.manifest_sha256), [])
    return state


def _damaged(reader: Reader, step: int, problems: list[str]) -> CheckpointError:
    instead = reader.latest()
    alternative = (
        f"the newest step that loads is {instead}"
        if instead is not None
        else "no committed step loads"
    )
    return CheckpointError(f"step {step} is damaged ({'; '.join(problems)}); {alternative}")


def _read(
    storage: Storage,
    reader: Reader,
    verdict: Verification,
    map_location: Any,
    width: int,
    allow_pickle: bool,
) -> Any:
    manifest = verdict.manifest
    assert manifest is not None  # an assessed step without problems has its manifest
    step = manifest.step
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
        where = f"{base}/{layout.check_file_path(entry.path, where=base)}"
        if entry.path.endswith(".safetensors"):
            found, digest, size = storage.read_tensors(where, entry.size)
            _check(entry, digest, size, where)
            if tensors.keys() & found.keys():
                raise DamagedError(f"{where}: a tensor index appears in two files")
            tensors.update(found)
            return
        raw = storage.read(where, entry.size)
        if raw is None:
            raise DamagedError(f"{where} is missing; step {step} is corrupt")
        _check(entry, checksum.of(raw), len(raw), where)
        if entry.path == layout.SKELETON:
            try:
                skeleton = json.loads(raw)
            except (ValueError, RecursionError) as err:
                raise DamagedError(f"{where}: not JSON ({err})") from err
        elif entry.path == layout.PICKLES:
            try:
                pickles = codec.load_pickles(raw, where)
            except CheckpointError as err:  # checksums matched: hostile, not torn
                raise DamagedError(str(err)) from err

    def read_or_corrupt(entry: layout.FileEntry) -> None:
        try:
            read(entry)
        except StorageError as err:
            if isinstance(err.__cause__, FileNotFoundError):
                raise DamagedError(
                    f"{base}/{entry.path} is missing; step {step} is corrupt"
                ) from err
            raise

    fanout.run(read_or_corrupt, manifest.files, width)
    if sorted(tensors) != list(range(manifest.tensor_count)):
        raise DamagedError(
            f"step {step}: {len(tensors)} tensors, manifest says {manifest.tensor_count}"
        )
    ordered = [tensors[i] for i in range(len(tensors))]
    if str(map_location) != "cpu":
        ordered = [t.to(map_location) for t in ordered]
    try:
        return codec.decode(skeleton, ordered, pickles)
    except Exception as err:  # whatever a hostile skeleton makes decoding raise is damage
        raise DamagedError(f"step {step}: {layout.SKELETON} does not decode ({err!r})") from err


def load_newest(
    storage: Storage, reader: Reader, map_location: Any, width: int, allow_pickle: bool = False
) -> Any:
    """The state of the newest step that loads (see the module docstring)."""
    candidates = reader.steps()
    for candidate in reversed(candidates):
        verdict = reader.assess(candidate, read_bytes=False)
        if not verdict.found:
            continue  # deleted meanwhile
        problem = "; ".join(verdict.problems)
        if not problem:
            try:
                state = _read(storage, reader, verdict, map_location, width, allow_pickle)
            except DamagedError as err:
                problem = str(err)
                reader.settle(candidate, str(verdict.manifest_sha256), [problem])
            except CheckpointError as err:
                problem = str(err)  # another kind of save, or pickles not allowed: skipped
            else:
                reader.settle(candidate, str(verdict.manifest_sha256), [])
                return state
        # stacklevel 3: the warning names the caller of CheckpointStore.load
        warnings.warn(f"skipping checkpoint step {candidate}: {problem}", stacklevel=3)
    raise CheckpointError(
        f"no loadable checkpoint under {storage.url} (committed steps: {candidates or 'none'})"
    )


def _check(entry: layout.FileEntry, digest: str, size: int, where: str) -> None:
    if size != entry.size or digest != entry.xxh3:
        raise DamagedError(f"{where} fails its checksum; the step is corrupt")
