"""SIGKILL of supervise outside a PID namespace: no process of the tree survives.

Real `supervise`, real torchrun with two gloo workers on the CPU (each in a session of its
own, as torchrun starts them), each with a grandchild left in its process group. The
trainer writes every pid to a file; the test SIGKILLs supervise and watches them all go.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import SUPERVISE

WORKER = """
import os, subprocess, sys, time
import torch.distributed as dist
pids = sys.argv[1]
dist.init_process_group("gloo")
helper = subprocess.Popen(["sleep", "1000"])  # stays in the worker's group
with open(os.path.join(pids, f"rank{dist.get_rank()}"), "w") as f:
    f.write(f"{os.getpid()} {helper.pid} {os.getsid(0)}")
dist.barrier()
if dist.get_rank() == 0:
    print("ready", flush=True)
time.sleep(1000)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_sigkilled_supervise_leaves_no_torchrun_worker_behind(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.Popen(
        [
            SUPERVISE,
            "--termination-log",
            str(tmp_path / "term"),
            "--event-log",
            str(tmp_path / "events"),
            "--",
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", "2", str(script), str(pids),
        ],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    tree: list[int] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while proc.stdout.readline().strip() != b"ready":
            assert time.monotonic() < deadline and proc.poll() is None, "no ready line"
        started = [json.loads(line) for line in (tmp_path / "events").read_text().splitlines()]
        tree.append(next(e["pid"] for e in started if e["event"] == "child_started"))  # torchrun
        for name in ("rank0", "rank1"):
            worker, helper, session = map(int, (pids / name).read_text().split())
            assert session == worker  # torchrun's workers lead sessions of their own
            tree += [worker, helper]
        assert all(_alive(pid) for pid in tree)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while [pid for pid in tree if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.05)
        survivors = [pid for pid in tree if _alive(pid)]
        assert not survivors, f"survived a SIGKILLed supervise: {survivors}"
    finally:
        for pid in tree:
            if _alive(pid):
                psutil.Process(pid).kill()
        if proc.poll() is None:
            proc.kill()


def test_sigkilled_supervise_leaves_neither_its_childs_group_nor_a_new_session(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    script = (
        f"sleep 1000 & echo $! > {pids}; "  # stays in the child's group
        f"setsid sleep 1000 & echo $! >> {pids}; "  # a session of its own
        "echo ready; wait"
    )
    argv = [SUPERVISE, "--termination-log", os.devnull, "--event-log", os.devnull]
    proc = subprocess.Popen(
        [*argv, "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
    )
    tree: list[int] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        tree = [int(pid) for pid in pids.read_text().split()]
        assert len(tree) == 2 and all(_alive(pid) for pid in tree)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while [pid for pid in tree if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in tree if _alive(pid)], "survived a SIGKILLed supervise"
    finally:
        for pid in tree:
            if _alive(pid):
                psutil.Process(pid).kill()
        if proc.poll() is None:
            proc.kill()
