"""Which verdicts hold a cause and which only saw a peer's failure: a table, pinned."""

from __future__ import annotations

import pytest

from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.core.matchers import DEFAULT_MATCHER, RULES
from supervisor.gang import roles
from supervisor.gang.records import Role

CAUSE, SYMPTOM = Role.CAUSE, Role.SYMPTOM


def found(kind: str, code: ExitCode, urgency: Urgency = Urgency.STOP, **detail: object) -> Finding:
    return Finding("test", kind, f"{kind} happened", code, urgency, detail)


@pytest.mark.parametrize(
    ("code", "deciding", "role"),
    [
        # causes (the list)
        (ExitCode.DEVICE_FAILED, found("xid", ExitCode.DEVICE_FAILED, xid=79), CAUSE),
        (ExitCode.DEVICE_DEGRADED, found("remap_pending", ExitCode.DEVICE_DEGRADED), CAUSE),
        (ExitCode.PREEMPTED, found("external_signal", ExitCode.PREEMPTED), CAUSE),
        (ExitCode.CONFIG_ERROR, found("spawn_failed", ExitCode.CONFIG_ERROR), CAUSE),
        (ExitCode.TRAINING_FAILED, None, CAUSE),  # the child's own exit, no finding
        (
            ExitCode.TRAINING_FAILED,
            found("worker_error", ExitCode.TRAINING_FAILED, Urgency.ON_EXIT),
            CAUSE,
        ),
        (
            ExitCode.TRAINING_FAILED,
            found("cuda_out_of_memory", ExitCode.TRAINING_FAILED, Urgency.ON_EXIT),
            CAUSE,
        ),
        # symptoms: a lost peer
        (ExitCode.INFRA_FAILED, found("peer_connection_lost", ExitCode.INFRA_FAILED), SYMPTOM),
        (ExitCode.INFRA_FAILED, found("nccl_remote_error", ExitCode.INFRA_FAILED), SYMPTOM),
        (ExitCode.INFRA_FAILED, found("dist_network_error", ExitCode.INFRA_FAILED), SYMPTOM),
        (ExitCode.INFRA_FAILED, None, SYMPTOM),  # by class: a store or rendezvous
        # symptoms: a hang inside a collective
        (ExitCode.HANG, found("nccl_collective_timeout", ExitCode.HANG), SYMPTOM),
        (ExitCode.HANG, found("heartbeat_stall", ExitCode.HANG, named_by="oldest_beat"), SYMPTOM),
        (ExitCode.HANG, found("log_silence", ExitCode.HANG), SYMPTOM),
        # ... unless the stacks name a rank of this node stuck outside any collective
        (ExitCode.HANG, found("heartbeat_stall", ExitCode.HANG, named_by="stacks"), CAUSE),
        # symptoms: a peer's checkpoint request
        (ExitCode.PREEMPTED, found("peer_preempted", ExitCode.PREEMPTED), SYMPTOM),
        # attributed already / no role
        (ExitCode.PEER_LEFT, found("peer_verdict", ExitCode.PEER_LEFT), SYMPTOM),
        (ExitCode.SUCCEEDED, None, None),
        # a finding of another class (the class was changed after it) falls back to the class
        (ExitCode.INFRA_FAILED, found("xid", ExitCode.DEVICE_FAILED), SYMPTOM),
        (ExitCode.DEVICE_FAILED, found("some_future_kind", ExitCode.DEVICE_FAILED), CAUSE),
    ],
)
def test_role_of(code: ExitCode, deciding: Finding | None, role: Role | None) -> None:
    assert roles.role_of(code, deciding) is role


def test_every_class_has_a_default_role() -> None:
    assert set(roles.CLASS_ROLES) == set(ExitCode) - {ExitCode.SUCCEEDED}


def test_every_log_rule_has_a_role_that_agrees_with_its_class() -> None:
    for rule in RULES:
        assert rule.kind in roles.KIND_ROLES, rule.kind
        role = roles.role_of(rule.exit_code, found(rule.kind, rule.exit_code))
        if rule.exit_code in (ExitCode.HANG, ExitCode.INFRA_FAILED):
            assert role is SYMPTOM, rule.kind
        else:
            assert role is CAUSE, rule.kind


def test_a_real_matched_line_reaches_its_role() -> None:
    line = (
        "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] "
        "Connection closed by peer [10.0.0.2]:2345"
    )
    matched = DEFAULT_MATCHER.match(line)
    assert matched is not None
    assert roles.role_of(matched.exit_code, matched) is SYMPTOM  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "findings", "expected"),
    [
        # a stop decides whatever else was seen
        (
            ExitCode.HANG,
            [
                found("nccl_remote_error", ExitCode.INFRA_FAILED, Urgency.ON_EXIT),
                found("heartbeat_stall", ExitCode.HANG),
            ],
            "heartbeat_stall",
        ),
        # without a stop, the explaining finding of the class decides
        (
            ExitCode.INFRA_FAILED,
            [
                found("note", ExitCode.HANG, Urgency.NOTE),
                found("peer_connection_lost", ExitCode.INFRA_FAILED, Urgency.ON_EXIT),
            ],
            "peer_connection_lost",
        ),
        # the class came from elsewhere (a bound, an attribution): no deciding finding
        (ExitCode.INFRA_FAILED, [found("xid", ExitCode.DEVICE_FAILED)], None),
        (ExitCode.TRAINING_FAILED, [], None),
    ],
)
def test_deciding_finding_follows_classify(
    code: ExitCode, findings: list[Finding], expected: str | None
) -> None:
    decided = roles.deciding_finding(code, findings)
    assert (decided.kind if decided else None) == expected


def test_the_table_prints() -> None:
    text = roles.describe()
    assert "peer_preempted" in text and "when named_by=stacks" in text
    assert "class HANG" in text
