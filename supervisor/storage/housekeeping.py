"""Deleting what retention lets go, and the leftovers of saves that never committed.

- `doomed(retention)` picks the committed steps retention lets go, counting *verified*
  steps (`Reader.assess`), not markers: the newest `keep_last` verified steps are kept,
  and so is every step newer than the oldest of them (damaged or not: nothing newer than
  what loads is ever deleted) and every `keep_every` multiple; with fewer than `keep_last`
  verified steps nothing is deleted. With every step verified this is exactly
  `retention.to_delete`. Judging a step reads its bytes only the first time (see
  `reader`), and only steps down to the `keep_last`-th verified one are judged.
- `prune(retention)` deletes the `doomed` steps, each invalidated before its bytes are
  removed (`Storage.trash`), then runs `remove_leftovers`. It returns the deleted steps.
- `retire(retention, committed)` is `prune` after committing step `committed`: a failure
  warns (`UserWarning`) instead of raising, because the new step is committed and must not
  be reported as failed. It leaves the other attempts of step `committed`: another process
  writing the same step may still be writing one, and removes its own when it learns it
  lost; a crashed writer's are removed by the next commit or `cleanup`.
- `remove_leftovers()` removes what no reader can see and no live writer can still
  commit: staging directories and marker-less steps older than the newest committed step,
  the remains of deleted steps, and losing attempts inside committed steps (the reader's
  `VERIFIED`/`DAMAGED` records beside the marker are kept; a step whose marker is
  unreadable is left whole).

Only names that parse as steps or staging directories are ever touched; anything else under
the root, the run ledger's `_ledger/` included, is left alone. Blocks in the calling thread
(the store runs `retire` on its background thread). A crash mid-way leaves at worst more
leftovers for the next run; never a torn committed step.
"""

from __future__ import annotations

import warnings

from supervisor.storage import layout
from supervisor.storage.backend import Storage
from supervisor.storage.reader import Reader
from supervisor.storage.retention import Retention


def doomed(reader: Reader, retention: Retention) -> list[int]:
    """Committed steps that retention lets go, oldest first (see the module docstring)."""
    committed = reader.steps()
    kept: list[int] = []
    for step in reversed(committed):
        if len(kept) == retention.keep_last:
            break
        if reader.assess(step).ok:
            kept.append(step)
    if len(kept) < retention.keep_last:
        return []
    floor = kept[-1]
    every = retention.keep_every
    return [s for s in committed if s < floor and not (every and s % every == 0)]


def prune(
    storage: Storage, reader: Reader, retention: Retention, spare: int | None = None
) -> list[int]:
    chosen = doomed(reader, retention)
    for step in chosen:
        storage.trash(step)
    remove_leftovers(storage, reader, spare)
    return chosen


def retire(storage: Storage, reader: Reader, retention: Retention, committed: int) -> None:
    try:
        # Other writers of the step just committed may still be writing their attempts:
        # they remove their own when they learn they lost (see `writer.publish`).
        prune(storage, reader, retention, spare=committed)
    except Exception as err:
        # The new step is committed; failing to delete old ones must not fail the save.
        warnings.warn(f"checkpoint retention: {err}", stacklevel=2)


def remove_leftovers(storage: Storage, reader: Reader, spare: int | None = None) -> list[str]:
    """The names removed, relative to the root. Leftovers of step `spare` are left."""
    committed = reader.steps()
    newest = committed[-1] if committed else -1
    removed = []
    for name in storage.names():
        staged = layout.parse_staging_dirname(name)
        step = layout.parse_step_dirname(name)
        stale_staging = staged is not None and (
            staged[0] <= newest or staged[1].startswith("deleted-")
        )
        torn_step = step is not None and step not in committed and step < newest
        of_step = step if staged is None else staged[0]
        if of_step is not None and of_step == spare:
            continue
        if stale_staging or torn_step:
            storage.remove(storage.path(name))
            removed.append(name)
        elif step is not None and step in committed:
            removed.extend(f"{name}/{leaf}" for leaf in _losing_attempts(storage, reader, step))
    return removed


def _losing_attempts(storage: Storage, reader: Reader, step: int) -> list[str]:
    """Remove attempts beside the one the marker names (object stores write concurrent
    attempts of a step side by side; a renamed local step holds only its winner)."""
    try:
        marker = reader.marker(step)
    except layout.DamagedError:
        return []  # which attempt won is unknown: leave the step whole
    if marker is None:
        return []
    directory = reader.step_dir(step)
    keep = (layout.MARKER, *layout.RECORDS, marker.attempt)
    losers = [
        leaf
        for leaf in storage.children(directory)
        if leaf not in keep and not leaf.startswith(".")  # '.': a record being written
    ]
    for leaf in losers:
        storage.remove(f"{directory}/{leaf}")
    return losers
