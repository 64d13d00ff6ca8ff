"""The GPU watchdog: NVML events and polls turned into `Found` events for the loop.

`build_gpu_watchdog(options, log)` opens NVML (the real library, or the scenario fake with
`--fake-gpus`), resolves the pod's GPUs and returns a `GpuWatchdog`, or None where there is
no NVML (CPU node, no driver, library missing), after ONE log line saying so; training then
runs unwatched. With `require_gpus` that case raises `ConfigError` instead.

`GpuWatchdog` implements the `Watchdog` protocol of `supervisor.core.events`:
* `start` returns at once. It starts two daemon threads: the event thread registers for Xid,
  double-bit ECC, poison, GPU-unavailable and recovery-action events and waits on them
  (`nvmlEventSetWait_v2`, 500 ms at a time); the poll thread reads every GPU at once (the
  start snapshot, so faults from before supervise are seen) and then every `poll_interval`,
  or at once when an event asks for the driver's verdict.
* Each distinct finding (GPU, kind, Xid or field) is reported once, from whichever thread saw
  it, through `report` (thread-safe, never blocks). The catalog decides its class.
* A hung NVML call (bounded by `nvml.CallTimedOut`) is reported as DEVICE_FAILED and ends the
  thread that made it: nothing waits on it, and supervise carries on to stop the run.
* An unexpected error in a thread is reported as a NOTE finding, never swallowed silently.
* `stop` returns at once (it does not wait out an event wait) and is safe to call twice;
  NVML is shut down from a daemon thread once both threads are out of it, never while a
  call is hung.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.core.errors import ConfigError
from supervisor.core.events import Finding, Found, Report
from supervisor.gpu.catalog import (
    Gpu,
    Memory,
    Rules,
    Verdict,
    assess,
    unreachable_finding,
    xid_finding,
)
from supervisor.gpu.nvml import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_INIT_TIMEOUT,
    CallTimedOut,
    DeviceEvent,
    Nvml,
    open_nvml,
)

DEFAULT_POLL_INTERVAL = 2.0
EVENT_WAIT_MS = 500  # how long one nvmlEventSetWait_v2 blocks; bounds how late stop() is


@dataclass(frozen=True)
class GpuOptions:
    """The GPU flags. Each has an environment twin, declared where the CLI defines it."""

    poll_interval: float = DEFAULT_POLL_INTERVAL  # --gpu-poll-interval
    fake_gpus: str | None = None  # --fake-gpus SCENARIO
    config: str | None = None  # --gpu-config FILE (JSON: class overrides, thresholds)
    require_gpus: bool = False  # --require-gpus: no NVML is a CONFIG_ERROR
    call_timeout: float = DEFAULT_CALL_TIMEOUT  # --nvml-timeout: seconds one NVML query may take
    init_timeout: float = DEFAULT_INIT_TIMEOUT  # nvmlInit takes seconds without persistence mode

    def __post_init__(self) -> None:
        for flag, value in (
            ("--gpu-poll-interval", self.poll_interval),
            ("--nvml-timeout", self.call_timeout),
            ("the NVML init timeout", self.init_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{flag} must be a number of seconds, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{flag} must be a positive number of seconds, got {value!r}")
        if self.fake_gpus is not None:
            # Imported here: the scenario files (and pathlib with them) matter only to a fake.
            from supervisor.gpu.files import scenario_path, shipped_scenarios

            if not os.path.isfile(scenario_path(self.fake_gpus)):
                raise ConfigError(
                    f"--fake-gpus: no such file or shipped scenario {self.fake_gpus!r}; "
                    "shipped: " + ", ".join(shipped_scenarios())
                )
        if self.config is not None and not os.path.isfile(self.config):
            raise ConfigError(f"--gpu-config: no such file {self.config!r}; give a JSON file")


def load_rules(path: str | None) -> Rules:
    """The catalog with the overrides in `path` (JSON). Raises `ConfigError`."""
    if path is None:
        return Rules()
    from supervisor.gpu.files import read_data

    data = read_data(path, "--gpu-config")  # bounded, and NaN/Infinity refused
    return Rules.from_mapping(data, f"--gpu-config {path}")


def open_gpus(
    options: GpuOptions, rules: Rules
) -> tuple[Nvml | None, list[Gpu], list[Finding], str]:
    """Open NVML (real or fake) and resolve the pod's GPUs.

    Returns (nvml, gpus, findings already known, why there is no NVML). A hang while opening
    comes back as a DEVICE_FAILED finding with nvml None. Raises `ConfigError` for a bad
    scenario file.
    """
    lib = None
    if options.fake_gpus is not None:
        from supervisor.gpu.fake import load_fake

        lib = load_fake(options.fake_gpus)
    try:
        nvml, why = open_nvml(
            lib, call_timeout=options.call_timeout, init_timeout=options.init_timeout
        )
        if nvml is None:
            return None, [], [], why
        try:
            gpus, missing = nvml.gpus(
                os.environ.get("NVIDIA_VISIBLE_DEVICES"), os.environ.get("CUDA_VISIBLE_DEVICES")
            )
        except nvml.lib.NVMLError as err:
            return None, [], [], f"NVML could not list the GPUs ({err})"
    except CallTimedOut as err:
        made = unreachable_finding(
            "nvml_hang", str(err), None, rules, {"call": err.call, "bound_s": err.timeout}
        )
        return None, [], [made] if made else [], ""
    findings = []
    for entry in missing:
        made = unreachable_finding(
            "gpu_missing",
            f"GPU {entry} from NVIDIA_VISIBLE_DEVICES is not visible to NVML: lost or not "
            "attached.",
            None,
            rules,
            {"field": "NVIDIA_VISIBLE_DEVICES", "value": entry},
        )
        if made:
            findings.append(made)
    if not gpus and not findings:
        nvml.close()
        return None, [], [], "no GPU is visible to this container (NVIDIA_VISIBLE_DEVICES)"
    return nvml, gpus, findings, ""


def build_gpu_watchdog(options: GpuOptions, log: Callable[[str], None]) -> GpuWatchdog | None:
    """The run's GPU watchdog, or None (after one `log` line) where there is no NVML.

    Raises `ConfigError` for bad options or files, and for no NVML with `require_gpus`.
    """
    rules = load_rules(options.config)
    nvml, gpus, early, why = open_gpus(options, rules)
    if nvml is None and not early:
        if options.require_gpus:
            raise ConfigError(
                f"--require-gpus: {why}; run on a GPU node with the NVIDIA driver, "
                "or drop --require-gpus"
            )
        log(f"GPU watchdog off: {why}; training runs without GPU health checks")
        return None
    return GpuWatchdog(nvml, gpus, rules, options.poll_interval, early)


class GpuWatchdog:
    """Watches the pod's GPUs from two daemon threads; see the module docstring."""

    name = "gpu"

    def __init__(
        self,
        nvml: Nvml | None,
        gpus: list[Gpu],
        rules: Rules,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        early: list[Finding] | None = None,
    ) -> None:
        self.nvml = nvml
        self.gpus = list(gpus)
        self.rules = rules
        self.poll_interval = poll_interval
        self._early = list(early or [])
        self._by_uuid = {gpu.uuid: gpu for gpu in gpus}
        self._memory: dict[str, Memory] = {}
        self._seen: set[tuple[object, ...]] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._poll_now = threading.Event()
        self._threads: list[threading.Thread] = []
        self._report: Report | None = None
        self._clock: Callable[[], float] | None = None
        self.polls = 0  # completed poll rounds (tests read it)

    # ---------------------------------------------------------------- protocol

    def start(self, report: Report, clock_monotonic: Callable[[], float]) -> None:
        self._report, self._clock = report, clock_monotonic
        for made in self._early:
            self._emit(made)
        if self.nvml is None:
            return
        for target, name in ((self._watch_events, "events"), (self._poll, "poll")):
            thread = threading.Thread(
                target=self._guarded, args=(target,), daemon=True, name=f"supervise-gpu-{name}"
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        self._poll_now.set()
        threads, self._threads = self._threads, []
        for thread in threads:
            # The poll thread leaves at once; the event thread may sit in its 500 ms wait,
            # and every millisecond here delays the exit, so nobody waits for it.
            thread.join(timeout=0.02)
        nvml, self.nvml = self.nvml, None
        if nvml is not None:
            # NVML is shut down only after both threads are out of it (an event wait may
            # still be inside its 500 ms); stop() itself does not wait for that.
            closer = threading.Thread(
                target=_close_after, args=(nvml, threads), daemon=True, name="supervise-gpu-close"
            )
            closer.start()

    # ---------------------------------------------------------------- reporting

    def _emit(self, finding: Finding) -> None:
        detail = finding.detail
        key = (finding.kind, detail.get("gpu_uuid"), detail.get("xid"), detail.get("field"))
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        assert self._report is not None and self._clock is not None
        self._report(Found(finding, self._clock()))

    def _hung(self, err: CallTimedOut, gpu: Gpu | None) -> None:
        made = unreachable_finding(
            "nvml_hang", str(err), gpu, self.rules, {"call": err.call, "bound_s": err.timeout}
        )
        if made:
            self._emit(made)

    def _guarded(self, target: Callable[[], None]) -> None:
        try:
            target()
        except CallTimedOut as err:  # not tied to one GPU's query: name the GPU if only one
            self._hung(err, self.gpus[0] if len(self.gpus) == 1 else None)
        except Exception as err:  # reported, never silent; the other thread carries on
            self._emit(
                Finding(
                    "gpu",
                    "watchdog_error",
                    f"The GPU watchdog's {target.__name__.strip('_')} thread failed: {err!r}",
                    detail={"error": repr(err)},
                )
            )

    # ---------------------------------------------------------------- threads

    def _poll(self) -> None:
        assert self.nvml is not None
        while not self._stopping.is_set():
            self._poll_now.clear()
            for gpu in self.gpus:
                try:
                    state = self.nvml.read(gpu)
                except CallTimedOut as err:
                    self._hung(err, gpu)
                    return
                findings, self._memory[gpu.uuid] = assess(
                    gpu, state, self._memory.get(gpu.uuid, Memory()), self.rules
                )
                for made in findings:
                    self._emit(made)
            self.polls += 1
            self._poll_now.wait(self.poll_interval)

    def _watch_events(self) -> None:
        assert self.nvml is not None
        self.nvml.watch_events(self.gpus)
        while not self._stopping.is_set():
            event = self.nvml.wait_event(EVENT_WAIT_MS)
            if event is not None:
                self._on_event(event)

    def _on_event(self, event: DeviceEvent) -> None:
        lib = self.nvml.lib if self.nvml is not None else None
        gpu = self._by_uuid.get(event.uuid)
        if lib is None or (gpu is None and event.uuid):
            return  # a GPU this pod does not own
        if event.event_type == lib.nvmlEventTypeXidCriticalError and gpu is not None:
            made = xid_finding(gpu, event.data, self.rules)
            if made is not None:
                self._emit(made)
            if self.rules.xid_verdict(event.data) is Verdict.CONTEXT:
                self._poll_now.set()  # the driver's recovery action says what it meant
        elif event.event_type == lib.nvmlEventTypeGpuUnavailableError:
            made = unreachable_finding(
                "gpu_lost",
                f"{gpu.label() if gpu else 'A GPU'} became unavailable (NVML GPU-unavailable "
                "event).",
                gpu,
                self.rules,
                {"field": "event", "value": "GpuUnavailableError"},
            )
            if made:
                self._emit(made)
        else:  # ECC, poison, retirement, recovery action: the poll reads the evidence now
            self._poll_now.set()


def _close_after(nvml: Nvml, threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(timeout=EVENT_WAIT_MS / 1000.0 + nvml.call_timeout)
        if thread.is_alive():
            return  # stuck inside NVML: leave the library alone
    nvml.close()
