"""Fixtures for the hang tests: a real channel and real trainer processes attached to it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.channel import Channel

TRAINER = str(Path(__file__).with_name("trainer.py"))
REPO = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[Channel]:
    chan = Channel.create(str(tmp_path / "run" / "channel"), slots=8)
    yield chan
    chan.close()


@pytest.fixture
def spawn(tmp_path: Path, channel: Channel):
    """Start `trainer.py ARGS` as rank `rank` attached to the channel; killed at teardown."""
    procs: list[subprocess.Popen] = []
    stacks = tmp_path / "stacks"
    stacks.mkdir(exist_ok=True)

    def start(*args: str, rank: int = 0, script: str = TRAINER, env: dict | None = None):
        full_env = {
            **os.environ,
            "SUPERVISE_CHANNEL": channel.path,
            "SUPERVISE_STACKS_DIR": str(stacks),
            "LOCAL_RANK": str(rank),
            "PYTHONPATH": REPO,
            **(env or {}),
        }
        proc = subprocess.Popen(
            [sys.executable, script, *args],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    start.stacks_dir = str(stacks)  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
