"""Saving and loading the hang calibration, so a resumed run does not start blind.

The file is small JSON (`Calibration.to_json`). `save_calibration` writes a temporary file
(a unique name, created exclusively) next to the target and renames it over, so a crash
leaves the old file or the new one, never half of one. `load_calibration` returns an
empty calibration for a missing file and for one it cannot read or parse (it says so on
the returned note): a bad calibration file must never stop training, and the run then
simply calibrates again.
"""

from __future__ import annotations

import contextlib
import json
import os

from supervisor.hang.calibration import Calibration, Knobs


def load_calibration(path: str, knobs: Knobs) -> tuple[Calibration, str | None]:
    """(calibration, note): note is None when the file loaded or did not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return Calibration(), None
    except (OSError, ValueError) as err:
        return Calibration(), f"ignored the hang calibration in {path}: {err}"
    try:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return Calibration.from_json(data, knobs), None
    except ValueError as err:
        return Calibration(), f"ignored the hang calibration in {path}: {err}"


def save_calibration(path: str, calibration: Calibration) -> None:
    """Atomically replace `path` with `calibration`. Raises OSError if it cannot write.

    The temporary file has a unique name and is created exclusively without following
    links (O_CREAT|O_EXCL|O_NOFOLLOW), so a file or symlink planted at a guessable name in a
    shared checkpoint directory cannot redirect the write; the rename replaces a link at
    `path` itself rather than writing through it.
    """
    tmp = f"{path}.tmp.{os.getpid()}.{os.urandom(8).hex()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(calibration.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
