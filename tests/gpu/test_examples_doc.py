"""The fault scenarios' README documents every shipped file with the exit code it expects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from supervisor.gpu.fake import Scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "faults"  # the README
SHIPPED = Path(__file__).resolve().parents[2] / "supervisor" / "gpu" / "scenarios"


def test_every_shipped_scenario_loads_and_its_readme_row_gives_the_same_exit_code() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([^`]+)` \|[^|]*\| (\d+) ", readme, re.MULTILINE))
    files = sorted(p for p in SHIPPED.iterdir() if p.suffix in (".json", ".yaml"))
    assert len(files) >= 8
    assert set(rows) == {p.name for p in files}
    for path in files:
        scenario = Scenario.load(path)  # valid, as supervise will read it
        data = (
            yaml.safe_load(path.read_text())
            if path.suffix == ".yaml"
            else json.loads(path.read_text())
        )
        assert scenario.expect == data["expect"]
        assert int(rows[path.name]) == scenario.expect["exit_code"], path.name


def test_the_wheel_ships_every_scenario() -> None:
    """`--fake-gpus NAME` reads them from the installed package: the package data must
    match every file, since examples/ is not in the wheel."""
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((SHIPPED.parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["supervisor"]
    for path in SHIPPED.iterdir():
        relative = str(path.relative_to(SHIPPED.parents[1]))
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
