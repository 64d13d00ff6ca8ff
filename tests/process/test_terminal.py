"""At a terminal, a trainer that reads it (`input()`, `breakpoint()`, pdb) is not frozen.

A real pseudo-terminal: supervise runs as the foreground job of a session whose
controlling terminal is the pty, like an interactive shell's job, and the test types a line.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import SUPERVISE

# The session leader: runs supervise in its own (foreground) group, as a shell runs a job,
# then reports whether the terminal's foreground group is its own again.
SHELL = """
import os, subprocess, sys, termios
if sys.argv[1] == "tostop":  # background writes to the terminal stop the writer (stty tostop)
    attrs = termios.tcgetattr(0)
    attrs[3] |= termios.TOSTOP
    termios.tcsetattr(0, termios.TCSANOW, attrs)
code = subprocess.call(sys.argv[2:])
print("supervise-exit", code, flush=True)
print("foreground-restored", os.tcgetpgrp(0) == os.getpgrp(), flush=True)
"""

TRAINER = "line = input('name? '); print('got', line, flush=True)"


def _read_until(fd: int, needle: bytes, deadline: float, seen: bytearray) -> bool:
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            return False
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the session's last process closed the terminal
            return False
        if not chunk:
            return False
        seen.extend(chunk)
    return True


@pytest.mark.parametrize("tostop", ["-tostop", "tostop"])
def test_a_trainer_reads_a_line_from_the_terminal_and_gets_it_back(
    tmp_path: Path, tostop: str
) -> None:
    argv = [
        sys.executable,
        "-c",
        SHELL,
        tostop,
        SUPERVISE,
        "--termination-log",
        str(tmp_path / "term"),
        "--event-log",
        str(tmp_path / "events"),
        "--",
        sys.executable,
        "-c",
        TRAINER,
    ]
    pid, master = pty.fork()
    if pid == 0:  # the child: a new session with the pty as its controlling terminal
        try:
            os.execvpe(argv[0], argv, os.environ)
        finally:
            os._exit(127)
    seen = bytearray()
    try:
        # Without the handover the trainer is stopped by SIGTTIN and never asks.
        assert _read_until(master, b"name? ", time.monotonic() + 60, seen), bytes(seen)
        os.write(master, b"ada\n")
        # Everything until the session ends (EIO once its last process is gone).
        assert not _read_until(master, b"\0", time.monotonic() + 30, seen)
        text = seen.decode(errors="replace")
        assert "got ada" in text
        assert "supervise-exit 0" in text
        assert "foreground-restored True" in text
    finally:
        if os.waitpid(pid, os.WNOHANG)[0] == 0:  # failed: take the whole session down
            for proc in [*psutil.Process(pid).children(recursive=True), psutil.Process(pid)]:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(master)
