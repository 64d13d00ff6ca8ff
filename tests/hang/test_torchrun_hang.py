"""Acceptance for issue 3: real `supervise`, real torchrun, 2 gloo ranks on CPU, one stalls.

One rank stalls in plain Python (its peer then waits inside all_reduce) or inside a
collective its peer never joins. supervise must exit HANG (84) within the hang timeout plus
2 s of the stall, with both ranks' stacks in the evidence and the stalled rank named.
CLOCK_MONOTONIC is system-wide, so the trainer's stall timestamp and this test's clock agree.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.hang.test_hang_supervised import HANG, stall_finding

DIST_TRAINER = str(Path(__file__).with_name("dist_trainer.py"))


def stall_time(stdout: bytes) -> float:
    for line in stdout.decode().splitlines():
        if line.startswith("STALL "):
            return float(line.split()[2])
    raise AssertionError(f"the trainer never stalled: {stdout.decode()[-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["python", "collective"])
def test_torchrun_two_gloo_ranks_one_stalls(supervise, mode: str) -> None:
    hang_timeout = 4.0
    result = supervise(
        "--hang-timeout", str(hang_timeout), "--init-timeout", "120", "--",
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        DIST_TRAINER, mode,
        timeout=180,
    )  # fmt: skip
    ended = time.monotonic()
    stderr = result.stderr.decode()[-3000:]
    assert result.returncode == HANG, stderr
    assert ended - stall_time(result.stdout) <= hang_timeout + 2.0
    assert result.termination["exitCode"] == HANG, result.termination
    summary = " ".join(e.get("summary", "") for e in result.termination["evidence"])
    assert "rank 1" in summary, result.termination
    finding = stall_finding(result)
    assert finding["rank"] == 1
    assert set(finding["stacks"]) == {"0", "1"}, finding.get("missing")
    if mode == "python":
        assert "stall_in_python" in finding["stacks"]["1"]
        assert finding["named_by"] == "stacks" and finding["suspects"] == [1]
    else:
        assert "all_reduce" in finding["stacks"]["1"]
        assert [s["rank"] for s in finding["stalled"]] == [1]
