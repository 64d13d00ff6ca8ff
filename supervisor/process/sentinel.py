"""A sentinel that outlives a SIGKILLed supervise and takes the training tree with it.

`PR_SET_PDEATHSIG` kills only the direct child when supervise dies outright. Outside a PID
namespace of its own (Docker without --init, a shared PID namespace, bare metal), the rest
survives: processes left in the child's group, and torchrun's workers, which each run in
a session of their own, holding GPU memory. The sentinel closes that gap.

How: `start` runs this file as a separate, tiny Python process (`python -I -S`, no import
of supervise) in a session of its own, with the read end of a pipe as its stdin; supervise
keeps the write end (close-on-exec, so no descendant holds it). The sentinel blocks in one
`read`. It then either

* reads the byte `disarm` writes once supervise has taken the tree down itself, and exits;
* or reads end-of-file: supervise died without disarming (SIGKILL, the OOM killer, a
  crash). It then SIGKILLs, round after round until a scan finds none, every process of
  its user whose environment carries the run's marker (`SUPERVISE_RUN_DIR=<run dir>`): the
  child, the processes in its group, torchrun's workers in their own sessions, what they
  forked. Every process inherits its environment from the one that started it, which is
  what tracks descendants across `setsid` and reparenting, where process groups and
  parentage do not.

Cost while nothing fails: one process asleep in `read` (a few MB of memory, no CPU), no
thread in supervise. It is not started when supervise is PID 1: the kernel already kills
the whole PID namespace with it.

Limits: a descendant that replaced its environment (`env -i`, a launcher building a fresh
one), or that runs as another user, is not found; the sentinel itself is only as immortal as
any process (a SIGKILL aimed at it, or at every process of the user, ends it first).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

DISARM = b"0"
_ROUNDS = 50


class Sentinel:
    """The supervise side: the write end of the sentinel's pipe."""

    def __init__(self, pid: int, write_fd: int) -> None:
        self.pid = pid
        self._fd: int | None = write_fd

    def disarm(self) -> None:
        """The tree is gone: let the sentinel exit without looking. Never raises."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._fd, DISARM)
        self.close()

    def close(self) -> None:
        """Close the pipe; without `disarm` first, the sentinel kills what carries the mark."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def start(marker: str) -> Sentinel | None:
    """Start a sentinel for the processes whose environment holds `marker` ("NAME=value").

    None when supervise is PID 1 (not needed) or the sentinel cannot start (supervise runs
    on without it). Blocks only for the fork and exec, not the interpreter's start-up.
    """
    if os.getpid() == 1:
        return None
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), marker],
            stdin=read_fd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,  # no terminal's Ctrl-C, no signal to supervise's group
        )
    except OSError:
        os.close(write_fd)
        return None
    finally:
        os.close(read_fd)
    return Sentinel(proc.pid, write_fd)


# ----------------------------------------------------------- the sentinel process


def marked(marker: bytes, exclude: int) -> list[int]:
    """Pids of this user's processes whose initial environment holds `marker`."""
    needle = b"\0" + marker + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == exclude:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone, another user's, or a kernel thread
            continue
        if needle in b"\0" + environ + b"\0":
            found.append(int(name))
    return found


def kill_marked(marker: bytes) -> int:
    """SIGKILL every marked process until a scan finds none; returns how many were sent."""
    sent = 0
    me = os.getpid()
    for _ in range(_ROUNDS):
        pids = marked(marker, me)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                sent += 1
    return sent


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    marker = argv[1].encode()
    try:
        said = os.read(0, 1)
    except OSError:
        said = b""
    if said == DISARM:
        return 0
    kill_marked(marker)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
