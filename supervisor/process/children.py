"""Spawning, signalling and reaping the training command and everything it starts.

Guarantees:

* The child starts in its own process group with every signal at its default disposition
  and an empty signal mask, whatever supervise inherited. (A child inherits both the mask
  and ignored dispositions across exec, so a trainer could otherwise be deaf to SIGTERM.)
* The direct child gets `PR_SET_PDEATHSIG = SIGKILL`: if supervise is killed outright, the
  kernel kills the child. When supervise is PID 1 of a PID namespace (a container's
  entrypoint), the kernel also kills every other process in the namespace, so the whole tree
  goes. Outside a namespace, the rest of the tree (the child's group, torchrun's workers in
  their own sessions) is taken down by the sentinel (`supervisor.process.sentinel`);
  everywhere else `kill_tree` takes it down.
* supervise is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so orphans of the tree are
  reparented to it, `reap` collects them, and `kill_tree` can find every descendant.
* `reap` never blocks and reaps every zombie, not just the direct child.
* At a terminal (stdin is a tty whose foreground process group is supervise's), the child's
  group becomes the terminal's foreground group before it execs, as tini does: `input()`,
  `breakpoint()` and pdb then read the terminal instead of being stopped by SIGTTIN, and
  Ctrl-C reaches the trainer directly, as without supervise. `release_terminal`
  gives the terminal back to supervise's group once the child is gone. Elsewhere (a pod, a
  pipe, supervise in the background) nothing changes.

Everything here runs on the loop's thread (the main thread), except `spawn`'s pre-exec
hook, which runs in the forked child before exec.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

from supervisor.core.errors import SpawnError
from supervisor.core.events import ChildStatus

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_F_SETPIPE_SZ = 1031  # linux/fcntl.h; Python exposes it only from 3.10 on some builds
PIPE_SIZE = 1 << 20
_spared: set[int] = set()  # descendants that are not part of the tree: the sentinel

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

# Every signal a disposition can be set for, resolved now: the pre-exec hook must not
# allocate much or import. glibc keeps 32 and 33 for itself (thread cancellation, setxid)
# and refuses to change them; it installs its own handlers where it needs them.
_CATCHABLE = tuple(
    s
    for s in signal.valid_signals()
    if s not in (signal.SIGKILL, signal.SIGSTOP) and not 32 <= s < signal.SIGRTMIN
)


def become_subreaper() -> bool:
    """Make orphaned descendants reparent to this process. False where Linux refuses."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


@dataclass(frozen=True)
class Spawned:
    """A started child. `stdout`/`stderr` are the read ends of its pipes (caller closes).

    `terminal` is True when the child's group was made the terminal's foreground group."""

    pid: int
    stdout: int
    stderr: int
    popen: subprocess.Popen[bytes]
    terminal: bool = False


def _own_terminal() -> bool:
    """Whether stdin is a terminal whose foreground process group is ours."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def _set_foreground(pgid: int) -> bool:
    """Make `pgid` the foreground group of the terminal on stdin.

    SIGTTOU is blocked meanwhile in the calling thread: a background group that changes the
    foreground is otherwise stopped by it (tcsetpgrp(3)). False where the terminal refuses."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTTOU,))
    try:
        os.tcsetpgrp(0, pgid)
        return True
    except OSError:
        return False
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def release_terminal(child: Spawned | None) -> None:
    """Give the terminal back to supervise's group if `child` took it. Never raises."""
    if child is not None and child.terminal:
        _set_foreground(os.getpgrp())


def _make_pre_exec(parent: int, terminal: bool):  # type: ignore[no-untyped-def]
    def pre_exec() -> None:
        # Runs in the forked child, after setpgid: reset what exec would otherwise carry
        # over, then take the terminal (before the mask is cleared: SIGTTOU stays blocked).
        for signum in _CATCHABLE:
            signal.signal(signum, signal.SIG_DFL)
        if terminal:
            _set_foreground(os.getpgrp())
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # supervise died between fork and prctl
            os._exit(128 + signal.SIGKILL)

    return pre_exec


def spawn(argv: Sequence[str], env: Mapping[str, str]) -> Spawned:
    """Start `argv` in a new process group with its stdout and stderr piped to us.

    Raises `SpawnError` (CONFIG_ERROR) with a one-line fix when the command cannot run.
    Call before starting threads where possible: the pre-exec hook runs after fork.
    At a terminal the child's group becomes its foreground group (see the module notes).
    """
    terminal = _own_terminal()
    if terminal:
        # In the background now, supervise's own writes to the terminal (events, the
        # child's output) must not stop it where `stty tostop` is set.
        with contextlib.suppress(ValueError):  # not the main thread: left as it is
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            process_group=0,
            preexec_fn=_make_pre_exec(os.getpid(), terminal),  # only it can set pdeathsig
            close_fds=True,
        )
    except FileNotFoundError:
        raise SpawnError(
            f"command not found: {argv[0]!r}; check the spelling and that it is on PATH "
            "in the container image"
        ) from None
    except PermissionError:
        raise SpawnError(
            f"permission denied running {argv[0]!r}; make it executable (chmod +x) or run it "
            "through its interpreter, e.g. `python script.py`"
        ) from None
    except OSError as err:
        raise SpawnError(f"cannot execute {argv[0]!r}: {err.strerror or err}") from None
    assert popen.stdout is not None and popen.stderr is not None
    # Take the raw descriptors: the log pump reads them unbuffered.
    stdout, stderr = os.dup(popen.stdout.fileno()), os.dup(popen.stderr.fileno())
    popen.stdout.close()
    popen.stderr.close()
    for fd in (stdout, stderr):
        widen_pipe(fd)
    return Spawned(popen.pid, stdout, stderr, popen, terminal)


def widen_pipe(fd: int) -> None:
    """Grow a pipe to 1 MiB: a chatty writer then wakes its reader 16x less often.

    Does nothing for a file or terminal, or where /proc/sys/fs/pipe-max-size is lower."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


def send(pid: int, signum: int) -> bool:
    """Signal one process; False if it is already gone."""
    try:
        os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False


def reap() -> list[tuple[int, ChildStatus]]:
    """Collect every exited child without blocking: the direct child and reparented orphans.

    Spared helpers (the sentinel) are reaped too, but not returned: they are not the tree."""
    reaped: list[tuple[int, ChildStatus]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if (os.WIFEXITED(status) or os.WIFSIGNALED(status)) and pid not in _spared:
            reaped.append((pid, ChildStatus.from_wait_status(status)))
    return reaped


def spare(pid: int) -> None:
    """Leave `pid` (a helper of supervise's own, not the command's) out of `descendants`."""
    _spared.add(pid)


def descendants() -> list[int]:
    """Every live process below this one but the spared (works because we are a subreaper)."""
    try:
        below = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return [p.pid for p in below if p.pid not in _spared]


def kill_tree(rounds: int = 50) -> int:
    """SIGKILL every descendant until none is left or `rounds` passes; returns how many.

    Repeats because a process may fork while we walk the tree. It never reaps, so the
    direct child's status is left for the caller's `reap`; zombies are skipped.
    """
    killed = 0
    for _ in range(rounds):
        alive = [pid for pid in descendants() if not _is_zombie(pid)]
        if not alive:
            break
        for pid in alive:
            killed += send(pid, signal.SIGKILL)
    return killed


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True
