"""The exit-code contract is fixed: manifests in the field depend on these numbers."""

from __future__ import annotations

import pytest

from supervisor.core.exitcodes import ExitCode, JobAction, contract_table

PINNED = {
    "SUCCEEDED": (0, "-"),
    "TRAINING_FAILED": (80, "Count"),
    "CONFIG_ERROR": (81, "FailJob"),
    "DEVICE_FAILED": (82, "Ignore"),
    "DEVICE_DEGRADED": (83, "Ignore"),
    "HANG": (84, "Count"),
    "PREEMPTED": (85, "Ignore"),
    "INFRA_FAILED": (86, "Count"),
    "PEER_LEFT": (87, "Ignore"),
}


def test_contract_is_pinned() -> None:
    assert {m.name: (m.code, m.action.value) for m in ExitCode} == PINNED


def test_codes_are_unique_and_avoid_reserved_ranges() -> None:
    codes = [m.code for m in ExitCode]
    assert len(set(codes)) == len(codes)
    for code in codes:
        assert code == 0 or not (code in (1, 2) or 126 <= code <= 165), code


def test_table_shape() -> None:
    rows = contract_table()
    assert [r["code"] for r in rows] == sorted(r["code"] for r in rows)
    for row in rows:
        assert {"code", "name", "action", "meaning"} <= row.keys()
        assert row["meaning"]


def test_from_code() -> None:
    assert ExitCode.from_code(84) is ExitCode.HANG
    with pytest.raises(ValueError, match="not a supervise exit code"):
        ExitCode.from_code(3)


def test_retriable_means_count() -> None:
    assert {m for m in ExitCode if m.retriable} == {
        m for m in ExitCode if m.action is JobAction.COUNT
    }
