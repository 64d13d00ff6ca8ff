"""Calibration and hang options: pure tests of the formula, persistence and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.core.errors import ConfigError
from supervisor.hang.calibration import Calibration, Knobs, percentile
from supervisor.hang.options import HangOptions, parse_phase_timeouts
from supervisor.hang.state import load_calibration, save_calibration


def fed(values: list[float], knobs: Knobs) -> Calibration:
    cal = Calibration()
    for value in values:
        cal = cal.observe(value, knobs)
    return cal


def test_percentile_is_nearest_rank() -> None:
    values = tuple(float(i) for i in range(1, 101))
    assert percentile(values, 100) == 100.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile((3.0,), 99) == 3.0


def test_not_ready_until_min_samples() -> None:
    knobs = Knobs(min_samples=4, floor=1.0)
    assert fed([2.0] * 3, knobs).timeout(knobs) is None
    assert fed([2.0] * 4, knobs).timeout(knobs) == 10.0  # 5 x 2 s


def test_factor_times_max_with_floor_and_ceiling() -> None:
    knobs = Knobs(factor=5.0, min_samples=2, floor=30.0, ceiling=100.0)
    assert fed([0.1, 0.2, 0.1], knobs).timeout(knobs) == 30.0  # 1.0 s raised to the floor
    assert fed([8.0, 10.0, 9.0], knobs).timeout(knobs) == 50.0
    assert fed([8.0, 60.0], knobs).timeout(knobs) == 100.0  # 300 s cut to the ceiling


def test_percentile_knob_ignores_rare_spikes() -> None:
    knobs = Knobs(factor=2.0, percentile=99, min_samples=10, floor=1.0)
    values = [1.0] * 199 + [50.0]
    assert fed(values, knobs).timeout(knobs) == 2.0
    with_max = Knobs(factor=2.0, min_samples=10, floor=1.0)
    assert fed(values, with_max).timeout(with_max) == 100.0


def test_window_forgets_old_intervals() -> None:
    knobs = Knobs(window=4, min_samples=1, floor=1.0)
    cal = fed([100.0, 1.0, 1.0, 1.0, 1.0], knobs)
    assert cal.intervals == (1.0, 1.0, 1.0, 1.0)
    assert cal.timeout(knobs) == 5.0


def test_bad_intervals_are_ignored() -> None:
    knobs = Knobs()
    assert fed([float("nan"), -1.0, float("inf")], knobs).intervals == ()


def test_json_round_trip_and_rejection() -> None:
    knobs = Knobs(min_samples=2, floor=1.0)
    cal = fed([1.5, 2.5, 3.25], knobs)
    again = Calibration.from_json(json.loads(json.dumps(cal.to_json())), knobs)
    assert again == cal and again.timeout(knobs) == cal.timeout(knobs)
    for bad in ({}, {"version": 2, "intervals": []}, {"version": 1, "intervals": ["x"]}):
        with pytest.raises(ValueError):
            Calibration.from_json(bad, knobs)


def test_state_file_survives_a_resume(tmp_path: Path) -> None:
    knobs = Knobs(min_samples=2, floor=1.0)
    path = str(tmp_path / "hang-calibration.json")
    assert load_calibration(path, knobs) == (Calibration(), None)  # first run: no file
    save_calibration(path, fed([2.0, 4.0], knobs))
    loaded, note = load_calibration(path, knobs)
    assert note is None and loaded.timeout(knobs) == 20.0
    assert [p.name for p in tmp_path.iterdir()] == ["hang-calibration.json"]  # no temp left


def test_a_corrupt_state_file_is_ignored_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    path.write_text("{not json")
    cal, note = load_calibration(str(path), Knobs())
    assert cal == Calibration() and note is not None and "ignored" in note
    path.write_text("[1, 2]")
    assert load_calibration(str(path), Knobs())[1] is not None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"factor": 0.5},
        {"percentile": 20},
        {"window": 0},
        {"min_samples": 10, "window": 5},
        {"floor": 0},
        {"floor": 10, "ceiling": 5},
        {"ceiling": float("inf")},
    ],
)
def test_bad_knobs_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Knobs(**kwargs)


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"hang_timeout": 0}, "--hang-timeout"),
        ({"hang_timeout": float("nan")}, "--hang-timeout"),
        ({"init_timeout": -1}, "--init-timeout"),
        ({"log_silence_timeout": 0}, "--log-silence-timeout"),
        ({"phase_timeouts": {"checkpoint": 0}}, "--phase-timeouts checkpoint"),
        ({"phase_timeouts": {"": 5}}, "phase name"),
        ({"hang_timeout": "5"}, "--hang-timeout"),
    ],
)
def test_bad_hang_options_name_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        HangOptions(**kwargs)


def test_phase_timeouts_parse_from_flag_text() -> None:
    assert parse_phase_timeouts("checkpoint=1800, eval=600") == {
        "checkpoint": 1800.0,
        "eval": 600.0,
    }
    assert parse_phase_timeouts("") == {}
    for bad in ("checkpoint", "=5", "eval=soon", "eval=-3"):
        with pytest.raises(ConfigError, match="--phase-timeout"):
            parse_phase_timeouts(bad)


def test_which_timeout_judges_a_rank() -> None:
    opts = HangOptions(hang_timeout=10, init_timeout=100, phase_timeouts={"checkpoint": 500})
    assert opts.timeout_for("", stepped=False, calibrated=None) == (100, "init")
    assert opts.timeout_for("train", stepped=False, calibrated=None) == (100, "init")
    assert opts.timeout_for("init", stepped=True, calibrated=None) == (100, "init")
    assert opts.timeout_for("", stepped=True, calibrated=3) == (10, "explicit")
    assert opts.timeout_for("train", stepped=True, calibrated=None) == (10, "explicit")
    assert opts.timeout_for("checkpoint", stepped=True, calibrated=None) == (500, "phase")
    assert opts.timeout_for("eval", stepped=True, calibrated=None) == (100, "init")
    auto = HangOptions(init_timeout=100)
    assert auto.timeout_for("", stepped=True, calibrated=None) == (100, "init")
    assert auto.timeout_for("", stepped=True, calibrated=42.0) == (42.0, "calibrated")


def test_options_copy_the_phase_mapping() -> None:
    phases = {"checkpoint": 5.0}
    opts = HangOptions(phase_timeouts=phases)
    phases["checkpoint"] = 1.0
    assert opts.phase_timeouts["checkpoint"] == 5.0
