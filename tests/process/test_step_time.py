"""Black-box: a trainer that slows down, with and without a GPU signal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# About 6 s of quick steps build the baseline (the sampler reads the channel 10 times a second),
# then each step takes 4x as long for about 8 s.
SLOWS_DOWN = """
import time, supervisor
sup = supervisor.attach()
for step in range(1, 400):
    time.sleep(0.02 if step < 300 else 0.08)
    sup.step(step)
"""
FLAGS = ["--step-time-sustain", "2", "--hang-timeout", "30"]


def test_a_slowdown_alone_is_only_a_warning(supervise) -> None:
    result = supervise(*FLAGS, "--", sys.executable, "-c", SLOWS_DOWN, timeout=120)
    assert result.returncode == 0
    warning = next(
        e["finding"]
        for e in result.events
        if e["event"] == "finding" and e["finding"]["kind"] == "step_time_regression"
    )
    assert warning["ratio"] >= 1.5


def test_a_slowdown_with_a_gpu_signal_is_degraded(supervise, tmp_path: Path) -> None:
    scenario = tmp_path / "crc.json"
    # NVLink CRC errors rise: on their own only a note (DCGM: WARN)
    scenario.write_text(
        json.dumps({"gpus": 1, "timeline": [{"at": 0.5, "gpu": 0, "set": {"nvlink_crc": 40}}]})
    )
    result = supervise(
        *FLAGS,
        "--fake-gpus",
        str(scenario),
        "--gpu-poll-interval",
        "0.2",
        "--grace-period",
        "2",
        "--",
        sys.executable,
        "-c",
        SLOWS_DOWN,
        timeout=120,
    )
    assert result.returncode == 83
    assert result.termination["evidence"][0]["kind"] == "degraded_slowdown"
