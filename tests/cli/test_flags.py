"""Flags are declared once: the twin derives from the name, and commands share declarations.

Through typer's runner and the real `supervise` app: what is checked is what `--help` and
the parser are built from.
"""

from __future__ import annotations

from typing import Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from supervisor.cli import app
from supervisor.cli.flags import GPU, Arg, Flag, command, markdown_table


def _options(click_command: Any) -> dict[str, Any]:
    return {p.opts[0]: p for p in click_command.params if p.param_type_name == "option"}


def _commands(group: Any, path: str = "") -> dict[str, Any]:
    """Every leaf command of the app, by its path (`k8s job`)."""
    found = {}
    for name, sub in group.commands.items():
        if hasattr(sub, "commands"):
            found.update(_commands(sub, f"{path}{name} "))
        else:
            found[f"{path}{name}"] = sub
    return found


def test_the_twin_is_the_name_upper_cased_in_its_scope() -> None:
    assert Flag("grace-period", float, 1.0, "h").envvar == "SUPERVISE_GRACE_PERIOD"
    assert Flag("shm-size", str, "", "h", scope="K8S").envvar == "SUPERVISE_K8S_SHM_SIZE"
    assert Flag("json", bool, False, "h", twin=False).envvar is None


def test_every_flag_of_every_command_has_its_derived_twin_or_none() -> None:
    commands = _commands(typer.main.get_command(app))
    assert {"run", "doctor", "k8s job", "k8s jobset", "ckpt prune"} <= set(commands)
    twins = 0
    for path, cmd in commands.items():
        for option, param in _options(cmd).items():
            name = option[2:].upper().replace("-", "_")
            assert param.envvar in (None, f"SUPERVISE_{name}", f"SUPERVISE_K8S_{name}"), path
            assert param.show_envvar or param.envvar is None, (path, option)
            assert param.help, f"`supervise {path} {option}` has no help"
            twins += param.envvar is not None
    assert twins >= 50


def test_run_and_doctor_take_the_same_gpu_flags() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    run, doctor = _options(commands["run"]), _options(commands["doctor"])
    for flag in GPU:
        for param in (run[flag.option], doctor[flag.option]):
            declared = (flag.envvar, flag.default, flag.described)
            assert (param.envvar, param.default, param.help) == declared
        assert run[flag.option].type.name == doctor[flag.option].type.name


def test_a_declared_command_reads_its_flags_and_their_twins() -> None:
    demo = typer.Typer()

    @demo.command()
    @command(
        Arg("path", str, "A path."),
        Flag("grace-period", float, 1.0, "Seconds."),
        Flag("restart-in-place", list[str] | None, None, "Repeatable.", scope="K8S"),
        Flag("fails-job", bool, False, "A switch.", off="counts"),
    )
    def show(**given: Any) -> None:
        print(sorted(given.items()))

    env = {"SUPERVISE_GRACE_PERIOD": "2.5", "SUPERVISE_K8S_RESTART_IN_PLACE": "hang infra"}
    result = CliRunner().invoke(demo, ["p", "--fails-job"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "[('fails_job', True), ('grace_period', 2.5), ('path', 'p'), "
        "('restart_in_place', ['hang', 'infra'])]"
    )
    result = CliRunner().invoke(demo, ["p", "--counts", "--grace-period", "x"])
    assert result.exit_code == 2 and "Invalid value for '--grace-period'" in result.output


def test_a_callback_must_take_exactly_the_declared_names() -> None:
    with pytest.raises(TypeError, match="declares"):

        @command(Flag("keep", int, 2, "h"))
        def prune(keep_last: int) -> None: ...

    with pytest.raises(ValueError, match="duplicate"):

        @command(Flag("keep", int, 2, "h"), Flag("keep", int, 3, "h"))
        def twice(**given: Any) -> None: ...


def test_the_readme_table_gives_each_default_as_a_reader_expects() -> None:
    table = markdown_table(
        [
            Flag("grace-period", float, 25.0, "Seconds."),
            Flag("preflight", bool, False, "Check first."),
            Flag("event-log", str, "-", "Where."),
            Flag("phase-timeouts", str, "", "Phases."),
            Flag("hang-timeout", float | None, None, "Hung.", shown="auto"),
        ]
    )
    assert table.splitlines()[2:] == [
        "| `--grace-period` | `SUPERVISE_GRACE_PERIOD` | 25 | Seconds. |",
        "| `--preflight` | `SUPERVISE_PREFLIGHT` | off | Check first. |",
        "| `--event-log` | `SUPERVISE_EVENT_LOG` | `-` | Where. |",
        "| `--phase-timeouts` | `SUPERVISE_PHASE_TIMEOUTS` | none | Phases. |",
        "| `--hang-timeout` | `SUPERVISE_HANG_TIMEOUT` | auto | Hung. |",
    ]
