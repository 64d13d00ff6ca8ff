"""An output that cannot be written is one warning, never a hang or a crash: the run goes
on and exits with its class. The real `supervise` binary on real files, FIFOs and a full
disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SUPERVISE

TRAINING_FAILED = 80
FAILS = ["sh", "-c", "echo working; exit 3"]


def run(*args: str, command: list[str] = FAILS, timeout: float = 30):
    started = time.monotonic()
    proc = subprocess.run([SUPERVISE, *args, "--", *command], capture_output=True, timeout=timeout)
    proc.took = time.monotonic() - started  # type: ignore[attr-defined]
    return proc


def warnings(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if line.startswith("supervise: warn")]


@pytest.mark.parametrize(
    "where",
    ["/dev/full", "a directory", "missing/dir/events", "a fifo without a reader"],
)
def test_an_event_log_that_cannot_be_written_is_one_warning(tmp_path: Path, where: str) -> None:
    path = {
        "a directory": str(tmp_path),
        "missing/dir/events": str(tmp_path / "missing" / "dir" / "events"),
        "a fifo without a reader": str(tmp_path / "fifo"),
    }.get(where, where)
    if where.startswith("a fifo"):
        os.mkfifo(path)
    term = tmp_path / "term"
    proc = run("--event-log", path, "--termination-log", str(term))
    assert proc.returncode == TRAINING_FAILED, proc.stderr.decode()
    assert proc.stdout == b"working\n"
    [warning] = warnings(proc.stderr)
    assert "--event-log" in warning
    assert b"Traceback" not in proc.stderr
    assert json.loads(term.read_text())["exitCode"] == TRAINING_FAILED
    assert proc.took < 20


def test_a_termination_log_on_a_fifo_without_a_reader_is_one_warning(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    events = tmp_path / "events"
    proc = run("--event-log", str(events), "--termination-log", str(fifo))
    assert proc.returncode == TRAINING_FAILED, proc.stderr.decode()
    [warning] = warnings(proc.stderr)
    assert "--termination-log" in warning
    names = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert names[-2:] == ["output_unwritable", "exit"]  # said, then the verdict, last


needs_root_mount = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root"
)


@pytest.fixture
def small_disk(tmp_path: Path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@needs_root_mount
def test_an_event_log_on_a_disk_that_fills_mid_run_is_one_warning(
    tmp_path: Path, small_disk: Path
) -> None:
    events, term = small_disk / "events", tmp_path / "term"
    # The trainer fills the disk, then makes supervise write event after event (each
    # SIGUSR1 is a `signal_forwarded` line) until the event log's last page is full too.
    script = (
        f"trap '' USR1; head -c 1000000 /dev/zero > {small_disk}/big 2>/dev/null; "
        "i=0; while [ $i -lt 120 ]; do kill -USR1 $PPID; sleep 0.005; i=$((i+1)); done; "
        "echo filled; exit 3"
    )
    proc = run(
        "--event-log", str(events), "--termination-log", str(term), command=["sh", "-c", script]
    )
    assert proc.returncode == TRAINING_FAILED, proc.stderr.decode()
    assert proc.stdout == b"filled\n"
    [warning] = warnings(proc.stderr)
    assert "--event-log" in warning and "No space left" in warning
    assert b"Traceback" not in proc.stderr
    assert json.loads(term.read_text())["exitCode"] == TRAINING_FAILED
    written = events.read_bytes()
    assert written and b"signal_forwarded" in written  # it was written until the disk filled
