"""The goodput picture: real PNG and SVG files from hand-built reports, small and large.

`small_report()` and `synthetic_report()` build `Report`s without a ledger, for these tests
and for anyone who wants a picture to look at:

    python -c "from tests.cli.test_plot import *; draw(synthetic_report(), Path('run.png'))"
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from supervisor.cli.plot import MISSING, draw, figure
from supervisor.core.errors import ConfigError
from supervisor.core.exitcodes import ExitCode
from supervisor.gang.goodput import (
    DOWNTIME,
    INIT,
    LOST,
    PRODUCTIVE,
    STALLED,
    TEARDOWN,
    Gap,
    Interruptions,
    Report,
    Span,
    StepTime,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_795_000_000.0  # a Unix time in 2026
PNG = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"
CLASSES = {m.name for m in ExitCode}
FAILURES = (
    "PREEMPTED",
    "PREEMPTED",
    "PREEMPTED",
    "DEVICE_DEGRADED",
    "DEVICE_FAILED",
    "HANG",
    "TRAINING_FAILED",
    "INFRA_FAILED",
)


def _report(
    lanes: list[str], spans: list[Span], gaps: list[Gap], end: float, buckets: dict
) -> Report:
    failed = [s for s in spans if s.name not in (None, "SUCCEEDED", "PEER_LEFT")]
    by_class: dict[str, int] = {}
    for s in failed:
        by_class[s.name] = by_class.get(s.name, 0) + 1
    total = (end - T0) * len(lanes)
    buckets = {**buckets, TEARDOWN: total - sum(buckets.values())}
    return Report(
        start=T0,
        end=end,
        lanes=tuple(lanes),
        spans=tuple(spans),
        gaps=tuple(gaps),
        buckets=buckets,
        by_cause={},
        interruptions=Interruptions(count=len(failed), by_class=by_class),
        step_time=StepTime(),
    )


def small_report() -> Report:
    """Three attempts on two lanes, about two hours: a hang and its restart on node 0, and
    a pod on node 1 that left no verdict."""
    m = 60.0
    hang = Span(
        id="a1",
        lane="node 0",
        pod="job-0-a",
        node="gpu-node-a",
        start=T0,
        end=T0 + 50 * m,
        name="HANG",
        cause="HANG",
        first_step_at=T0 + 4 * m,
        resume_step=0,
        last_step=900,
        kept_step=800,
        commits=((200, T0 + 14 * m), (400, T0 + 23 * m), (600, T0 + 32 * m), (800, T0 + 37 * m)),
        lost=(T0 + 37 * m, T0 + 42 * m),
        stalled_from=T0 + 42 * m,
    )
    done = Span(
        id="a2",
        lane="node 0",
        pod="job-0-b",
        node="gpu-node-c",
        start=T0 + 55 * m,
        end=T0 + 120 * m,
        name="SUCCEEDED",
        cause=None,
        first_step_at=T0 + 61 * m,
        resume_step=800,
        last_step=2000,
        kept_step=2000,
        commits=((1000, T0 + 75 * m), (1500, T0 + 96 * m), (2000, T0 + 118 * m)),
    )
    silent = Span(
        id="b1",
        lane="node 1",
        pod="job-1-a",
        node="gpu-node-b",
        start=T0 + 1 * m,
        end=T0 + 120 * m,
        name=None,
        cause=None,
        first_step_at=T0 + 5 * m,
        commits=((200, T0 + 15 * m), (1000, T0 + 76 * m)),
    )
    gaps = [Gap("node 0", T0 + 50 * m, T0 + 55 * m, "HANG"), Gap("node 1", T0, T0 + 1 * m, "start")]
    productive = (37 - 4) * m + (120 - 61) * m
    return _report(
        ["node 0", "node 1"],
        [hang, done, silent],
        gaps,
        T0 + 120 * m,
        {PRODUCTIVE: productive, LOST: 5 * m, STALLED: 8 * m, DOWNTIME: 6 * m},
    )


def synthetic_report(attempts: int = 1000, lanes: int = 8, seed: int = 7) -> Report:
    """A gang of `lanes` nodes through `attempts // lanes` incidents, seeded: each incident
    stops one node with a failure class and the others with PEER_LEFT naming it; every lane
    then waits out the downtime and restarts from its last commit. The last attempt on each
    lane succeeds. Spans and gaps tile each lane from the run's start to its end."""
    rng = random.Random(seed)
    rounds = attempts // lanes
    names = [f"node {i}" for i in range(lanes)]
    spans: list[Span] = []
    gaps: list[Gap] = []
    buckets = {PRODUCTIVE: 0.0, INIT: 0.0, LOST: 0.0, STALLED: 0.0, DOWNTIME: 0.0}
    t = T0
    step = 0
    previous = "start"  # the cause of a lane's late start
    for k in range(rounds):
        last = k == rounds - 1
        length = rng.uniform(1200, 9000)
        end = t + length
        culprit = rng.randrange(lanes)
        failure = "SUCCEEDED" if last else rng.choice(FAILURES)
        stall = 180.0 if failure == "HANG" else 0.0
        downtime = 0.0 if last else rng.uniform(60, 900)
        for i, lane in enumerate(names):
            start = t + (rng.uniform(0, 30) if k else 0.0)
            if start > t:
                gaps.append(Gap(lane, t, start, previous))
            first = start + rng.uniform(60, 300)
            every = 600.0
            commits = []
            at = first + every
            while at < end - stall - 30:
                step += 100
                commits.append((step, at))
                at += every
            kept = commits[-1][1] if commits and not last else end - stall
            name = failure if (i == culprit or last) else "PEER_LEFT"
            spans.append(
                Span(
                    id=f"r{k}-{lane}",
                    lane=lane,
                    pod=f"job-{lane}-{k}",
                    node=f"gpu-node-{i:02d}" if rng.random() > 0.02 else f"spare-{k % 3}",
                    start=start,
                    end=end,
                    name=name,
                    cause=None if last else failure,
                    first_step_at=first,
                    commits=tuple(commits),
                    lost=None if last else (kept, end - stall),
                    stalled_from=end - stall if stall else None,
                )
            )
            buckets[INIT] += first - start
            buckets[PRODUCTIVE] += max(0.0, kept - first)
            buckets[LOST] += 0.0 if last else end - stall - kept
            buckets[STALLED] += stall
            buckets[DOWNTIME] += downtime + (start - t)
            if downtime:
                gaps.append(Gap(lane, end, end + downtime, failure))
        previous = failure
        t = end + downtime
    return _report(names, spans, gaps, t, buckets)


def _artists(report: Report) -> int:
    ax = figure(report).axes[0]
    return len(ax.collections) + len(ax.patches) + len(ax.lines) + len(ax.texts)


def test_the_synthetic_report_tiles_every_lane() -> None:
    report = synthetic_report()
    assert len(report.spans) == 1000
    for lane in report.lanes:
        pieces = sorted(
            [(s.start, s.end) for s in report.spans if s.lane == lane]
            + [(g.start, g.end) for g in report.gaps if g.lane == lane]
        )
        assert pieces[0][0] == report.start and pieces[-1][1] == report.end
        assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert sum(report.buckets.values()) == pytest.approx(report.total_s)


@pytest.mark.parametrize("build", [small_report, synthetic_report])
def test_png_is_an_image(build, tmp_path: Path) -> None:
    path = tmp_path / "run.png"
    draw(build(), path)
    data = path.read_bytes()
    assert data.startswith(PNG)
    assert len(data) > 10_000  # more than an empty canvas


@pytest.mark.parametrize("build", [small_report, synthetic_report])
def test_svg_parses_and_has_the_title_as_text(build, tmp_path: Path) -> None:
    report = build()
    path = tmp_path / "run.svg"
    draw(report, path)
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    texts = ["".join(e.itertext()) for e in root.iter(f"{SVG}text")]
    title = next(t for t in texts if t.startswith("Goodput"))
    assert f"Goodput {report.goodput:.1%}" in title
    assert f"{len(report.spans)} attempts" in title
    assert f"{report.interruptions.count} interruption" in title


def _labels(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_the_legend_lists_only_the_classes_present() -> None:
    labels = _labels(figure(small_report()))
    assert labels[:3] == ["SUCCEEDED", "HANG", "no verdict"]
    assert not {"PREEMPTED", "PEER_LEFT", "DEVICE_FAILED"} & set(labels)
    large = synthetic_report()
    present = {s.name for s in large.spans}
    assert set(_labels(figure(large))) & CLASSES == present


def _ticks(fig) -> int:
    """The commit ticks: the one collection of vertical segments."""
    from matplotlib.collections import LineCollection

    ax = fig.axes[0]
    vertical = [
        c
        for c in ax.collections
        if isinstance(c, LineCollection) and all(s[0][0] == s[-1][0] for s in c.get_segments())
    ]
    assert len(vertical) == 1
    return len(vertical[0].get_segments())


def test_every_commit_is_a_tick_until_they_would_smear() -> None:
    small = small_report()
    fig = figure(small)
    assert _ticks(fig) == sum(len(s.commits) for s in small.spans) == 9
    assert "checkpoint" in _labels(fig)
    # 10-minute commits over 190 hours: one tick per attempt, at its last commit.
    large = synthetic_report()
    fig = figure(large)
    attempts = sum(1 for s in large.spans if s.commits)
    assert _ticks(fig) == attempts < sum(len(s.commits) for s in large.spans) / 5
    assert "last checkpoint of each attempt" in _labels(fig)


def test_the_time_axis_unit_follows_the_run_length() -> None:
    assert figure(small_report()).axes[0].get_xlabel().startswith("minutes since")
    assert figure(synthetic_report()).axes[0].get_xlabel().startswith("hours since")


def test_the_artists_do_not_grow_with_the_attempts() -> None:
    """Bars are one collection per class and each mark one collection (init, lost hatched,
    lost plain, stalled, ticks, downtime): at most six beyond the classes, however many
    attempts there are."""

    def beyond_classes(report: Report) -> int:
        return _artists(report) - len({s.name for s in report.spans})

    for report in (small_report(), synthetic_report(attempts=80), synthetic_report()):
        assert 0 < beyond_classes(report) <= 6
    assert _artists(synthetic_report(attempts=3000)) == _artists(synthetic_report())


def test_a_big_gang_is_squeezed_onto_a_page() -> None:
    """8 lanes: each labelled with its node rank and node name. 256 lanes: the figure stays about a
    page tall, and labels are one line, on every few lanes."""
    few = figure(synthetic_report())
    labels = [t.get_text() for t in few.axes[0].get_yticklabels()]
    assert labels[0].startswith("node 0\n") and len(labels) == 8
    many = figure(synthetic_report(attempts=512, lanes=256))
    labels = [t.get_text() for t in many.axes[0].get_yticklabels()]
    assert labels[0] == "node 0" and 256 / 4 <= len(labels) < 256
    assert not any("\n" in label for label in labels)
    assert many.get_figheight() < 16


def test_long_pod_and_node_names_keep_their_ends() -> None:
    small = small_report()
    pod, node = "llama-70b-train-worker-1-x7k2p", "gke-prod-a3-megagpu-pool-3-9f8e7d6c-q1w2"
    rename = {"node 1": pod}
    report = dataclasses.replace(
        small,
        lanes=tuple(rename.get(lane, lane) for lane in small.lanes),
        spans=tuple(
            dataclasses.replace(s, lane=pod, node=node) if s.lane == "node 1" else s
            for s in small.spans
        ),
        gaps=tuple(dataclasses.replace(g, lane=rename.get(g.lane, g.lane)) for g in small.gaps),
    )
    labels = [t.get_text() for t in figure(report).axes[0].get_yticklabels()]
    assert labels[0] == "node 0\n2 nodes"
    first, second = labels[1].split("\n")
    assert first.startswith("llama-70b") and first.endswith("x7k2p") and len(first) <= 18
    assert second.startswith("gke-prod") and second.endswith("q1w2") and len(second) <= 18


@pytest.mark.filterwarnings("error")  # matplotlib warns of a singular axis
def test_a_report_with_no_time_still_draws(tmp_path: Path) -> None:
    empty = Report(
        start=T0,
        end=T0,
        lanes=(),
        spans=(),
        gaps=(),
        buckets={},
        by_cause={},
        interruptions=Interruptions(),
        step_time=StepTime(),
    )
    draw(empty, tmp_path / "run.svg")
    assert "Goodput n/a" in (tmp_path / "run.svg").read_text()


def test_another_suffix_is_refused_naming_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png or \.svg") as caught:
        draw(small_report(), tmp_path / "run.pdf")
    assert isinstance(caught.value, ConfigError)  # the CLI exits CONFIG_ERROR
    assert not (tmp_path / "run.pdf").exists()


def test_without_matplotlib_the_error_says_how_to_install_it(tmp_path: Path) -> None:
    """A real interpreter in which `import matplotlib` fails, as where it is not installed."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'matplotlib':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from pathlib import Path\n"
        "from supervisor.cli.plot import draw\n"
        "from tests.cli.test_plot import small_report\n"
        "assert 'matplotlib' not in sys.modules\n"
        "try:\n"
        f"    draw(small_report(), Path({str(tmp_path / 'run.png')!r}))\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, err, sep=': ')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == f"ConfigError: {MISSING}", result.stderr
    assert not (tmp_path / "run.png").exists()


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, supervisor.cli.plot; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "False"
