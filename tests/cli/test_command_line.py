"""The command line as people type it: a misspelt subcommand is named, every CONFIG_ERROR
says why in one human line, and `--help` shows the usage the README teaches."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SUPERVISE

CONFIG_ERROR = 81


def supervise(*args: str, tmp: Path, path: str | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SUPERVISE_EVENT_LOG": os.devnull,  # only the human line can tell the user
        "SUPERVISE_TERMINATION_LOG": str(tmp / "term"),
    }
    if path is not None:
        env["PATH"] = path
    return subprocess.run([SUPERVISE, *args], capture_output=True, timeout=60, env=env)


def errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.decode().splitlines() if line.startswith("supervise: e")]


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("doctr", "supervise doctor"),
        ("exitcodes", "supervise exit-codes"),
        ("help", "supervise --help"),
        ("k8", "supervise k8s"),
    ],
)
def test_a_misspelt_subcommand_is_named(tmp_path: Path, typed: str, meant: str) -> None:
    proc = supervise(typed, tmp=tmp_path)
    assert proc.returncode == CONFIG_ERROR
    [error] = errors(proc)
    assert f"did you mean '{meant}'?" in error
    assert json.loads((tmp_path / "term").read_text())["name"] == "CONFIG_ERROR"


def test_a_program_on_path_that_looks_like_a_subcommand_is_still_run(tmp_path: Path) -> None:
    program = tmp_path / "doctr"
    program.write_text("#!/bin/sh\necho ran\n")
    program.chmod(0o755)
    proc = supervise("doctr", tmp=tmp_path, path=f"{tmp_path}:{os.environ['PATH']}")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"ran\n"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--", "no-such-trainer"], id="command-not-found"),
        pytest.param(["train.py"], id="not-a-subcommand"),
        pytest.param(["--grace-period", "-1", "--", "true"], id="bad-value"),
        pytest.param(["--no-such-flag", "--", "true"], id="bad-flag"),
    ],
)
def test_every_config_error_says_why_in_one_line(tmp_path: Path, args: list[str]) -> None:
    proc = supervise(*args, tmp=tmp_path, path=f"{tmp_path}:{os.environ['PATH']}")
    assert proc.returncode == CONFIG_ERROR
    [error] = errors(proc)
    message = json.loads((tmp_path / "term").read_text())
    assert message["name"] == "CONFIG_ERROR"
    assert error == f"supervise: error: {message['reason']}"


def test_an_unknown_subcommand_of_a_group_is_suggested_once(tmp_path: Path) -> None:
    proc = supervise("ckpt", "list", tmp=tmp_path)
    assert proc.returncode == CONFIG_ERROR
    assert proc.stderr.decode().count("Did you mean 'ls'?") == 1


def test_help_shows_the_usage_people_type(tmp_path: Path) -> None:
    proc = supervise("--help", tmp=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.decode().splitlines()[0] == "Usage: supervise [OPTIONS] -- CMD..."
