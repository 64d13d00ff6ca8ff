"""A new user's first hour: the README's commands as written, the demo, the Makefile's torch
install, `supervise -V`, and the files a published package is expected to have.

The README and the demo run as a user runs them (bash, the real `supervise`, the real
example training). The Makefile runs under real make; only pip is replaced for the installs,
since those reach a package index, while its check for a local wheel runs the real pip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPERVISE = str(Path(sys.executable).with_name("supervise"))
VENV = Path(sys.prefix)
IN_A_VENV = sys.prefix != sys.base_prefix and (VENV / "bin" / "activate").exists()


def _version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _path_without_the_venv() -> str:
    """PATH as a new shell has it: without the venv that runs these tests."""
    bins = {str(VENV / "bin"), str(Path(sys.executable).parent)}
    return os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p not in bins)


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_prints_the_package_version_and_exits_0(flag: str) -> None:
    proc = subprocess.run([SUPERVISE, flag], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"supervise {_version()}\n", "")
    assert re.fullmatch(r"\d+\.\d+\.\d+", _version())


def test_the_package_has_its_license_and_changelog() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in license_text
    for name in project.get("license-files", ["LICENSE"]):
        assert (ROOT / name).exists(), name
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    # A License :: classifier beside an SPDX expression is refused by setuptools >= 77.
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]


def _readme_block(containing: str) -> str:
    blocks = re.findall(r"^```sh\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    matches = [b for b in blocks if containing in b]
    assert len(matches) == 1, f"one README sh block with {containing!r}, found {len(matches)}"
    return matches[0]


@pytest.mark.skipif(not IN_A_VENV, reason="the README's commands activate the venv")
def test_the_readmes_by_hand_commands_work_as_written(tmp_path: Path) -> None:
    """In a shell whose PATH lacks the venv, as a new terminal's does, the README's lines
    run as written from a checkout with its `.venv/`."""
    block = _readme_block(". .venv/bin/activate")
    (tmp_path / ".venv").symlink_to(VENV)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PATH": _path_without_the_venv()}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        ["bash", "-euc", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"supervise {_version()}\n" in proc.stdout
    assert re.search(r"^200\s+committed\s", proc.stdout, re.M), proc.stdout


@pytest.mark.slow
def test_the_demo_degrades_resumes_and_keeps_what_it_wrote(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    env = {
        **os.environ,
        "PATH": f"{Path(SUPERVISE).parent}{os.pathsep}{os.environ['PATH']}",  # as make demo
        "SUPERVISE_DEMO_DIR": str(work),
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "examples" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--> supervise exited 83 (DEVICE_DEGRADED)\n" in proc.stdout
    assert "--> supervise exited 0 (SUCCEEDED)\n" in proc.stdout
    assert f"== kept in {work}:" in proc.stdout
    assert {"checkpoints", "first.json", "second.json", "first.events", "second.events"} <= {
        p.name for p in work.iterdir()
    }
    assert any((work / "checkpoints").iterdir())

    again = subprocess.run(
        ["bash", str(ROOT / "examples" / "demo.sh")], env=env, capture_output=True, timeout=60
    )
    assert again.returncode == 2  # refuses to mix a second demo into the first's directory


def _wheel(directory: Path, name: str, version: str) -> None:
    """A minimal, installable-looking wheel: enough for pip to resolve it from find-links."""
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        whl.writestr(
            f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        whl.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(f"{dist}/RECORD", "")


@pytest.fixture
def make_venv(tmp_path: Path):
    """Run the Makefile's venv target with a recording pip in place of the real one: the
    installs are recorded, the dry run that looks for a local wheel runs the real pip
    against `wheels/` only (no config files, no index)."""
    if shutil.which("make") is None:
        pytest.skip("no make")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    log = tmp_path / "pip.log"
    fake_python = tmp_path / "python"
    fake_python.write_text(
        f"""#!/bin/sh
# `python -m venv DIR` makes DIR/bin with a recording pip; anything else is recorded.
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  cat > "$3/bin/pip" <<'PIP'
#!/bin/sh
case " $* " in
  *" --dry-run "*) exec {sys.executable} -m pip "$@" ;;
esac
echo "pip $*" >> {log}
PIP
  printf '#!/bin/sh\\necho "python $*" >> {log}\\n' > "$3/bin/python"
  chmod +x "$3/bin/pip" "$3/bin/python"
fi
"""
    )
    fake_python.chmod(0o755)

    def run(*variables: str) -> list[str]:
        log.unlink(missing_ok=True)
        venv = tmp_path / "venv"
        shutil.rmtree(venv, ignore_errors=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "MAKE"))},
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_FIND_LINKS": str(wheels),
        }
        proc = subprocess.run(
            [
                "make",
                "-s",
                f"PYTHON={fake_python}",
                f"VENV={venv}",
                *variables,
                f"{venv}/bin/supervise",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [line for line in log.read_text().splitlines() if "torch" in line]

    run.wheels = wheels  # type: ignore[attr-defined]
    return run


def test_make_takes_torch_from_a_local_wheel_as_before(make_venv) -> None:
    _wheel(make_venv.wheels, "torch", "2.13.0")
    installs = make_venv()
    assert installs[0] == "pip install --quiet torch==2.13.0"
    assert not [line for line in installs if "--index-url" in line]


def test_make_takes_the_cpu_build_when_there_is_no_local_wheel(make_venv) -> None:
    _wheel(make_venv.wheels, "torch", "2.12.0")  # not the pinned release
    installs = make_venv()
    assert installs[0] == (
        "pip install --quiet --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"
    )


def test_make_takes_the_torch_index_and_requirement_it_is_given(make_venv) -> None:
    installs = make_venv(
        "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128", "TORCH_SPEC=torch==2.13.0+cu128"
    )
    assert installs[0] == (
        "pip install --quiet --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0+cu128"
    )
    assert make_venv("TORCH_INDEX_URL=")[0] == "pip install --quiet torch==2.13.0"
