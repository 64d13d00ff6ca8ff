"""`supervise report URL`: where a run's time went, across every pod, attempt and node.

    supervise report s3://bucket/run-7            # the checkpoint root (its `_ledger/`)
    supervise report s3://bucket/ledgers/run-7 --json
    supervise report /ckpt --plot run.png         # or run.svg: needs `supervise[plot]`

It reads the run ledger (`supervisor.gang.records`; the reading is `supervisor.storage`'s)
and prints the goodput report `supervisor.gang.goodput` computes: goodput, the badput
buckets, each charged to the failure class that caused it, interruptions by class, node
and GPU, the mean time between them, and the step time. `--json` prints the same as one
JSON object (`FORMAT`, `VERSION`; fields are only ever added within a version).

Exit codes: 0 with a report; CONFIG_ERROR (81) when URL holds no ledger, a flag is wrong,
or the picture cannot be drawn (matplotlib missing, an unknown suffix); INFRA_FAILED (86)
when the storage cannot be read. Reads only; never writes to the ledger. Imports neither
torch nor the run's machinery.
"""

from __future__ import annotations

import json as _json
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import typer

from supervisor.cli.flags import Arg, Flag, command
from supervisor.core.errors import ConfigError

FORMAT = "supervise-report"
VERSION = 1
READERS = 16  # objects read at once: a 1,000-attempt ledger on S3 is 2,000 small GETs

URL = Arg("url", str, "The run's checkpoint root (its `_ledger/`), or the ledger itself.")
FLAGS = (
    Flag("json", bool, False, "Print the report as one JSON object.", twin=False),
    Flag(
        "plot",
        str | None,
        None,
        "Also draw the run's timeline into this file (.png or .svg; needs "
        "`pip install 'supervise[plot]'`).",
        shown="no picture",
        twin=False,
    ),
)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)


@command(URL, *FLAGS)
def report_command(url: str, json: bool, plot: str | None) -> None:
    """Goodput and badput of a run, from its ledger: every pod, attempt and node.

    Exit 0 with a report, 81 when URL holds no run ledger, 86 when it cannot be read.
    """
    from supervisor.gang import goodput

    where, view = read_ledger(url)
    report = goodput.report(view)
    if report is None:
        raise ConfigError(
            f"no run ledger at {url}: give the run's --checkpoint-dir (its _ledger/ folder) "
            "or its --ledger-dir, as the pods were given it"
        )
    if plot is not None:
        from supervisor.cli import plot as pictures

        pictures.draw(report, Path(plot))
    if json:
        print(_json.dumps(as_json(report, where), indent=1, sort_keys=False))
    else:
        print(as_text(report, where))


def read_ledger(url: str) -> tuple[str, Any]:
    """(where the ledger was found, one read of every object in it). `url` may be the
    checkpoint root or the ledger itself. Raises StorageError when the storage fails."""
    from supervisor.gang.records import LedgerView
    from supervisor.run.plan import ledger_url
    from supervisor.storage.ledger import FsLedger

    for where in (ledger_url(None, url), url):
        assert where is not None
        ledger = FsLedger(where)
        names = ledger.list()
        if names:
            with ThreadPoolExecutor(READERS) as pool:
                objects = dict(zip(names, pool.map(ledger.read, names), strict=True))
            return where, LedgerView.read(objects)
    return url, LedgerView()


# --------------------------------------------------------------------------------- JSON


def as_json(report: Any, where: str) -> dict[str, Any]:
    """The report as plain data: `buckets` and `by_cause` in seconds, `goodput` a fraction."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "ledger": where,
        "start": report.start,
        "end": report.end,
        "wall_s": round(report.end - report.start, 3),
        "lanes": list(report.lanes),
        "total_s": round(report.total_s, 3),
        "goodput": _round(report.goodput, 6),
        "buckets": dict(report.buckets),
        "by_cause": {cause: dict(b) for cause, b in report.by_cause.items()},
        "interruptions": {
            "count": report.interruptions.count,
            "mtbi_s": report.interruptions.mtbi_s,
            "by_class": dict(report.interruptions.by_class),
            "by_node": dict(report.interruptions.by_node),
            "by_gpu": dict(report.interruptions.by_gpu),
        },
        "step_time": {
            "mean_s": report.step_time.mean_s,
            "stdev_s": report.step_time.stdev_s,
            "count": report.step_time.count,
            "slow_attempts": [{"id": key, "ratio": r} for key, r in report.step_time.slow],
        },
        "attempts": [_span(span) for span in report.spans],
        "downtime": [
            {"lane": g.lane, "start": g.start, "end": g.end, "cause": g.cause} for g in report.gaps
        ],
    }


def _span(span: Any) -> dict[str, Any]:
    return {
        "id": span.id,
        "lane": span.lane,
        "pod": span.pod,
        "node": span.node,
        "start": span.start,
        "end": span.end,
        "class": span.name,
        "cause": span.cause,
        "resume_step": span.resume_step,
        "last_step": span.last_step,
        "kept_step": span.kept_step,
        "commits": [list(c) for c in span.commits],
        "gpus": list(span.gpus),
        "buckets": {name: round(s, 3) for name, s in span.buckets.items()},
    }


def _round(value: float | None, digits: int) -> float | None:
    return round(value, digits) if value is not None else None


# --------------------------------------------------------------------------------- text

_MEANING = {
    "productive": "steps that were kept",
    "init": "start to first step",
    "restore": "loading the checkpoint",
    "checkpoint": "saving checkpoints",
    "lost": "steps redone after a failure",
    "stalled": "no step until the failure was seen",
    "teardown": "after the ranks stopped",
    "downtime": "between pods: no attempt ran",
    "unknown": "attempts that left no verdict",
}


def as_text(report: Any, where: str) -> str:
    """The report for a person: one screen, largest buckets first."""
    total = report.total_s
    goodput = f"{report.goodput:.1%}" if report.goodput is not None else "n/a"
    nodes = _plural(len(report.lanes), "node")
    attempts = _plural(len(report.spans), "attempt")
    wall = _dur(report.end - report.start)
    lines = [
        f"run ledger {where}",
        f"goodput {goodput}: {_dur(report.buckets.get('productive', 0.0))} of kept steps in "
        f"{_dur(total)} ({nodes} x {wall} wall, {attempts}, from {_when(report.start)} to "
        f"{_when(report.end)})",
        "",
        f"  {'bucket':<14}{'time':>12}{'share':>8}  meaning",
    ]
    for name, seconds in sorted(report.buckets.items(), key=lambda item: -item[1]):
        if seconds <= 0:
            continue
        meaning = _MEANING.get(name, f"the phase {name.removeprefix('phase:')}")
        share = f"{seconds / total:.1%}" if total > 0 else ""
        lines.append(f"  {name:<14}{_dur(seconds):>12}{share:>8}  {meaning}")
    causes = {c: b for c, b in report.by_cause.items() if sum(b.values()) > 0}
    if causes:
        lines += ["", "badput by cause"]
        for cause, buckets in sorted(causes.items(), key=lambda item: -sum(item[1].values())):
            parts = ", ".join(
                f"{name} {_dur(s)}" for name, s in sorted(buckets.items(), key=lambda i: -i[1])
            )
            lines.append(f"  {cause:<16}{_dur(sum(buckets.values())):>10}  ({parts})")
    counted = report.interruptions
    lines += ["", f"interruptions: {counted.count}"]
    if counted.count:
        lines[-1] += f", one every {_dur(counted.mtbi_s)} of wall time on average"
        lines.append(f"  by class  {_counts(counted.by_class)}")
        lines.append(f"  by node   {_counts(counted.by_node)}")
        if counted.by_gpu:
            lines.append(f"  by GPU    {_counts(counted.by_gpu)}")
    steps = report.step_time
    if steps.count and steps.mean_s:
        deviation = f"{steps.stdev_s / steps.mean_s:.1%}" if steps.stdev_s is not None else "?"
        lines += [
            "",
            f"step time: mean {_dur(steps.mean_s)}, deviation {_dur(steps.stdev_s)} "
            f"({deviation}) over {steps.count} measured steps",
        ]
        for key, ratio in steps.slow[:10]:
            lines.append(f"  slow attempt {key}: {ratio:.2f}x the run's mean")
        if len(steps.slow) > 10:
            lines.append(f"  ... and {len(steps.slow) - 10} more slow attempts (--json)")
    return "\n".join(lines)


def _counts(counts: Mapping[str, int], most: int = 8) -> str:
    shown = ", ".join(f"{key} {n}" for key, n in list(counts.items())[:most])
    rest = len(counts) - most
    return shown + (f", ... {rest} more" if rest > 0 else "")


def _dur(seconds: float | None) -> str:
    """`1h 02m`, `4m 05s`, `12.3 s`, `250 ms`."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _when(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))
