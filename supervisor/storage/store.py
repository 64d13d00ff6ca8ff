"""`CheckpointStore`: save and load training state, atomically and without pickle.

The public face of the package; each duty lives in its own module, whose docstring states
its guarantees:

- `snapshot`: the state turned into bytes to write (for `save_async`, copied to host memory).
- `writer`: one attempt's files, its manifest, and the commit (`strategy` per storage kind).
- `lifecycle`: the async save in flight, the background thread, `on_commit`.
- `loader`: loading with every checksum verified.
- `housekeeping`: retention and the leftovers of failed saves.
- `ranks`: the collectives that keep ranks in step under torch.distributed.

Guarantees, in short:

- A step becomes visible only when its `COMMITTED` marker is written, after every data file
  and the manifest are durable. A reader (`latest`, `load`, `steps`) never sees a partial
  step, whatever moment the writer dies at.
- `latest()` names a *verified* step: the newest committed step whose marker, manifest,
  file sizes, tensor headers and every byte's checksum check out (see `reader`; a full
  verification is recorded beside the marker, so it runs once per step). `load()` walks
  the same steps with the same verdicts and returns that step; supervise's resume step is
  the same call. Damage of any kind (an empty or garbage marker, a manifest that lies, a
  flipped byte, a FIFO or device planted as a file, a path leaving the step) means
  fallback to the next older verified step, never a crash; nothing is read beyond the
  manifest's sizes and nothing outside the root is opened.
- Failure windows of the commit: none for local filesystems; on object stores without a
  create-only put, two concurrent writers of one step (see `marker_commit`).
- A committed step is never overwritten: saving an existing step again succeeds only if the
  content is identical (same files, sizes and checksums) and raises `CheckpointError`
  otherwise. The losing attempt's files are removed; the committed ones are untouched.
- Retention deletes only committed steps, only right after a newer step was committed, and
  never the newest two verified steps, nor anything newer than them (see `housekeeping`).
  Deleting invalidates a step before removing bytes.
- Every storage failure raises `StorageError` (exit class INFRA_FAILED) and leaves every
  committed step intact; half-written attempts are removed on a best-effort basis and
  otherwise by `cleanup`, which runs after each commit.
- `on_commit(step)` is called once per committed step, on the training thread, on every
  rank (see `lifecycle` for when an async save's commit becomes known).

Threads: `save`, `load`, `verify`, `prune` block in the calling thread. `save_async` blocks
only to snapshot the tensors into a reused host buffer (and, first, to settle the previous
save: at most one is in flight, so memory is bounded by one copy of the state). The write
runs on one background thread; its error is raised by `handle.wait()`, by the next call on
the store, and by `close()`. A store is meant for one training thread; call `close()` (or
use it as a context manager) before the process exits so the last async save finishes.

Files are written one at a time on local disks and `writers` at a time on object stores,
where parallel uploads pay off. Retention runs on the background thread after a commit.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from supervisor.core.errors import CheckpointError
from supervisor.storage import housekeeping, layout, loader, ranks, snapshot, writer
from supervisor.storage.backend import Storage
from supervisor.storage.lifecycle import Lifecycle, SaveHandle
from supervisor.storage.reader import Reader, Verification
from supervisor.storage.retention import Retention

ENV_DIR = "SUPERVISE_CHECKPOINT_DIR"
DEFAULT_SHARD_BYTES = 256 << 20
# How long rank 0 waits for every rank to reach a collective save. Ranks reach a save within
# a step of each other; a rank that never comes is a script saving from rank 0 alone.
DEFAULT_ARRIVAL_TIMEOUT = 300.0


class CheckpointStore:
    """Atomic, checksummed checkpoints under one fsspec URL (see the module docstring).

    `on_commit(step)` is called once a commit is known, on the calling (training) thread and
    on every rank: at the end of `save`, and for `save_async` when it settles (`wait` on its
    handle or the store, `close`, the next save; see `lifecycle`). Pass `sup.committed` so
    supervise learns of every commit; it must stay on the training thread, which owns the
    rank's channel slot.

    `url` defaults to `$SUPERVISE_CHECKPOINT_DIR` (set by `supervise --checkpoint-dir`).
    There is no default directory: with neither, the constructor raises `CheckpointError`,
    so a new run never resumes an old one by accident. `arrival_timeout` bounds how long a
    collective save waits for every rank (see `save`)."""

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        keep_last: int = 3,
        keep_every: int | None = None,
        allow_pickle: bool = False,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        writers: int | None = None,
        storage_options: dict[str, Any] | None = None,
        on_commit: Callable[[int], None] | None = None,
        arrival_timeout: float = DEFAULT_ARRIVAL_TIMEOUT,
    ) -> None:
        url = os.fspath(url) if url is not None else os.environ.get(ENV_DIR)
        if not url:
            raise CheckpointError(
                "CheckpointStore needs a location: pass a path or URL "
                "(CheckpointStore('s3://bucket/run-7')), or run under `supervise "
                f"--checkpoint-dir URL`, which sets {ENV_DIR}. There is no default, so a "
                "new run never resumes an old one by accident"
            )
        self.url = url
        self.arrival_timeout = arrival_timeout
        self.retention = Retention(keep_last, keep_every)
        self.allow_pickle = allow_pickle
        self.shard_bytes = shard_bytes
        self.storage = Storage(url, storage_options)
        self.reader = Reader(self.storage)
        self.writers = writers or self.storage.strategy.writers
        self._lifecycle = Lifecycle(on_commit)
        self._host_buffer = snapshot.HostBuffer()

    @property
    def on_commit(self) -> Callable[[int], None] | None:
        return self._lifecycle.on_commit

    @on_commit.setter
    def on_commit(self, callback: Callable[[int], None] | None) -> None:
        self._lifecycle.on_commit = callback

    def __repr__(self) -> str:
        return f"CheckpointStore({self.url!r})"

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # Left by an exception, the other ranks may not be there for a collective.
        self._close(collectively=exc_type is None)

    # Reading (no torch needed) ---------------------------------------------------------

    def steps(self) -> list[int]:
        """Committed steps, oldest first."""
        self._lifecycle.settle_local(wait=False)
        return self.reader.steps()

    def latest(self) -> int | None:
        """The newest verified step (see the module docstring), or None. Never raises for a
        damaged step; reads a step's bytes only the first time it is judged."""
        self._lifecycle.settle_local(wait=False)
        return self.reader.latest()

    def manifest(self, step: int) -> layout.Manifest:
        """The small JSON summary of a committed step (reason, sizes, user metadata)."""
        return self.reader.manifest(layout.check_step(step))

    def verify(self, step: int, progress: Callable[[int, int], None] | None = None) -> Verification:
        """Read every byte of `step` and compare checksums. Never raises for corruption;
        damage found is recorded, so `latest()` and `load()` skip the step from then on."""
        return self.reader.verify(layout.check_step(step), progress)

    # Saving ----------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: Any,
        metadata: dict[str, Any] | None = None,
        reason: str = "periodic",
        collective: bool = True,
    ) -> layout.Manifest | None:
        """Write `state` as step `step` and commit it; blocks until durable; the manifest.

        `state` may hold what `codec` stores (strided tensors of the tensor file's dtypes,
        containers at most `codec.MAX_DEPTH` deep, ints below 2**`codec.MAX_INT_BITS`, ...);
        `reason` is a label by `layout.REASON_RULE`. Anything else raises `CheckpointError`
        here, naming the path in the state, before anything is written. Another process
        committing the same step first with different content raises `CheckpointError`
        saying so; with identical content this save succeeds.

        Under torch.distributed with more than one rank, every rank calls this; rank 0 writes
        and the others return None once the commit is known (see `ranks.rank_zero`). If a
        rank has not arrived within `arrival_timeout` seconds, rank 0 raises
        `CheckpointError` naming the missing ranks instead of blocking forever. A script
        that saves from one rank only (`if rank == 0: store.save(...)`) passes
        `collective=False`: the caller writes alone, nothing waits for the other ranks, and
        only the caller's `on_commit` runs (one rank's report is enough for supervise)."""
        self._lifecycle.settle()

        def write() -> layout.Manifest:
            return self._write(self._prepare(step, state, metadata, reason, to_host=False))

        if collective and ranks.world_size() > 1:
            manifest = ranks.rank_zero(write, step, self.arrival_timeout)
        else:
            manifest = write()
        self._lifecycle.announce(step)
        return manifest

    def save_async(
        self,
        step: int,
        state: Any,
        metadata: dict[str, Any] | None = None,
        reason: str = "periodic",
        collective: bool = True,
    ) -> SaveHandle:
        """Snapshot `state` to host memory now and write it in the background.

        Settles the previous save first (raising its error if it failed). After this
        returns, the caller may modify `state` freely. Under torch.distributed every rank
        calls this; only rank 0 snapshots and writes, and every rank returns once rank 0's
        snapshot is taken (raising if it failed). Every rank's handle settles together
        (see `lifecycle`): rank 0's `wait()` returns the manifest, the others' None.
        `collective` and the arrival bound are as for `save`."""
        self._lifecycle.settle()

        def start() -> Callable[[], layout.Manifest]:
            prepared = self._prepare(step, state, metadata, reason, to_host=True)
            return lambda: self._write(prepared)

        if collective and ranks.world_size() > 1:
            work = ranks.rank_zero(start, step, self.arrival_timeout)
            return self._lifecycle.start(step, work, collective=True)
        return self._lifecycle.start(step, start(), collective=False)

    def wait(self) -> layout.Manifest | None:
        """Wait for the save in flight, if any, and settle it: its manifest (None if there
        was none, or on ranks other than 0), or its error raised."""
        return self._lifecycle.settle()

    def close(self) -> None:
        """Finish the save in flight and raise its error, if any. Idempotent."""
        self._close(collectively=True)

    def _close(self, collectively: bool) -> None:
        try:
            self._lifecycle.close(collectively)
        finally:
            self._host_buffer.release()

    # Loading ---------------------------------------------------------------------------

    def load(self, step: int | None = None, map_location: Any = "cpu") -> Any:
        """The state saved at `step`, checksums verified while reading.

        With `step=None`, the step `latest()` names, or older ones if a load finds damage
        that `latest()` had not (see `reader`); a damaged newer step is skipped with a
        warning. Raises `CheckpointError` when no step loads, and for an explicit `step`
        that is not committed or is damaged (naming the step that would load)."""
        self._lifecycle.settle_local(wait=False)  # and retention from the last save is done
        if step is not None:
            step = layout.check_step(step)
            return loader.load_step(
                self.storage, self.reader, step, map_location, self.writers, self.allow_pickle
            )
        return loader.load_newest(
            self.storage, self.reader, map_location, self.writers, self.allow_pickle
        )

    # Retention -------------------------------------------------------------------------

    def prune(self, keep_last: int | None = None, keep_every: int | None = None) -> list[int]:
        """Delete committed steps that retention lets go, then leftovers; returns deleted."""
        self._lifecycle.settle_local(wait=True)
        retention = (
            self.retention
            if keep_last is None and keep_every is None
            else Retention(keep_last or self.retention.keep_last, keep_every)
        )
        return housekeeping.prune(self.storage, self.reader, retention)

    def cleanup(self) -> list[str]:
        """Remove what no reader can see and no live writer can still commit.

        Staging directories and marker-less steps older than the newest committed step,
        deleted-step leftovers, and losing attempts inside committed steps."""
        return housekeeping.remove_leftovers(self.storage, self.reader)

    # Committing ------------------------------------------------------------------------

    def commit_manifest(self, manifest: layout.Manifest, directory: str) -> layout.Manifest:
        """Write the manifest and the marker for files already durable in `directory`.

        Returns the committed manifest (the existing one if an identical step was already
        committed). Used by sharded saves too. Prunes and cleans up after a commit, off the
        caller's critical path: deleting a large old step takes as long as a good part of a
        save. Retention runs on the background thread; the next save (or close) waits for
        it, so it never overlaps another save."""
        committed = writer.publish(self.storage, self.reader, manifest, directory)
        if committed.attempt == manifest.attempt:
            # Verified in this process's memory only: its checksums were computed from the
            # very bytes written. Not recorded durably: a later process verifies it once by
            # reading it, so bytes damaged after this save are caught before anyone resumes.
            self.reader.trust(committed.step, hashlib.sha256(committed.to_json()).hexdigest())
        self._lifecycle.in_background(
            lambda: housekeeping.retire(self.storage, self.reader, self.retention, committed.step)
        )
        return committed

    def _announce(self, step: int) -> None:
        """Report a commit made outside `save` (a sharded save) to `on_commit`, on the
        training thread."""
        self._lifecycle.announce(step)

    def _prepare(
        self, step: int, state: Any, metadata: dict[str, Any] | None, reason: str, to_host: bool
    ) -> snapshot.Prepared:
        return snapshot.prepare(
            step,
            state,
            metadata,
            reason,
            allow_pickle=self.allow_pickle,
            shard_bytes=self.shard_bytes,
            world_size=ranks.world_size(),
            buffer=self._host_buffer if to_host else None,
        )

    def _write(self, prepared: snapshot.Prepared) -> layout.Manifest:
        attempt = layout.new_attempt()
        try:
            with writer.discard_on_error(self.storage, prepared.step, attempt):
                directory, manifest = writer.write_attempt(
                    self.storage, prepared, attempt, self.writers
                )
                return self.commit_manifest(manifest, directory)
        finally:
            prepared.keepalive.clear()
