"""supervise signals only its own processes: a PID in a channel slot is checked first.

The slot is the trainer's to write, so its PID may be forged, or reused by the kernel for an
unrelated process after the rank died. Either way SIGUSR2 (which kills by default) must not
reach a process that is not below supervise; the hang is still classified.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from supervisor.hang.stacks import collect_stacks, is_descendant

HANG = 84

# A process that is not supervise's: it records every SIGUSR2 it gets.
SIBLING = (
    "import signal, sys, time\n"
    "def got(*_):\n"
    "    open(sys.argv[1], 'a').write('SIGUSR2\\n')\n"
    "signal.signal(signal.SIGUSR2, got)\n"
    "open(sys.argv[2], 'w').close()\n"
    "time.sleep(120)\n"
)

# A trainer that steps once, then writes the sibling's PID into its own slot, with the stacks
# file supervise looks for before it sends SIGUSR2, and hangs.
FORGER = (
    "import os, sys, time\n"
    "import supervisor.client as c\n"
    "from supervisor.child_contract import stacks_file_name\n"
    "sup = c.attach()\n"
    "sup.step(1)\n"
    "foreign = int(sys.argv[1])\n"
    "sup._writer.claim(foreign)\n"
    "sup.step(2)\n"
    "stacks = os.environ['SUPERVISE_STACKS_DIR']\n"
    "open(os.path.join(stacks, stacks_file_name(0, foreign)), 'w').close()\n"
    "time.sleep(120)\n"
)


def _sibling(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    got, ready = tmp_path / "sibling-got", tmp_path / "sibling-ready"
    proc = subprocess.Popen([sys.executable, "-c", SIBLING, str(got), str(ready)])
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the sibling did not start"
        time.sleep(0.02)
    return proc, got


def test_a_foreign_pid_in_a_slot_is_never_signalled_and_the_hang_still_classified(
    supervise, tmp_path: Path
) -> None:
    sibling, got = _sibling(tmp_path)
    try:
        result = supervise(
            "--init-timeout", "3", "--hang-timeout", "1", "--",
            sys.executable, "-c", FORGER, str(sibling.pid),
            timeout=60,
        )  # fmt: skip
        assert result.returncode == HANG, result.stderr.decode()[-2000:]
        assert result.termination["name"] == "HANG"
        time.sleep(0.2)  # a signal sent would have been handled by now
        assert not got.exists(), "supervise signalled a process that is not its own"
        assert sibling.poll() is None
    finally:
        sibling.kill()
        sibling.wait(timeout=10)


def test_only_descendants_count(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert is_descendant(child.pid)
        assert not is_descendant(os.getpid())
        assert not is_descendant(1)
        assert not is_descendant(os.getppid())  # our parent is above us, not below
        assert not is_descendant(2**22 + 4321)  # no such process
        # Not ours: the stacks are missing, and nothing is sent.
        got = collect_stacks({0: os.getppid()}, str(tmp_path), timeout=0.2)
        assert got["missing"] == [0]
    finally:
        child.kill()
        child.wait(timeout=10)
