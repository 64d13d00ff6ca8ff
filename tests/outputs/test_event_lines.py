"""An event on stderr always starts a line of its own, whatever the child left unfinished
there, and the child's bytes arrive unchanged and in order around it."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import SUPERVISE


def test_an_event_after_a_partial_child_line_starts_on_its_own_line() -> None:
    # A progress bar: carriage returns, no newline, then the trainer dies.
    script = "printf 'progress 10%%\\rprogress 42%%' >&2; sleep 0.2; exit 3"
    proc = subprocess.run(
        [SUPERVISE, "--termination-log", "/dev/null", "--", "sh", "-c", script],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 80, proc.stderr.decode()
    lines = proc.stderr.decode().split("\n")[:-1]  # not splitlines: keep the \r
    child = [line for line in lines if not line.startswith("{")]
    assert child == ["progress 10%\rprogress 42%"]  # unchanged, one line of its own
    events = [json.loads(line) for line in lines if line.startswith("{")]  # each one parses
    assert events[-1]["event"] == "exit" and events[-1]["exitCode"] == 80
    assert len(events) == sum(1 for line in lines if '"source":"supervise"' in line)


def test_complete_child_lines_get_no_extra_newline() -> None:
    script = "echo one >&2; echo two >&2; exit 3"
    proc = subprocess.run(
        [SUPERVISE, "--termination-log", "/dev/null", "--", "sh", "-c", script],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 80
    assert b"\n\n" not in proc.stderr
    assert [line for line in proc.stderr.decode().splitlines() if not line.startswith("{")] == [
        "one",
        "two",
    ]
