"""`supervise ckpt ls|verify|prune URL`: inspect and tidy a checkpoint root.

All three are torch-free and read through `supervisor.storage`, with the verdicts every
reader shares (`supervisor.storage.reader`): a step `ls` shows as committed is one that
`latest()`, `load()` and supervise's resume step would take, and one shown corrupt is
skipped by all of them. Exit codes:

- `ls`: 0, listing even corrupt steps (marked so).
- `verify`: 0 the step is valid, 1 it is corrupt (the line names the step that would load
  instead), 2 there is no committed step (or not the one asked for: `pruned` when it is
  older than the oldest kept step, `not committed` otherwise). `--all` checks every
  committed step, one line each, and exits 1 if any is corrupt. Storage that cannot be
  read exits INFRA_FAILED (86) with one line.
- `prune`: 0 after deleting what `--keep`/`--keep-every` let go, counting verified steps
  only: it never deletes the only steps that load.

A bad URL or option exits CONFIG_ERROR (81) through `supervisor.cli.main`. A progress bar
goes to stderr while verifying checkpoints over 64 MiB: redrawn in place on a terminal,
one line per quarter otherwise (pod logs).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import typer

from supervisor.cli.flags import Arg, Flag, Range, command

PROGRESS_MIN_BYTES = 64 << 20

# One-shot tools run by hand against a checkpoint root: their flags have no env twins.
URL = Arg("url", str, "Checkpoint root: a path or an fsspec URL (s3://...).")
# A step number fits the 64-bit signed integers other tools store it in.
STEPS = Range(0, 2**63 - 1)
STEP = Flag(
    "step",
    int | None,
    None,
    "Step to verify; default: the newest committed.",
    twin=False,
    range=STEPS,
)
ALL = Flag("all", bool, False, "Verify every committed step, one line each.", twin=False)
KEEP = Flag(
    "keep",
    int,
    ...,
    "Keep the newest N committed steps (N >= 2).",
    twin=False,
    range=Range(2, 2**63 - 1),
)
KEEP_EVERY = Flag(
    "keep-every",
    int | None,
    None,
    "Also keep every step divisible by K.",
    twin=False,
    range=Range(1, 2**63 - 1),
)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _fail(err: Exception) -> None:
    """One line on stderr and the error's own exit class (storage: 86)."""
    from supervisor.core.errors import SuperviseError

    print(f"supervise ckpt: error: {err}", file=sys.stderr)
    code = err.exit_code.code if isinstance(err, SuperviseError) else 1
    raise typer.Exit(code)


@command(URL)
def ls_command(url: str) -> None:
    """List committed, corrupt and uncommitted steps as a table."""
    from supervisor.core.errors import StorageError
    from supervisor.storage import layout
    from supervisor.storage.backend import Storage
    from supervisor.storage.reader import Reader

    try:
        storage = Storage(url)
        reader = Reader(storage)
        rows = []
        for name in storage.names():
            step = layout.parse_step_dirname(name)
            staged = layout.parse_staging_dirname(name)
            if staged is not None and not staged[1].startswith("deleted-"):
                rows.append((staged[0], "uncommitted", "-", "-", "-", "-", "-"))
                continue
            if step is None:
                continue
            verdict = reader.assess(step)
            if not verdict.found:
                rows.append((step, "uncommitted", "-", "-", "-", "-", "-"))
                continue
            m = verdict.manifest
            state = "corrupt" if verdict.problems else "committed"
            if m is None:
                rows.append((step, state, "-", "-", "-", "-", "-"))
                continue
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(m.wall_time))
            row = (
                step,
                state,
                m.reason,
                _human(m.total_bytes),
                str(len(m.files)),
                str(m.world_size),
                when,
            )
            rows.append(row)
    except StorageError as err:
        _fail(err)
    if not rows:
        print(f"no checkpoints under {url}")
        return
    header = ("STEP", "STATE", "REASON", "SIZE", "FILES", "WORLD", "SAVED (UTC)")
    table = [header, *[(str(r[0]), *r[1:]) for r in sorted(rows, key=lambda r: r[0])]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _progress() -> Callable[[int, int], None]:
    tty = sys.stderr.isatty()
    last = {"quarter": -1}

    def show(done: int, total: int) -> None:
        if total < PROGRESS_MIN_BYTES:
            return
        fraction = done / total if total else 1.0
        if tty:
            bar = "#" * int(fraction * 30)
            end = "\n" if done >= total else ""
            print(
                f"\rverifying [{bar:<30}] {fraction:4.0%} of {_human(total)}",
                end=end,
                file=sys.stderr,
                flush=True,
            )
        elif int(fraction * 4) > last["quarter"]:
            last["quarter"] = int(fraction * 4)
            print(f"verifying: {fraction:.0%} of {_human(total)}", file=sys.stderr, flush=True)

    return show


@command(URL, STEP, ALL)
def verify_command(url: str, step: int | None, all: bool) -> None:
    """Check every byte of a step against its checksums: exit 0 valid, 1 corrupt, 2 none."""
    from supervisor.core.errors import StorageError
    from supervisor.storage.backend import Storage
    from supervisor.storage.reader import Reader

    try:
        reader = Reader(Storage(url))
        committed = reader.steps()
        if not committed:
            print(f"no committed checkpoint under {url}")
            raise typer.Exit(2)
        if all:
            _verify_all(reader, committed)
            return
        if step is None:
            step = committed[-1]
        result = reader.verify(step, _progress())
        if not result.found:
            if step < committed[0]:
                print(f"step {step}: pruned (the oldest kept step is {committed[0]})")
            else:
                print(f"step {step}: not committed under {url}")
            raise typer.Exit(2)
        if not result.ok:
            print(f"step {step}: CORRUPT; {_instead(reader)}")
            for problem in result.problems:
                print(f"  {problem}")
            raise typer.Exit(1)
    except StorageError as err:
        _fail(err)
        return
    print(f"step {step}: valid ({_human(result.bytes_checked)} checked)")


def _instead(reader) -> str:  # type: ignore[no-untyped-def]
    newest = reader.latest()
    return f"the newest step that loads is {newest}" if newest is not None else "no step loads"


def _verify_all(reader, committed: list[int]) -> None:  # type: ignore[no-untyped-def]
    """One line per committed step, oldest first; exit 1 if any is corrupt."""
    bad = 0
    for step in committed:
        result = reader.verify(step, _progress())
        if not result.found:
            print(f"step {step}: pruned meanwhile")
        elif result.ok:
            print(f"step {step}: valid ({_human(result.bytes_checked)} checked)")
        else:
            bad += 1
            print(f"step {step}: CORRUPT: {'; '.join(result.problems)}")
    if bad:
        print(f"{bad} of {len(committed)} steps corrupt; {_instead(reader)}")
        raise typer.Exit(1)


@command(URL, KEEP, KEEP_EVERY)
def prune_command(url: str, keep: int, keep_every: int | None) -> None:
    """Delete old committed steps beyond the retention, and leftovers of failed saves."""
    from supervisor.core.errors import ConfigError, StorageError
    from supervisor.storage import housekeeping
    from supervisor.storage.backend import Storage
    from supervisor.storage.reader import Reader
    from supervisor.storage.retention import Retention

    if keep < 2:
        raise ConfigError(f"--keep must be >= 2 (got {keep}): the previous step is the fallback")
    retention = Retention(keep, keep_every)  # ConfigError (exit 81) for a bad --keep-every
    try:
        storage = Storage(url)
        reader = Reader(storage)
        doomed = housekeeping.doomed(reader, retention)
        for step in doomed:
            storage.trash(step)
            print(f"deleted step {step}")
        housekeeping.remove_leftovers(storage, reader)
    except StorageError as err:
        _fail(err)
    if not doomed:
        print("nothing to delete")


def register(app: typer.Typer) -> None:
    """Add `ckpt ls|verify|prune` to the `supervise` app."""
    ckpt = typer.Typer(help="Inspect, verify and prune checkpoints.", no_args_is_help=True)
    ckpt.command("ls")(ls_command)
    ckpt.command("verify")(verify_command)
    ckpt.command("prune")(prune_command)
    app.add_typer(ckpt, name="ckpt")
