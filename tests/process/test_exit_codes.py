"""Black-box: how the child ends maps to the contract, and lands in the termination message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import SUPERVISE


def _run_exit(status: int, workdir: Path) -> tuple[int, int, dict]:
    term = workdir / f"term-{status}"
    proc = subprocess.run(
        [
            SUPERVISE,
            "--termination-log",
            str(term),
            "--event-log",
            os.devnull,
            "--",
            "sh",
            "-c",
            f"exit {status}",
        ],
        capture_output=True,
        timeout=60,
    )
    return status, proc.returncode, json.loads(term.read_text())


def test_exit_status_sweep_0_to_255(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda s: _run_exit(s, tmp_path), range(256)))
    for status, returncode, message in results:
        expected = 0 if status == 0 else 80
        assert returncode == expected, (status, returncode)
        assert message["exitCode"] == expected
        assert {"exitStatus": status}.items() <= message["evidence"][-1].items() or any(
            e.get("exitStatus") == status for e in message["evidence"]
        )


DEADLY = [
    s
    for s in (
        signal.SIGHUP,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGILL,
        signal.SIGABRT,
        signal.SIGFPE,
        signal.SIGKILL,
        signal.SIGSEGV,
        signal.SIGPIPE,
        signal.SIGALRM,
        signal.SIGTERM,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGBUS,
        signal.SIGXCPU,
    )
]


@pytest.mark.parametrize("signum", DEADLY, ids=lambda s: signal.Signals(s).name)
def test_death_by_signal_is_training_failed_with_the_signal_as_evidence(supervise, signum):
    # The child kills itself, so supervise received nothing from outside.
    # (Python ignores SIGPIPE by default, so restore the default first.)
    script = (
        "import os, signal; signal.signal(signal.SIGPIPE, signal.SIG_DFL); "
        f"os.kill(os.getpid(), {int(signum)})"
    )
    result = supervise("--", sys.executable, "-c", script)
    assert result.returncode == 80
    assert result.termination["name"] == "TRAINING_FAILED"
    child = [e for e in result.termination["evidence"] if e["source"] == "child"]
    assert child[0]["signal"] == signal.Signals(signum).name
    assert child[0]["signum"] == signum


def test_command_not_found_is_config_error(supervise) -> None:
    result = supervise("--", "definitely-not-a-command-xyz")
    assert result.returncode == 81
    assert result.termination["name"] == "CONFIG_ERROR"
    assert "command not found: 'definitely-not-a-command-xyz'" in result.termination["reason"]


def test_not_executable_is_config_error(supervise, tmp_path: Path) -> None:
    script = tmp_path / "train.sh"
    script.write_text("echo hi\n")
    result = supervise("--", str(script))
    assert result.returncode == 81
    assert "chmod +x" in result.termination["reason"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--no-such-flag", "--", "true"], "No such option '--no-such-flag'"),
        (["--grace-period", "soon", "--", "true"], "Invalid value for '--grace-period'"),
        (["--grace-period", "-3", "--", "true"], "--grace-period must be"),
        ([], "no training command given"),
    ],
)
def test_bad_flags_are_config_errors_with_a_message(supervise, args, needle) -> None:
    result = supervise(*args)
    assert result.returncode == 81
    assert needle in result.stderr.decode()
    assert result.termination["exitCode"] == 81
    assert needle in result.termination["reason"]


def test_success_writes_a_termination_message(supervise) -> None:
    result = supervise("--", "true")
    assert result.returncode == 0
    assert result.termination["name"] == "SUCCEEDED"
    assert result.event("exit")["exitCode"] == 0


def test_unwritable_termination_log_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    events = tmp_path / "events"
    proc = subprocess.run(
        [
            SUPERVISE,
            "--termination-log",
            str(tmp_path / "no" / "such" / "dir"),
            "--event-log",
            str(events),
            "--",
            "sh",
            "-c",
            "exit 7",
        ],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 80
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    warning = next(e for e in lines if e["event"] == "output_unwritable")
    assert warning["sink"] == "--termination-log"
    assert lines[-1]["event"] == "exit"
    assert b"cannot write --termination-log" in proc.stderr


def test_event_log_goes_to_stderr_by_default(tmp_path: Path) -> None:
    proc = subprocess.run(
        [SUPERVISE, "--termination-log", os.devnull, "--", "true"],
        capture_output=True,
        timeout=60,
    )
    events = [json.loads(line) for line in proc.stderr.decode().splitlines()]
    assert [e["event"] for e in events][-1] == "exit"
    for event in events:
        assert {"time", "mono", "source", "event"} <= event.keys()
        assert event["source"] == "supervise"


def test_python_dash_m_works(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor",
            "--termination-log",
            os.devnull,
            "--event-log",
            os.devnull,
            "--",
            "sh",
            "-c",
            "exit 5",
        ],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 80


def test_exit_codes_json_matches_the_enum() -> None:
    proc = subprocess.run([SUPERVISE, "exit-codes", "--json"], capture_output=True, timeout=60)
    rows = json.loads(proc.stdout)
    assert [(r["code"], r["name"], r["action"]) for r in rows] == [
        (0, "SUCCEEDED", "-"),
        (80, "TRAINING_FAILED", "Count"),
        (81, "CONFIG_ERROR", "FailJob"),
        (82, "DEVICE_FAILED", "Ignore"),
        (83, "DEVICE_DEGRADED", "Ignore"),
        (84, "HANG", "Count"),
        (85, "PREEMPTED", "Ignore"),
        (86, "INFRA_FAILED", "Count"),
        (87, "PEER_LEFT", "Ignore"),
    ]
    assert all(r["meaning"] for r in rows)
    table = subprocess.run([SUPERVISE, "exit-codes"], capture_output=True, timeout=60)
    for row in rows:
        assert f"{row['code']:<5} {row['name']}" in table.stdout.decode()


def test_help_lists_every_run_flag_with_its_environment_twin() -> None:
    import typer.main

    from supervisor.cli import app
    from supervisor.cli.run import FLAGS

    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    help_text = subprocess.run(
        [SUPERVISE, "--help"], capture_output=True, timeout=60, env={**os.environ, "COLUMNS": "200"}
    ).stdout.decode()
    help_text = " ".join(help_text.split())  # undo line wrapping

    options = [p for p in run.params if p.param_type_name == "option" and p.opts[0] != "--version"]
    assert [p.opts[0] for p in options] == [flag.option for flag in FLAGS]  # what is declared
    for param in options:
        twin = "SUPERVISE_" + param.opts[0][2:].upper().replace("-", "_")
        assert param.envvar == twin, param.opts
        assert param.opts[0] in help_text
        assert f"env var: {twin}" in help_text
    assert len(options) >= 20


def test_an_event_log_that_cannot_be_opened_falls_back_to_stderr(tmp_path: Path) -> None:
    term = tmp_path / "term"
    proc = subprocess.run(
        [
            SUPERVISE,
            "--termination-log",
            str(term),
            "--event-log",
            str(tmp_path / "missing" / "events"),
            "--",
            "sh",
            "-c",
            "exit 7",
        ],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 80
    lines = proc.stderr.decode().splitlines()
    assert lines[0].startswith("supervise: warning: cannot open --event-log")
    events = [json.loads(line) for line in lines[1:]]
    assert events[0]["event"] == "output_unwritable"
    assert events[-1]["event"] == "exit"
    assert json.loads(term.read_text())["exitCode"] == 80


SLOW_PRINTER = "import time\nfor i in range(5):\n    print('tick', i)\n    time.sleep(1)\n"


def test_a_python_child_writes_unbuffered_so_log_silence_sees_its_output(tmp_path) -> None:
    # Through a pipe Python block-buffers stdout: five ticks a second apart would reach
    # supervise only at exit, and --log-silence-timeout 3 would call the run hung (84).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    term = tmp_path / "term"
    argv = [SUPERVISE, "--termination-log", str(term), "--event-log", os.devnull]
    argv += ["--log-silence-timeout", "3", "--", sys.executable, "-c", SLOW_PRINTER]
    proc = subprocess.run(argv, capture_output=True, timeout=60, env=env)
    assert proc.returncode == 0, term.read_text()
    assert proc.stdout.decode().splitlines() == [f"tick {i}" for i in range(5)]


def test_a_users_pythonunbuffered_is_left_alone(supervise) -> None:
    shown = "import os; print(repr(os.environ.get('PYTHONUNBUFFERED')))"
    result = supervise("--", sys.executable, "-c", shown, env={"PYTHONUNBUFFERED": "x"})
    assert result.stdout.decode().strip() == "'x'"


def test_the_default_termination_log_is_written_only_where_the_kubelet_made_it(tmp_path):
    default = Path("/dev/termination-log")
    if default.exists():  # in a pod, where the kubelet made it: nothing to show here
        pytest.skip("the kubelet's termination log exists on this machine")
    env = {k: v for k, v in os.environ.items() if k != "SUPERVISE_TERMINATION_LOG"}
    proc = subprocess.run(
        [SUPERVISE, "--event-log", os.devnull, "--", "sh", "-c", "exit 3"],
        capture_output=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 80
    assert not default.exists()
    bad = subprocess.run(
        [SUPERVISE, "--grace-period", "-1", "--", "true"], capture_output=True, env=env
    )
    assert bad.returncode == 81 and not default.exists()
    assert bad.stderr.decode().startswith("supervise: error: --grace-period")
