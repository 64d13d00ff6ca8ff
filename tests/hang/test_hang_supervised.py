"""Hang detection end to end: the real `supervise` binary, real children, real torchrun.

Timing bounds are functional ("exits within timeout + 2 s" from the moment the stall began,
as the issue demands); CLOCK_MONOTONIC is system-wide, so the trainer's stall timestamp and
this test's clock agree.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TRAINER = str(HERE / "trainer.py")
HANG = 84


def findings(events: list[dict], kind: str) -> Iterator[dict]:
    """Every dict with this finding kind anywhere in the event log records."""

    def walk(value: object) -> Iterator[dict]:
        if isinstance(value, dict):
            if value.get("kind") == kind:
                yield value
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    for event in events:
        yield from walk(event)


def stall_finding(result) -> dict:
    found = [f for f in findings(result.events, "heartbeat_stall") if "stacks" in f]
    assert found, f"no heartbeat_stall with stacks in the event log: {result.events}"
    return found[-1]


def test_a_hang_before_the_first_step_trips_the_init_timeout(supervise) -> None:
    started = time.monotonic()
    result = supervise(
        "--init-timeout", "2", "--hang-timeout", "0.5", "--",
        sys.executable, TRAINER, "0", "0", "stall",
        timeout=60,
    )  # fmt: skip
    assert result.returncode == HANG, result.stderr.decode()[-2000:]
    assert time.monotonic() - started < 15
    assert result.termination["exitCode"] == HANG
    assert result.termination["name"] == "HANG"
    finding = stall_finding(result)
    assert finding["timeout_from"] == "init" and finding["step"] == -1
    assert "stall_here" in finding["stacks"]["0"]


@pytest.mark.slow
def test_a_slow_but_steady_run_is_never_called_a_hang(supervise) -> None:
    # 8 steps 0.6 s apart against a 1.5 s hang timeout: slow, steady, and successful.
    result = supervise(
        "--hang-timeout", "1.5", "--init-timeout", "5", "--",
        sys.executable, TRAINER, "8", "0.6", "exit",
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert not list(findings(result.events, "heartbeat_stall"))


def test_log_silence_fallback_for_an_uninstrumented_program(supervise) -> None:
    # a real uninstrumented child that goes silent: the log silence under test
    code = "import time\nprint('hello', flush=True)\ntime.sleep(600)"
    result = supervise("--log-silence-timeout", "1.5", "--", sys.executable, "-c", code, timeout=60)
    assert result.returncode == HANG, result.stderr.decode()[-2000:]
    assert list(findings(result.events, "log_silence"))


NCCL_TIMEOUT_LINE = (
    "[rank1]:[E ProcessGroupNCCL.cpp:632] [Rank 1] Watchdog caught collective operation "
    "timeout: WorkNCCL(SeqNum=12, OpType=ALLREDUCE, Timeout(ms)=600000) ran for 600065 "
    "milliseconds before timing out."
)


@pytest.mark.parametrize(
    "line, death, code, name",
    [
        (NCCL_TIMEOUT_LINE, "abort", 84, "HANG"),  # NCCL aborts the process: SIGABRT
        ("ncclRemoteError: A call failed possibly due to a network error", "exit", 86,
         "INFRA_FAILED"),
        ("RuntimeError: CUDA error: uncorrectable ECC error encountered", "exit", 82,
         "DEVICE_FAILED"),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "exit", 80,
         "TRAINING_FAILED"),
    ],
    ids=["nccl-timeout", "nccl-remote", "ecc", "oom"],
)  # fmt: skip
def test_a_matched_line_then_death_is_classified(supervise, line, death, code, name) -> None:
    program = (
        "import os, sys\n"
        f"sys.stderr.write({line!r} + '\\n')\n"
        "sys.stderr.flush()\n"
        f"os.abort() if {death!r} == 'abort' else sys.exit(1)\n"
    )
    result = supervise("--", sys.executable, "-c", program, timeout=60)
    assert result.returncode == code, result.termination
    assert result.termination["name"] == name
    assert line.encode() in result.stderr  # the log passes through unchanged
