"""`supervise doctor`: a one-shot health report of the pod's GPUs.

`diagnose(options, samples, interval)` opens NVML (or the scenario fake), reads every GPU
`samples` times, `interval` seconds apart, through the same adapter and catalog the watchdog
uses, and returns a `Diagnosis`. Its `exit_code` is SUCCEEDED when healthy, DEVICE_FAILED
when any GPU failed, DEVICE_DEGRADED when any degraded, so the command can serve as an
initContainer or as `supervise --preflight`. Polled state only: Xid events are not replayed,
because NVML delivers only events that occur after registration. With `--fake-gpus`, the
scenario's whole timeline is applied before the first reading (`FakeNvml.settle`):
the doctor reports the state the scenario ends in, not the healthy GPUs before its faults.

Blocks for at most about `samples x interval` plus one call timeout per hung query. Raises
`ConfigError` for bad options, and when there is no NVML and `require_gpus` is set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from supervisor.core.errors import ConfigError
from supervisor.core.events import Finding
from supervisor.core.exitcodes import ExitCode
from supervisor.gpu.catalog import Gpu, GpuState, Memory, assess, unreachable_finding
from supervisor.gpu.nvml import CallTimedOut
from supervisor.gpu.watchdog import GpuOptions, load_rules, open_gpus


@dataclass
class GpuReport:
    gpu: Gpu
    state: GpuState | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def status(self) -> str:
        return _status([f.exit_code for f in self.findings])


@dataclass
class Diagnosis:
    gpus: list[GpuReport]
    other: list[Finding]  # about NVML itself: a hung call, a GPU the pod cannot reach
    no_nvml: str = ""  # why there is no NVML here ("" when there is)

    @property
    def exit_code(self) -> ExitCode:
        codes = [f.exit_code for f in self.findings()]
        for code in (ExitCode.DEVICE_FAILED, ExitCode.DEVICE_DEGRADED):
            if code in codes:
                return code
        return ExitCode.SUCCEEDED

    def findings(self) -> list[Finding]:
        return [*self.other, *(f for report in self.gpus for f in report.findings)]

    def as_dict(self) -> dict[str, object]:
        code = self.exit_code
        return {
            "exitCode": code.code,
            "name": code.name,
            "healthy": code is ExitCode.SUCCEEDED,
            "nvml": self.no_nvml or "ok",
            "gpus": [
                {
                    **report.gpu.evidence(),
                    "status": report.status,
                    "state": report.state.as_dict() if report.state else None,
                    "findings": [f.as_dict() for f in report.findings],
                }
                for report in self.gpus
            ],
            "findings": [f.as_dict() for f in self.other],
        }


def _status(codes: list[ExitCode | None]) -> str:
    if ExitCode.DEVICE_FAILED in codes:
        return "failed"
    if ExitCode.DEVICE_DEGRADED in codes:
        return "degraded"
    return "healthy"


def diagnose(options: GpuOptions, samples: int = 1, interval: float = 1.0) -> Diagnosis:
    """Read every GPU `samples` times; see the module docstring."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"--samples must be an integer ≥ 1, got {samples!r}")
    rules = load_rules(options.config)
    # One reading cannot show a streak: a HW clock-event bit counts when seen in every sample.
    polls = min(rules.thresholds.throttle_polls, samples)
    rules = replace(rules, thresholds=replace(rules.thresholds, throttle_polls=polls))
    nvml, gpus, early, why = open_gpus(options, rules)
    # A scenario's faults come at their `at` seconds, and the doctor reads at once: it reads
    # the state the scenario ends in (real NVML has no `settle`).
    settle = getattr(nvml.lib, "settle", None) if nvml is not None else None
    if settle is not None:
        settle()
    if nvml is None and not early:
        if options.require_gpus:
            raise ConfigError(f"--require-gpus: {why}; run on a GPU node with the NVIDIA driver")
        return Diagnosis([], [], no_nvml=why)
    reports = [GpuReport(gpu) for gpu in gpus]
    other = list(early)
    memory: dict[str, Memory] = {}
    try:
        for sample in range(samples):
            if sample:
                time.sleep(interval)
            for report in reports:
                assert nvml is not None
                try:
                    report.state = nvml.read(report.gpu)
                except CallTimedOut as err:
                    made = unreachable_finding(
                        "nvml_hang",
                        str(err),
                        report.gpu,
                        rules,
                        {"call": err.call, "bound_s": err.timeout},
                    )
                    report.findings = [made] if made else []
                    return Diagnosis(reports, other)
                found, memory[report.gpu.uuid] = assess(
                    report.gpu, report.state, memory.get(report.gpu.uuid, Memory()), rules
                )
                known = {(f.kind, f.detail.get("field")) for f in report.findings}
                report.findings += [
                    f for f in found if (f.kind, f.detail.get("field")) not in known
                ]
    finally:
        if nvml is not None:
            nvml.close()
    return Diagnosis(reports, other)


def render_table(diagnosis: Diagnosis) -> str:
    """A table a person reads in a pod log, then one line per finding."""
    if diagnosis.no_nvml:
        return f"No GPUs to check: {diagnosis.no_nvml}.\nStatus: healthy (nothing to check)"
    lines = [f"{'GPU':<4} {'UUID':<42} {'BUS ID':<17} {'TEMP':>5}  {'STATUS':<9} NAME"]
    for report in diagnosis.gpus:
        g, s = report.gpu, report.state
        temp = f"{s.temperature_c}C" if s is not None and s.temperature_c is not None else "-"
        lines.append(
            f"{g.index:<4} {g.uuid:<42} {g.bus_id:<17} {temp:>5}  {report.status:<9} {g.name}"
        )
    findings = diagnosis.findings()
    if findings:
        lines.append("")
        lines.append("Findings:")
        for f in findings:
            what = f.exit_code.name if f.exit_code is not None else "NOTE"
            lines.append(f"  [{what}] {f.summary}")
    code = diagnosis.exit_code
    lines.append("")
    lines.append(f"Status: {code.name} (exit {code.code})" if code.code else "Status: healthy")
    return "\n".join(lines)


def render_json(diagnosis: Diagnosis) -> str:
    return json.dumps(diagnosis.as_dict(), indent=2, default=str)


def preflight(options: GpuOptions, log: Callable[[str], None]) -> tuple[ExitCode, list[Finding]]:
    """For `supervise --preflight`: diagnose once, log the table; the class and evidence.

    SUCCEEDED means start the command; anything else means exit with it, nothing started.
    """
    diagnosis = diagnose(options)
    for line in render_table(diagnosis).splitlines():
        log(line)
    return diagnosis.exit_code, diagnosis.findings()
