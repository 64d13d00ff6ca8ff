"""Writing one attempt of a step and publishing it: data files, manifest, marker.

- `write_attempt` writes the prepared state's files into a fresh attempt directory (the
  skeleton and pickles first, then the tensor files, `width` at a time) and returns the
  manifest that describes them, checksums computed while writing.
- `publish` writes that manifest and then commits the attempt with its marker (the commit
  strategy's protocol, see `strategy`). If the step is already committed (by an earlier
  save, or by another process writing the same step at the same time) it discards its own
  attempt and returns the committed manifest when the content is identical, or raises
  `CheckpointError` saying so otherwise: a committed step is never overwritten. Every
  attempt has its own directory (`layout.new_attempt` is unique per save), and a writer
  removes only its own; the winner's cleanup after its commit leaves that step's other
  attempts to their writers (`housekeeping.retire`).
- `discard_on_error` / `discard_quietly` remove an attempt that failed before its commit,
  best effort, keeping the original error.

Blocks in the calling thread (the training thread for a sync save, the store's background
thread for an async one). Storage failures raise `StorageError`. A crash at any moment
leaves every committed step intact and readers never see the partial attempt; its files
are removed by a later cleanup (`housekeeping`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from supervisor.core.errors import CheckpointError, StorageError
from supervisor.storage import checksum, fanout, layout, tensorfile
from supervisor.storage.backend import Storage
from supervisor.storage.reader import Reader
from supervisor.storage.snapshot import Prepared


def write_attempt(
    storage: Storage, prepared: Prepared, attempt: str, width: int
) -> tuple[str, layout.Manifest]:
    """Write every file of `prepared`; return the attempt directory and its manifest."""
    directory = storage.begin(prepared.step, attempt)
    small = [(layout.SKELETON, prepared.skeleton)]
    if prepared.pickles is not None:
        small.append((layout.PICKLES, prepared.pickles))
    files = []
    for name, data in small:
        storage.put(f"{directory}/{name}", data)
        files.append(layout.FileEntry(name, len(data), checksum.of(data)))

    def write(job: tuple[tensorfile.Plan, list[memoryview]]) -> layout.FileEntry:
        plan, bodies = job
        path = f"{directory}/{plan.name}"
        sink = storage.sink(path, plan.size)
        with storage.guard(f"writing {path}"):
            try:
                digest = tensorfile.write_file(sink, plan, bodies)
            except BaseException:
                sink.discard()
                raise
        return layout.FileEntry(plan.name, plan.size, digest)

    jobs = list(zip(prepared.plans, prepared.bodies, strict=True))
    files.extend(fanout.run(write, jobs, width))
    manifest = layout.Manifest(
        step=prepared.step,
        attempt=attempt,
        reason=prepared.reason,
        kind="state",
        wall_time=time.time(),
        world_size=prepared.world_size,
        files=tuple(files),
        tensor_bytes=prepared.tensor_bytes,
        tensor_count=sum(len(p.entries) for p in prepared.plans),
        metadata=prepared.metadata,
        versions=prepared.versions,
    )
    return directory, manifest


def publish(
    storage: Storage, reader: Reader, manifest: layout.Manifest, directory: str
) -> layout.Manifest:
    """Write the manifest and commit the attempt whose files are already in `directory`.

    Returns the committed manifest: `manifest`, or the existing one if an identical step
    was already committed."""
    raw = manifest.to_json()
    storage.put(f"{directory}/{layout.MANIFEST}", raw)
    marker = layout.Marker.for_manifest(manifest, raw)
    if storage.commit(manifest.step, manifest.attempt, marker.to_json()):
        return manifest
    existing = reader.manifest(manifest.step)
    storage.discard(manifest.step, manifest.attempt)
    if existing.same_content(manifest):
        return existing
    raise CheckpointError(
        f"step {manifest.step} under {storage.url} was committed by another writer (or an "
        f"earlier save) with different content; this save of it was discarded and the "
        "committed one left as it is (committed steps are never overwritten): save under a "
        "new step number, or check that only one process saves this step"
    )


def discard_quietly(storage: Storage, step: int, attempt: str) -> None:
    """Remove an attempt that will not commit, best effort: a storage failure here is
    swallowed, because the error that stopped the attempt matters more."""
    with contextlib.suppress(StorageError):
        storage.discard(step, attempt)


@contextlib.contextmanager
def discard_on_error(storage: Storage, step: int, attempt: str) -> Iterator[None]:
    """Remove the attempt if the block raises; the block's error is what propagates."""
    try:
        yield
    except BaseException:
        discard_quietly(storage, step, attempt)
        raise
