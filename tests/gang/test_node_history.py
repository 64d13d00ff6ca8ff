"""Bounded free exits: the history of one node's device verdicts, and when it counts."""

from __future__ import annotations

import pytest

from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.gang import node_history
from supervisor.gang.node_history import (
    DEVICE_CLASSES,
    bounded,
    counted_verdict,
    preflight_refusal,
)
from supervisor.gang.records import Role, Verdict

T0 = 1_700_000_000.0


def v(
    n: int, code: ExitCode, node: str = "gpu-7", bounded_from: str | None = None, gpu: str = ""
) -> Verdict:
    evidence = ({"source": "gpu", "kind": "xid", "gpu_uuid": gpu},) if gpu else ()
    return Verdict(
        id=f"train-0-p{n}.r0.a1.{n:04x}",
        pod=f"train-0-p{n}",
        wall=T0 + 60 * n,
        name=code.name,
        code=code.code,
        role=Role.CAUSE,
        reason=f"{code.name} number {n}.",
        evidence=evidence,
        node=node,
        bounded_from=bounded_from,
    )


def history(verdicts: list[Verdict], node: str = "gpu-7", **kw: object) -> node_history.NodeHistory:
    return node_history.node_history(verdicts, node, **kw)  # type: ignore[arg-type]


def test_history_holds_this_nodes_device_verdicts_oldest_first() -> None:
    verdicts = [
        v(3, ExitCode.DEVICE_DEGRADED),
        v(1, ExitCode.DEVICE_FAILED, gpu="GPU-aaaa"),
        v(2, ExitCode.DEVICE_FAILED, node="gpu-8"),  # another node
        v(4, ExitCode.PREEMPTED),  # not a device verdict
        v(5, ExitCode.PEER_LEFT),
        v(6, ExitCode.TRAINING_FAILED),
        v(7, ExitCode.INFRA_FAILED, bounded_from="DEVICE_FAILED"),  # the bound counted it
        v(8, ExitCode.INFRA_FAILED),  # a plain INFRA_FAILED: not the node's fault
    ]
    got = history(verdicts)
    assert [e.pod for e in got.events] == ["train-0-p1", "train-0-p3", "train-0-p7"]
    assert got.events[0].gpu == "GPU-aaaa" and got.events[1].gpu is None
    assert len(history(verdicts, exclude=verdicts[1].id)) == 2
    assert len(history(verdicts, node="gpu-9")) == 0


@pytest.mark.parametrize(
    ("before", "code", "becomes_counted"),
    [
        (3, ExitCode.DEVICE_FAILED, True),  # three device verdicts: the fourth is counted
        (3, ExitCode.DEVICE_DEGRADED, True),
        (5, ExitCode.DEVICE_FAILED, True),
        (2, ExitCode.DEVICE_FAILED, False),
        (0, ExitCode.DEVICE_FAILED, False),
        (3, ExitCode.PREEMPTED, False),  # not bounded: says nothing about the node
        (3, ExitCode.PEER_LEFT, False),  # not bounded: its incident is another pod's
        (3, ExitCode.HANG, False),  # counted anyway
    ],
)
def test_the_next_device_verdict_past_the_limit_is_counted(
    before: int, code: ExitCode, becomes_counted: bool
) -> None:
    past = [v(n, ExitCode.DEVICE_FAILED, gpu=f"GPU-{n}") for n in range(before)]
    finding = bounded(code, history(past), limit=3)
    assert (finding is not None) is becomes_counted
    if finding is None:
        return
    assert (finding.exit_code, finding.urgency, finding.source) == (
        ExitCode.INFRA_FAILED,
        Urgency.STOP,
        "ledger",
    )
    assert "gpu-7" in finding.summary and f"{before} device verdicts" in finding.summary
    detail = finding.detail
    assert detail["node"] == "gpu-7" and detail["limit"] == 3
    assert detail["device_verdicts"] == before and detail["bounded_from"] == code.name
    assert [h["pod"] for h in detail["history"]] == [f"train-0-p{n}" for n in range(before)]  # type: ignore[union-attr]
    assert detail["history"][0]["gpu_uuid"] == "GPU-0"  # type: ignore[index]


def test_the_evidence_lists_the_newest_entries_and_the_exact_count() -> None:
    past = [v(n, ExitCode.DEVICE_FAILED) for n in range(25)]
    finding = bounded(ExitCode.DEVICE_FAILED, history(past), limit=3)
    assert finding is not None and finding.detail["device_verdicts"] == 25
    listed = finding.detail["history"]
    assert len(listed) == node_history.MAX_LISTED  # type: ignore[arg-type]
    assert listed[-1]["pod"] == "train-0-p24"  # type: ignore[index]


def test_classes_are_configurable_but_the_limit_must_be_at_least_one() -> None:
    past = [v(n, ExitCode.PREEMPTED) for n in range(2)]
    wider = DEVICE_CLASSES | {ExitCode.PREEMPTED}
    assert bounded(ExitCode.PREEMPTED, history(past, classes=wider), 2, classes=wider)
    for limit in (0, -1):
        with pytest.raises(ValueError, match="at least 1"):
            bounded(ExitCode.DEVICE_FAILED, history([]), limit)
        with pytest.raises(ValueError, match="at least 1"):
            preflight_refusal(history([]), limit)


def test_preflight_refuses_a_node_that_used_up_its_free_exits() -> None:
    past = [v(n, ExitCode.DEVICE_FAILED) for n in range(3)]
    assert preflight_refusal(history(past[:2]), limit=3) is None
    refusal = preflight_refusal(history(past), limit=3)
    assert refusal is not None and refusal.exit_code is ExitCode.INFRA_FAILED
    assert "gpu-7" in refusal.summary and "not started" in refusal.summary
    assert len(refusal.detail["history"]) == 3  # type: ignore[arg-type]


def test_counted_verdict_puts_the_bound_first() -> None:
    device = Finding("gpu", "xid", "Xid 79", ExitCode.DEVICE_FAILED, Urgency.STOP)
    past = [v(n, ExitCode.DEVICE_FAILED) for n in range(3)]
    finding = bounded(ExitCode.DEVICE_FAILED, history(past), 3)
    assert finding is not None
    assert counted_verdict(finding, [device]) == (
        ExitCode.INFRA_FAILED,
        finding.summary,
        (finding, device),
    )
