"""The NVML adapter: the only module that imports `pynvml` (from the nvidia-ml-py package).

`Nvml` wraps a pynvml-shaped module: the real `pynvml` by default, or the scenario fake
(`supervisor.gpu.fake`) in tests and with `--fake-gpus`, so the same adapter code runs in both.
It reads what the catalog needs (`GpuState`), resolves the pod's GPUs by UUID, and waits for
Xid and other device events.

Guarantees:
* Every NVML call runs on a worker thread with a deadline. Any query against a wedged GPU can
  hang (nvidia-smi does; nvmlInit hangs on driver 570.x, NVIDIA/go-nvml#152). A call that
  misses its deadline raises `CallTimedOut` (a `DeviceError`: a hung NVML is itself evidence
  of a failed device); its thread is a daemon and is abandoned, and every later call through
  the same worker fails at once instead of queueing behind it.
* `open_nvml` never raises for a node without NVML (no library, no driver, no GPU): it
  returns None and one line saying why.
* Polls and event waits use separate workers, so a poll never delays an Xid.
* Values a device does not support (NOT_SUPPORTED, FUNCTION_NOT_FOUND on older drivers,
  NO_PERMISSION, INVALID_ARGUMENT) read as None. GPU_IS_LOST marks the state lost.
"""

from __future__ import annotations

import ctypes
import functools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from supervisor.core.errors import DeviceError
from supervisor.gpu.catalog import Gpu, GpuState

DEFAULT_CALL_TIMEOUT = 5.0  # seconds for one query; a healthy GPU answers in milliseconds
DEFAULT_INIT_TIMEOUT = 30.0  # nvmlInit takes seconds without persistence mode


class CallTimedOut(DeviceError):
    """An NVML call did not return within its bound. `call` names it."""

    def __init__(self, call: str, timeout: float) -> None:
        super().__init__(
            f"NVML call {call} did not return within {timeout:g} s: the GPU or its driver is "
            "wedged; reschedule the pod and have the node checked"
        )
        self.call = call
        self.timeout = timeout


class _Worker:
    """Runs calls one at a time on a daemon thread; the caller waits with a deadline."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self.hung: CallTimedOut | None = None

    def call(self, name: str, timeout: float, fn: Callable[[], Any]) -> Any:
        if self.hung is not None:  # NVML is stuck behind that call; do not queue behind it
            raise self.hung
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        box: list[Any] = []
        done = threading.Event()
        self._jobs.put((fn, box, done))
        if not done.wait(timeout):
            self.hung = CallTimedOut(name, timeout)
            raise self.hung
        ok, value = box
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        while True:
            fn, box, done = self._jobs.get()
            try:
                box.extend((True, fn()))
            except BaseException as err:  # handed to the caller, who decides
                box.extend((False, err))
            done.set()


@dataclass(frozen=True)
class DeviceEvent:
    """One event from `nvmlEventSetWait_v2`: `data` is the Xid for Xid events, else 0."""

    uuid: str
    event_type: int
    data: int


def load_pynvml() -> ModuleType:
    import pynvml  # the only import of pynvml in supervise

    return pynvml


def open_nvml(
    lib: Any | None = None,
    *,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    init_timeout: float = DEFAULT_INIT_TIMEOUT,
) -> tuple[Nvml | None, str]:
    """Initialise NVML. Returns (adapter, "") or (None, why there is no NVML here).

    Raises `CallTimedOut` when nvmlInit itself hangs: that is a wedged driver, not a CPU node.
    """
    if lib is None:
        try:
            lib = load_pynvml()
        except ImportError as err:
            return None, f"the pynvml module (nvidia-ml-py) is not installed: {err}"
    nvml = Nvml(lib, call_timeout)
    try:
        nvml._call("nvmlInit", lib.nvmlInit, timeout=init_timeout)
        count = nvml._call("nvmlDeviceGetCount", lib.nvmlDeviceGetCount)
    except lib.NVMLError as err:
        return None, f"NVML is not usable here ({_error_name(lib, err)}: {err})"
    if count == 0:
        nvml.close()
        return None, "NVML sees no GPU"
    return nvml, ""


_UNSUPPORTED = (
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_FUNCTION_NOT_FOUND",
    "NVML_ERROR_NO_PERMISSION",
    "NVML_ERROR_INVALID_ARGUMENT",
    "NVML_ERROR_NOT_FOUND",
)


class _Lost(Exception):
    """Internal: a call answered GPU_IS_LOST."""


class Nvml:
    """A pynvml-shaped module behind bounded calls. Thread-safe: NVML is; workers serialise."""

    def __init__(self, lib: Any, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self.lib = lib
        self.call_timeout = call_timeout
        self._poll = _Worker("supervise-nvml-poll")
        self._events = _Worker("supervise-nvml-events")
        self._handles: dict[str, Any] = {}
        self._uuids: dict[int, str] = {}  # handle address -> UUID, for events
        self._slowdown: dict[str, int | None] = {}
        self._event_set: Any = None
        self._unsupported = {getattr(lib, name) for name in _UNSUPPORTED}

    # ------------------------------------------------------------------ plumbing

    def _call(
        self, name: str, fn: Callable[..., Any], *args: Any, timeout: float | None = None
    ) -> Any:
        return self._poll.call(name, timeout or self.call_timeout, lambda: fn(*args))

    def _optional(self, name: str, *args: Any, errors: list[str] | None = None) -> Any:
        """A query that may be unsupported (None). GPU_IS_LOST raises `_Lost`.

        Any other NVML error also reads as None, so one flaky query never stops the watch;
        it is added to `errors` (as "call: error") when a list is given.
        """
        try:
            return self._call(name, getattr(self.lib, name), *args)
        except self.lib.NVMLError as err:
            if err.value == self.lib.NVML_ERROR_GPU_IS_LOST:
                raise _Lost() from err
            if err.value not in self._unsupported and errors is not None:
                errors.append(f"{name}: {_error_name(self.lib, err)}")
            return None

    # ------------------------------------------------------------------ devices

    def gpus(
        self, nvidia_visible: str | None, cuda_visible: str | None
    ) -> tuple[list[Gpu], list[str]]:
        """The pod's GPUs, and the NVIDIA_VISIBLE_DEVICES entries NVML cannot find.

        NVIDIA_VISIBLE_DEVICES (set by the device plugin: UUIDs, indices or `all`) picks from
        what NVML shows, and an entry NVML cannot find is a GPU the pod was given but cannot
        reach. CUDA_VISIBLE_DEVICES (UUIDs, UUID prefixes or indices) narrows further, its
        indices counting the GPUs left. Unset or `all`: every GPU NVML shows. MIG UUIDs are
        not resolved to their parent: with them, the whole list is watched.
        """
        lib = self.lib
        count = self._call("nvmlDeviceGetCount", lib.nvmlDeviceGetCount)
        found: list[Gpu] = []
        for index in range(count):
            try:
                handle = self._call(
                    "nvmlDeviceGetHandleByIndex", lib.nvmlDeviceGetHandleByIndex, index
                )
                uuid = _text(self._call("nvmlDeviceGetUUID", lib.nvmlDeviceGetUUID, handle))
            except lib.NVMLError:
                continue  # a GPU that cannot even be named; a listed UUID will show it missing
            bus_id = name = ""
            try:
                bus_id = _text(
                    self._call("nvmlDeviceGetPciInfo", lib.nvmlDeviceGetPciInfo, handle).busId
                )
                name = _text(self._call("nvmlDeviceGetName", lib.nvmlDeviceGetName, handle))
            except lib.NVMLError:
                pass
            self._handles[uuid] = handle
            self._uuids[_handle_key(handle)] = uuid
            found.append(Gpu(index, uuid, bus_id, name))
        chosen, missing = _select(found, nvidia_visible)
        narrowed, _ = _select(chosen, cuda_visible)
        # CUDA ignores entries it cannot resolve; so do we, and never narrow to nothing.
        return (narrowed or chosen), missing

    def handle(self, gpu: Gpu) -> Any:
        return self._handles[gpu.uuid]

    # ------------------------------------------------------------------ polling

    def read(self, gpu: Gpu) -> GpuState:
        """One bounded poll of `gpu`. Raises `CallTimedOut` when a query hangs."""
        now = time.monotonic()
        try:
            return self._read(gpu, now)
        except _Lost:
            return GpuState(at=now, lost=True)

    def _read(self, gpu: Gpu, now: float) -> GpuState:
        lib, h = self.lib, self.handle(gpu)
        errors: list[str] = []
        opt = functools.partial(self._optional, errors=errors)
        ecc = opt(
            "nvmlDeviceGetTotalEccErrors",
            h,
            lib.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            lib.NVML_VOLATILE_ECC,
        )
        remap = opt("nvmlDeviceGetRemappedRows", h)  # (corrected, uncorrected, pending, failed)
        retired = opt("nvmlDeviceGetRetiredPagesPendingStatus", h)
        fields = self._fields(h, errors)
        link_count = fields.get(lib.NVML_FI_DEV_NVLINK_LINK_COUNT) or 0
        links_up = None
        if link_count:
            states = [opt("nvmlDeviceGetNvLinkState", h, link) for link in range(int(link_count))]
            links_up = tuple(i for i, s in enumerate(states) if s == lib.NVML_FEATURE_ENABLED)
        if gpu.uuid not in self._slowdown:  # a constant of the board: read once
            self._slowdown[gpu.uuid] = opt(
                "nvmlDeviceGetTemperatureThreshold", h, lib.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
            )
        fabric = self._fabric(h, errors)
        return GpuState(
            at=now,
            ecc_uncorrected_volatile=ecc,
            remap_pending=None if remap is None else bool(remap[2]),
            remap_failure=None if remap is None else bool(remap[3]),
            retired_pages_pending=None if retired is None else retired == lib.NVML_FEATURE_ENABLED,
            recovery_action=fields.get(lib.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION),
            clock_event_reasons=opt("nvmlDeviceGetCurrentClocksEventReasons", h),
            temperature_c=opt("nvmlDeviceGetTemperature", h, lib.NVML_TEMPERATURE_GPU),
            temperature_slowdown_c=self._slowdown[gpu.uuid],
            nvlink_up=links_up,
            nvlink_replay_recovery=_total(
                fields,
                lib.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL,
                lib.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL,
            ),
            nvlink_crc=_total(
                fields,
                lib.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL,
                lib.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL,
            ),
            pcie_width=opt("nvmlDeviceGetCurrPcieLinkWidth", h),
            pcie_width_max=opt("nvmlDeviceGetMaxPcieLinkWidth", h),
            pcie_generation=opt("nvmlDeviceGetCurrPcieLinkGeneration", h),
            pcie_generation_max=opt("nvmlDeviceGetMaxPcieLinkGeneration", h),
            pcie_replay=opt("nvmlDeviceGetPcieReplayCounter", h),
            **fabric,
            errors=tuple(errors),
        )

    def _fields(self, h: Any, errors: list[str]) -> dict[int, int]:
        """The batched field values (one call; each value has its own return code)."""
        lib = self.lib
        ids = [
            lib.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION,
            lib.NVML_FI_DEV_NVLINK_LINK_COUNT,
            lib.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL,
            lib.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL,
            lib.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL,
            lib.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL,
        ]
        values = self._optional("nvmlDeviceGetFieldValues", h, ids, errors=errors)
        out: dict[int, int] = {}
        for value in values or ():
            if value.nvmlReturn == lib.NVML_SUCCESS:
                out[value.fieldId] = _field_value(lib, value)
        return out

    def _fabric(self, h: Any, errors: list[str]) -> dict[str, int | None]:
        """NVLink fabric state and health (Hopper and newer); empty when unsupported."""
        lib = self.lib
        info = lib.c_nvmlGpuFabricInfo_v3_t()
        if (
            self._optional("nvmlDeviceGetGpuFabricInfoV", h, ctypes.byref(info), errors=errors)
            is None
        ):
            return {}
        if info.state == lib.NVML_GPU_FABRIC_STATE_NOT_SUPPORTED:
            return {}
        return {
            "fabric_state": int(info.state),
            "fabric_status": int(info.status),
            "fabric_health_summary": int(info.healthSummary),
            "fabric_health_mask": int(info.healthMask),
        }

    # ------------------------------------------------------------------ events

    def watch_events(self, gpus: list[Gpu]) -> dict[str, int]:
        """Register every GPU for the device events worth waiting on; returns the mask per UUID.

        Only events after registration are delivered (NVML docs), which is why the watchdog
        also takes a snapshot. NOT_SUPPORTED leaves a GPU unregistered; the set stays usable.
        """
        lib = self.lib
        wanted = (
            lib.nvmlEventTypeXidCriticalError
            | lib.nvmlEventTypeDoubleBitEccError
            | lib.nvmlEventTypeSingleBitEccErrorStorm
            | lib.nvmlEventTypeDramRetirementFailure
            | lib.nvmlEventTypeFatalPoisonError
            | lib.nvmlEventTypeGpuUnavailableError
            | lib.nvmlEventTypeGpuRecoveryAction
        )
        self._event_set = self._call("nvmlEventSetCreate", lib.nvmlEventSetCreate)
        registered: dict[str, int] = {}
        for gpu in gpus:
            h = self.handle(gpu)
            try:
                supported = self._optional("nvmlDeviceGetSupportedEventTypes", h) or 0
            except _Lost:
                supported = 0  # the poll reports the lost GPU
            mask = wanted & supported
            for attempt in (mask, mask & lib.nvmlEventTypeXidCriticalError):
                # A device may reject the full mask; Xids alone are what the device plugin
                # registers for, so that is the fallback.
                mask = attempt
                if not mask:
                    break
                try:
                    self._call(
                        "nvmlDeviceRegisterEvents",
                        lib.nvmlDeviceRegisterEvents,
                        h,
                        mask,
                        self._event_set,
                    )
                    break
                except lib.NVMLError:
                    mask = 0
            registered[gpu.uuid] = mask
        return registered

    def wait_event(self, timeout_ms: int) -> DeviceEvent | None:
        """Wait up to `timeout_ms` milliseconds for one event; None on timeout.

        Bounded at `timeout_ms` plus the call timeout. GPU_IS_LOST comes back as an event of
        type `nvmlEventTypeGpuUnavailableError` with no UUID, other errors raise NVMLError.
        An event from a device not resolved by `gpus()` has the UUID "".
        """
        lib = self.lib
        bound = timeout_ms / 1000.0 + self.call_timeout
        try:
            data = self._events.call(
                "nvmlEventSetWait_v2",
                bound,
                lambda: lib.nvmlEventSetWait_v2(self._event_set, timeout_ms),
            )
        except lib.NVMLError as err:
            if err.value == lib.NVML_ERROR_TIMEOUT:
                return None
            if err.value == lib.NVML_ERROR_GPU_IS_LOST:
                return DeviceEvent("", lib.nvmlEventTypeGpuUnavailableError, 0)
            raise
        # Known by its handle: asking a lost GPU for its UUID would fail.
        uuid = self._uuids.get(_handle_key(data.device), "")
        return DeviceEvent(uuid, int(data.eventType), int(data.eventData))

    def close(self) -> None:
        """Free the event set and shut NVML down, unless a call is hung (then leave it be)."""
        lib = self.lib
        if self._poll.hung is not None or self._events.hung is not None:
            return
        try:
            if self._event_set is not None:
                self._call("nvmlEventSetFree", lib.nvmlEventSetFree, self._event_set)
                self._event_set = None
            self._call("nvmlShutdown", lib.nvmlShutdown)
        except (lib.NVMLError, CallTimedOut):
            pass


# ---------------------------------------------------------------------- values


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _handle_key(handle: Any) -> int:
    """A stable key for a device handle: pynvml returns a new pointer object per call."""
    try:
        return int(ctypes.cast(handle, ctypes.c_void_p).value or 0)
    except (TypeError, ctypes.ArgumentError):
        return id(handle)  # the fake's handles are plain objects


def _error_name(lib: Any, err: Any) -> str:
    for name in dir(lib):
        if name.startswith("NVML_ERROR_") and getattr(lib, name) == getattr(err, "value", None):
            return name
    return type(err).__name__


# nvmlValueType_t → the union member holding the value
_VALUE_MEMBERS = {
    0: "dVal",
    1: "uiVal",
    2: "ulVal",
    3: "ullVal",
    4: "sllVal",
    5: "siVal",
    6: "usVal",
}


def _field_value(lib: Any, value: Any) -> int:
    member = _VALUE_MEMBERS.get(int(value.valueType), "ullVal")
    return int(getattr(value.value, member))


def _total(fields: dict[int, int], *ids: int) -> int | None:
    present = [fields[i] for i in ids if i in fields]
    return sum(present) if present else None


def _select(gpus: list[Gpu], spec: str | None) -> tuple[list[Gpu], list[str]]:
    """Filter by a visibility list (UUIDs, UUID prefixes or indices into `gpus`)."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return gpus, []
    if spec.strip().lower() in ("none", "void", "nodevfiles"):
        return [], []
    if "MIG-" in spec:
        return gpus, []
    chosen: list[Gpu] = []
    missing: list[str] = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        if entry.isdigit():
            match = [gpus[int(entry)]] if int(entry) < len(gpus) else []
        else:
            match = [g for g in gpus if g.uuid == entry] or [
                g for g in gpus if g.uuid.startswith(entry)
            ]
        if len(match) != 1:
            missing.append(entry)
        elif match[0] not in chosen:
            chosen.append(match[0])
    return chosen, missing
