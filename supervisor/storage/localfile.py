"""Opening a checkpoint file on a local filesystem: regular files only, never blocking.

A committed step holds only regular files. A FIFO, a device or a symlink planted in its
place must be refused by its type, not read: opening a FIFO for reading blocks until a
writer appears, and `/dev/zero` never ends. `open_regular` opens with O_NONBLOCK (so a FIFO
cannot block the open) and O_NOFOLLOW (a symlink as the last component is refused whatever
it points to; the writer never makes one), checks the type with fstat on the descriptor
it will read (no window between check and use), and only then hands out a blocking stream.

`start_writeback` asks the kernel to begin writing a range of a file being saved to disk
now, without waiting for it, so the disk works while the rest is still being copied.

`confined` refuses a path whose directories resolve outside the checkpoint root (a step or
attempt directory replaced by a symlink to elsewhere); the root itself may be a link.

Raises `DamagedError` for anything but a regular file inside the root, and the OSError of
the open itself (FileNotFoundError, PermissionError) otherwise. Blocks only on the open(2)
of a regular file.
"""

from __future__ import annotations

import ctypes
import errno
import io
import os
import stat
import sys
from typing import BinaryIO

from supervisor.storage.layout import DamagedError


def open_regular(path: str) -> BinaryIO:
    """An unbuffered binary stream over the regular file `path`; the caller closes it."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DamagedError(f"{path} is a symlink, not a checkpoint file") from err
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DamagedError(f"{path} is not a regular file ({_kind(mode)}); refused")
        os.set_blocking(fd, True)
        return io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def confined(path: str, root: str) -> str:
    """`path` if its directory resolves inside `root` (both resolved; no file is opened)."""
    top = os.path.realpath(root)
    directory = os.path.realpath(os.path.dirname(path))
    if directory != top and not directory.startswith(top.rstrip(os.sep) + os.sep):
        raise DamagedError(f"{path} resolves outside the checkpoint root {root}")
    return path


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def read_bounded(stream: BinaryIO, limit: int) -> bytes:
    """Up to `limit` bytes from `stream`, looping over short reads; fewer only at EOF."""
    parts, left = [], limit
    while left > 0:
        chunk = stream.read(min(left, 8 << 20))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


# sync_file_range(2) flag: start writeback of the range's dirty pages, do not wait for it.
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> object | None:
    """libc's sync_file_range, looked up once on first use (the process's own symbols: no
    library search, no subprocess), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_SYNC_RANGE: list[object | None] = []  # filled on first use


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing `length` bytes at `offset` of `fd` to the disk, without waiting.

    Without it the kernel starts writeback only when dirty memory passes
    `vm.dirty_background_ratio` (gigabytes on most hosts), so a checkpoint is first copied
    into the page cache and only then written by fsync: the two run one after the other.
    Started here, the disk writes while the rest is still copied, and the final fsync
    waits only for the tail. It changes nothing about durability (the commit still fsyncs
    every file). Blocks only if the device's queue is full (the writer then runs at disk
    speed). A no-op where sync_file_range(2) does not exist (not Linux) or has nothing to
    do (tmpfs); its errors are ignored, since fsync reports any that matter."""
    if not _SYNC_RANGE:
        _SYNC_RANGE.append(_sync_file_range())
    call = _SYNC_RANGE[0]
    if call is not None and length > 0:
        call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # type: ignore[operator]
