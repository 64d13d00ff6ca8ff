"""The `supervise k8s job|jobset` and `supervise explain` commands, and launch/ staying in sync.

Run through the installed `supervise` binary where exit codes and stderr matter, and
through typer's runner (same commands, same process) where only the text does.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from supervisor.cli.k8s import register
from supervisor.core.exitcodes import ExitCode
from supervisor.k8s import rules
from supervisor.k8s.render import render_job, render_jobset
from supervisor.k8s.spec import RenderOptions

SUPERVISE = str(Path(sys.executable).with_name("supervise"))
LAUNCH = Path(__file__).resolve().parents[2] / "launch"


def _app() -> typer.Typer:
    app = typer.Typer(rich_markup_mode=None)

    @app.command("run")  # a second command keeps typer from collapsing the app into one
    def run() -> None: ...

    register(app)
    return app


def invoke(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(_app(), list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def supervise(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    return subprocess.run(
        [SUPERVISE, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def regenerate_lines() -> list[tuple[list[str], str]]:
    """(supervise argv, output file) for every render line of launch/regenerate.sh."""
    found = []
    for line in (LAUNCH / "regenerate.sh").read_text().splitlines():
        if line.startswith("supervise "):
            command, _, target = line.rpartition(" > ")
            found.append((shlex.split(command)[1:], target.strip()))
    return found


# --- launch/ ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args,target", regenerate_lines(), ids=lambda x: str(x)[:40])
def test_launch_example_matches_what_the_command_renders(args: list[str], target: str) -> None:
    result = supervise(*args)
    assert result.returncode == 0, result.stderr
    assert (LAUNCH / target).read_text() == result.stdout, (
        f"launch/{target} drifted from the renderer: run launch/regenerate.sh and commit"
    )


def test_every_launch_manifest_is_regenerated_and_the_set_is_complete() -> None:
    targets = {target for _, target in regenerate_lines()}
    assert targets == {p.name for p in LAUNCH.glob("*.yaml")}
    assert targets == {"job.yaml", "job-in-place.yaml", "jobset.yaml", "jobset-in-place.yaml"}


# --- rendering -------------------------------------------------------------------------------


def test_job_command_prints_exactly_the_rendered_manifests(tmp_path: Path) -> None:
    result = supervise(
        "k8s",
        "job",
        "--name",
        "bert",
        "--image",
        "r/i:2",
        "--nnodes",
        "3",
        "--nproc-per-node",
        "4",
        "--namespace",
        "ml",
        "--",
        "train.py",
        "--epochs",
        "2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    expected = RenderOptions(
        name="bert",
        image="r/i:2",
        command=("train.py", "--epochs", "2"),
        nnodes=3,
        nproc_per_node=4,
        gpus_per_node=4,
        namespace="ml",
        cpu="1",  # the flags' default requests
        memory="4Gi",
    )
    assert list(yaml.safe_load_all(result.stdout)) == render_job(expected)
    assert list(tmp_path.iterdir()) == []  # it prints; it writes nothing


def test_jobset_command_and_env_twins() -> None:
    out = invoke(
        "k8s",
        "jobset",
        "--",
        "python",
        "-m",
        "pkg.train",
        env={
            "SUPERVISE_K8S_IMAGE": "r/i:3",
            "SUPERVISE_K8S_NAME": "gpt",
            "SUPERVISE_K8S_NNODES": "2",
            "SUPERVISE_K8S_MAX_RESTARTS": "9",
            "SUPERVISE_K8S_CPU": "8",
            "SUPERVISE_K8S_GPUS_PER_NODE": "1",
            "SUPERVISE_K8S_TRAINING_FAILED_FAILS_JOB": "true",
        },
    )
    expected = RenderOptions(
        name="gpt",
        image="r/i:3",
        command=("python", "-m", "pkg.train"),
        nnodes=2,
        gpus_per_node=1,
        max_restarts=9,
        training_failed_fails_job=True,
        cpu="8",
        memory="4Gi",
    )
    assert list(yaml.safe_load_all(out)) == render_jobset(expected)


def test_restart_in_place_accepts_names_and_numbers() -> None:
    out = invoke(
        "k8s",
        "job",
        "--image",
        "i",
        "--restart-in-place",
        "84",
        "--restart-in-place",
        "infra-failed",
        "--",
        "t.py",
    )
    (_, job) = yaml.safe_load_all(out)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["restartPolicyRules"][0]["exitCodes"]["values"] == [84, 86]


@pytest.mark.parametrize("kind", ["job", "jobset"])
def test_help_lists_the_env_twins(kind: str) -> None:
    result = supervise("k8s", kind, "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for twin in (
        "SUPERVISE_K8S_IMAGE",
        "SUPERVISE_K8S_NAME",
        "SUPERVISE_K8S_NNODES",
        "SUPERVISE_K8S_NPROC_PER_NODE",
        "SUPERVISE_K8S_CHECKPOINT_DIR",
        "SUPERVISE_K8S_GRACE_PERIOD",
        "SUPERVISE_K8S_RESTART_IN_PLACE",
    ):
        assert twin in out, twin


@pytest.mark.parametrize(
    ("args", "fix"),
    [
        (["k8s", "job", "--", "train.py"], "--image"),
        (["k8s", "job", "--image", "i"], "no training command"),
        (["k8s", "job", "--image", "i", "--name", "Bad_Name", "--", "t.py"], "--name"),
        (
            ["k8s", "jobset", "--image", "i", "--restart-in-place", "DEVICE_FAILED", "--", "t.py"],
            "--restart-in-place DEVICE_FAILED",
        ),
        (["k8s", "job", "--image", "i", "--restart-in-place", "nope", "--", "t.py"], "'nope'"),
        (["k8s", "job", "--image", "i", "--nnodes", "0", "--", "t.py"], "--nnodes"),
        (["k8s", "job", "--image", "i", "--shm-size", "lots", "--", "t.py"], "--shm-size"),
        (["explain", "300"], "0-255"),
        (["explain", "gpu-sad"], "class name"),
    ],
)
def test_bad_input_is_one_line_and_config_error(args: list[str], fix: str) -> None:
    result = supervise(*args)
    assert result.returncode == ExitCode.CONFIG_ERROR.code, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fix in lines[0], result.stderr


# --- explain ---------------------------------------------------------------------------------

EXPECTED_JOB = {
    "Count": "counts against backoffLimit",
    "Ignore": "not counted",
    "FailJob": "the Job fails at once",
}
EXPECTED_JOBSET = {
    "Count": "RestartJobSet:",
    "Ignore": "RestartJobSetAndIgnoreMaxRestarts:",
    "FailJob": "FailJobSet:",
}


@pytest.mark.parametrize("code", list(ExitCode), ids=lambda c: c.name)
def test_explain_every_code_by_number_and_by_name(code: ExitCode) -> None:
    by_number = invoke("explain", str(code.code))
    assert invoke("explain", code.name.lower().replace("_", "-")) == by_number
    assert by_number.startswith(f"{code.code} {code.name}\n")
    assert code.meaning in by_number and code.next_step in by_number
    if code is ExitCode.SUCCEEDED:
        assert "no rule applies" in by_number
        return
    job_line = next(line for line in by_number.splitlines() if "(supervise k8s job)" in line)
    assert f"-> {code.action.value}:" in job_line and EXPECTED_JOB[code.action.value] in job_line
    jobset_line = next(line for line in by_number.splitlines() if "(supervise k8s jobset)" in line)
    if code in rules.JOBSET_IGNORED:  # never fails its Job: the pod holding the incident does
        assert "-> Ignore:" in jobset_line and "its Job does not fail" in jobset_line
        assert "RestartJobSet" not in jobset_line
    else:
        assert EXPECTED_JOBSET[code.action.value] in jobset_line
    assert ("--restart-in-place" in by_number) == code.retriable


def test_explain_a_signal_exit_through_the_real_binary() -> None:
    result = supervise("explain", "137")
    assert result.returncode == 0, result.stderr
    assert "not a supervise exit code" in result.stdout and "SIGKILL" in result.stdout
    assert "no podFailurePolicy rule matches" in result.stdout and "-> Count" in result.stdout
