"""Stacks from real processes via SIGUSR2, Flight Recorder env and pipes, suspects."""

from __future__ import annotations

import os
import time
from pathlib import Path

from supervisor.hang.stacks import (
    FR_PIPE_STEM,
    FR_SUBDIR,
    child_env_defaults,
    collect_stacks,
    flight_recorder_files,
    hang_evidence,
    suspects,
    trigger_flight_recorder,
    waiting_in_collective,
)


def wait_ready(proc) -> None:
    assert "stepped" in proc.stdout.readline()


def test_stacks_come_from_a_real_stalled_process(spawn) -> None:
    proc = spawn("2", "0.01", "stall", rank=0)
    wait_ready(proc)
    got = collect_stacks({0: proc.pid}, spawn.stacks_dir, timeout=5)
    assert got["missing"] == [] and got["method"] == {"0": "faulthandler"}
    text = got["stacks"]["0"]
    assert "stall_here" in text and "trainer.py" in text
    assert proc.poll() is None  # SIGUSR2 dumped, it did not kill


def test_a_second_collection_returns_only_the_new_dump(spawn) -> None:
    proc = spawn("2", "0.01", "stall", rank=0)
    wait_ready(proc)
    first = collect_stacks({0: proc.pid}, spawn.stacks_dir, timeout=5)["stacks"]["0"]
    second = collect_stacks({0: proc.pid}, spawn.stacks_dir, timeout=5)["stacks"]["0"]
    assert second.count("most recent call first") == first.count("most recent call first")


def test_a_process_without_the_handler_is_never_signalled(spawn, tmp_path) -> None:
    # No SUPERVISE_STACKS_DIR: the client registered nothing, so SIGUSR2 would kill it.
    proc = spawn("2", "0.01", "stall", rank=1, env={"SUPERVISE_STACKS_DIR": ""})
    wait_ready(proc)
    started = time.monotonic()
    got = collect_stacks({1: proc.pid}, spawn.stacks_dir, timeout=0.5)
    assert got["missing"] == [1] or got["method"].get("1") == "py-spy"
    assert time.monotonic() - started < 5
    assert proc.poll() is None


def test_a_vanished_rank_is_missing_not_an_error(tmp_path: Path) -> None:
    got = collect_stacks({0: 2**22 + 4321}, str(tmp_path), timeout=0.2)
    assert got["missing"] == [0]


def test_suspects_are_stalled_ranks_outside_collectives() -> None:
    in_coll = 'File "/x/torch/distributed/distributed_c10d.py", line 1, in all_reduce\n'
    in_py = 'File "/x/train.py", line 9, in stall_here\n'
    assert waiting_in_collective(in_coll) and not waiting_in_collective(in_py)
    assert suspects({"0": in_coll, "1": in_py}, stalled=[0, 1]) == [1]
    assert suspects({"0": in_py, "1": in_py}, stalled=[0, 1]) == []  # nobody to compare
    assert suspects({"0": in_coll, "1": in_coll}, stalled=[0, 1]) == []
    assert suspects({"0": in_coll, "1": in_py}, stalled=[0]) == []


def test_child_env_defaults_fill_only_what_the_user_left_unset(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    env = child_env_defaults(run_dir, environ={})
    fr = os.path.join(run_dir, FR_SUBDIR)
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3"
    assert env["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1"
    assert env["TORCH_FR_BUFFER_SIZE"] == "2000"
    assert env["TORCH_FR_DUMP_TEMP_FILE"].startswith(fr + os.sep)
    # torch 2.13 reads the TORCH_FR_ names and warns on every rank about the old aliases
    assert "TORCH_NCCL_TRACE_BUFFER_SIZE" not in env
    assert "TORCH_NCCL_DEBUG_INFO_TEMP_FILE" not in env
    assert env["TORCH_NCCL_DEBUG_INFO_PIPE_FILE"].startswith(fr + os.sep)
    assert os.path.isdir(fr)

    user = {"TORCH_NCCL_TRACE_BUFFER_SIZE": "100", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}
    env = child_env_defaults(run_dir, environ=user)
    for name in ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "TORCH_FR_BUFFER_SIZE"):
        assert name not in env  # the user's choice (under either name) wins
    assert "TORCH_NCCL_TRACE_BUFFER_SIZE" not in env
    assert "TORCH_FR_DUMP_TEMP_FILE" in env


def test_flight_recorder_pipes_get_a_byte_and_dumps_are_listed(tmp_path: Path) -> None:
    run_dir = str(tmp_path)
    child_env_defaults(run_dir, environ={})
    fr = tmp_path / FR_SUBDIR
    pipe = fr / f"{FR_PIPE_STEM}0.pipe"
    os.mkfifo(pipe)
    orphan = fr / f"{FR_PIPE_STEM}1.pipe"  # a rank whose reader is gone
    os.mkfifo(orphan)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # what ProcessGroupNCCL holds open
    try:
        assert trigger_flight_recorder(run_dir) == [str(pipe)]
        assert os.read(reader, 16) == b"1"
    finally:
        os.close(reader)
    (fr / "nccl_trace_rank_1").write_bytes(b"\x80pickle")
    assert flight_recorder_files(run_dir) == [
        {"path": str(fr / "nccl_trace_rank_1"), "rank": 1, "bytes": 7}
    ]


def test_hang_evidence_bundles_stacks_suspects_and_dumps(spawn, tmp_path) -> None:
    proc = spawn("2", "0.01", "stall", rank=0)
    wait_ready(proc)
    got = hang_evidence({0: proc.pid}, [0], spawn.stacks_dir, str(tmp_path), timeout=5)
    assert "stall_here" in got["stacks"]["0"]
    assert got["suspects"] == [] and got["flight_recorder"] == []


def _py_spy_on_path(tmp_path: Path, monkeypatch, output: str) -> None:
    """A `py-spy` executable that prints `output` and succeeds: py-spy's side of the
    boundary (real ptrace is not available to these tests)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "py-spy"
    exe.write_text(f"#!/bin/sh\ncat <<'DUMP'\n{output}DUMP\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


_PY_SPY_HEADER = "Process {pid}: python trainer.py\nPython v3.12.3 (/usr/bin/python3.12)\n\n"


def test_a_py_spy_dump_with_no_frames_leaves_the_rank_missing(
    spawn, tmp_path: Path, monkeypatch
) -> None:
    proc = spawn("2", "0.01", "stall", rank=1, env={"SUPERVISE_STACKS_DIR": ""})
    wait_ready(proc)
    _py_spy_on_path(tmp_path, monkeypatch, _PY_SPY_HEADER.format(pid=proc.pid))
    got = collect_stacks({1: proc.pid}, spawn.stacks_dir, timeout=0.5)
    assert got["missing"] == [1] and got["stacks"] == {}


def test_a_py_spy_dump_with_frames_is_a_stack(spawn, tmp_path: Path, monkeypatch) -> None:
    proc = spawn("2", "0.01", "stall", rank=1, env={"SUPERVISE_STACKS_DIR": ""})
    wait_ready(proc)
    dump = _PY_SPY_HEADER.format(pid=proc.pid) + (
        f'Thread {proc.pid} (idle): "MainThread"\n    stall_here (trainer.py:12)\n'
    )
    _py_spy_on_path(tmp_path, monkeypatch, dump)
    got = collect_stacks({1: proc.pid}, spawn.stacks_dir, timeout=0.5)
    assert got["missing"] == [] and got["method"] == {"1": "py-spy"}
    assert "stall_here" in got["stacks"]["1"]
