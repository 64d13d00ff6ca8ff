"""Evidence from hung ranks: Python stacks of every rank and NCCL Flight Recorder dumps.

Stacks without ptrace: an attached rank registers `faulthandler` on SIGUSR2 and writes to
`<stacks_dir>/rank<R>-<pid>.txt` (`supervisor.client`). `collect_stacks` sends SIGUSR2 only
to ranks whose stacks file exists (a process without that handler would be killed by
SIGUSR2's default action), then reads what each appended. faulthandler writes from inside
the signal handler, in C, so a rank blocked in a C call (a gloo or NCCL wait) still dumps.
A rank that wrote nothing within the timeout is tried with `py-spy dump` when py-spy is on
PATH (it needs ptrace permission, CAP_SYS_PTRACE in most containers); a dump with no
thread frames (only py-spy's header) does not count. Else the rank is listed as missing.

Flight Recorder (PyTorch ProcessGroupNCCL; names checked against torch 2.13's
ProcessGroupNCCL.hpp and FlightRecorder.hpp):
`child_env_defaults` points the dump files and the on-demand dump pipes into the run
directory, for the variables the user has not set. `trigger_flight_recorder` writes to every
`<stem><rank>.pipe` FIFO that a rank opened; `flight_recorder_files` lists the dumps. The
dumps are pickles, so supervise never loads them: it records their paths for `torchfrtrace`.

Only our own processes are signalled or traced. A PID comes from a rank's channel slot,
which the trainer writes: a forged one, or one the kernel reused for another process after
the rank died, must not get SIGUSR2 (whose default action kills) or `py-spy`. So right
before each, `is_descendant` walks the parent chain in /proc up to this process; a PID that
is not below us is reported as missing, never signalled.

Everything here blocks the calling thread for at most its `timeout`. Nothing raises for a
rank that has vanished; it is reported as missing.
"""

from __future__ import annotations

import errno
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import time
from collections.abc import Collection, Mapping

from supervisor.child_contract import STACK_SIGNAL, stacks_file_name

FR_SUBDIR = "flight_recorder"
FR_DUMP_STEM = "nccl_trace_rank_"  # PyTorch appends the rank
FR_PIPE_STEM = "dump_pipe_rank_"  # PyTorch appends "<rank>.pipe"
FR_BUFFER_SIZE = "2000"  # entries; PyTorch's own default in newer releases
_STABLE_FOR = 0.05  # seconds a stacks file must stop growing before it counts as complete
_MAX_STACK_CHARS = 64_000  # per rank: the event log stays readable even with many threads


# ----------------------------------------------------------------------- the env


def child_env_defaults(run_dir: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Flight Recorder and NCCL error-handling variables for the child, where unset.

    Each group lists the current name first and the older one second; if the user set
    either name, the whole group is left alone so that two names never disagree. Where the
    installed torch reads the current name, the older one (a deprecated alias that makes
    every rank log a warning) is not set.
    """
    env = os.environ if environ is None else environ
    aliases_deprecated = _torch_at_least(2, 9)
    fr_dir = os.path.join(run_dir, FR_SUBDIR)
    groups: list[tuple[tuple[str, ...], str]] = [
        # 3 = tear down without abort; torchrun injects 1 into workers unless its own env
        # has a value, and Flight Recorder dumps need 3 (pytorch/pytorch#121055).
        (("TORCH_NCCL_ASYNC_ERROR_HANDLING",), "3"),
        # Dump on a watchdog timeout or exception: true by default only in newer releases;
        # torch 2.13 still reads this name (ProcessGroupNCCL.hpp).
        (("TORCH_NCCL_DUMP_ON_TIMEOUT",), "1"),
        # torch >= 2.9 reads TORCH_FR_BUFFER_SIZE first (FlightRecorder.hpp); older ones
        # read only TORCH_NCCL_TRACE_BUFFER_SIZE, whose default there was 0 (off).
        (("TORCH_FR_BUFFER_SIZE", "TORCH_NCCL_TRACE_BUFFER_SIZE"), FR_BUFFER_SIZE),
        (
            ("TORCH_FR_DUMP_TEMP_FILE", "TORCH_NCCL_DEBUG_INFO_TEMP_FILE"),
            os.path.join(fr_dir, FR_DUMP_STEM),
        ),
        # Each rank mkfifo()s "<stem><rank>.pipe" and dumps when a byte arrives (DumpPipe
        # in ProcessGroupNCCL.hpp; only when the trace buffer size is > 0). torch 2.13
        # reads TORCH_NCCL_DEBUG_INFO_PIPE_FILE; the TORCH_FR_ name is for newer releases
        # and is ignored by older ones, so setting both is safe.
        (
            ("TORCH_FR_DEBUG_INFO_PIPE_FILE", "TORCH_NCCL_DEBUG_INFO_PIPE_FILE"),
            os.path.join(fr_dir, FR_PIPE_STEM),
        ),
    ]
    out: dict[str, str] = {}
    deprecated = {"TORCH_NCCL_TRACE_BUFFER_SIZE", "TORCH_NCCL_DEBUG_INFO_TEMP_FILE"}
    for names, value in groups:
        if any(name in env for name in names):
            continue  # the user's choice, under either name, wins
        for name in names:
            if not (aliases_deprecated and name in deprecated):
                out[name] = value
    if out:
        os.makedirs(fr_dir, mode=0o700, exist_ok=True)
    return out


def _torch_at_least(major: int, minor: int) -> bool:
    """Whether the installed torch is at least `major.minor`, read from torch/version.py
    without importing torch (nor importlib.metadata, which costs PID 1 ~20 ms at start).
    Unknown means yes: the current names then."""
    try:
        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return True
        path = os.path.join(next(iter(spec.submodule_search_locations)), "version.py")
        with open(path, encoding="utf-8") as f:
            found = re.search(r"^__version__\s*=\s*['\"](\d+)\.(\d+)", f.read(), re.M)
    except (OSError, ImportError, ValueError):
        return True
    return found is None or (int(found[1]), int(found[2])) >= (major, minor)


# -------------------------------------------------------------------- the stacks


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _read_from(path: str, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(_MAX_STACK_CHARS)
    return data.decode("utf-8", "replace")


_MAX_DEPTH = 64  # parent links followed: supervise -> torchrun -> rank is three


def _parent(pid: int) -> int | None:
    """The parent of `pid` from /proc/PID/stat, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ")".
    fields = stat.rpartition(b")")[2].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def is_descendant(pid: int, ancestor: int | None = None) -> bool:
    """Whether `pid` is a descendant of `ancestor` (this process by default).

    Reads /proc only; False where /proc cannot tell (a vanished PID, another OS), so a PID
    is signalled only when it is known to be ours. Never raises, never blocks.
    """
    ancestor = os.getpid() if ancestor is None else ancestor
    if pid <= 1 or pid == ancestor:
        return False
    current: int | None = pid
    for _ in range(_MAX_DEPTH):
        current = _parent(current)
        if current is None or current <= 0:
            return False
        if current == ancestor:
            return True
        if current == 1:
            return False
    return False


def collect_stacks(
    pids_by_rank: Mapping[int, int], stacks_dir: str, timeout: float = 2.0
) -> dict[str, object]:
    """Ask every rank for its stacks; returns {"stacks", "method", "missing"}.

    `stacks` maps str(rank) to the text dumped; `method` says how each was obtained
    ("faulthandler" or "py-spy"); `missing` lists ranks with nothing.
    """
    deadline = time.monotonic() + timeout
    pending: dict[int, tuple[str, int]] = {}
    for rank, pid in pids_by_rank.items():
        path = os.path.join(stacks_dir, stacks_file_name(rank, pid))
        start = _size(path)
        if start < 0:
            continue  # no handler registered: SIGUSR2 would kill it
        if not is_descendant(pid):
            continue  # not ours (forged, or reused after the rank died): never signalled
        try:
            os.kill(pid, STACK_SIGNAL)
        except ProcessLookupError:
            continue
        pending[rank] = (path, start)

    stacks: dict[str, str] = {}
    method: dict[str, str] = {}
    last_size: dict[int, tuple[int, float]] = {}
    while pending and time.monotonic() < deadline:
        for rank, (path, start) in list(pending.items()):
            size = _size(path)
            if size <= start:
                continue
            now = time.monotonic()
            seen = last_size.get(rank)
            if seen is None or seen[0] != size:
                last_size[rank] = (size, now)
            elif now - seen[1] >= _STABLE_FOR:
                stacks[str(rank)] = _read_from(path, start)
                method[str(rank)] = "faulthandler"
                del pending[rank]
        time.sleep(0.01)
    for rank, (path, start) in pending.items():  # partial output beats none
        if _size(path) > start:
            stacks[str(rank)] = _read_from(path, start)
            method[str(rank)] = "faulthandler"

    for rank, pid in pids_by_rank.items():
        if str(rank) in stacks or not is_descendant(pid):
            continue
        text = py_spy_dump(pid, max(0.5, deadline - time.monotonic()))
        if text is not None:
            stacks[str(rank)] = text
            method[str(rank)] = "py-spy"
    missing = sorted(rank for rank in pids_by_rank if str(rank) not in stacks)
    return {"stacks": stacks, "method": method, "missing": missing}


def py_spy_dump(pid: int, timeout: float) -> str | None:
    """`py-spy dump --pid` output, or None when py-spy is absent, refused or too slow."""
    exe = shutil.which("py-spy")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "dump", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not has_frames(done.stdout):
        return None
    return done.stdout[:_MAX_STACK_CHARS]


def has_frames(dump: str) -> bool:
    """Whether a `py-spy dump` shows at least one frame of one thread.

    Its output is a header ("Process <pid>: <cmd>", "Python v<version> (<exe>)"), then per
    thread a `Thread <tid> ...` line followed by indented frame lines. A dump of a process
    that py-spy could attach to but not read (no threads, or threads with no frames) is only
    the header: that is no stack, and the rank stays missing.
    """
    in_thread = False
    for line in dump.splitlines():
        if line.startswith("Thread "):
            in_thread = True
        elif in_thread and line[:1].isspace() and line.strip():
            return True
    return False


def waiting_in_collective(stack_text: str) -> bool:
    """Whether a dump shows a frame inside torch.distributed (a collective or a p2p wait)."""
    return "torch/distributed/" in stack_text or "torch\\distributed\\" in stack_text


def suspects(stacks: Mapping[str, str], stalled: Collection[int]) -> list[int]:
    """Stalled ranks that are not waiting in a collective, when some other rank is.

    A rank blocked in all_reduce waits for a peer; a stalled peer that is *not* in a
    collective (stuck in Python, I/O, a deadlock) is the likely cause. Without a rank in a
    collective to compare against, nobody is singled out: an empty list.
    """
    in_collective = {int(r) for r, text in stacks.items() if waiting_in_collective(text)}
    if not in_collective:
        return []
    return sorted(r for r in stalled if str(r) in stacks and r not in in_collective)


# ------------------------------------------------------------ flight recorder


def trigger_flight_recorder(run_dir: str) -> list[str]:
    """Write a byte to every rank's dump pipe; returns the pipes that took it."""
    triggered = []
    for pipe in sorted(glob.glob(os.path.join(run_dir, FR_SUBDIR, FR_PIPE_STEM + "*.pipe"))):
        try:
            fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            if err.errno in (errno.ENXIO, errno.ENOENT):
                continue  # no reader: that rank's process group is gone
            raise
        try:
            os.write(fd, b"1")
            triggered.append(pipe)
        except OSError:
            pass
        finally:
            os.close(fd)
    return triggered


def flight_recorder_files(run_dir: str) -> list[dict[str, object]]:
    """The Flight Recorder dumps present: path, rank (from the file name) and size."""
    out = []
    stem = os.path.join(run_dir, FR_SUBDIR, FR_DUMP_STEM)
    for path in sorted(glob.glob(stem + "*")):
        suffix = path[len(stem) :]
        rank: int | None = int(suffix) if suffix.isdigit() else None
        out.append({"path": path, "rank": rank, "bytes": _size(path)})
    return out


def hang_evidence(
    pids_by_rank: Mapping[int, int],
    stalled: Collection[int],
    stacks_dir: str,
    run_dir: str | None = None,
    timeout: float = 2.0,
) -> dict[str, object]:
    """Everything to attach to a HANG finding: stacks, suspects, Flight Recorder dumps.

    Fits `HangWatcher(collect_stacks=...)` via functools.partial. Blocks up to `timeout`.
    """
    if run_dir is not None:
        trigger_flight_recorder(run_dir)
    evidence = collect_stacks(pids_by_rank, stacks_dir, timeout)
    stacks = evidence["stacks"]
    assert isinstance(stacks, dict)
    evidence["suspects"] = suspects(stacks, stalled)
    if run_dir is not None:
        evidence["flight_recorder"] = flight_recorder_files(run_dir)
    return evidence
