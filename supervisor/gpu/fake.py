"""A fake of the pynvml module, driven by a scenario file: GPU faults on a machine without GPUs.

`FakeNvml(scenario)` exposes the pynvml functions and constants the adapter
(`supervisor.gpu.nvml`) uses, under the same names, so the real adapter code runs against it.
It is a user feature too: `supervise --fake-gpus SCENARIO -- CMD` (env SUPERVISE_FAKE_GPUS)
lets people check their Job's failure policy on CPU clusters; SCENARIO is a file or the name
of one shipped in `supervisor/gpu/scenarios/` (`xid79`). examples/faults/README.md
documents the format; in short (JSON, or YAML for .yaml/.yml files):

    {"description": "...",
     "gpus": 2,                                   # or a list of {"uuid", "name", "bus_id", "state"}
     "timeline": [
       {"at": 1.0, "gpu": 0, "xid": 79},          # an Xid event (NVML XidCriticalError)
       {"at": 1.0, "gpu": 0, "set": {"remap_pending": true}},   # change polled state
       {"at": 2.0, "gpu": 1, "lost": true},       # every call on the GPU: GPU_IS_LOST
       {"at": 0.5, "hang": "nvmlDeviceGet*"}],    # matching calls block (fnmatch; "gpu" optional)
     "expect": {"exit_code": 82, "kind": "xid"}}  # what supervise should conclude (documentation)

`at` counts seconds from `nvmlInit` (when supervise opens NVML, before the command starts).
`nvmlEventSetWait_v2` really blocks until the next timeline entry or its timeout, so the
latency measured through the fake is the adapter's own. Thread-safe: one lock, one condition.
A hung call blocks until `release()` (tests call it; supervise abandons the daemon thread).
"""

from __future__ import annotations

import ctypes
import fnmatch
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from supervisor.core.errors import ConfigError

# The constants the adapter reads, with pynvml's values (a test compares them to the real
# nvidia-ml-py, so they cannot drift unnoticed).
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
NVML_FEATURE_ENABLED = 1
NVML_TEMPERATURE_GPU = 0
NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL = 38
NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL = 45
NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL = 52
NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL = 59
NVML_FI_DEV_NVLINK_LINK_COUNT = 91
NVML_FI_DEV_GET_GPU_RECOVERY_ACTION = 230
NVML_GPU_FABRIC_STATE_NOT_SUPPORTED = 0
NVML_GPU_FABRIC_STATE_COMPLETED = 3
nvmlEventTypeSingleBitEccError = 0x1
nvmlEventTypeDoubleBitEccError = 0x2
nvmlEventTypeXidCriticalError = 0x8
nvmlEventTypeSingleBitEccErrorStorm = 0x200
nvmlEventTypeDramRetirementFailure = 0x800
nvmlEventTypeFatalPoisonError = 0x2000
nvmlEventTypeGpuUnavailableError = 0x4000
nvmlEventTypeGpuRecoveryAction = 0x8000
_ALL_EVENTS = 0xFFFF
_VALUE_TYPE_ULL = 3


class NVMLError(Exception):
    """Same shape as pynvml's: `.value` is the nvmlReturn_t."""

    def __init__(self, value: int) -> None:
        super().__init__(f"fake NVML error {value}")
        self.value = value


class c_nvmlGpuFabricInfo_v3_t(ctypes.Structure):  # pynvml's name and layout
    _fields_ = [
        ("version", ctypes.c_uint),
        ("clusterUuid", ctypes.c_uint8 * 16),
        ("status", ctypes.c_int),
        ("cliqueId", ctypes.c_uint32),
        ("state", ctypes.c_uint),
        ("healthMask", ctypes.c_uint32),
        ("healthSummary", ctypes.c_uint8),
    ]


# Scenario state keys: every `GpuState` field (a test keeps them in step), plus how many
# NVLink links there are and which pynvml calls answer NOT_SUPPORTED.
_HEALTHY: dict[str, Any] = {
    "ecc_uncorrected_volatile": 0,
    "remap_pending": False,
    "remap_failure": False,
    "retired_pages_pending": False,
    "recovery_action": 0,
    "clock_event_reasons": 0,
    "temperature_c": 45,
    "temperature_slowdown_c": 87,
    "nvlink_links": 18,
    "nvlink_up": None,  # None: every link up
    "nvlink_replay_recovery": 0,
    "nvlink_crc": 0,
    "pcie_width": 16,
    "pcie_width_max": 16,
    "pcie_generation": 5,
    "pcie_generation_max": 5,
    "pcie_replay": 0,
    "fabric_state": 3,
    "fabric_status": 0,
    "fabric_health_summary": 1,
    "fabric_health_mask": 0x22,  # DEGRADED_BW false, ROUTE_UNHEALTHY false
    "unsupported": [],  # pynvml function names that answer NOT_SUPPORTED on this GPU
    "failing": [],  # pynvml function names that answer UNKNOWN (a flaky query)
}
_STATE_KEYS = frozenset(_HEALTHY)


@dataclass
class _FakeGpu:
    index: int
    uuid: str
    name: str
    bus_id: str
    state: dict[str, Any]
    lost: bool = False
    events: int = 0  # the registered event mask


@dataclass(frozen=True)
class Entry:
    at: float
    gpu: int | None
    xid: int | None = None
    set: Mapping[str, Any] = field(default_factory=dict)
    lost: bool = False
    hang: str | None = None


# Bounds of a scenario, checked before anything of that size is made.
MAX_GPUS = 256
MAX_ENTRIES = 10_000
MAX_AT = 7 * 86_400.0  # seconds


@dataclass(frozen=True)
class Scenario:
    description: str
    gpus: tuple[dict[str, Any], ...]
    timeline: tuple[Entry, ...]
    expect: Mapping[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Read a scenario file, or a shipped scenario by name (`xid79`); raises
        `ConfigError` naming what to fix. The file is read within `files.MAX_BYTES`."""
        from supervisor.gpu.files import read_data, scenario_path

        path = Path(scenario_path(str(path)))
        data = read_data(str(path), "--fake-gpus")
        return cls.parse(data, f"--fake-gpus {path}")

    @classmethod
    def parse(cls, data: object, where: str = "scenario") -> Scenario:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: a scenario is an object with gpus and timeline")
        extra = set(data) - {"description", "gpus", "timeline", "expect"}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {sorted(extra)}")
        gpus = _parse_gpus(data.get("gpus", 1), where)
        timeline = []
        entries = data.get("timeline", []) or []
        if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
            raise ConfigError(f"{where}: timeline is a list of at most {MAX_ENTRIES} entries")
        for i, raw in enumerate(entries):
            timeline.append(_parse_entry(raw, len(gpus), f"{where}: timeline[{i}]"))
        timeline.sort(key=lambda e: e.at)
        return cls(str(data.get("description", "")), gpus, tuple(timeline), data.get("expect", {}))


def _parse_gpus(raw: object, where: str) -> tuple[dict[str, Any], ...]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 0 <= raw <= MAX_GPUS:  # checked before a list of that many is made
            raise ConfigError(f"{where}: gpus must be a count in [0, {MAX_GPUS}], got {raw}")
        raw = [{} for _ in range(raw)]
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: gpus is a count in [0, {MAX_GPUS}] or a list of objects")
    if len(raw) > MAX_GPUS:
        raise ConfigError(f"{where}: at most {MAX_GPUS} gpus, got {len(raw)}")
    out = []
    for i, gpu in enumerate(raw):
        if not isinstance(gpu, Mapping) or set(gpu) - {"uuid", "name", "bus_id", "state"}:
            raise ConfigError(f"{where}: gpus[{i}] takes uuid, name, bus_id and state")
        out.append(
            {
                "uuid": str(gpu.get("uuid", f"GPU-fake0000-0000-0000-0000-{i:012d}")),
                "name": str(gpu.get("name", "NVIDIA H100 80GB HBM3 (fake)")),
                "bus_id": str(gpu.get("bus_id", f"00000000:{0x18 + i:02X}:00.0")),
                "state": _state(gpu.get("state", {}), f"{where}: gpus[{i}].state"),
            }
        )
    return tuple(out)


def _state(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object")
    unknown = set(raw) - _STATE_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_STATE_KEYS)}"
        )
    return dict(raw)


def _parse_entry(raw: object, gpus: int, where: str) -> Entry:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object with at, gpu and one of xid/set/lost/hang")
    unknown = set(raw) - {"at", "gpu", "xid", "set", "lost", "hang"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    at = raw.get("at", 0)
    if isinstance(at, bool) or not isinstance(at, int | float) or not 0 <= at <= MAX_AT:
        raise ConfigError(f"{where}: at must be seconds in [0, {MAX_AT:g}], got {at!r}")
    gpu = raw.get("gpu")
    if gpu is not None and (not isinstance(gpu, int) or not 0 <= gpu < gpus):
        raise ConfigError(f"{where}: gpu must be an index below {gpus}, got {gpu!r}")
    actions = [k for k in ("xid", "set", "lost", "hang") if k in raw]
    if len(actions) != 1:
        raise ConfigError(f"{where}: give exactly one of xid, set, lost, hang")
    if actions[0] != "hang" and gpu is None:
        raise ConfigError(f"{where}: {actions[0]} needs a gpu index")
    xid = raw.get("xid")
    if xid is not None and (
        not isinstance(xid, int) or isinstance(xid, bool) or not 0 < xid < 2**31
    ):
        raise ConfigError(f"{where}: xid must be an integer in [1, 2**31), got {xid!r}")
    return Entry(
        float(at),
        gpu,
        xid=xid,
        set=_state(raw.get("set", {}), f"{where}: set"),
        lost=bool(raw.get("lost", False)),
        hang=str(raw["hang"]) if "hang" in raw else None,
    )


class FakeNvml:
    """The pynvml surface the adapter uses, playing `scenario` in real time."""

    def __init__(self, scenario: Scenario) -> None:
        self._scenario = scenario
        self._cond = threading.Condition()
        self._released = threading.Event()
        self._t0: float | None = None
        self._pending = list(scenario.timeline)
        self._gpus = [
            _FakeGpu(i, g["uuid"], g["name"], g["bus_id"], {**_HEALTHY, **g["state"]})
            for i, g in enumerate(scenario.gpus)
        ]
        self._queue: list[SimpleNamespace] = []
        self._hangs: list[tuple[str, int | None]] = []
        self.called: set[str] = set()  # every public name the adapter used

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and name not in ("called", "release"):
            object.__getattribute__(self, "called").add(name)
        return object.__getattribute__(self, name)

    def __getattr__(self, name: str) -> Any:
        """pynvml's constants, error class and structures, as module attributes are there."""
        try:
            return _EXPORTED[name]
        except KeyError:
            raise AttributeError(f"the fake NVML has no {name!r}") from None

    def __dir__(self) -> list[str]:
        return sorted({*object.__dir__(self), *_EXPORTED})

    # ------------------------------------------------------------------ clock

    def release(self) -> None:
        """Let every hung call return (tests clean up with it)."""
        self._released.set()

    def settle(self) -> None:
        """Play the rest of the timeline now: every pending entry becomes due at once.

        For the one-shot `supervise doctor`, which reads the GPUs right after opening NVML
        and would otherwise report the healthy state before a fault at 1 s. Called after
        the GPUs are resolved, so a GPU the scenario loses is read (and found lost), not
        left out of the listing.
        """
        with self._cond:
            self._pending = [replace(entry, at=0.0) for entry in self._pending]
            self._advance()
            self._cond.notify_all()

    def _now(self) -> float:
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    def _advance(self) -> None:
        """Apply every timeline entry that is due. Caller holds the condition."""
        now = self._now()
        while self._pending and self._pending[0].at <= now and self._t0 is not None:
            entry = self._pending.pop(0)
            gpu = self._gpus[entry.gpu] if entry.gpu is not None else None
            if entry.hang is not None:
                self._hangs.append((entry.hang, entry.gpu))
            elif gpu is not None and entry.xid is not None:
                self._post(gpu, nvmlEventTypeXidCriticalError, entry.xid)
            elif gpu is not None and entry.lost:
                gpu.lost = True
            elif gpu is not None:
                gpu.state.update(entry.set)
                if entry.set.get("recovery_action"):
                    self._post(gpu, nvmlEventTypeGpuRecoveryAction, 0)
                if entry.set.get("ecc_uncorrected_volatile"):
                    self._post(gpu, nvmlEventTypeDoubleBitEccError, 0)
            self._cond.notify_all()

    def _post(self, gpu: _FakeGpu, event_type: int, data: int) -> None:
        if gpu.events & event_type:
            self._queue.append(
                SimpleNamespace(
                    device=gpu,
                    eventType=event_type,
                    eventData=data,
                    gpuInstanceId=0xFFFFFFFF,
                    computeInstanceId=0xFFFFFFFF,
                )
            )

    def _enter(self, call: str, handle: _FakeGpu | None = None) -> None:
        """Apply due entries, block if this call is hung, fail if the GPU is lost."""
        with self._cond:
            self._advance()
            hung = any(
                fnmatch.fnmatchcase(call, pattern)
                and (gpu is None or handle is None or handle.index == gpu)
                for pattern, gpu in self._hangs
            )
        if hung:
            self._released.wait()
        if handle is not None:
            if handle.lost:
                raise NVMLError(NVML_ERROR_GPU_IS_LOST)
            if call in handle.state["unsupported"]:
                raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
            if call in handle.state["failing"]:
                raise NVMLError(NVML_ERROR_UNKNOWN)

    # ------------------------------------------------------------------ library

    def nvmlInit(self) -> None:
        with self._cond:
            if self._t0 is None:
                self._t0 = time.monotonic()
        self._enter("nvmlInit")

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _FakeGpu:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self._gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self._gpus[index]

    def nvmlDeviceGetUUID(self, h: _FakeGpu) -> str:
        self._enter("nvmlDeviceGetUUID", h)
        return h.uuid

    def nvmlDeviceGetName(self, h: _FakeGpu) -> str:
        self._enter("nvmlDeviceGetName", h)
        return h.name

    def nvmlDeviceGetPciInfo(self, h: _FakeGpu) -> SimpleNamespace:
        self._enter("nvmlDeviceGetPciInfo", h)
        return SimpleNamespace(busId=h.bus_id.encode())

    def _get(self, call: str, h: _FakeGpu, key: str) -> Any:
        self._enter(call, h)
        value = h.state[key]
        if value is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return value

    def nvmlDeviceGetTotalEccErrors(self, h: _FakeGpu, error_type: int, counter: int) -> int:
        assert (error_type, counter) == (NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC)
        return int(self._get("nvmlDeviceGetTotalEccErrors", h, "ecc_uncorrected_volatile"))

    def nvmlDeviceGetRemappedRows(self, h: _FakeGpu) -> tuple[int, int, int, int]:
        self._enter("nvmlDeviceGetRemappedRows", h)
        return (0, 0, int(bool(h.state["remap_pending"])), int(bool(h.state["remap_failure"])))

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h: _FakeGpu) -> int:
        return int(
            bool(self._get("nvmlDeviceGetRetiredPagesPendingStatus", h, "retired_pages_pending"))
        )

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: _FakeGpu) -> int:
        return int(self._get("nvmlDeviceGetCurrentClocksEventReasons", h, "clock_event_reasons"))

    def nvmlDeviceGetTemperature(self, h: _FakeGpu, sensor: int) -> int:
        assert sensor == NVML_TEMPERATURE_GPU
        return int(self._get("nvmlDeviceGetTemperature", h, "temperature_c"))

    def nvmlDeviceGetTemperatureThreshold(self, h: _FakeGpu, threshold: int) -> int:
        assert threshold == NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        return int(self._get("nvmlDeviceGetTemperatureThreshold", h, "temperature_slowdown_c"))

    def nvmlDeviceGetNvLinkState(self, h: _FakeGpu, link: int) -> int:
        self._enter("nvmlDeviceGetNvLinkState", h)
        if not 0 <= link < h.state["nvlink_links"]:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        up = h.state["nvlink_up"]
        return int(up is None or link in up)

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: _FakeGpu) -> int:
        return int(self._get("nvmlDeviceGetCurrPcieLinkWidth", h, "pcie_width"))

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: _FakeGpu) -> int:
        return int(self._get("nvmlDeviceGetMaxPcieLinkWidth", h, "pcie_width_max"))

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: _FakeGpu) -> int:
        return int(self._get("nvmlDeviceGetCurrPcieLinkGeneration", h, "pcie_generation"))

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: _FakeGpu) -> int:
        return int(self._get("nvmlDeviceGetMaxPcieLinkGeneration", h, "pcie_generation_max"))

    def nvmlDeviceGetPcieReplayCounter(self, h: _FakeGpu) -> int:
        return int(self._get("nvmlDeviceGetPcieReplayCounter", h, "pcie_replay"))

    def nvmlDeviceGetFieldValues(self, h: _FakeGpu, ids: list[int]) -> list[SimpleNamespace]:
        self._enter("nvmlDeviceGetFieldValues", h)
        s = h.state
        known = {
            NVML_FI_DEV_GET_GPU_RECOVERY_ACTION: s["recovery_action"],
            NVML_FI_DEV_NVLINK_LINK_COUNT: s["nvlink_links"],
            NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL: s["nvlink_replay_recovery"],
            NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL: 0,
            NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL: s["nvlink_crc"],
            NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL: 0,
        }
        out = []
        for fid in ids:
            value = known.get(fid)
            ret = NVML_SUCCESS if value is not None else NVML_ERROR_NOT_SUPPORTED
            out.append(
                SimpleNamespace(
                    fieldId=fid,
                    nvmlReturn=ret,
                    valueType=_VALUE_TYPE_ULL,
                    value=SimpleNamespace(ullVal=int(value or 0)),
                )
            )
        return out

    def nvmlDeviceGetGpuFabricInfoV(self, h: _FakeGpu, ref: Any) -> int:
        self._enter("nvmlDeviceGetGpuFabricInfoV", h)
        info = ref._obj  # ctypes.byref(structure) keeps the structure here
        s = h.state
        if s["fabric_state"] is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        info.state = s["fabric_state"]
        info.status = s["fabric_status"]
        info.healthSummary = s["fabric_health_summary"]
        info.healthMask = s["fabric_health_mask"]
        return NVML_SUCCESS

    # ------------------------------------------------------------------ events

    def nvmlEventSetCreate(self) -> object:
        self._enter("nvmlEventSetCreate")
        return object()

    def nvmlDeviceGetSupportedEventTypes(self, h: _FakeGpu) -> int:
        self._enter("nvmlDeviceGetSupportedEventTypes", h)
        return _ALL_EVENTS

    def nvmlDeviceRegisterEvents(self, h: _FakeGpu, mask: int, event_set: object) -> None:
        self._enter("nvmlDeviceRegisterEvents", h)
        with self._cond:
            h.events |= mask

    def nvmlEventSetWait_v2(self, event_set: object, timeout_ms: int) -> SimpleNamespace:
        self._enter("nvmlEventSetWait_v2")
        deadline = time.monotonic() + timeout_ms / 1000.0
        with self._cond:
            while True:
                self._advance()
                if self._queue:
                    return self._queue.pop(0)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NVMLError(NVML_ERROR_TIMEOUT)
                if self._pending and self._t0 is not None:
                    left = min(left, max(0.0, self._pending[0].at - self._now()))
                self._cond.wait(left)

    def nvmlEventSetFree(self, event_set: object) -> None:
        self._enter("nvmlEventSetFree")


_EXPORTED: dict[str, Any] = {
    name: value
    for name, value in globals().items()
    if name.startswith(("NVML_", "nvmlEventType", "NVMLError", "c_nvml"))
}


def load_fake(path: str) -> FakeNvml:
    """The fake for a scenario file; raises `ConfigError` for a bad file."""
    return FakeNvml(Scenario.load(path))
