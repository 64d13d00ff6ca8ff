"""The goodput report as a picture: one lane per node, its attempts as bars on a time axis.

`draw(report, path)` writes a PNG or an SVG, chosen by the path's suffix. `figure(report)`
returns the matplotlib `Figure` without saving it (tests count its artists).

What the picture shows, lane by lane (`Report.lanes`, top to bottom):

- each attempt as a bar from its start to its verdict, coloured by the class it ended with
  (the legend lists only the classes present; an attempt with no verdict is grey);
- its init and restore, up to the first step, lighter;
- the work that the next attempt redid (`Span.lost`) hatched, and the stalled stretch (no
  rank stepped, until the attempt stopped) darkened;
- each checkpoint commit as a tick above the bar;
- downtime (`Report.gaps`) as the empty space between bars, with a thin line through it
  coloured by the class that caused it.

The number of artists does not grow with the number of attempts: bars are one collection
per class, and each kind of mark one collection for the whole figure. Marks thinner than a
pixel or two are merged or drawn plain, so a run of a thousand attempts stays readable.

matplotlib is an optional dependency (the `plot` extra), imported only inside these
functions: nothing else of `supervise` pays for it. Without it, both functions raise
`ConfigError` saying how to install it. Blocks only on writing the file; no thread, no
global state (pyplot is never used).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.core.errors import ConfigError
from supervisor.core.exitcodes import ExitCode

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from supervisor.gang.goodput import Gap, Report, Span

SUFFIXES = (".png", ".svg")
MISSING = "the picture needs matplotlib: pip install 'supervise[plot]'"

# One colour per class, fixed so that pictures of different runs compare at a glance:
# green for success, blues for "told to leave", warm colours for failures.
COLOURS: dict[str, str] = {
    ExitCode.SUCCEEDED.name: "#3a9b46",
    ExitCode.PREEMPTED.name: "#4c78a8",
    ExitCode.PEER_LEFT.name: "#9ecae1",
    ExitCode.DEVICE_DEGRADED.name: "#f2a541",
    ExitCode.DEVICE_FAILED.name: "#d62728",
    ExitCode.HANG.name: "#8e6bbf",
    ExitCode.TRAINING_FAILED.name: "#8c564b",
    ExitCode.INFRA_FAILED.name: "#17becf",
    ExitCode.CONFIG_ERROR.name: "#e377c2",
}
NO_VERDICT = "#b5b5b5"
OTHER = ("#7f7f7f", "#bcbd22", "#393b79", "#637939")  # names this module does not know
NEUTRAL = "#555555"  # downtime not caused by a failure: the gang's start, routine work

BAR = 0.56  # bar height, in lanes
DPI = 150
WIDTH_IN = 12.0
LEFT_IN, RIGHT_IN = 1.55, 0.3  # room for the lane labels
LABEL_CHARS = 18  # what fits in LEFT_IN at 9 points
LANE_IN, LANE_MIN_IN = 0.42, 0.05
LANES_IN = 12.0  # all lanes together, once there are enough to squeeze
TOP_IN = 0.5  # room for the title
LEGEND_COLUMNS = 6
LEGEND_ROW_IN = 0.22
LEGEND_FOOT_IN = 0.1  # under the legend
AXIS_IN = 0.6  # the x axis's ticks and label, under the lanes


def draw(report: Report, path: Path) -> None:
    """Write the picture of `report` to `path`: PNG or SVG, by the suffix.

    Raises `ConfigError` (a `ValueError`) for another suffix or when matplotlib is not
    installed, and `OSError` when the file cannot be written.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"cannot draw {str(path)!r}: the picture is written as "
            + " or ".join(SUFFIXES)
            + ", chosen by the file's suffix"
        )
    fig = figure(report)  # raises ConfigError first where matplotlib is missing
    from matplotlib import rc_context

    # An SVG keeps its text as text, not glyph outlines: searchable, and a third the size.
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(path, format=suffix[1:], dpi=DPI)


def figure(report: Report) -> Figure:
    """The picture of `report` as a matplotlib `Figure`, not yet saved anywhere.

    Raises `ConfigError` where matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ConfigError(MISSING) from err

    lanes = list(report.lanes) or sorted({s.lane for s in report.spans})
    row = {lane: i for i, lane in enumerate(lanes)}
    wall = report.end - report.start if report.end > report.start else 1.0
    unit, per = _unit(wall)

    spans = [s for s in report.spans if s.lane in row]
    classes = _classes(spans)
    colour = _colours(classes)

    # Fixed inches for the title, each lane, the x axis and each legend row, so that text
    # keeps its size whatever the number of lanes.
    legend_rows = -(-len(classes) // LEGEND_COLUMNS) + 1
    bottom_in = AXIS_IN + LEGEND_ROW_IN * legend_rows + LEGEND_FOOT_IN
    lane_in = _lane_height(len(lanes))
    lanes_in = lane_in * max(len(lanes), 2)
    height_in = TOP_IN + lanes_in + bottom_in
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI)
    plot_w = WIDTH_IN - LEFT_IN - RIGHT_IN
    ax = fig.add_axes(
        (LEFT_IN / WIDTH_IN, bottom_in / height_in, plot_w / WIDTH_IN, lanes_in / height_in)
    )
    scale = _Scale(report.start, per, plot_w * DPI / wall, lane_in * BAR * DPI, row)

    _bars(ax, scale, spans, classes, colour)
    hatched, plain = _overlays(ax, scale, spans)
    dense = _commits(ax, scale, spans, lanes)
    gaps = [g for g in report.gaps if g.lane in row and g.end > g.start]
    _downtime(ax, scale, gaps, colour)

    _axes(ax, report, lanes, unit, wall / per, lane_in)
    _legend(fig, classes, colour, spans, gaps, hatched, plain and not hatched, dense)
    ax.set_title(_title(report, spans), fontsize=11, loc="left", pad=10)
    return fig


@dataclass(frozen=True)
class _Scale:
    """From the report's Unix seconds and lanes to the axes' units, and their pixels."""

    start: float  # the run's start: x = 0
    per: float  # seconds per x unit
    px_per_s: float  # pixels per second, on the saved image
    tall: float  # a bar's height in pixels
    row: Mapping[str, int]  # lane -> its y

    def x(self, t: float) -> float:
        return (t - self.start) / self.per

    def box(self, lane: str, t0: float, t1: float) -> tuple[int, float, float]:
        return self.row[lane], self.x(t0), self.x(t1)

    def pixels(self, t0: float, t1: float) -> float:
        return (t1 - t0) * self.px_per_s


def _bars(
    ax: Any,
    scale: _Scale,
    spans: list[Span],
    classes: list[str | None],
    colour: Mapping[str | None, str],
) -> None:
    """The attempts: one collection per class. White edges separate attempts that touch,
    only where bars are big enough for an edge not to repaint them."""
    edged = _median([scale.pixels(s.start, s.end) for s in spans]) > 8 and scale.tall >= 6
    by_class: dict[str | None, list[Span]] = defaultdict(list)
    for s in spans:
        by_class[s.name].append(s)
    for name in classes:
        _boxes(
            ax,
            [scale.box(s.lane, s.start, s.end) for s in by_class[name]],
            facecolor=colour[name],
            edgecolor="white",
            linewidth=0.6 if edged else 0,
            zorder=2,
        )


def _overlays(ax: Any, scale: _Scale, spans: list[Span]) -> tuple[bool, bool]:
    """Init and restore veiled, lost work hatched (plain dark where a hatch would not show),
    the stalled stretch darkened. Whether any lost work was hatched, and any drawn plain."""
    _boxes(
        ax,
        [
            scale.box(s.lane, s.start, s.first_step_at if s.first_step_at is not None else s.end)
            for s in spans
        ],
        facecolor=(1, 1, 1, 0.55),
        linewidth=0,
        zorder=3,
    )
    lost = [(s.lane, *s.lost) for s in spans if s.lost]
    seen = [b for b in lost if scale.pixels(b[1], b[2]) >= 6 and scale.tall >= 8]
    hidden = [b for b in lost if not (scale.pixels(b[1], b[2]) >= 6 and scale.tall >= 8)]
    hatch = {"facecolor": "none", "edgecolor": (0, 0, 0, 0.6), "hatch": "////"}
    _boxes(ax, [scale.box(*b) for b in seen], linewidth=0, zorder=4, **hatch)
    _boxes(ax, [scale.box(*b) for b in hidden], facecolor=(0, 0, 0, 0.3), linewidth=0, zorder=4)
    _boxes(
        ax,
        [scale.box(s.lane, s.stalled_from, s.end) for s in spans if s.stalled_from is not None],
        facecolor=(0.1, 0.1, 0.1, 0.55),
        linewidth=0,
        zorder=5,
    )
    return bool(seen), bool(hidden)


def _commits(ax: Any, scale: _Scale, spans: list[Span], lanes: list[str]) -> set[str]:
    """Checkpoint commits as ticks standing on the bars, one collection. Where a lane's
    commits would stand under 5 pixels apart on average (a long run), only each attempt's
    last commit is drawn: the step its successor resumed from, which decides what was lost.
    Returns those lanes."""
    counts: dict[str, int] = defaultdict(int)
    for s in spans:
        counts[s.lane] += len(s.commits)
    width = scale.pixels(
        min((s.start for s in spans), default=0.0), max((s.end for s in spans), default=0.0)
    )
    dense = {lane for lane in lanes if counts[lane] and width / counts[lane] < 5}
    top = -BAR / 2
    _lines(
        ax,
        [
            (
                (scale.x(at), scale.row[s.lane] + top - 0.16),
                (scale.x(at), scale.row[s.lane] + top + 0.06),
            )
            for s in spans
            for _step, at in (s.commits[-1:] if s.lane in dense else s.commits)
        ],
        colors="#222222",
        linewidths=0.8,
        zorder=6,
    )
    return dense


def _downtime(ax: Any, scale: _Scale, gaps: list[Gap], colour: Mapping[str | None, str]) -> None:
    """A thin line through the empty space between attempts, coloured by its cause."""
    _lines(
        ax,
        [
            ((scale.x(g.start), scale.row[g.lane]), (scale.x(g.end), scale.row[g.lane]))
            for g in gaps
        ],
        colors=[colour.get(g.cause, NEUTRAL) for g in gaps],
        linewidths=1.6,
        zorder=1,
    )


def _unit(wall: float) -> tuple[str, float]:
    """Hours for a long run, minutes for a short one, seconds for a few minutes."""
    if wall >= 3 * 3600:
        return "hours", 3600.0
    if wall >= 3 * 60:
        return "minutes", 60.0
    return "seconds", 1.0


def _classes(spans: Iterable[Span]) -> list[str | None]:
    """The classes present, in the contract's order; unknown names after, then no verdict."""
    present = {s.name for s in spans}
    known = [m.name for m in ExitCode if m.name in present]
    unknown = sorted(n for n in present if n is not None and n not in COLOURS)
    return [*known, *unknown, *([None] if None in present else [])]


def _colours(classes: list[str | None]) -> dict[str | None, str]:
    """Every class's colour; a name this module does not know gets one of `OTHER`."""
    colour: dict[str | None, str] = {**COLOURS, None: NO_VERDICT}
    unknown = [name for name in classes if name not in colour]
    colour.update((name, OTHER[i % len(OTHER)]) for i, name in enumerate(unknown))
    return colour


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _boxes(ax: Any, boxes: list[tuple[int, float, float]], **style: Any) -> None:
    """One collection of bars, each `(row, x0, x1)`; nothing for none."""
    if not boxes:
        return
    from matplotlib.collections import PolyCollection

    h = BAR / 2
    verts = [[(a, r - h), (b, r - h), (b, r + h), (a, r + h)] for r, a, b in boxes]
    ax.add_collection(PolyCollection(verts, **style))


def _lines(ax: Any, segments: list[Any], **style: Any) -> None:
    if not segments:
        return
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(segments, **style))


def _lane_height(lanes: int) -> float:
    """Inches per lane: roomy for a few, squeezed to keep a big gang's picture on a page."""
    return min(LANE_IN, max(LANE_MIN_IN, LANES_IN / max(lanes, 1)))


def _axes(
    ax: Any, report: Report, lanes: list[str], unit: str, span: float, lane_in: float
) -> None:
    ax.set_xlim(0, span)
    ax.set_ylim(max(len(lanes), 1) - 0.5, -0.5)  # the first lane on top
    # Two-line labels (the node's name under the rank) where a lane has room; where lanes
    # are thinner than a line of text, every few lanes only.
    every = max(1, math.ceil(0.13 / lane_in))
    shown = range(0, len(lanes), every)
    nodes: dict[str, set[str]] = defaultdict(set)
    for s in report.spans:
        if s.node:
            nodes[s.lane].add(s.node)
    ax.set_yticks(
        shown,
        [_lane_label(lanes[i], nodes[lanes[i]] if lane_in >= 0.3 else None) for i in shown],
        fontsize=9 if lane_in >= 0.3 else 7,
    )
    ax.tick_params(axis="y", length=0)
    started = datetime.fromtimestamp(report.start, UTC).strftime("%Y-%m-%d %H:%M UTC")
    ax.set_xlabel(f"{unit} since the run started ({started})", fontsize=9)
    ax.tick_params(axis="x", labelsize=9)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def _lane_label(lane: str, nodes: set[str] | None) -> str:
    """The lane (`node 3`: a node rank), then, given the lane's `nodes`, the Kubernetes
    node's name, or how many nodes the lane ran on. Long names lose their middle."""
    label = _shorten(lane)
    if not nodes:
        return label
    if len(nodes) == 1:
        return f"{label}\n{_shorten(next(iter(nodes)))}"
    return f"{label}\n{len(nodes)} nodes"


def _shorten(name: str, most: int = LABEL_CHARS) -> str:
    """`name` in at most `most` characters: its start and its end, which tell pods and nodes
    apart (a generated suffix, a pool's number), around an ellipsis."""
    if len(name) <= most:
        return name
    tail = (most - 1) // 2
    return f"{name[: most - 1 - tail]}…{name[-tail:]}"


def _legend(
    fig: Any,
    classes: list[str | None],
    colour: Mapping[str | None, str],
    spans: list[Span],
    gaps: list[Gap],
    hatched: bool,
    plain_lost: bool,
    dense: set[str],
) -> None:
    """Below the axes, so it never covers a bar: a row or two of the classes present, then a
    row of the marks used."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    kinds = [
        Patch(facecolor=colour[c], label=c if c is not None else "no verdict") for c in classes
    ]
    marks: list[Any] = []
    if any(s.first_step_at is None or s.first_step_at > s.start for s in spans):
        marks.append(Patch(facecolor="#e4e4e4", edgecolor="#aaaaaa", label="init / restore"))
    if hatched:
        marks.append(Patch(facecolor="white", edgecolor="#555555", hatch="////", label="lost"))
    elif plain_lost:
        marks.append(Patch(facecolor="#999999", label="lost"))
    if any(s.stalled_from is not None for s in spans):
        marks.append(Patch(facecolor="#444444", label="stalled"))
    if any(s.commits for s in spans):
        label = "last checkpoint of each attempt" if dense else "checkpoint"
        marks.append(Line2D([], [], color="#222222", marker="|", linestyle="none", label=label))
    if gaps:
        marks.append(Line2D([], [], color=NEUTRAL, linewidth=1.6, label="downtime (by cause)"))
    style = {"fontsize": 8, "frameon": False, "handlelength": 1.6, "columnspacing": 1.4}
    rows = -(-len(kinds) // LEGEND_COLUMNS)
    height = fig.get_figheight()
    top = (LEGEND_FOOT_IN + LEGEND_ROW_IN * (rows + 1)) / height
    for handles, y in ((kinds, top), (marks, top - LEGEND_ROW_IN * rows / height)):
        if not handles:
            continue
        columns = min(len(handles), LEGEND_COLUMNS)
        fig.legend(
            handles=_row_major(handles, columns),
            loc="upper left",
            bbox_to_anchor=(LEFT_IN / WIDTH_IN - 0.01, y),
            ncol=columns,
            borderpad=0,
            **style,
        )


def _row_major(handles: list[Any], columns: int) -> list[Any]:
    """`handles` reordered so that matplotlib, which fills a legend column by column, shows
    them row by row in the given order."""
    rows = -(-len(handles) // columns)
    return [
        handles[r * columns + c]
        for c in range(columns)
        for r in range(rows)
        if r * columns + c < len(handles)
    ]


def _title(report: Report, spans: list[Span]) -> str:
    goodput = report.goodput
    shown = "n/a" if goodput is None else f"{goodput:.1%}"
    n = report.interruptions.count
    return (
        f"Goodput {shown}  ·  {_duration(report.end - report.start)} on {len(report.lanes)} "
        f"node{'s' if len(report.lanes) != 1 else ''}  ·  {len(spans)} attempt"
        f"{'s' if len(spans) != 1 else ''}  ·  {n} interruption{'s' if n != 1 else ''}"
    )


def _duration(seconds: float) -> str:
    if seconds >= 3 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
