"""Running the real `supervise` around the example trainer, for the process tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import SUPERVISE

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "examples" / "train.py")
STEPS = 300
# Slow enough that a signal lands mid-run, fast enough to keep the suite short.
TRAIN_ARGS = ["--steps", str(STEPS), "--step-time", "0.01", "--checkpoint-every", "1000"]


def supervised(ckpt: Path, tmp: Path, name: str, *extra: str, command=None, env=None):
    command = command or [sys.executable, TRAIN, *TRAIN_ARGS]
    return subprocess.Popen(
        [
            SUPERVISE,
            "--termination-log",
            str(tmp / f"{name}.term"),
            "--event-log",
            str(tmp / f"{name}.events"),
            "--checkpoint-dir",
            str(ckpt),
            *extra,
            "--",
            *command,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def wait_for_line(proc: subprocess.Popen, prefix: bytes, timeout: float = 120) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"output ended before a line starting {prefix!r}")
        if line.startswith(prefix):
            return
    raise AssertionError(f"no line starting {prefix!r} within {timeout} s")


def events(tmp: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (tmp / f"{name}.events").read_text().splitlines()]


def wait_for_event(tmp: Path, name: str, event: str, timeout: float = 30) -> dict:
    """The first `event` record in the run's event log, once supervise has written it."""
    path = tmp / f"{name}.events"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if record.get("event") == event:
                    return record
        time.sleep(0.02)  # a real process writes the log: poll it, bounded by `timeout`
    raise AssertionError(f"no {event!r} event in {path} within {timeout} s")


def termination(tmp: Path, name: str) -> dict:
    return json.loads((tmp / f"{name}.term").read_text())


def finish(proc: subprocess.Popen, timeout: float = 180) -> int:
    """Wait for the run; its remaining output is kept as `proc.output`."""
    out, _ = proc.communicate(timeout=timeout)
    proc.output = out.decode()  # type: ignore[attr-defined]
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(
    ckpt: Path,
    tmp: Path,
    name: str,
    *extra: str,
    steps: int = STEPS,
    per_node: dict[int, list[str]] | None = None,
    script: list[str] | None = None,
) -> list[subprocess.Popen]:
    """Two `supervise --nproc-per-node 1` pods of an Indexed Job, on loopback.

    The env is what the rendered Job gives a pod (index, node count, hostname, subdomain);
    only the master address is overridden to loopback. `per_node` adds flags to one node.
    `script` replaces the example trainer (a script and its arguments).
    """
    args = ["--steps", str(steps), *TRAIN_ARGS[2:]]
    port = str(free_port())
    nodes = []
    for index in (0, 1):
        env = {
            "JOB_COMPLETION_INDEX": str(index),
            "SUPERVISE_NNODES": "2",
            "HOSTNAME": f"train-{index}",
            "SUPERVISE_SUBDOMAIN": "train",
        }
        nodes.append(
            supervised(
                ckpt,
                tmp,
                f"{name}{index}",
                "--nproc-per-node",
                "1",
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                port,
                *extra,
                *(per_node or {}).get(index, []),
                command=script or [TRAIN, *args],
                env=env,
            )
        )
    return nodes
