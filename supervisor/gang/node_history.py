"""Bounded free exits: a node whose GPUs keep failing ends in a counted failure (L1).

DEVICE_FAILED and DEVICE_DEGRADED are not counted (Ignore), because a new pod usually lands
on a healthy node. But nothing moves it off the same one: a Job whose replacement keeps
landing on a bad GPU loops forever without using a retry. The ledger knows the node name
of every verdict, so after `limit` device verdicts from one node in this run, the next
device verdict on that node is INFRA_FAILED (counted): the Job ends in a clear failure
whose evidence names the node and lists its history, instead of a loop.

* `node_history` collects a node's device verdicts from the ledger (a verdict the bound
  already turned into INFRA_FAILED still counts: the node did fail).
* `bounded` says whether this attempt's verdict must be counted, with the finding to put
  first in its evidence.
* `preflight_refusal` is the same history for `--preflight`: a node that has used up its
  free exits is refused before training starts rather than after its next failure.

Only device classes are bounded by default. PREEMPTED says nothing about the node (and a
disrupted pod is Ignored whatever it exits with), and PEER_LEFT names a cause on another
pod: counting it would count that pod's incident a second time.

Pure: no I/O; safe on any thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.gang.records import Verdict

DEVICE_CLASSES: frozenset[ExitCode] = frozenset({ExitCode.DEVICE_FAILED, ExitCode.DEVICE_DEGRADED})
MAX_LISTED = 10  # history entries named in the evidence (the newest); the count is exact


@dataclass(frozen=True)
class NodeEvent:
    """One device verdict on the node."""

    wall: float  # the writer's clock
    name: str  # its class, as the pod exited (INFRA_FAILED when the bound counted it)
    pod: str
    attempt: str
    reason: str
    gpu: str | None  # the GPU UUID its evidence names, if any

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"wall": self.wall, "class": self.name, "pod": self.pod}
        if self.gpu:
            out["gpu_uuid"] = self.gpu
        out["reason"] = self.reason[:200]
        return out


@dataclass(frozen=True)
class NodeHistory:
    node: str
    events: tuple[NodeEvent, ...]  # oldest first

    def __len__(self) -> int:
        return len(self.events)


def _gpu(verdict: Verdict) -> str | None:
    for item in verdict.evidence:
        uuid = item.get("gpu_uuid")
        if isinstance(uuid, str) and uuid:
            return uuid
    return None


def node_history(
    verdicts: Iterable[Verdict],
    node: str,
    *,
    classes: frozenset[ExitCode] = DEVICE_CLASSES,
    exclude: str | None = None,
) -> NodeHistory:
    """The verdicts of `classes` from `node` in this run, oldest first, leaving out the
    attempt `exclude` (this one)."""
    names = {c.name for c in classes}
    events = [
        NodeEvent(v.wall, v.name, v.pod, v.id, v.reason, _gpu(v))
        for v in verdicts
        if v.node == node and v.id != exclude and (v.name in names or v.bounded_from in names)
    ]
    return NodeHistory(node, tuple(sorted(events, key=lambda e: (e.wall, e.attempt))))


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"the free exits per node must be at least 1, not {limit}")


def _detail(history: NodeHistory, limit: int) -> dict[str, object]:
    return {
        "node": history.node,
        "limit": limit,
        "device_verdicts": len(history),
        "history": [e.as_dict() for e in history.events[-MAX_LISTED:]],
    }


def bounded(
    code: ExitCode,
    history: NodeHistory,
    limit: int,
    *,
    classes: frozenset[ExitCode] = DEVICE_CLASSES,
) -> Finding | None:
    """The INFRA_FAILED finding that replaces a verdict of `code` on a node that already
    had `limit` (or more) verdicts of `classes` in this run; None when it stays free.
    Raises ValueError for a `limit` below 1."""
    _check_limit(limit)
    if code not in classes or len(history) < limit:
        return None
    summary = (
        f"Node {history.node} already had {len(history)} device verdicts in this run "
        f"(free exits per node: {limit}); this {code.name} is counted as INFRA_FAILED so "
        "that a Job on a bad node ends instead of looping. Drain or repair the node."
    )
    detail = {**_detail(history, limit), "bounded_from": code.name}
    return Finding(
        "ledger", "node_free_exits_used", summary, ExitCode.INFRA_FAILED, Urgency.STOP, detail
    )


def preflight_refusal(history: NodeHistory, limit: int) -> Finding | None:
    """The finding that refuses to start training on a node that has used up its free exits
    (`limit` or more device verdicts in this run), or None. Raises ValueError for a `limit`
    below 1."""
    _check_limit(limit)
    if len(history) < limit:
        return None
    summary = (
        f"Node {history.node} already had {len(history)} device verdicts in this run "
        f"(free exits per node: {limit}); training is not started here again. Drain or "
        "repair the node."
    )
    return Finding(
        "ledger",
        "node_free_exits_used",
        summary,
        ExitCode.INFRA_FAILED,
        Urgency.STOP,
        _detail(history, limit),
    )


def counted_verdict(
    finding: Finding, evidence: Iterable[Finding]
) -> tuple[ExitCode, str, tuple[Finding, ...]]:
    """The verdict after `bounded` returned `finding`: INFRA_FAILED with the bound's
    summary as the reason and the bound first in the evidence (the device finding follows)."""
    return ExitCode.INFRA_FAILED, finding.summary, (finding, *evidence)
