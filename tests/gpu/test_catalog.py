"""The Xid catalog and the polled-state rules, as pure functions (no NVML, no threads)."""

from __future__ import annotations

import pytest

from supervisor.core.errors import ConfigError
from supervisor.core.events import Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.gpu.catalog import (
    DEFAULT_RULES,
    XID_CATALOG,
    Gpu,
    GpuState,
    Memory,
    Rules,
    Verdict,
    assess,
    xid_finding,
)

GPU = Gpu(1, "GPU-1234", "00000000:19:00.0", "NVIDIA H100")


def kinds(state: GpuState, rules: Rules | None = None) -> list[str]:
    found, _ = assess(GPU, state, Memory(), rules or Rules())
    return [f.kind for f in found]


@pytest.mark.parametrize(
    ("xid", "code", "urgency"),
    [
        (79, ExitCode.DEVICE_FAILED, Urgency.STOP),  # fallen off the bus: RESTART_BM
        (48, ExitCode.DEVICE_FAILED, Urgency.STOP),  # double-bit ECC
        (95, ExitCode.DEVICE_FAILED, Urgency.STOP),  # uncontained ECC
        (119, ExitCode.DEVICE_FAILED, Urgency.STOP),  # GSP RPC timeout
        (63, ExitCode.DEVICE_DEGRADED, Urgency.CHECKPOINT),  # remap pending
        (94, ExitCode.DEVICE_DEGRADED, Urgency.CHECKPOINT),  # contained ECC
        (13, ExitCode.TRAINING_FAILED, Urgency.ON_EXIT),  # the app's fault
        (31, ExitCode.TRAINING_FAILED, Urgency.ON_EXIT),
        (43, ExitCode.TRAINING_FAILED, Urgency.ON_EXIT),
        (45, None, Urgency.NOTE),  # context: the companion Xid decides
        (154, None, Urgency.NOTE),  # the driver's recovery action decides
        (9999, None, Urgency.NOTE),  # unknown: noted, the driver decides
    ],
)
def test_xid_classes_follow_the_catalog(xid, code, urgency) -> None:
    made = xid_finding(GPU, xid, Rules())
    assert made is not None
    assert (made.exit_code, made.urgency) == (code, urgency)
    assert made.detail["xid"] == xid
    for key, value in GPU.evidence().items():  # evidence names the GPU
        assert made.detail[key] == value
    assert f"Xid {xid}" in made.summary and GPU.uuid in made.summary


def test_every_catalog_entry_cites_nvidias_action_and_the_device_plugin_ignores_apps() -> None:
    for entry in XID_CATALOG.values():
        assert entry.nvidia_action and entry.meaning
    # The k8s device plugin's ignore list, minus 45 (context) and 109 (the catalog says
    # RESET_GPU, and supervise follows the catalog there).
    for xid in (13, 31, 43, 68):
        assert XID_CATALOG[xid].verdict is Verdict.APPLICATION
    assert XID_CATALOG[109].verdict is Verdict.FAILED


def test_a_healthy_state_gives_nothing() -> None:
    healthy = GpuState(
        at=0.0,
        ecc_uncorrected_volatile=0,
        remap_pending=False,
        remap_failure=False,
        retired_pages_pending=False,
        recovery_action=0,
        clock_event_reasons=0x4 | 0x1,  # SW power cap and idle are normal
        temperature_c=60,
        temperature_slowdown_c=87,
        nvlink_up=(0, 1),
        pcie_width=16,
        pcie_width_max=16,
        pcie_generation=5,
        pcie_generation_max=5,
        pcie_replay=0,
        fabric_state=3,
        fabric_status=0,
        fabric_health_summary=1,
        fabric_health_mask=0x22,
    )
    assert kinds(healthy) == []
    assert kinds(GpuState(at=0.0)) == []  # nothing supported: nothing to say


@pytest.mark.parametrize(
    ("state", "kind", "code"),
    [
        (GpuState(0, lost=True), "gpu_lost", ExitCode.DEVICE_FAILED),
        (GpuState(0, ecc_uncorrected_volatile=1), "ecc_uncorrected", ExitCode.DEVICE_FAILED),
        (GpuState(0, remap_failure=True), "remap_failure", ExitCode.DEVICE_FAILED),
        (GpuState(0, remap_pending=True), "remap_pending", ExitCode.DEVICE_DEGRADED),
        (
            GpuState(0, retired_pages_pending=True),
            "retired_pages_pending",
            ExitCode.DEVICE_DEGRADED,
        ),
        (GpuState(0, recovery_action=1), "recovery_reset", ExitCode.DEVICE_FAILED),
        (GpuState(0, recovery_action=2), "recovery_reset", ExitCode.DEVICE_FAILED),
        (GpuState(0, recovery_action=3), "recovery_drain", ExitCode.DEVICE_DEGRADED),
        (
            GpuState(0, temperature_c=88, temperature_slowdown_c=87),
            "temperature",
            ExitCode.DEVICE_DEGRADED,
        ),
        (GpuState(0, pcie_width=8, pcie_width_max=16), "pcie_width", ExitCode.DEVICE_DEGRADED),
        (GpuState(0, pcie_generation=3, pcie_generation_max=5), "pcie_generation", None),
        (
            GpuState(0, fabric_state=3, fabric_status=0, fabric_health_summary=2),
            "fabric_unhealthy",
            ExitCode.DEVICE_FAILED,
        ),
        (
            GpuState(0, fabric_state=3, fabric_status=0, fabric_health_summary=3),
            "fabric_degraded",
            ExitCode.DEVICE_DEGRADED,
        ),
        (
            GpuState(
                0, fabric_state=3, fabric_status=0, fabric_health_summary=1, fabric_health_mask=0x21
            ),
            "fabric_degraded",
            ExitCode.DEVICE_DEGRADED,
        ),
    ],
)
def test_each_polled_rule(state: GpuState, kind: str, code: ExitCode | None) -> None:
    found, _ = assess(GPU, state, Memory(), Rules())
    assert [f.kind for f in found] == [kind]
    assert found[0].exit_code is code
    assert found[0].detail["gpu_uuid"] == GPU.uuid and "field" in found[0].detail


def test_a_fabric_still_training_is_not_judged() -> None:
    assert kinds(GpuState(0, fabric_state=2, fabric_health_summary=2)) == []


def test_hw_throttling_counts_only_after_consecutive_polls() -> None:
    rules = Rules()  # throttle_polls = 3
    memory = Memory()
    seen = []
    for i, bits in enumerate([0x40, 0x40, 0x0, 0x40, 0x40, 0x40]):
        found, memory = assess(GPU, GpuState(float(i), clock_event_reasons=bits), memory, rules)
        seen.append([f.kind for f in found])
    assert seen == [[], [], [], [], [], ["hw_thermal_slowdown"]]


def test_counters_are_judged_by_their_change_between_polls() -> None:
    first = GpuState(
        0.0, nvlink_up=(0, 1, 2), nvlink_replay_recovery=5, nvlink_crc=7, pcie_replay=100
    )
    found, memory = assess(GPU, first, Memory(), Rules())
    assert found == []  # counts from before supervise are history, not news
    later = GpuState(
        60.0, nvlink_up=(0, 2), nvlink_replay_recovery=6, nvlink_crc=9, pcie_replay=200
    )
    found, _ = assess(GPU, later, memory, Rules())
    by_kind = {f.kind: f for f in found}
    assert set(by_kind) == {"nvlink_down", "nvlink_errors", "nvlink_crc", "pcie_replay"}
    assert by_kind["nvlink_down"].detail["value"] == [1]
    assert by_kind["nvlink_down"].exit_code is ExitCode.DEVICE_FAILED
    assert by_kind["pcie_replay"].detail["per_minute"] == 100.0
    # 20 replays a minute is under the default limit of 31
    slow = GpuState(
        120.0, nvlink_up=(0, 2), nvlink_replay_recovery=6, nvlink_crc=9, pcie_replay=220
    )
    found, _ = assess(GPU, slow, Memory(previous=later), Rules())
    assert [f.kind for f in found] == []


def test_overrides_change_classes_and_thresholds() -> None:
    rules = Rules.from_mapping(
        {
            "xid": {"13": "degraded", "9999": "failed"},
            "rules": {"remap_pending": "failed", "temperature": "ignore"},
            "thresholds": {"throttle_polls": 1, "temperature_margin_c": 5},
        }
    )
    assert xid_finding(GPU, 13, rules).exit_code is ExitCode.DEVICE_DEGRADED
    assert xid_finding(GPU, 9999, rules).exit_code is ExitCode.DEVICE_FAILED
    found, _ = assess(GPU, GpuState(0, remap_pending=True), Memory(), rules)
    assert found[0].exit_code is ExitCode.DEVICE_FAILED
    assert kinds(GpuState(0, temperature_c=99, temperature_slowdown_c=87), rules=rules) == []
    assert kinds(GpuState(0, clock_event_reasons=0x8), rules=rules) == ["hw_slowdown"]
    margin = Rules.from_mapping({"thresholds": {"temperature_margin_c": 5}})
    assert kinds(GpuState(0, temperature_c=83, temperature_slowdown_c=87), rules=margin) == [
        "temperature"
    ]
    ignored = Rules.from_mapping({"xid": {"79": "ignore"}})
    assert xid_finding(GPU, 79, ignored) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({"xids": {}}, "unknown key"),
        ({"xid": {"abc": "failed"}}, "not an Xid number"),
        ({"xid": {"13": "fatal"}}, "is not a class"),
        ({"rules": {"ecc": "failed"}}, "unknown rule 'ecc'"),
        ({"thresholds": {"throttle_polls": 0}}, "throttle_polls must be ≥ 1"),
        ({"thresholds": {"pcie_replays_per_minute": "x"}}, "must be a number"),
        ({"thresholds": {"speed": 1}}, "unknown threshold"),
    ],
)
def test_bad_overrides_say_what_to_fix(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Rules.from_mapping(data)


def test_every_rule_has_a_class_and_the_defaults_are_not_shared() -> None:
    assert all(isinstance(v, Verdict) for v in DEFAULT_RULES.values())
    changed = Rules.from_mapping({"rules": {"gpu_lost": "note"}})
    assert DEFAULT_RULES["gpu_lost"] is Verdict.FAILED and changed.rules["gpu_lost"] is Verdict.NOTE
