"""`CheckpointStore`: save and load training state, atomically and without pickle.

Guarantees (the commit protocol per storage kind is in `backend` and its strategies, the
layout in `layout`):

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

Loading checks every file's checksum. Local files are mapped copy-on-write instead of
copied (see `tensorfile.map_file`): the loaded tensors are private to the caller, and
writing to them never touches the checkpoint. Other storage is read into fresh tensors.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from supervisor.core.errors import CheckpointError, StorageError
from supervisor.storage import checksum, codec, layout, ranks, tensorfile
from supervisor.storage.backend import Storage
from supervisor.storage.reader import Reader, Verification
from supervisor.storage.retention import Retention, to_delete

ENV_DIR = "SUPERVISE_CHECKPOINT_DIR"
DEFAULT_DIR = "checkpoints"
DEFAULT_SHARD_BYTES = 256 << 20
_WORKER = "supervise-ckpt"


@dataclass
class _Prepared:
    """Everything a write needs, already independent of the caller's live state."""

    step: int
    reason: str
    metadata: dict[str, Any]
    plans: list[tensorfile.Plan]
    bodies: list[list[memoryview]]
    skeleton: bytes
    pickles: bytes | None
    tensor_bytes: int
    world_size: int
    versions: dict[str, str]
    keepalive: list[Any] = field(default_factory=list)  # tensors the memoryviews point into


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
    it (`wait`, `close`, the next save). Pass `sup.committed` so supervise learns of every
    commit; it must stay on the training thread, which owns the rank's channel slot."""

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
        self._slab: Any = None
        self._lock = threading.Lock()

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
        if ranks.world_size() > 1:
            manifest = ranks.rank_zero(
                lambda: self._commit(self._prepare(step, state, metadata, reason, False)), step
            )
        else:
            manifest = self._commit(self._prepare(step, state, metadata, reason, snapshot=False))
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
        prepared = self._prepare(step, state, metadata, reason, snapshot=True)
        future = self._worker().submit(self._commit, prepared)
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
            self._slab = None

    def _worker(self) -> ThreadPoolExecutor:
        """The one background thread: async writes and retention, in submission order."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=_WORKER)
        return self._pool

    def _tidy(self) -> None:
        """Wait for retention still running after the last save, so reads see its result."""
        housekeeping, self._housekeeping = self._housekeeping, None
        if housekeeping is not None:
            housekeeping.result()  # never raises: retention only warns

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
            return self._load(layout.check_step(step), map_location)
        candidates = self.reader.steps()
        for candidate in reversed(candidates):
            try:
                return self._load(candidate, map_location)
            except CheckpointError as err:
                warnings.warn(f"skipping checkpoint step {candidate}: {err}", stacklevel=2)
        raise CheckpointError(
            f"no loadable checkpoint under {self.url} (committed steps: {candidates or 'none'})"
        )

    def _load(self, step: int, map_location: Any) -> Any:
        manifest = self.reader.manifest(step)
        if manifest.kind != "state":
            raise CheckpointError(
                f"step {step} is a {manifest.kind} checkpoint; load it with load_sharded()"
            )
        base = self.reader.attempt_dir(manifest)
        tensors: dict[int, Any] = {}
        skeleton: Any = None
        pickles: list[Any] = []

        def read(entry: layout.FileEntry) -> None:
            nonlocal skeleton, pickles
            where = f"{base}/{entry.path}"
            if entry.path.endswith(".safetensors"):
                found, digest, size = self.storage.read_tensors(where)
                _check(entry, digest, size, where)
                tensors.update(found)
                return
            raw = self.storage.read(where)
            if raw is None:
                raise CheckpointError(f"{where} is missing; step {step} is corrupt")
            _check(entry, checksum.of(raw), len(raw), where)
            if entry.path == layout.SKELETON:
                skeleton = json.loads(raw)
            elif entry.path == layout.PICKLES:
                import torch

                pickles = torch.load(io.BytesIO(raw), weights_only=True)

        def read_or_corrupt(entry: layout.FileEntry) -> None:
            try:
                read(entry)
            except StorageError as err:
                if isinstance(err.__cause__, FileNotFoundError):
                    raise CheckpointError(
                        f"{base}/{entry.path} is missing; step {step} is corrupt"
                    ) from err
                raise

        self._parallel(read_or_corrupt, manifest.files)
        if len(tensors) != manifest.tensor_count:
            raise CheckpointError(
                f"step {step}: {len(tensors)} tensors, manifest says {manifest.tensor_count}"
            )
        ordered = [tensors[i] for i in range(len(tensors))]
        if str(map_location) != "cpu":
            ordered = [t.to(map_location) for t in ordered]
        return codec.decode(skeleton, ordered, pickles)

    # Retention -------------------------------------------------------------------------

    def prune(self, keep_last: int | None = None, keep_every: int | None = None) -> list[int]:
        """Delete committed steps that retention lets go, then leftovers; returns deleted."""
        self._settle()
        retention = (
            self.retention
            if keep_last is None and keep_every is None
            else Retention(keep_last or self.retention.keep_last, keep_every)
        )
        committed = self.reader.steps()
        doomed = to_delete(committed, retention)
        for step in doomed:
            self.storage.trash(step)
        self.cleanup()
        return doomed

    def cleanup(self) -> list[str]:
        """Remove what no reader can see and no live writer can still commit.

        Staging directories and marker-less steps older than the newest committed step,
        deleted-step leftovers, and losing attempts inside committed steps."""
        committed = self.reader.steps()
        newest = committed[-1] if committed else -1
        removed = []
        for name in self.storage.names():
            staged = layout.parse_staging_dirname(name)
            step = layout.parse_step_dirname(name)
            target = self.storage.path(name)
            stale_staging = staged is not None and (
                staged[0] <= newest or staged[1].startswith("deleted-")
            )
            torn_step = step is not None and step not in committed and step < newest
            if stale_staging or torn_step:
                self.storage.remove(target)
                removed.append(name)
            elif step is not None and step in committed:
                # Object stores write concurrent attempts of a step side by side; a renamed
                # local step holds only its winner, so there this finds nothing.
                marker = self.reader.marker(step)
                for leaf in self.storage.children(target):
                    if marker is not None and leaf not in (layout.MARKER, marker.attempt):
                        self.storage.remove(f"{target}/{leaf}")
                        removed.append(f"{name}/{leaf}")
        return removed

    # Internals -------------------------------------------------------------------------

    def _prepare(
        self, step: int, state: Any, metadata: dict[str, Any] | None, reason: str, snapshot: bool
    ) -> _Prepared:
        import torch

        layout.check_step(step)
        layout.check_reason(reason)
        try:
            json.dumps(metadata or {})
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"checkpoint metadata must be JSON-serialisable: {err}") from err
        encoded = codec.encode(state, self.allow_pickle)
        plans = tensorfile.plan_files(encoded.tensors, self.shard_bytes)
        if snapshot:
            bodies, keepalive = self._snapshot(encoded.tensors, plans)
        else:
            bodies, keepalive = _direct(encoded.tensors, plans)
        pickles = None
        if encoded.pickles:
            buffer = io.BytesIO()
            torch.save(encoded.pickles, buffer)
            pickles = buffer.getvalue()
        return _Prepared(
            step=step,
            reason=reason,
            metadata=dict(metadata or {}),
            plans=plans,
            bodies=bodies,
            skeleton=json.dumps(encoded.skeleton, separators=(",", ":")).encode(),
            pickles=pickles,
            tensor_bytes=sum(p.body_size for p in plans),
            world_size=ranks.world_size(),
            versions={"torch": torch.__version__},
            keepalive=keepalive,
        )

    def _snapshot(self, tensors: list[Any], plans: list[tensorfile.Plan]) -> tuple[list, list]:
        """Copy every tensor into one reused host buffer laid out like the files' bodies."""
        import torch

        bases, total = [], 0
        for plan in plans:
            bases.append(total)
            total += -(-plan.body_size // 64) * 64  # 64-byte aligned bases keep views legal
        on_gpu = any(t.device.type == "cuda" for t in tensors)
        if self._slab is None or self._slab.numel() < total:
            self._slab = None
            self._slab = torch.empty(max(total, 1), dtype=torch.uint8, pin_memory=on_gpu)
        slab = self._slab
        bodies = []
        for plan, base in zip(plans, bases, strict=True):
            for entry in plan.entries:
                if entry.end > entry.begin:
                    src = tensors[entry.index].detach()
                    dst = slab[base + entry.begin : base + entry.end].view(src.dtype)
                    dst.view(src.shape).copy_(src, non_blocking=on_gpu)
            body = tensorfile.tensor_memory(slab[base : base + plan.body_size])
            bodies.append([body])
        if on_gpu:
            torch.cuda.synchronize()
        return bodies, [slab]

    def _commit(self, prepared: _Prepared) -> layout.Manifest:
        step, attempt = prepared.step, layout.new_attempt()
        storage = self.storage
        directory = storage.begin(step, attempt)
        try:
            files = self._write_files(prepared, directory)
            manifest = layout.Manifest(
                step=step,
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
            return self.commit_manifest(manifest, directory)
        except BaseException:
            with contextlib.suppress(StorageError):  # the original error matters more
                storage.discard(step, attempt)
            raise
        finally:
            prepared.keepalive.clear()

    def commit_manifest(self, manifest: layout.Manifest, directory: str) -> layout.Manifest:
        """Write the manifest and the marker for files already durable in `directory`.

        Returns the committed manifest (the existing one if an identical step was already
        committed). Used by sharded saves too. Prunes and cleans up after a commit."""
        raw = manifest.to_json()
        self.storage.put(f"{directory}/{layout.MANIFEST}", raw)
        marker = layout.Marker.for_manifest(manifest, raw)
        if not self.storage.commit(manifest.step, manifest.attempt, marker.to_json()):
            existing = self.reader.manifest(manifest.step)
            self.storage.discard(manifest.step, manifest.attempt)
            if existing.same_content(manifest):
                return existing
            raise CheckpointError(
                f"step {manifest.step} is already committed under {self.url} with different "
                "content; committed steps are never overwritten: save under a new step number"
            )
        self._after_commit()
        return manifest

    def _after_commit(self) -> None:
        """Retention and cleanup, off the caller's critical path: deleting a large old step
        takes as long as a good part of a save. Runs on the worker thread; the next save
        (or close) waits for it, so it never overlaps another save."""
        if threading.current_thread().name.startswith(_WORKER):
            self._retire()
        else:
            self._housekeeping = self._worker().submit(self._retire)

    def _retire(self) -> None:
        try:
            for step in to_delete(self.reader.steps(), self.retention):
                self.storage.trash(step)
            self.cleanup()
        except Exception as err:
            # The new step is committed; failing to delete old ones must not fail the save.
            warnings.warn(f"checkpoint retention: {err}", stacklevel=3)

    def _write_files(self, prepared: _Prepared, directory: str) -> list[layout.FileEntry]:
        small = [(layout.SKELETON, prepared.skeleton)]
        if prepared.pickles is not None:
            small.append((layout.PICKLES, prepared.pickles))
        entries = []
        for name, data in small:
            self.storage.put(f"{directory}/{name}", data)
            entries.append(layout.FileEntry(name, len(data), checksum.of(data)))

        def write(job: tuple[tensorfile.Plan, list[memoryview]]) -> layout.FileEntry:
            plan, bodies = job
            path = f"{directory}/{plan.name}"
            sink = self.storage.sink(path)
            with self.storage.guard(f"writing {path}"):
                try:
                    digest = tensorfile.write_file(sink, plan, bodies)
                except BaseException:
                    sink.discard()
                    raise
            return layout.FileEntry(plan.name, plan.size, digest)

        entries.extend(
            self._parallel(write, list(zip(prepared.plans, prepared.bodies, strict=True)))
        )
        return entries

    def _parallel(self, fn: Callable[[Any], Any], jobs: Any) -> list[Any]:
        jobs = list(jobs)
        if self.writers <= 1 or len(jobs) <= 1:
            return [fn(job) for job in jobs]
        with ThreadPoolExecutor(min(self.writers, len(jobs))) as pool:
            return list(pool.map(fn, jobs))


def _direct(tensors: list[Any], plans: list[tensorfile.Plan]) -> tuple[list, list]:
    """Bodies that point straight at the caller's tensors (CPU copies only where needed)."""
    keepalive, bodies = [], []
    for plan in plans:
        views = []
        for entry in plan.entries:
            t = tensors[entry.index].detach()
            if t.device.type != "cpu":
                t = t.cpu()
            t = t.contiguous()
            keepalive.append(t)
            views.append(tensorfile.tensor_memory(t))
        bodies.append(views)
    return bodies, keepalive


def _check(entry: layout.FileEntry, digest: str, size: int, where: str) -> None:
    if size != entry.size or digest != entry.xxh3:
        raise CheckpointError(f"{where} fails its checksum; the step is corrupt")
