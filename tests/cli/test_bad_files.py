"""Bad configuration and scenario files, and bad checkpoint URLs, are one CONFIG_ERROR line.

Through the real `supervise` CLI, each under a timeout and a memory limit: a file that
asked for a huge allocation (`"gpus": 100000000`) must be refused before anything of that
size is made, so the address-space limit would turn a regression into a MemoryError.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.gpu.files import shipped_scenarios

MEMORY_LIMIT = 1 << 30  # 1 GiB of address space: far above a refusal, far below 7.8 GB


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _supervise(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISE_")}
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )


def _one_line_81(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert done.returncode == 81, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("supervise"), lines
    for needle in needles:
        assert needle in lines[0], lines


SCENARIOS = {
    "binary": b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00" * 100,
    "nan-at": b'{"gpus": 1, "timeline": [{"at": NaN, "gpu": 0, "xid": 79}]}',
    "infinity-state": b'{"gpus": [{"state": {"temperature": Infinity}}]}',
    "yaml-nan": b"gpus: 1\ntimeline:\n- {at: .nan, gpu: 0, xid: 79}\n",
    "huge-count": b'{"gpus": 100000000}',
    "float-count": b'{"gpus": 1e8}',
    "negative-count": b'{"gpus": -1}',
    "huge-list": b'{"gpus": [' + b"{}," * 300 + b"{}]}",
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "too-large": b'{"description": "' + b"x" * (2 << 20) + b'"}',
    "huge-xid": b'{"gpus": 1, "timeline": [{"at": 1, "gpu": 0, "xid": 123456789012345678901}]}',
    "huge-at": b'{"gpus": 1, "timeline": [{"at": 1e300, "gpu": 0, "xid": 79}]}',
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("command", ["run", "doctor"])
def test_a_bad_scenario_file_is_one_line(tmp_path: Path, name: str, command: str) -> None:
    suffix = ".yaml" if name.startswith("yaml") else ".json"
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(SCENARIOS[name])
    head = ["doctor"] if command == "doctor" else ["--termination-log", "t"]
    tail = [] if command == "doctor" else ["--", "true"]
    done = _supervise(tmp_path, *head, "--fake-gpus", str(path), *tail)
    _one_line_81(done, "--fake-gpus")


RULES = {
    "nan": b'{"thresholds": {"temperature_c": NaN}}',
    "infinity": b'{"thresholds": {"temperature_c": -Infinity}}',
    "binary": b"\x00\x01\x02\xff" * 64,
    "too-large": b"[" + b"1," * (1 << 20) + b"1]",
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_a_bad_gpu_config_is_one_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.json"
    path.write_bytes(RULES[name])
    done = _supervise(tmp_path, "doctor", "--fake-gpus", "xid79", "--gpu-config", str(path))
    _one_line_81(done, "--gpu-config")


@pytest.mark.parametrize(
    "url",
    [
        "zip::s3://bucket/ckpt.zip",
        "simplecache::s3://bucket/ckpt",
        "zip://inner::file:///tmp/x.zip",
        "zip://ckpt.zip",
        "https://example.com/ckpt",
        "a-regular-file",
    ],
)
def test_a_checkpoint_dir_that_cannot_hold_checkpoints_is_one_line(
    tmp_path: Path, url: str
) -> None:
    (tmp_path / "a-regular-file").write_text("not a directory")
    done = _supervise(tmp_path, "--termination-log", "t", "--checkpoint-dir", url, "--", "true")
    _one_line_81(done)
    assert "checkpoint" in done.stderr


def test_a_regular_file_is_refused_by_ckpt_too(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    done = _supervise(tmp_path, "ckpt", "ls", "f")
    assert done.returncode == 81 and "regular file" in done.stderr, done.stderr


def test_a_shipped_scenario_is_found_by_name(tmp_path: Path) -> None:
    assert {"xid79", "xid13", "remap_pending"} <= set(shipped_scenarios())
    done = _supervise(tmp_path, "doctor", "--fake-gpus", "xid79", "--json")
    assert done.returncode in (0, 82), done.stderr
    done = _supervise(tmp_path, "doctor", "--fake-gpus", "no-such-scenario")
    _one_line_81(done, "--fake-gpus", "xid79")
