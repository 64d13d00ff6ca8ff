"""Sharded checkpoints: `torch.distributed.checkpoint` (DCP) writes, our marker commits.

- `save_sharded`: DCP writes every rank's shards into the step's attempt directory (through
  the commit strategy's DCP writer); the ranks then checksum the files, each its share,
  and rank 0 commits them with our manifest and marker (`CheckpointStore.commit_manifest`).
  DCP's own `.metadata` is only a data file to us, so DCP's overwrite window (data
  rewritten under an old `.metadata`) cannot occur: each save is a fresh attempt directory
  and the marker is create-only.
  Once the step is committed, the store's `on_commit` is called on every rank, as by `save`.
- `load_sharded`: rank 0 picks the step (the newest committed one unless given) and verifies
  every checksum before any rank lets DCP read. DCP's `.metadata` is a pickle, and DCP's
  default planner unpickles non-tensor values with `weights_only=False`; neither runs here
  as DCP ships it (`dcp_guard`): every rank checks `.metadata` against the manifest's
  checksum itself, from the very bytes it then unpickles, and unpickles it allowing only
  DCP's metadata classes; non-tensor values are read weights-only. A planted or tampered
  step raises `CheckpointError` and runs none of its code. Not closed: the tensor data
  files are checked by rank 0 before the ranks read them, not as each rank reads (DCP
  reads them with `torch.load(weights_only=True)`, which builds tensors only).

Both are collectives (`ranks`): every rank calls them, in the same order, and they block
until every rank is done. Any rank's failure fails every rank (the failing rank raises its
own error, the others `CheckpointError`); an attempt that did not commit is removed. torch
is imported inside functions only.
"""

from __future__ import annotations

import os
import time
from typing import Any

from supervisor.core.errors import CheckpointError
from supervisor.storage import dcp_guard, fanout, layout, ranks, writer
from supervisor.storage.store import CheckpointStore


def save_sharded(
    store: CheckpointStore,
    step: int,
    state_dict: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    reason: str = "periodic",
) -> layout.Manifest | None:
    """Collective: DCP-save `state_dict` as `step`; our marker commits it. Rank 0 returns
    the manifest, the other ranks None."""
    import torch
    import torch.distributed.checkpoint as dcp

    dist = ranks.dist()
    if dist is None:
        raise CheckpointError("save_sharded needs an initialised torch.distributed process group")
    layout.check_step(step)
    layout.check_reason(reason)
    store.wait()
    storage = store.storage
    attempt = ranks.share(layout.new_attempt() if dist.get_rank() == 0 else "")
    directory = storage.attempt_dir(step, attempt)
    ranks.rank_zero(lambda: storage.begin(step, attempt), step)
    failed: BaseException | None = None
    try:
        dcp.save(state_dict, storage_writer=storage.strategy.dcp_writer(f"{directory}/dcp"))
    except BaseException as err:
        failed = err
    if not ranks.all_ok(failed is None):
        if dist.get_rank() == 0:
            writer.discard_quietly(storage, step, attempt)
        if failed is not None:
            raise failed
        raise CheckpointError(f"another rank failed to write checkpoint step {step}; see its log")

    # Every rank checksums its share of the files (all ranks see the directory DCP wrote
    # into), so rank 0 does not read them all alone while the others wait.
    listed: dict[str, int] = {}
    mine: list[tuple[str, int, str]] | None = None
    try:
        listed, mine = _checksum_share(store, directory, dist.get_rank(), dist.get_world_size())
    except BaseException as err:
        failed = err
    parts = ranks.gather_to_all(mine)
    if any(part is None for part in parts):
        if dist.get_rank() == 0:
            writer.discard_quietly(storage, step, attempt)
        if failed is not None:
            raise failed
        raise CheckpointError(f"another rank failed to read checkpoint step {step}; see its log")

    def commit() -> layout.Manifest:
        with writer.discard_on_error(storage, step, attempt):
            entries = sorted(entry for part in parts for entry in part)
            if {path: size for path, size, _ in entries} != listed:
                raise CheckpointError(
                    f"the ranks listed different files in {directory}; step {step} is not "
                    "committed (every rank must see the same checkpoint storage)"
                )
            files = [layout.FileEntry(path, size, digest) for path, size, digest in entries]
            manifest = layout.Manifest(
                step=step,
                attempt=attempt,
                reason=reason,
                kind="dcp",
                wall_time=time.time(),
                world_size=dist.get_world_size(),
                files=tuple(files),
                metadata=dict(metadata or {}),
                versions={"torch": torch.__version__},
            )
            return store.commit_manifest(manifest, directory)

    manifest = ranks.rank_zero(commit, step)
    store._announce(step)  # the package's own: on_commit, as `save` calls it
    return manifest


def load_sharded(
    store: CheckpointStore, state_dict: dict[str, Any], step: int | None = None
) -> int:
    """Collective: load a sharded step in place into `state_dict`; returns the step."""
    import torch.distributed.checkpoint as dcp

    dist = ranks.dist()
    if dist is None:
        raise CheckpointError("load_sharded needs an initialised torch.distributed process group")
    chosen, error = -1, ""
    if dist.get_rank() == 0:
        try:
            chosen = _verified_sharded_step(store, step)
        except CheckpointError as err:
            error = str(err)
    chosen_str, error = ranks.share(f"{chosen}|{error}").split("|", 1)
    if error:
        raise CheckpointError(error)
    manifest = store.manifest(int(chosen_str))
    directory = store.reader.attempt_dir(manifest)
    files = {f.path.removeprefix("dcp/"): f for f in manifest.files if f.path.startswith("dcp/")}
    reader = store.storage.strategy.dcp_reader(f"{directory}/dcp", files)
    try:
        dcp.load(state_dict, storage_reader=reader, planner=dcp_guard.planner())
    except BaseException as err:  # DCP's CheckpointException is a BaseException
        refused = getattr(reader, "refused", None) or _refusal(err)
        if refused is not None:
            raise refused from err
        raise
    return manifest.step


def _refusal(err: BaseException) -> CheckpointError | None:
    """The `CheckpointError` that DCP wrapped into `err` (its CheckpointException keeps
    each rank's exception in `failures`), if there is one."""
    for failure in getattr(err, "failures", {}).values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, CheckpointError):
            return inner
    return None


def _verified_sharded_step(store: CheckpointStore, step: int | None) -> int:
    chosen = store.latest() if step is None else step
    if chosen is None:
        raise CheckpointError(f"no committed checkpoint under {store.url}")
    check = store.verify(chosen)
    if not check.ok:
        raise CheckpointError(f"step {chosen} is not valid: {'; '.join(check.problems)}")
    if check.manifest is None or check.manifest.kind != "dcp":
        raise CheckpointError(f"step {chosen} is not a sharded checkpoint; use load()")
    return chosen


def _checksum_share(
    store: CheckpointStore, directory: str, rank: int, world: int
) -> tuple[dict[str, int], list[tuple[str, int, str]]]:
    """Every file under `directory` with its size, and (path, size, checksum) of this
    rank's share of them (every `world`-th file from `rank` on, in path order). Up to 4
    files are hashed at once (XXH3 releases the GIL), or the store's transfer width."""
    listed = dict(sorted(store.storage.sizes(directory).items()))
    share = list(listed.items())[rank::world]
    width = max(store.writers, min(4, os.cpu_count() or 1))
    digests = fanout.run(
        lambda item: store.storage.checksum(f"{directory}/{item[0]}"), share, width
    )
    return listed, [(path, size, d) for (path, size), d in zip(share, digests, strict=True)]
