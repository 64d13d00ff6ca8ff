"""What a GPU signal means for the run: the Xid catalog and the rules for polled state (pure, L1).

Two tables and one function decide everything; nothing here touches NVML, threads or files.

* `XID_CATALOG`: each Xid NVIDIA documents for data-centre GPUs, with its meaning, NVIDIA's
  "Immediate Action" from the Ampere+ Xid catalog (docs.nvidia.com/deploy/xid-errors,
  Xid-Catalog.xlsx) and the class supervise gives it. Where a pod cannot see the context an
  Xid needs (Xid 45, 61, 144-150, 154: register bits and companion Xids live in the kernel
  log), the class is CONTEXT: the Xid is noted and the driver's own verdict, the recovery-action
  field, is read at once instead.
* `DEFAULT_RULES`: the class of each polled condition (uncorrected ECC, row remap, retired
  pages, recovery action, HW clock events, temperature, NVLink, PCIe, fabric health), with
  thresholds. DCGM 4.6 health watches and NVSentinel's mappings are the references cited.

Users override both with a JSON config file (`Rules.from_mapping`): per-Xid classes, per-rule
classes, and thresholds. Bad keys or values raise `ConfigError` naming what to fix.

`assess()` turns one poll of one GPU into `Finding`s; it returns a new `Memory` carrying what
the next poll compares against (counters, throttle streaks), so it stays a pure function.
Classes map to findings as the contract says: FAILED → DEVICE_FAILED, stop now; DEGRADED →
DEVICE_DEGRADED, checkpoint then stop; APPLICATION → TRAINING_FAILED, evidence only (it names
the Xid if the child then dies); CONTEXT and NOTE → evidence only; IGNORE → nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from supervisor.core.errors import ConfigError
from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode


class Verdict(enum.StrEnum):
    FAILED = "failed"  # the device is broken: stop now, reschedule
    DEGRADED = "degraded"  # still works, but should not be trusted: checkpoint, then stop
    APPLICATION = "application"  # the training code's fault; the GPU stays usable
    CONTEXT = "context"  # needs context a pod cannot see: note it, read the driver's verdict
    NOTE = "note"  # evidence only
    IGNORE = "ignore"  # not even evidence


_OUTCOME: dict[Verdict, tuple[ExitCode | None, Urgency]] = {
    Verdict.FAILED: (ExitCode.DEVICE_FAILED, Urgency.STOP),
    Verdict.DEGRADED: (ExitCode.DEVICE_DEGRADED, Urgency.CHECKPOINT),
    Verdict.APPLICATION: (ExitCode.TRAINING_FAILED, Urgency.ON_EXIT),
    Verdict.CONTEXT: (None, Urgency.NOTE),
    Verdict.NOTE: (None, Urgency.NOTE),
}


@dataclass(frozen=True)
class XidEntry:
    xid: int
    meaning: str
    nvidia_action: str  # the catalog's Immediate Action [NVIDIA Xid catalog, Ampere+]
    verdict: Verdict


def _xids(*rows: tuple[tuple[int, ...], str, str, Verdict]) -> dict[int, XidEntry]:
    return {
        xid: XidEntry(xid, meaning, action, v) for xids, meaning, action, v in rows for xid in xids
    }


F, D, A, C = Verdict.FAILED, Verdict.DEGRADED, Verdict.APPLICATION, Verdict.CONTEXT

# Source: NVIDIA Xid catalog (Immediate Action column), cross-checked against DCGM 4.6's Xid
# health rule and the k8s-device-plugin v0.20.0 ignore list (13, 31, 43, 45, 68, 109).
XID_CATALOG: Mapping[int, XidEntry] = _xids(
    # RESTART_APP, but the device plugin marks the GPU unhealthy: the app is dead and the GPU
    # is suspect, so reschedule without burning a retry.
    ((8,), "GPU stopped processing (FIFO idle timeout)", "RESTART_APP", D),
    ((13,), "graphics engine exception (out-of-bounds, illegal instruction)", "RESTART_APP", A),
    ((31,), "MMU page fault, usually a bad address in the application", "RESTART_APP", A),
    # "Generally not the user app": PCIe signal quality. Repeats mean a bad slot or riser.
    ((32,), "corrupted push buffer stream (PCIe)", "RESTART_APP", D),
    ((43,), "the application hit a software fault; the GPU remains healthy", "IGNORE", A),
    # Cleanup after Ctrl-C, SIGKILL or another Xid: the companion Xid carries the meaning.
    ((45,), "preemptive cleanup after the application stopped", "WORKFLOW_45", C),
    ((48,), "double-bit ECC error (uncorrectable memory error)", "RESET_GPU", F),
    # "Unused" on A100/H100/B100/GB200; if Xid 62 follows, that one fails the device.
    ((61,), "internal micro-controller breakpoint", "CONTACT_SUPPORT", C),
    ((62,), "internal micro-controller halt", "RESET_GPU", F),
    # A remap is recorded and applies at the next reset: the GPU needs a reset soon.
    ((63,), "row remap recorded; pending until the next GPU reset", "IGNORE", D),
    ((64,), "row remap failed", "RESET_GPU", F),
    ((68,), "video decoder (NVDEC0) exception", "RESTART_APP", A),
    ((69,), "graphics engine class error", "RESTART_APP", A),
    # The decode needs 7 registers from the kernel log; DCGM calls 74 FAIL, and a pod that
    # cannot decode it should leave the node.
    ((74,), "NVLink error", "WORKFLOW_NVLINK", F),
    ((79,), "GPU has fallen off the bus", "RESTART_BM", F),
    ((92,), "high single-bit ECC error rate", "IGNORE", D),
    ((94,), "contained ECC error: only the application that hit it is affected", "RESTART_APP", D),
    ((95,), "uncontained ECC error: every application on the GPU is affected", "RESET_GPU", F),
    # The device plugin ignores 109, but the catalog says reset: supervise follows the catalog.
    ((109,), "context-switch timeout", "RESET_GPU", F),
    ((119,), "GSP RPC timeout", "RESET_GPU", F),
    ((120,), "GSP error", "RESET_GPU", F),
    ((121,), "corrected C2C link errors", "IGNORE", D),
    ((140,), "uncorrectable ECC error escaped containment", "RESET_GPU", F),
    ((143,), "GPU initialisation error", "RESET_GPU", F),
    # NVLink5 (B100/GB200): the action depends on intrInfo bits only the kernel log shows; the
    # driver's verdict arrives as Xid 154 and the recovery-action field.
    ((144, 145, 146, 147, 148, 149, 150), "NVLink5 fault", "WORKFLOW_NVLINK5", C),
    ((154,), "GPU recovery action changed", "AS_STATED", C),
    ((155,), "NVLink taken down by software", "RESET_GPU", F),
    ((158,), "GPU fatal timeout", "RESET_GPU", F),
)
del F, D, A, C

# nvmlGpuRecoveryAction_t (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, field 230, driver R565+).
RECOVERY_ACTIONS: Mapping[int, tuple[str, str]] = {
    0: ("none", ""),
    1: ("gpu_reset", "recovery_reset"),
    2: ("node_reboot", "recovery_reset"),
    3: ("drain_p2p", "recovery_drain"),
    4: ("drain_and_reset", "recovery_reset"),
    5: ("recover_imex_domain", "recovery_drain"),
    6: ("bus_reset", "recovery_reset"),
    7: ("system_reboot", "recovery_reset"),
}

# Clock-event reason bits (nvmlClocksEventReason*). SW power cap under load is normal and
# NVSentinel suppresses it; the hardware reasons cut clocks by half or more.
CLOCK_EVENT_RULES: Mapping[int, str] = {
    0x08: "hw_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake",
}

# Each polled rule's default class. DCGM 4.6: volatile DBE, remap failure, reset/reboot
# recovery actions FAIL; pending retirement, drain-P2P, thermal/power violations WARN.
DEFAULT_RULES: Mapping[str, Verdict] = {
    "gpu_lost": Verdict.FAILED,  # NVML_ERROR_GPU_IS_LOST on any call
    "gpu_missing": Verdict.FAILED,  # a GPU the pod was given is not visible to NVML
    "nvml_hang": Verdict.FAILED,  # an NVML call did not return within its bound
    "nvml_errors": Verdict.NOTE,  # a query failed unexpectedly (not NOT_SUPPORTED)
    "ecc_uncorrected": Verdict.FAILED,
    "remap_failure": Verdict.FAILED,
    "remap_pending": Verdict.DEGRADED,  # needs a reset; NVSentinel maps it to a GPU reset
    "retired_pages_pending": Verdict.DEGRADED,
    "recovery_reset": Verdict.FAILED,
    "recovery_drain": Verdict.DEGRADED,
    "hw_slowdown": Verdict.DEGRADED,
    "hw_thermal_slowdown": Verdict.DEGRADED,
    "hw_power_brake": Verdict.DEGRADED,
    "temperature": Verdict.DEGRADED,
    "nvlink_down": Verdict.FAILED,  # a link that was up went down (cf. Xid 155)
    "nvlink_errors": Verdict.DEGRADED,  # replay/recovery counters rose (DCGM: FAIL on Hopper)
    "nvlink_crc": Verdict.NOTE,  # CRC counters rose (DCGM: WARN)
    "pcie_width": Verdict.DEGRADED,  # below max: seating or riser (CHECK_MECHANICALS)
    "pcie_generation": Verdict.NOTE,  # drops at idle to save power, so only a note
    "pcie_replay": Verdict.DEGRADED,  # replay rate over the threshold (DCGM: WARN)
    "fabric_unhealthy": Verdict.FAILED,
    "fabric_degraded": Verdict.DEGRADED,
}


@dataclass(frozen=True)
class Thresholds:
    throttle_polls: int = 3  # consecutive polls a HW clock-event bit must persist
    temperature_margin_c: float = 0.0  # degraded at (slowdown threshold - margin) °C or above
    # DCGM flags more than ceil(lanes x per-lane rate at BER 1e-12) replays a minute: about
    # 31 at Gen5 x16, 16 at Gen4 x16. The larger default avoids false alarms on Gen5.
    pcie_replays_per_minute: float = 31.0


@dataclass(frozen=True)
class Rules:
    """The effective classes: the catalogs plus a user's overrides."""

    xid: Mapping[int, Verdict] = field(default_factory=dict)  # overrides only
    rules: Mapping[str, Verdict] = field(default_factory=lambda: dict(DEFAULT_RULES))
    unknown_xid: Verdict = Verdict.CONTEXT  # an Xid not in the catalog: note, read the driver
    thresholds: Thresholds = Thresholds()

    def xid_verdict(self, xid: int) -> Verdict:
        if xid in self.xid:
            return self.xid[xid]
        entry = XID_CATALOG.get(xid)
        return entry.verdict if entry is not None else self.unknown_xid

    @classmethod
    def from_mapping(cls, data: object, source: str = "the GPU config") -> Rules:
        """Parse `{"xid": {"13": "degraded"}, "rules": {...}, "unknown_xid": "note",
        "thresholds": {...}}`. Every key is optional; anything unknown raises `ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f'{source} must be a JSON object, e.g. {{"xid": {{"13": "degraded"}}}}'
            )
        unknown = set(data) - {"xid", "rules", "unknown_xid", "thresholds"}
        if unknown:
            raise ConfigError(
                f"{source} has unknown key(s) {sorted(unknown)}; "
                "allowed: xid, rules, unknown_xid, thresholds"
            )
        xid: dict[int, Verdict] = {}
        for key, value in _mapping(data.get("xid", {}), f"{source}: xid").items():
            try:
                number = int(key)
            except (TypeError, ValueError):
                raise ConfigError(f"{source}: xid key {key!r} is not an Xid number") from None
            xid[number] = _verdict(value, f"{source}: xid {number}")
        rules = dict(DEFAULT_RULES)
        for key, value in _mapping(data.get("rules", {}), f"{source}: rules").items():
            if key not in DEFAULT_RULES:
                raise ConfigError(
                    f"{source}: unknown rule {key!r}; known rules: {', '.join(DEFAULT_RULES)}"
                )
            rules[key] = _verdict(value, f"{source}: rule {key}")
        unknown_xid = _verdict(data.get("unknown_xid", "context"), f"{source}: unknown_xid")
        thresholds = _thresholds(
            _mapping(data.get("thresholds", {}), f"{source}: thresholds"), source
        )
        return cls(xid, rules, unknown_xid, thresholds)


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a JSON object")
    return value


def _verdict(value: object, where: str) -> Verdict:
    try:
        return Verdict(str(value))
    except ValueError:
        allowed = ", ".join(v.value for v in Verdict)
        raise ConfigError(f"{where}: {value!r} is not a class; use one of {allowed}") from None


def _thresholds(data: Mapping[str, object], source: str) -> Thresholds:
    known = {f.name: f.type for f in fields(Thresholds)}
    values: dict[str, float | int] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown threshold {key!r}; known: {', '.join(known)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{source}: threshold {key} must be a number ≥ 0, got {value!r}")
        values[key] = int(value) if key == "throttle_polls" else float(value)
    if values.get("throttle_polls", 1) < 1:
        raise ConfigError(f"{source}: threshold throttle_polls must be ≥ 1")
    return Thresholds(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- observations


@dataclass(frozen=True)
class Gpu:
    """Who a GPU is. The UUID is the key: a pod sees its GPUs renumbered from 0."""

    index: int
    uuid: str
    bus_id: str = ""
    name: str = ""

    def evidence(self) -> dict[str, object]:
        return {
            "gpu_uuid": self.uuid,
            "pci_bus_id": self.bus_id,
            "gpu_index": self.index,
            "gpu_name": self.name,
        }

    def label(self) -> str:
        bus = f", {self.bus_id}" if self.bus_id else ""
        return f"GPU {self.index} ({self.uuid}{bus})"


@dataclass(frozen=True)
class GpuState:
    """One poll of one GPU. None means the device does not support or report the value."""

    at: float  # monotonic seconds
    lost: bool = False
    ecc_uncorrected_volatile: int | None = None
    remap_pending: bool | None = None
    remap_failure: bool | None = None
    retired_pages_pending: bool | None = None
    recovery_action: int | None = None
    clock_event_reasons: int | None = None
    temperature_c: int | None = None
    temperature_slowdown_c: int | None = None
    nvlink_up: tuple[int, ...] | None = None  # links reporting up
    nvlink_replay_recovery: int | None = None  # replay + recovery totals over all links
    nvlink_crc: int | None = None  # CRC flit + data totals over all links
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    pcie_generation: int | None = None
    pcie_generation_max: int | None = None
    pcie_replay: int | None = None
    fabric_state: int | None = None  # NVML_GPU_FABRIC_STATE_*; 3 = completed
    fabric_status: int | None = None  # an nvmlReturn_t; 0 = success
    fabric_health_summary: int | None = None  # 1 healthy, 2 unhealthy, 3 limited capacity
    fabric_health_mask: int | None = None
    errors: tuple[str, ...] = ()  # queries that failed for another reason than "unsupported"

    def as_dict(self) -> dict[str, object]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "at"}
        return {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items() if v is not None
        }


@dataclass(frozen=True)
class Memory:
    """What `assess` carries from one poll of a GPU to the next."""

    previous: GpuState | None = None
    streaks: Mapping[str, int] = field(default_factory=dict)


# Fabric health mask fields (nvmlGpuFabricInfo healthMask): 2-bit values, TRUE = 1.
_FABRIC_DEGRADED_BW_SHIFT = 0
_FABRIC_ROUTE_UNHEALTHY_SHIFT = 4
_FABRIC_STATE_COMPLETED = 3


def finding(
    gpu: Gpu, rule: str, verdict: Verdict, summary: str, detail: Mapping[str, object]
) -> Finding | None:
    """The evidence for `rule` on `gpu` under `verdict` (None when the rule is ignored)."""
    if verdict is Verdict.IGNORE:
        return None
    code, urgency = _OUTCOME[verdict]
    return Finding(
        "gpu",
        rule,
        summary,
        code,
        urgency,
        {**gpu.evidence(), "verdict": verdict.value, **detail},
    )


def xid_finding(gpu: Gpu, xid: int, rules: Rules) -> Finding | None:
    """What an Xid event on `gpu` means, with NVIDIA's catalog entry as evidence."""
    verdict = rules.xid_verdict(xid)
    entry = XID_CATALOG.get(xid)
    meaning = entry.meaning if entry else "not in NVIDIA's catalog as supervise knows it"
    what = {
        Verdict.FAILED: "the GPU has failed",
        Verdict.DEGRADED: "the GPU is degraded",
        Verdict.APPLICATION: "an application error; the GPU stays usable",
        Verdict.CONTEXT: "its meaning depends on context; the driver's recovery action decides",
        Verdict.NOTE: "noted",
        Verdict.IGNORE: "ignored",
    }[verdict]
    detail: dict[str, object] = {"xid": xid, "meaning": meaning}
    if entry is not None:
        detail["nvidia_action"] = entry.nvidia_action
    summary = f"{gpu.label()} reported Xid {xid} ({meaning}): {what}."
    return finding(gpu, "xid", verdict, summary, detail)


def unreachable_finding(
    rule: str, summary: str, gpu: Gpu | None, rules: Rules, detail: Mapping[str, object]
) -> Finding | None:
    """Evidence about NVML itself (a hung call, a GPU it cannot find), with or without a GPU."""
    verdict = rules.rules.get(rule, Verdict.FAILED)
    if gpu is None:
        gpu = Gpu(-1, "unknown")
    return finding(gpu, rule, verdict, summary, detail)


class _Seen(list[tuple[str, str, dict[str, object]]]):
    """What one poll shows: (rule, summary, evidence) in rule order."""

    def add(self, rule: str, summary: str, field: str, value: object, **extra: object) -> None:
        self.append((rule, summary, {"field": field, "value": value, **extra}))


def assess(gpu: Gpu, state: GpuState, memory: Memory, rules: Rules) -> tuple[list[Finding], Memory]:
    """Findings for one poll of `gpu`, in rule order, and the memory for the next poll.

    A condition that persists is reported on every poll; the caller reports each once.
    """
    seen = _Seen()
    label = gpu.label()
    streaks: dict[str, int] = {}
    if state.lost:
        seen.add("gpu_lost", f"{label} is lost: NVML reports GPU_IS_LOST.", "nvml", "GPU_IS_LOST")
    if state.ecc_uncorrected_volatile:
        count = state.ecc_uncorrected_volatile
        seen.add(
            "ecc_uncorrected",
            f"{label} has {count} uncorrected (volatile) ECC error(s).",
            "ecc_uncorrected_volatile",
            count,
        )
    if state.remap_failure:
        seen.add(
            "remap_failure",
            f"{label} failed to remap a memory row (RMA candidate).",
            "remapped_rows.failure_occurred",
            True,
        )
    if state.remap_pending:
        seen.add(
            "remap_pending",
            f"{label} has a row remap pending: it needs a GPU reset.",
            "remapped_rows.is_pending",
            True,
        )
    if state.retired_pages_pending:
        seen.add(
            "retired_pages_pending",
            f"{label} has memory pages pending retirement: it needs a GPU reset.",
            "retired_pages_pending",
            True,
        )
    if state.recovery_action:
        name, rule = RECOVERY_ACTIONS.get(state.recovery_action, ("unknown", "recovery_reset"))
        seen.add(
            rule,
            f"{label}: the driver's recovery action is {name}.",
            "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION",
            state.recovery_action,
            recovery_action=name,
        )
    for bit, rule in CLOCK_EVENT_RULES.items():
        if (state.clock_event_reasons or 0) & bit:
            streaks[rule] = polls = memory.streaks.get(rule, 0) + 1
            if polls >= rules.thresholds.throttle_polls:
                seen.add(
                    rule,
                    f"{label} is clock-limited by {rule.replace('_', ' ')} for "
                    f"{polls} consecutive polls.",
                    "clock_event_reasons",
                    hex(state.clock_event_reasons or 0),
                    polls=polls,
                )
    hot, limit = state.temperature_c, state.temperature_slowdown_c
    if hot is not None and limit and hot >= limit - rules.thresholds.temperature_margin_c:
        seen.add(
            "temperature",
            f"{label} is at {hot} °C; it slows down at {limit} °C.",
            "temperature_c",
            hot,
            slowdown_c=limit,
        )
    if memory.previous is not None:
        _changes(seen, label, memory.previous, state, rules)
    width, widest = state.pcie_width, state.pcie_width_max
    if width is not None and widest and width < widest:
        seen.add(
            "pcie_width",
            f"{label} runs PCIe x{width} of x{widest}: check seating and riser.",
            "pcie_width",
            width,
            max=widest,
        )
    gen, best = state.pcie_generation, state.pcie_generation_max
    if gen is not None and best and gen < best:
        seen.add(
            "pcie_generation",
            f"{label} runs PCIe Gen{gen} of Gen{best} (normal at idle).",
            "pcie_generation",
            gen,
            max=best,
        )
    if state.fabric_state == _FABRIC_STATE_COMPLETED:
        _fabric(seen, label, state)
    if state.errors:
        seen.add(
            "nvml_errors",
            f"{label}: some NVML queries failed: {', '.join(state.errors)}.",
            "nvml",
            list(state.errors),
        )
    findings = [
        made
        for rule, summary, detail in seen
        if (made := finding(gpu, rule, rules.rules.get(rule, Verdict.NOTE), summary, detail))
    ]
    return findings, Memory(previous=state, streaks=streaks)


def _changes(seen: _Seen, label: str, before: GpuState, now: GpuState, rules: Rules) -> None:
    """Counters and links judged by what changed since the last poll (history is not news)."""
    if before.nvlink_up is not None and now.nvlink_up is not None:
        down = sorted(set(before.nvlink_up) - set(now.nvlink_up))
        if down:
            seen.add(
                "nvlink_down", f"{label}: NVLink link(s) {down} went down.", "nvlink_state", down
            )
    if rose := _rose(before.nvlink_replay_recovery, now.nvlink_replay_recovery):
        seen.add(
            "nvlink_errors",
            f"{label}: NVLink replay/recovery errors rose by {rose}.",
            "nvlink_replay_recovery",
            now.nvlink_replay_recovery,
            delta=rose,
        )
    if rose := _rose(before.nvlink_crc, now.nvlink_crc):
        seen.add(
            "nvlink_crc",
            f"{label}: NVLink CRC errors rose by {rose}.",
            "nvlink_crc",
            now.nvlink_crc,
            delta=rose,
        )
    rose, elapsed = _rose(before.pcie_replay, now.pcie_replay), now.at - before.at
    limit = rules.thresholds.pcie_replays_per_minute
    if rose and elapsed > 0 and (per_minute := rose * 60.0 / elapsed) > limit:
        seen.add(
            "pcie_replay",
            f"{label}: {per_minute:.0f} PCIe replays a minute (limit {limit:g}).",
            "pcie_replay_counter",
            now.pcie_replay,
            per_minute=round(per_minute, 1),
        )


def _rose(before: int | None, now: int | None) -> int:
    if before is None or now is None:
        return 0
    return max(0, now - before)


def _fabric(seen: _Seen, label: str, state: GpuState) -> None:
    value = {
        "status": state.fabric_status,
        "health_summary": state.fabric_health_summary,
        "health_mask": state.fabric_health_mask,
    }
    mask = state.fabric_health_mask or 0
    if state.fabric_status not in (None, 0) or state.fabric_health_summary == 2:
        seen.add(
            "fabric_unhealthy", f"{label}: the NVLink fabric reports it unhealthy.", "fabric", value
        )
    elif (
        state.fabric_health_summary == 3
        or (mask >> _FABRIC_DEGRADED_BW_SHIFT) & 0x3 == 1
        or (mask >> _FABRIC_ROUTE_UNHEALTHY_SHIFT) & 0x3 == 1
    ):
        seen.add(
            "fabric_degraded",
            f"{label}: the NVLink fabric reports limited capacity or degraded bandwidth.",
            "fabric",
            value,
        )
