"""Run directories: one private directory per run, kept only while it holds evidence.

A run directory holds the channel the ranks beat into, their stack dumps and the Flight
Recorder dumps. It lives on memory-backed storage where there is one (`/dev/shm`: the
channel is hot), so a directory left behind costs memory until the machine reboots.

Guarantees:

* `make_run_dir` creates `<base>/supervise-run-XXXXXXXX`, mode 0700, with a `lock` file that
  this process holds an exclusive `flock` on until `release` (or until it dies: the kernel
  drops the lock with the process, whatever killed it). The lock's descriptor is
  close-on-exec, so the training command never holds it. The lock file holds the pid of
  the supervise that made it, so a tool run beside it (`supervise checkpoint-now`) can
  tell live runs apart: `live` lists them, `lock_pid` names their supervise.
* Before creating one, `make_run_dir` prunes: of the directories in `<base>` named with our
  prefix, owned by this user, holding a `lock` file that nobody holds (their supervise has
  ended), all but the newest `KEEP` (by modification time) are removed. A live run's
  directory is never touched, nor anything of another user, nor a directory without a lock
  file. Directories made by older releases (`supervise-XXXXXXXX`, no lock, so a live one
  cannot be told apart) are never touched.
* `holds_evidence` is true when the directory holds a non-empty stack dump or a Flight
  Recorder dump: the only reason to keep it after the run.

Nothing here raises for a directory that vanished or cannot be read; `make_run_dir`
raises `OSError` only when the new directory cannot be made.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile

# Not a name older releases could make ("supervise-" plus 8 of [a-z0-9_]): pruning then
# looks at no other directory, and costs one scandir however many others /dev/shm holds.
PREFIX = "supervise-run-"
LOCK = "lock"
KEEP = 10  # kept run directories per user and machine, besides the live ones
EVIDENCE = ("stacks", "flight_recorder")  # subdirectories whose non-empty files are evidence

_locks: dict[str, int] = {}  # run directory -> the descriptor holding its lock


def default_base() -> str | None:
    """`/dev/shm` where it is writable, else None (the system's temporary directory)."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def make_run_dir(base: str | None = None) -> str:
    """Prune old run directories in `base`, then make and lock a new one; returns its path."""
    base = base if base is not None else default_base()
    prune(base or tempfile.gettempdir())
    path = tempfile.mkdtemp(prefix=PREFIX, dir=base)
    fd = os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n".encode())
    _locks[path] = fd
    return path


def release(path: str, *, remove: bool) -> None:
    """Drop this process's lock on `path`, removing the directory first when `remove`."""
    if remove:
        shutil.rmtree(path, ignore_errors=True)
    fd = _locks.pop(path, None)
    if fd is not None:
        os.close(fd)


def holds_evidence(path: str) -> list[str]:
    """Which kinds of evidence `path` holds ("stacks", "flight_recorder"); empty if none."""
    found = []
    for kind in EVIDENCE:
        with contextlib.suppress(OSError), os.scandir(os.path.join(path, kind)) as entries:
            if any(e.is_file(follow_symlinks=False) and e.stat().st_size > 0 for e in entries):
                found.append(kind)
    return found


def prune(base: str, keep: int = KEEP) -> list[str]:
    """Remove all but the newest `keep` ended run directories of ours in `base`; returns
    the paths removed."""
    ended: list[tuple[float, str]] = []
    uid = os.getuid()
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            if not entry.name.startswith(PREFIX) or entry.path in _locks:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
                continue
            if _ended(entry.path):
                ended.append((info.st_mtime, entry.path))
    ended.sort(reverse=True)
    removed = [path for _, path in ended[keep:]]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def bases() -> list[str]:
    """Where this machine's run directories are made: `/dev/shm` where writable, and the
    system's temporary directory (where a supervise that could not write `/dev/shm` went)."""
    found = [base for base in (default_base(), tempfile.gettempdir()) if base]
    return list(dict.fromkeys(found))


def live(base: str) -> list[str]:
    """The run directories in `base` whose supervise is running (their lock is held)."""
    found = []
    with contextlib.suppress(OSError), os.scandir(base) as entries:
        for entry in entries:
            if entry.name.startswith(PREFIX) and is_live(entry.path):
                found.append(entry.path)
    return sorted(found)


def is_live(path: str) -> bool:
    """Whether `path` is a run directory whose supervise is running."""
    return os.path.isfile(os.path.join(path, LOCK)) and not _ended(path)


def lock_pid(path: str) -> int | None:
    """The pid of the supervise that made `path`, or None when the lock does not say."""
    try:
        with open(os.path.join(path, LOCK), encoding="ascii") as f:
            return int(f.read(32).strip())
    except (OSError, ValueError):
        return None


def _ended(path: str) -> bool:
    """Whether `path` has a lock file that no process holds."""
    try:
        fd = os.open(os.path.join(path, LOCK), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # no lock file: an older supervise's, or not ours at all
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False  # held: its supervise is running
    finally:
        os.close(fd)
