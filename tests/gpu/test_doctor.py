"""`supervise doctor` through the real console script, on scenarios and on this GPU-less machine."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import SUPERVISE

EXAMPLES = Path(__file__).resolve().parents[2] / "supervisor" / "gpu" / "scenarios"


def doctor(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SUPERVISE, "doctor", *args], capture_output=True, text=True, timeout=timeout
    )


def scenario(tmp_path: Path, **data) -> str:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_healthy_gpus_exit_0_with_a_table(tmp_path: Path) -> None:
    done = doctor("--fake-gpus", scenario(tmp_path, gpus=[{"uuid": "GPU-a"}, {"uuid": "GPU-b"}]))
    assert done.returncode == 0, done.stderr
    assert "GPU-a" in done.stdout and "GPU-b" in done.stdout and "Status: healthy" in done.stdout


def test_a_failed_gpu_exits_82_with_json_evidence() -> None:
    done = doctor("--json", "--fake-gpus", str(EXAMPLES / "preexisting_remap_failure.json"))
    assert done.returncode == 82, done.stderr
    report = json.loads(done.stdout)
    assert report["name"] == "DEVICE_FAILED" and report["healthy"] is False
    (gpu,) = report["gpus"]
    assert gpu["status"] == "failed" and gpu["state"]["remap_failure"] is True
    (finding,) = gpu["findings"]
    assert finding["kind"] == "remap_failure" and finding["gpu_uuid"] == gpu["gpu_uuid"]


def test_a_degraded_gpu_exits_83(tmp_path: Path) -> None:
    path = scenario(tmp_path, gpus=[{}, {"state": {"pcie_width": 4}}])
    done = doctor("--fake-gpus", path)
    assert done.returncode == 83, done.stdout
    assert "x4 of x16" in done.stdout and "DEVICE_DEGRADED" in done.stdout


def test_failed_outranks_degraded(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        gpus=[{"state": {"remap_pending": True}}, {"state": {"ecc_uncorrected_volatile": 1}}],
    )
    assert doctor("--fake-gpus", path).returncode == 82


def test_samples_over_time_catch_a_gpu_lost_after_start() -> None:
    done = doctor(
        "--json",
        "--fake-gpus",
        str(EXAMPLES / "lost_gpu.json"),
        "--samples",
        "3",
        "--interval",
        "0.6",
    )
    assert done.returncode == 82, done.stdout
    kinds = [f["kind"] for gpu in json.loads(done.stdout)["gpus"] for f in gpu["findings"]]
    assert kinds == ["gpu_lost"]


def test_a_hung_nvml_is_reported_within_its_bound(tmp_path: Path) -> None:
    path = scenario(
        tmp_path, gpus=1, timeline=[{"at": 0, "gpu": 0, "hang": "nvmlDeviceGetTemperature"}]
    )
    started = time.monotonic()
    done = doctor("--json", "--fake-gpus", path, "--nvml-timeout", "0.5", timeout=20)
    assert time.monotonic() - started < 10  # not forever: the bound is 0.5 s plus startup
    assert done.returncode == 82, done.stdout
    (finding,) = json.loads(done.stdout)["gpus"][0]["findings"]
    assert finding["kind"] == "nvml_hang" and finding["call"] == "nvmlDeviceGetTemperature"


def test_without_nvml_doctor_says_so_and_require_gpus_makes_it_a_config_error() -> None:
    done = doctor()
    assert done.returncode == 0, done.stderr
    assert "No GPUs to check" in done.stdout and "NVML" in done.stdout
    done = doctor("--require-gpus")
    assert done.returncode == 81
    assert done.stderr.count("\n") == 1 and "--require-gpus" in done.stderr


def test_a_bad_scenario_is_a_config_error_naming_the_flag(tmp_path: Path) -> None:
    done = doctor("--fake-gpus", str(tmp_path / "missing.json"))
    assert done.returncode == 81 and "--fake-gpus" in done.stderr


@pytest.mark.parametrize(
    "name", [p.stem for p in sorted(EXAMPLES.iterdir()) if p.suffix in (".json", ".yaml")]
)
def test_the_doctor_reports_the_state_a_shipped_scenario_ends_in(name: str) -> None:
    """The doctor reads at once; a fault at 1 s (or 20 s) must still show, not `healthy`."""
    path = next(p for p in EXAMPLES.iterdir() if p.stem == name)
    data = yaml.safe_load(path.read_text())  # JSON is YAML
    expected = data["expect"]["exit_code"]
    done = subprocess.run(
        [SUPERVISE, "doctor", "--fake-gpus", name, "--nvml-timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # An application Xid (80) is the trainer's fault: the GPU itself is healthy.
    assert done.returncode == (0 if expected == 80 else expected), done.stdout + done.stderr
