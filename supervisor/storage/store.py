"""`CheckpointStore`: save and load training state, atomically and without pickle.

The public face of the package; each duty lives in its own module, whose docstring states
its guarantees:

- `snapshot`: the state turned into bytes to write (for `save_async`, copied to host memory).
- `writer`: one attempt's files, its manifest, and the commit (`strategy` per storage kind).
- `loader`: loading with every checksum verified.
- `housekeeping`: retention and the leftovers of failed saves.
- `ranks`: the collectives that keep ranks in step under torch.distributed.

Guarantees, in short:

- A step becomes visible only when its `COMMITTED` marker is written, after every data file
  and the manifest are durable. A reader (`latest`, `load`, `steps`) never sees a partial
  step, whatever moment the writer dies at. Failure windows: none for local filesystems;
  on object stores without a create-only put, two concurrent writers of one step (see
  `marker_commit`).
- A committed step is never overwritten: saving an existing step again succeeds only if the
  content is identical (same files, sizes and checksums) and raises `CheckpointError`
  otherwise. The losing attempt's files are removed; the committed ones are untouched.
- Retention deletes only committed steps, only right after a newer step was committed, and
  never the newest two (see `retention`). Deleting invalidates a step before removing bytes.
- Every storage failure raises `StorageError` (exit class INFRA_FAILED) and leaves every
  committed step intact; half-written attempts are removed on a best-effort basis and
  otherwise by `cleanup`, which runs after each commit.

Threads: `save`, `load`, `verify`, `prune` block in the calling thread. `save_async` blocks
only to snapshot the tensors into a reused host buffer (and, first, to wait for the previous
save: at most one is in flight, so memory is bounded by one copy of the state). The write
runs on one background thread; its error is raised by `handle.wait()`, by the next call on
the store, and by `close()`. A store is meant for one training thread; call `close()` (or
use it as a context manager) before the process exits so the last async save finishes.

Files are written one at a time on local disks and `writers` at a time on object stores,
where parallel uploads pay off. Retention runs on the background thread after a commit.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from supervisor.storage import housekeeping, layout, loader, ranks, snapshot, writer
from supervisor.storage.backend import Storage
from supervisor.storage.reader import Reader, Verification
from supervisor.storage.retention import Retention

ENV_DIR = "SUPERVISE_CHECKPOINT_DIR"
DEFAULT_DIR = "checkpoints"
DEFAULT_SHARD_BYTES = 256 << 20
_WORKER = "supervise-ckpt"


class SaveHandle:
    """A save in flight. `wait()` returns its manifest or raises its error."""

    def __init__(self, step: int, future: Future[layout.Manifest], store: CheckpointStore):
        self.step = step
        self._future = future
        self._store = store

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> layout.Manifest:
        try:
            return self._future.result(timeout)
        except BaseException:
            if self._future.done():
                self._store._reported(self._future)
            raise


class CheckpointStore:
    """Atomic, checksummed checkpoints under one fsspec URL (see the module docstring).

    `on_commit(step)` is called once a commit is known, on the calling (training) thread and
    on every rank: at the end of `save`, and for `save_async` at the next call that settles
    it (`wait`, `close`, the next save). Pass `sup.committed` so
    supervise learns of every commit; it must stay on the training thread, which owns the
    rank's channel slot."""

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
    ) -> None:
        url = os.fspath(url) if url is not None else os.environ.get(ENV_DIR) or DEFAULT_DIR
        self.url = url
        self.retention = Retention(keep_last, keep_every)
        self.allow_pickle = allow_pickle
        self.shard_bytes = shard_bytes
        self.storage = Storage(url, storage_options)
        self.reader = Reader(self.storage)
        self.writers = writers or self.storage.strategy.writers
        self.on_commit = on_commit
        self._pool: ThreadPoolExecutor | None = None
        self._housekeeping: Future[None] | None = None
        self._inflight: Future[layout.Manifest] | None = None
        self._unreported: Future[layout.Manifest] | None = None
        self._host_buffer = snapshot.HostBuffer()

    def __repr__(self) -> str:
        return f"CheckpointStore({self.url!r})"

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Reading (no torch needed) ---------------------------------------------------------

    def steps(self) -> list[int]:
        """Committed steps, oldest first."""
        self._tidy()
        self._raise_pending()
        return self.reader.steps()

    def latest(self) -> int | None:
        """The newest committed step whose manifest and files check out, or None."""
        self._tidy()
        self._raise_pending()
        return self.reader.latest()

    def manifest(self, step: int) -> layout.Manifest:
        """The small JSON summary of a committed step (reason, sizes, user metadata)."""
        return self.reader.manifest(layout.check_step(step))

    def verify(self, step: int, progress: Callable[[int, int], None] | None = None) -> Verification:
        """Read every byte of `step` and compare checksums. Never raises for corruption."""
        return self.reader.verify(layout.check_step(step), progress)

    # Saving ----------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: Any,
        metadata: dict[str, Any] | None = None,
        reason: str = "periodic",
    ) -> layout.Manifest | None:
        """Write `state` as step `step` and commit it; blocks until durable; the manifest.

        Under torch.distributed with more than one rank, every rank calls this; rank 0 writes
        and the others return None once the commit is known (see `ranks.rank_zero`)."""
        self._settle()

        def write() -> layout.Manifest:
            return self._write(self._prepare(step, state, metadata, reason, to_host=False))

        manifest = ranks.rank_zero(write, step) if ranks.world_size() > 1 else write()
        self._announce(step)
        return manifest

    def save_async(
        self,
        step: int,
        state: Any,
        metadata: dict[str, Any] | None = None,
        reason: str = "periodic",
    ) -> SaveHandle:
        """Snapshot `state` to host memory now and write it in the background.

        Waits for the previous save first (raising its error if it failed). After this
        returns, the caller may modify `state` freely. Under torch.distributed only rank 0
        snapshots and writes; the other ranks get a handle that is already done (None),
        since waiting for a background commit would need a collective."""
        self._settle()
        if ranks.world_size() > 1 and ranks.rank() != 0:
            done: Future[layout.Manifest] = Future()
            done.set_result(None)  # type: ignore[arg-type]
            return SaveHandle(step, done, self)
        prepared = self._prepare(step, state, metadata, reason, to_host=True)
        future = self._worker().submit(self._write, prepared)
        self._inflight = future
        return SaveHandle(step, future, self)

    def wait(self) -> layout.Manifest | None:
        """Wait for the save in flight, if any; raise its error."""
        future = self._inflight
        self._settle()
        return future.result() if future is not None else None

    def close(self) -> None:
        """Finish the save in flight and raise its error, if any. Idempotent."""
        try:
            self._settle()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            self._host_buffer.release()

    def _worker(self) -> ThreadPoolExecutor:
        """The one background thread: async writes and retention, in submission order."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=_WORKER)
        return self._pool

    def _tidy(self) -> None:
        """Wait for retention still running after the last save, so reads see its result."""
        retention, self._housekeeping = self._housekeeping, None
        if retention is not None:
            retention.result()  # never raises: retention only warns

    def _settle(self) -> None:
        """Wait for background work; remember a failed save to raise it."""
        self._tidy()
        future = self._inflight
        if future is not None:
            with contextlib.suppress(BaseException):  # inspected just below
                future.result()
            self._inflight = None
            if future.exception() is not None:
                self._unreported = future
            else:
                self._announce(future.result().step)
        self._raise_pending()

    def _announce(self, step: int) -> None:
        if self.on_commit is not None:
            self.on_commit(step)

    def _reported(self, future: Future[Any]) -> None:
        if self._unreported is future:
            self._unreported = None
        if self._inflight is future:
            self._inflight = None

    def _raise_pending(self) -> None:
        """Raise the error of a finished async save that nobody has seen yet."""
        inflight = self._inflight
        if inflight is not None and inflight.done():
            self._inflight = None
            if inflight.exception() is not None:
                self._unreported = inflight
        future, self._unreported = self._unreported, None
        if future is not None:
            err = future.exception()
            assert err is not None
            raise err

    # Loading ---------------------------------------------------------------------------

    def load(self, step: int | None = None, map_location: Any = "cpu") -> Any:
        """The state saved at `step`, checksums verified while reading.

        With `step=None`, the newest committed step that loads; a corrupt newer step is
        skipped with a warning. Raises `CheckpointError` when there is none."""
        self._tidy()  # retention from the last save may still be deleting old steps
        self._raise_pending()
        if step is not None:
            step = layout.check_step(step)
            return loader.load_step(self.storage, self.reader, step, map_location, self.writers)
        return loader.load_newest(self.storage, self.reader, map_location, self.writers)

    # Retention -------------------------------------------------------------------------

    def prune(self, keep_last: int | None = None, keep_every: int | None = None) -> list[int]:
        """Delete committed steps that retention lets go, then leftovers; returns deleted."""
        self._settle()
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
        if threading.current_thread().name.startswith(_WORKER):
            self._retire()
        else:
            self._housekeeping = self._worker().submit(self._retire)
        return committed

    def _retire(self) -> None:
        housekeeping.retire(self.storage, self.reader, self.retention)

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
