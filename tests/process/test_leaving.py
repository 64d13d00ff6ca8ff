"""After the checkpoint it asked for is committed, supervise lets the trainer leave by
itself: the channel's stop flag, not a SIGTERM into an exiting interpreter.

Real processes: the installed `supervise`, a Python trainer attached through the real
client, real signals.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from tests.process.runs import (
    events,
    finish,
    supervised,
    termination,
    wait_for_event,
    wait_for_line,
)

# Saves when asked, then keeps running until the channel says stop (or forever, with
# "ignore"). A SIGTERM it receives is written to a file, so the test sees it even if the
# trainer then exits cleanly.
TRAINER = """
import signal, sys, time
import supervisor
mode, marker = sys.argv[1], sys.argv[2]
def on_term(signum, frame):
    open(marker, "w").write("SIGTERM")
    sys.exit(143)
signal.signal(signal.SIGTERM, on_term)
sup = supervisor.attach()
print("ready", flush=True)
step = 0
while True:
    step += 1
    sup.step(step)
    if sup.checkpoint_requested:
        sup.committed(step)
    if mode == "listens" and sup.stop_requested:
        sys.exit(0)
    time.sleep(0.01)
"""


def _run(tmp_path: Path, mode: str, shutdown: float) -> tuple[int, float, Path]:
    marker = tmp_path / "got-sigterm"
    proc = supervised(
        tmp_path / "ckpt",
        tmp_path,
        "run",
        "--grace-period",
        "20",
        "--shutdown-timeout",
        str(shutdown),
        command=[sys.executable, "-c", TRAINER, mode, str(marker)],
    )
    wait_for_line(proc, b"ready")
    wait_for_event(tmp_path, "run", "trainer_attached")
    proc.send_signal(signal.SIGTERM)
    wait_for_event(tmp_path, "run", "leave_requested")
    asked = time.monotonic()
    code = finish(proc)
    return code, time.monotonic() - asked, marker


def test_a_trainer_that_commits_and_leaves_is_not_signalled(tmp_path: Path) -> None:
    code, _, marker = _run(tmp_path, "listens", shutdown=5.0)
    assert code == 85
    assert not marker.exists(), "the trainer was sent SIGTERM after its checkpoint"
    child = next(e for e in termination(tmp_path, "run")["evidence"] if e["source"] == "child")
    assert child["exitStatus"] == 0
    assert not [e for e in events(tmp_path, "run") if e["event"] == "stopping"]


def test_a_trainer_that_stays_after_its_commit_gets_sigterm_after_the_timeout(
    tmp_path: Path,
) -> None:
    code, took, marker = _run(tmp_path, "ignore", shutdown=1.0)
    assert code == 85
    assert marker.read_text() == "SIGTERM"
    assert took >= 0.9  # the shutdown timeout passed first
    stopping = next(e for e in events(tmp_path, "run") if e["event"] == "stopping")
    assert "after its checkpoint" in stopping["reason"]
