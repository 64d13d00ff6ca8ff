"""The calibration's temporary file cannot be redirected by a link planted in the directory."""

from __future__ import annotations

import os
from pathlib import Path

from supervisor.hang.calibration import Calibration, Knobs
from supervisor.hang.state import load_calibration, save_calibration


def test_a_symlink_at_the_guessable_temp_name_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "hang-calibration.json"
    # The names a writer could be guessed to use: PID-based, as this process would.
    for name in (f"{path}.tmp", f"{path}.tmp.{os.getpid()}"):
        os.symlink(victim, name)
    calibration = Calibration().observe(2.0, Knobs()).observe(4.0, Knobs())
    save_calibration(str(path), calibration)
    assert victim.read_text() == "precious"
    assert load_calibration(str(path), Knobs()) == (calibration, None)
    assert not path.is_symlink()


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "hang-calibration.json"
    os.symlink(victim, path)
    save_calibration(str(path), Calibration())
    assert victim.read_text() == "precious" and not path.is_symlink()
