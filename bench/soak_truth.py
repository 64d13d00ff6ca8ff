"""Ground truth for the goodput soak: where each lane's time went, from the bench's own books.

Inputs are what `bench_goodput.py` saw itself, never the run ledger: for each pod, when the
bench started it (`start`, the fork) and reaped it (`end`), when its trainer process died
(`trainer_exit`, polled from /proc), and the trainer's own records (`soak_trainer.py`: each
step's wall time, each save and load with its start, end and step).

Buckets, per pod, add up to `end - start` exactly (the names are `supervisor.gang.goodput`'s):

- restore, checkpoint: the measured loads and saves;
- init: from the pod's start to its first recorded step, less the loads and saves before it;
- productive / lost: each later step's interval (the wall time since the step before it,
  less any save in between), kept when its step is at most the *kept* step, else lost. The
  kept step is the one the lane's next pod resumed from (its load; 0 if it loaded nothing);
  for a lane's last pod, its own last save (`keep_last=True`: all its steps, for a run
  that is taken to go on);
- stalled: from the last step until the trainer stopped, less saves in that stretch (a hang
  until it was seen, a peer's death until it was noticed). The trainer stopped when its
  script returned or raised (the wrapper's `exit` record) or, killed, when it died;
- teardown: from then to the pod's end (interpreter exit, torchrun, supervise).

Per lane, downtime is every stretch of the run's span (first start to last end) in which
the lane had no pod. Pure: no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BUCKETS = (
    "productive",
    "init",
    "restore",
    "checkpoint",
    "lost",
    "stalled",
    "teardown",
    "downtime",
    "unknown",
)


@dataclass(frozen=True)
class PodBooks:
    """One pod as the bench saw it, with its trainer's records (JSON objects)."""

    name: str
    lane: int
    start: float
    end: float
    trainer_exit: float | None
    records: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


@dataclass(frozen=True)
class Truth:
    start: float
    end: float
    lanes: int
    buckets: Mapping[str, float]
    per_pod: Mapping[str, Mapping[str, float]]

    @property
    def total_s(self) -> float:
        return (self.end - self.start) * self.lanes

    @property
    def goodput(self) -> float:
        return self.buckets["productive"] / self.total_s if self.total_s > 0 else 0.0


def truth(pods: Iterable[PodBooks], keep_last: bool = False) -> Truth:
    """The ground-truth buckets of a run of `pods` (every pod the bench started)."""
    pods = sorted(pods, key=lambda p: (p.lane, p.start))
    start = min(p.start for p in pods)
    end = max(p.end for p in pods)
    totals = dict.fromkeys(BUCKETS, 0.0)
    per_pod: dict[str, Mapping[str, float]] = {}
    lanes = sorted({p.lane for p in pods})
    for lane in lanes:
        mine = [p for p in pods if p.lane == lane]
        edge = start
        for index, pod in enumerate(mine):
            following = mine[index + 1] if index + 1 < len(mine) else None
            totals["downtime"] += max(0.0, pod.start - edge)
            buckets = pod_buckets(pod, _kept(pod, following, keep_last))
            for name, seconds in buckets.items():
                totals[name] += seconds
            per_pod[pod.name] = buckets
            edge = max(edge, pod.end)
        totals["downtime"] += max(0.0, end - edge)
    return Truth(start, end, len(lanes), totals, per_pod)


def pod_buckets(pod: PodBooks, kept: int | None) -> dict[str, float]:
    """One pod's buckets, adding up to its lifetime; steps after `kept` are lost."""
    records = [r for r in pod.records if r.get("rank", 0) == 0]
    steps = [(r["step"], r["wall"]) for r in records if r["event"] == "step"]
    saves = _spans(records, "save")
    loads = _spans(records, "load")
    left = [r["wall"] for r in records if r["event"] == "exit"]
    died = min([pod.trainer_exit or pod.end, pod.end, *left])
    out = dict.fromkeys(("productive", "init", "restore", "checkpoint"), 0.0)
    out["restore"] = sum(b - a for a, b in loads)
    out["checkpoint"] = sum(b - a for a, b in saves)
    out |= {"lost": 0.0, "stalled": 0.0, "teardown": pod.end - died}
    if not steps:
        out["init"] = died - pod.start - out["restore"] - out["checkpoint"]
        return out
    first = steps[0][1]
    out["init"] = first - pod.start - _within(loads + saves, pod.start, first)
    for (_, before), (step, at) in itertools.pairwise(steps):
        interval = at - before - _within(saves, before, at)
        out["productive" if kept is not None and step <= kept else "lost"] += interval
    last = steps[-1][1]
    out["stalled"] = died - last - _within(saves, last, died)
    return out


def _kept(pod: PodBooks, following: PodBooks | None, keep_last: bool) -> int | None:
    if following is not None:
        resumed = [r.get("step") for r in following.records if r["event"] == "load_end"]
        return resumed[0] if resumed and resumed[0] is not None else 0
    if keep_last:
        return 1 << 62
    saved = [r["step"] for r in pod.records if r["event"] == "save_end"]
    if saved:
        return max(saved)
    resumed = [r.get("step") for r in pod.records if r["event"] == "load_end"]
    return resumed[0] if resumed else None


def _spans(records: Sequence[Mapping[str, Any]], what: str) -> list[tuple[float, float]]:
    starts = [r["wall"] for r in records if r["event"] == f"{what}_start"]
    ends = [r["wall"] for r in records if r["event"] == f"{what}_end"]
    return list(zip(starts, ends, strict=False))  # a save cut off by death has no end


def _within(spans: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in spans)
