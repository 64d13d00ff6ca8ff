"""Shared fixtures: the installed `supervise` console script and a way to run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERVISE = str(Path(sys.executable).with_name("supervise"))


@dataclass
class Supervised:
    returncode: int
    stdout: bytes
    stderr: bytes
    termination: dict
    events: list[dict]

    def event(self, name: str) -> dict:
        matches = [e for e in self.events if e["event"] == name]
        assert matches, f"no {name!r} event in {[e['event'] for e in self.events]}"
        return matches[-1]


@pytest.fixture
def supervise(tmp_path: Path):
    """Run the real `supervise` binary; returns the exit code, output, and parsed logs."""

    def run(*args: str, timeout: float = 60, env: dict | None = None, **kw) -> Supervised:
        term = tmp_path / "termination-log"
        events = tmp_path / "events.jsonl"
        term.unlink(missing_ok=True)
        events.unlink(missing_ok=True)
        argv = [SUPERVISE, "--termination-log", str(term), "--event-log", str(events), *args]
        proc = subprocess.run(
            argv, capture_output=True, timeout=timeout, env={**os.environ, **(env or {})}, **kw
        )
        return Supervised(
            proc.returncode,
            proc.stdout,
            proc.stderr,
            json.loads(term.read_text()) if term.exists() else {},
            [json.loads(line) for line in events.read_text().splitlines()]
            if events.exists()
            else [],
        )

    return run
