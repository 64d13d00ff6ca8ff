"""The GPU watchdog's threads against the scenario fake: snapshot, events, polls, hangs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from supervisor.core.errors import ConfigError
from supervisor.core.events import Found, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.gpu.fake import FakeNvml, Scenario
from supervisor.gpu.nvml import open_nvml
from supervisor.gpu.watchdog import GpuOptions, GpuWatchdog, build_gpu_watchdog, load_rules


class Inbox:
    def __init__(self) -> None:
        self.events: list[Found] = []
        self._cond = threading.Condition()

    def __call__(self, event: Found) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, kind: str, timeout: float = 5.0, **detail: object) -> Found:
        """The first finding of `kind` (whose detail has `detail`); waits up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    found = event.finding
                    wanted = all(found.detail.get(k) == v for k, v in detail.items())
                    if found.kind == kind and wanted:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [e.finding.kind for e in self.events]
                    raise AssertionError(f"no {kind!r} finding within {timeout} s; got {kinds}")
                self._cond.wait(left)

    def kinds(self) -> list[str]:
        return [e.finding.kind for e in self.events]


def watch(scenario: dict, poll: float = 0.05, timeout: float = 2.0, rules=None):
    lib = FakeNvml(Scenario.parse(scenario))
    nvml, why = open_nvml(lib, call_timeout=timeout)
    assert nvml is not None, why
    gpus, _ = nvml.gpus(None, None)
    dog = GpuWatchdog(nvml, gpus, rules or load_rules(None), poll_interval=poll)
    inbox = Inbox()
    dog.start(inbox, time.monotonic)
    return dog, inbox, lib


def test_faults_present_before_supervise_are_seen_by_the_start_snapshot() -> None:
    dog, inbox, _ = watch({"gpus": [{}, {"state": {"remap_failure": True}}]}, poll=60)
    try:
        found = inbox.wait_for("remap_failure", timeout=2).finding
    finally:
        dog.stop()
    assert found.exit_code is ExitCode.DEVICE_FAILED and found.urgency is Urgency.STOP
    assert found.detail["gpu_index"] == 1 and found.detail["gpu_uuid"].startswith("GPU-")
    assert found.detail["pci_bus_id"] == "00000000:19:00.0"


def test_a_fatal_xid_is_reported_once_with_its_evidence_soon_after_it_happens() -> None:
    t0 = time.monotonic()
    timeline = [
        {"at": 0.3, "gpu": 0, "xid": 79},
        {"at": 0.4, "gpu": 0, "xid": 79},  # the repeat
        {"at": 0.5, "gpu": 0, "xid": 13},  # a marker: events are handled in order, one thread
    ]
    dog, inbox, _ = watch({"timeline": timeline}, poll=60)
    try:
        event = inbox.wait_for("xid", xid=79)
        inbox.wait_for("xid", xid=13)  # so the repeat has been handled too
    finally:
        dog.stop()
    assert 0.3 <= event.at - t0 < 0.3 + 0.6  # the fake really waited; the adapter did not
    assert [e.finding.detail["xid"] for e in inbox.events] == [79, 13]  # the repeat: same evidence
    finding = event.finding
    assert finding.exit_code is ExitCode.DEVICE_FAILED and finding.urgency is Urgency.STOP
    assert finding.detail["xid"] == 79 and finding.detail["nvidia_action"] == "RESTART_BM"


def test_an_application_xid_is_evidence_for_a_later_death() -> None:
    dog, inbox, _ = watch({"timeline": [{"at": 0.1, "gpu": 0, "xid": 13}]}, poll=60)
    try:
        finding = inbox.wait_for("xid").finding
    finally:
        dog.stop()
    assert finding.exit_code is ExitCode.TRAINING_FAILED and finding.urgency is Urgency.ON_EXIT


def test_a_context_xid_makes_the_watchdog_read_the_drivers_verdict_at_once() -> None:
    dog, inbox, _ = watch(
        {
            "timeline": [
                {"at": 0.3, "gpu": 0, "xid": 154},
                {"at": 0.3, "gpu": 0, "set": {"recovery_action": 4}},  # drain and reset
            ]
        },
        poll=60,  # without the nudge the next poll would be a minute away
    )
    try:
        verdict = inbox.wait_for("recovery_reset", timeout=2).finding
        note = inbox.wait_for("xid").finding
    finally:
        dog.stop()
    assert note.urgency is Urgency.NOTE and note.exit_code is None
    assert verdict.exit_code is ExitCode.DEVICE_FAILED
    assert verdict.detail["recovery_action"] == "drain_and_reset"


def test_degraded_state_asks_for_a_checkpoint() -> None:
    dog, inbox, _ = watch({"timeline": [{"at": 0.2, "gpu": 0, "set": {"remap_pending": True}}]})
    try:
        finding = inbox.wait_for("remap_pending").finding
    finally:
        dog.stop()
    assert finding.exit_code is ExitCode.DEVICE_DEGRADED and finding.urgency is Urgency.CHECKPOINT


def test_a_hung_nvml_call_is_a_failed_device_and_does_not_hang_the_watchdog() -> None:
    dog, inbox, lib = watch(
        {"timeline": [{"at": 0.2, "gpu": 0, "hang": "nvmlDeviceGet*"}]}, poll=0.05, timeout=0.5
    )
    try:
        t0 = time.monotonic()
        event = inbox.wait_for("nvml_hang", timeout=5)
        assert event.at - t0 < 0.2 + 0.05 + 0.5 + 0.5  # hang + one poll + the bound + slack
        stopping = time.monotonic()
        dog.stop()  # a thread is still inside the hung call: stop must not wait for it
        assert time.monotonic() - stopping < 1.0
    finally:
        lib.release()
    finding = event.finding
    assert finding.exit_code is ExitCode.DEVICE_FAILED and finding.urgency is Urgency.STOP
    assert finding.detail["call"].startswith("nvmlDeviceGet") and finding.detail["bound_s"] == 0.5
    assert finding.detail["gpu_index"] == 0


def test_stop_is_prompt_and_safe_twice() -> None:
    # Only a later poll sees the change at 0.2 s (no event announces it): the poll loop has
    # turned, and is waiting for its next turn, when stop() comes.
    dog, inbox, _ = watch({"timeline": [{"at": 0.2, "gpu": 0, "set": {"remap_pending": True}}]})
    inbox.wait_for("remap_pending")
    started = time.monotonic()
    dog.stop()
    dog.stop()
    assert time.monotonic() - started < 1.0
    assert inbox.kinds() == ["remap_pending"]  # a poll read the GPU; nothing else came


# ------------------------------------------------------------ building it


def test_without_nvml_there_is_one_log_line_and_no_watchdog() -> None:
    lines: list[str] = []
    assert build_gpu_watchdog(GpuOptions(), lines.append) is None  # no driver on this machine
    assert len(lines) == 1 and "GPU watchdog off" in lines[0] and "NVML" in lines[0]
    with pytest.raises(ConfigError, match="--require-gpus"):
        build_gpu_watchdog(GpuOptions(require_gpus=True), lines.append)
    assert len(lines) == 1


def test_a_scenario_builds_a_watchdog_and_bad_files_are_config_errors(tmp_path: Path) -> None:
    good = tmp_path / "s.json"
    good.write_text(json.dumps({"gpus": 2}))
    dog = build_gpu_watchdog(GpuOptions(fake_gpus=str(good)), print)
    assert dog is not None and len(dog.gpus) == 2
    bad = tmp_path / "bad.json"
    for text, message in [
        ("{", "not valid JSON"),
        (json.dumps({"gpus": 1, "timeline": [{"at": 1, "gpu": 3, "xid": 79}]}), "gpu must be"),
        (json.dumps({"gpus": 1, "timeline": [{"at": 1, "gpu": 0}]}), "exactly one of"),
        (json.dumps({"gpus": 1, "timeline": [{"at": -1, "gpu": 0, "xid": 1}]}), "at must be"),
        (json.dumps({"gpus": [{"state": {"temp": 3}}]}), "unknown key"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            build_gpu_watchdog(GpuOptions(fake_gpus=str(bad)), print)
    config = tmp_path / "gpu.json"
    config.write_text(json.dumps({"xid": {"13": "bogus"}}))
    with pytest.raises(ConfigError, match="--gpu-config"):
        build_gpu_watchdog(GpuOptions(fake_gpus=str(good), config=str(config)), print)


def test_a_gpu_the_pod_was_given_but_nvml_cannot_find_is_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"gpus": [{"uuid": "GPU-here"}]}))
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-here,GPU-gone")
    dog = build_gpu_watchdog(GpuOptions(fake_gpus=str(scenario), poll_interval=60), print)
    assert dog is not None
    inbox = Inbox()
    dog.start(inbox, time.monotonic)
    try:
        finding = inbox.wait_for("gpu_missing").finding
    finally:
        dog.stop()
    assert finding.exit_code is ExitCode.DEVICE_FAILED and finding.detail["value"] == "GPU-gone"


def test_yaml_scenarios_load(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("gpus: 1\ntimeline:\n  - {at: 0.5, gpu: 0, xid: 13}\n")
    scenario = Scenario.load(path)
    assert scenario.timeline[0].xid == 13 and scenario.timeline[0].at == 0.5


def test_ecc_and_recovery_events_make_the_poll_read_the_evidence_at_once() -> None:
    """Registered for more than Xids: a double-bit ECC event alone brings the evidence in."""
    t0 = time.monotonic()
    dog, inbox, _ = watch(
        {"timeline": [{"at": 0.3, "gpu": 0, "set": {"ecc_uncorrected_volatile": 1}}]}, poll=60
    )
    try:
        event = inbox.wait_for("ecc_uncorrected", timeout=3)
    finally:
        dog.stop()
    assert event.at - t0 < 0.3 + 0.5  # the next scheduled poll was a minute away
    assert event.finding.detail["value"] == 1


def test_a_hung_nvml_init_gives_a_watchdog_that_reports_the_failed_device(tmp_path: Path) -> None:
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"gpus": 1, "timeline": [{"at": 0, "hang": "nvmlInit"}]}))
    started = time.monotonic()
    dog = build_gpu_watchdog(GpuOptions(fake_gpus=str(scenario), init_timeout=0.3), print)
    assert time.monotonic() - started < 2.0
    assert dog is not None  # not "no NVML": a wedged driver is a failed device
    inbox = Inbox()
    dog.start(inbox, time.monotonic)
    finding = inbox.wait_for("nvml_hang", timeout=1).finding
    dog.stop()
    assert finding.exit_code is ExitCode.DEVICE_FAILED and finding.detail["call"] == "nvmlInit"
