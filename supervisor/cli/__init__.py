"""The `supervise` command line.

`supervise [OPTIONS] -- CMD...` supervises CMD; it is the `run` command, named implicitly.
The other commands (`exit-codes`, and those registered by the subsystems) are one-shot
tools. Every run flag has a `SUPERVISE_*` environment twin, shown by `--help`.

Bad flags and bad values exit CONFIG_ERROR (81) with one line saying what to fix, and write
a termination message, because in a pod that is where a person looks first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import NoReturn

import typer

from supervisor import __version__
from supervisor.errors import ConfigError
from supervisor.eventlog import termination_message, write_termination_message
from supervisor.events import Finding, Urgency
from supervisor.exitcodes import ExitCode, contract_table
from supervisor.hang.options import DEFAULT_INIT_TIMEOUT
from supervisor.options import (
    DEFAULT_DEGRADED_DEADLINE,
    DEFAULT_FAILURE_GRACE,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_TERMINATION_LOG,
)

# typer vendors click; its exception base is reachable through the public BadParameter.
_ClickError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="A training supervisor for Kubernetes: `supervise [OPTIONS] -- CMD...`",
)

_RUN_EPILOG = (
    "Other commands: `supervise exit-codes` (the exit-code contract), "
    "`supervise doctor` (GPU health), `supervise ckpt` (checkpoints), "
    "`supervise k8s` (manifests), `supervise explain CODE`. "
    "Each has its own --help."
)


def _version(value: bool) -> None:
    if value:
        print(f"supervise {__version__}")
        raise typer.Exit()


@app.command(
    "run",
    context_settings={"allow_interspersed_args": False},
    epilog=_RUN_EPILOG,
)
def run_command(
    command: list[str] = typer.Argument(
        None,
        metavar="CMD",
        help="The training command and its arguments, after `--`.",
        show_default=False,
    ),
    grace_period: float = typer.Option(
        DEFAULT_GRACE_PERIOD,
        "--grace-period",
        envvar="SUPERVISE_GRACE_PERIOD",
        show_envvar=True,
        help="Seconds the child gets after SIGTERM before the whole tree is SIGKILLed. "
        "Keep it below the pod's terminationGracePeriodSeconds (30 s by default).",
    ),
    termination_log: str = typer.Option(
        DEFAULT_TERMINATION_LOG,
        "--termination-log",
        envvar="SUPERVISE_TERMINATION_LOG",
        show_envvar=True,
        help="Where the JSON termination message (≤ 4096 bytes) is written at exit.",
    ),
    event_log: str = typer.Option(
        "-",
        "--event-log",
        envvar="SUPERVISE_EVENT_LOG",
        show_envvar=True,
        help="File to append JSON-lines events to; `-` means stderr.",
    ),
    failure_grace: float = typer.Option(
        DEFAULT_FAILURE_GRACE,
        "--failure-grace-period",
        envvar="SUPERVISE_FAILURE_GRACE_PERIOD",
        show_envvar=True,
        help="Seconds the child gets after supervise stops it for a failure it found itself "
        "(a hang, a failed GPU) before the tree is SIGKILLed.",
    ),
    shutdown_timeout: float = typer.Option(
        DEFAULT_SHUTDOWN_TIMEOUT,
        "--shutdown-timeout",
        envvar="SUPERVISE_SHUTDOWN_TIMEOUT",
        show_envvar=True,
        help="Of the grace period, seconds kept for the trainer to exit after its checkpoint "
        "is committed; the checkpoint gets the rest.",
    ),
    degraded_deadline: float = typer.Option(
        DEFAULT_DEGRADED_DEADLINE,
        "--degraded-deadline",
        envvar="SUPERVISE_DEGRADED_DEADLINE",
        show_envvar=True,
        help="Seconds a trainer gets to commit the checkpoint a degraded GPU asks for.",
    ),
    max_restarts: int = typer.Option(
        0,
        "--max-restarts",
        envvar="SUPERVISE_MAX_RESTARTS",
        show_envvar=True,
        help="Restart the command in place, with backoff, up to this many times after a "
        "HANG or INFRA_FAILED; each attempt resumes from the latest checkpoint.",
    ),
    restart_on_training_failure: bool = typer.Option(
        False,
        "--restart-on-training-failure",
        envvar="SUPERVISE_RESTART_ON_TRAINING_FAILURE",
        show_envvar=True,
        help="Let --max-restarts also restart after TRAINING_FAILED.",
    ),
    hang_timeout: float = typer.Option(
        None,
        "--hang-timeout",
        envvar="SUPERVISE_HANG_TIMEOUT",
        show_envvar=True,
        show_default="auto: calibrated from observed step times",
        help="Seconds without a heartbeat (sup.step) after the first step before a rank is hung.",
    ),
    init_timeout: float = typer.Option(
        DEFAULT_INIT_TIMEOUT,
        "--init-timeout",
        envvar="SUPERVISE_INIT_TIMEOUT",
        show_envvar=True,
        help="Seconds a rank that attached may take to its first step.",
    ),
    phase_timeouts: str = typer.Option(
        "",
        "--phase-timeouts",
        envvar="SUPERVISE_PHASE_TIMEOUTS",
        show_envvar=True,
        help="Timeouts for named phases (`with sup.phase(NAME)`), e.g. checkpoint=1800,eval=600.",
    ),
    log_silence_timeout: float = typer.Option(
        None,
        "--log-silence-timeout",
        envvar="SUPERVISE_LOG_SILENCE_TIMEOUT",
        show_envvar=True,
        show_default="off",
        help="For programs without heartbeats: seconds without any output before the run is "
        "called hung.",
    ),
    checkpoint_dir: str = typer.Option(
        None,
        "--checkpoint-dir",
        envvar="SUPERVISE_CHECKPOINT_DIR",
        show_envvar=True,
        show_default="none",
        help="The run's checkpoint directory. supervise keeps its hang calibration there "
        "(local paths), so a resumed run does not start blind.",
    ),
    nproc_per_node: int = typer.Option(
        None,
        "--nproc-per-node",
        envvar="SUPERVISE_NPROC_PER_NODE",
        show_envvar=True,
        show_default="off: run CMD as given",
        help="Launch CMD (a script) through torch.distributed.run with this many ranks; "
        "nodes, node rank and master come from the Indexed Job or JobSet environment.",
    ),
    nnodes: int = typer.Option(
        None,
        "--nnodes",
        envvar="SUPERVISE_NNODES",
        show_envvar=True,
        show_default="derived",
        help="Nodes in the job (with --nproc-per-node).",
    ),
    node_rank: int = typer.Option(
        None,
        "--node-rank",
        envvar="SUPERVISE_NODE_RANK",
        show_envvar=True,
        show_default="derived",
        help="This node's rank (with --nproc-per-node).",
    ),
    master_addr: str = typer.Option(
        None,
        "--master-addr",
        envvar="SUPERVISE_MASTER_ADDR",
        show_envvar=True,
        show_default="derived",
        help="Rendezvous host (with --nproc-per-node).",
    ),
    master_port: int = typer.Option(
        None,
        "--master-port",
        envvar="SUPERVISE_MASTER_PORT",
        show_envvar=True,
        show_default="derived, else 29500",
        help="Rendezvous port (with --nproc-per-node).",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Run CMD under supervision and exit with one code per failure class."""
    from supervisor import loop, session
    from supervisor.hang.options import HangOptions, parse_phase_timeouts
    from supervisor.logpump import Activity
    from supervisor.options import Options

    options = Options(
        command=tuple(command or ()),
        grace_period=grace_period,
        termination_log=termination_log,
        event_log=None if event_log == "-" else event_log,
        failure_grace=failure_grace,
        shutdown_timeout=shutdown_timeout,
        degraded_deadline=degraded_deadline,
        max_restarts=max_restarts,
        restart_on_training_failure=restart_on_training_failure,
    )
    hang = HangOptions(
        hang_timeout=hang_timeout,
        init_timeout=init_timeout,
        log_silence_timeout=log_silence_timeout,
        phase_timeouts=parse_phase_timeouts(phase_timeouts),
    )
    activity = Activity(time.monotonic())
    run = session.open_session(hang, activity, state_dir=_local_dir(checkpoint_dir))
    if nproc_per_node is not None:
        from supervisor.k8s.launch import LaunchOverrides

        overrides = LaunchOverrides(nnodes, node_rank, master_addr, master_port)
        argv = run.launch_torchrun(nproc_per_node, options.command, overrides, grace_period)
        options = dataclasses.replace(options, command=tuple(argv))
    raise typer.Exit(loop.run(options, run.hooks).code)


def _local_dir(url: str | None) -> str | None:
    """The local directory behind `url`, or None for object stores and unset values."""
    if not url:
        return None
    if url.startswith("file://"):
        return url[len("file://") :]
    return None if "://" in url else url


@app.command("exit-codes")
def exit_codes_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Print the exit-code contract and the podFailurePolicy action for each code."""
    rows = contract_table()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'CODE':<5} {'NAME':<16} {'ACTION':<8} MEANING")
    for row in rows:
        print(f"{row['code']:<5} {row['name']:<16} {row['action']:<8} {row['meaning']}")


def _register_subsystems() -> None:
    """Commands owned by the subsystems; each module adds its own and imports lazily."""
    import importlib

    for name in ("doctor", "ckpt", "k8s"):
        try:
            module = importlib.import_module(f"supervisor.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"supervisor.cli.{name}":
                raise
            continue
        module.register(app)


_register_subsystems()


def _commands() -> set[str]:
    names = set()
    for info in app.registered_commands:
        names.add(info.name or info.callback.__name__)  # type: ignore[union-attr]
    for group in app.registered_groups:
        names.add(group.name or "")
    return names


def _termination_log_from(args: list[str]) -> str:
    """Best effort, for errors found before the flags could be parsed."""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg.startswith("--termination-log="):
            return arg.split("=", 1)[1]
        if arg == "--termination-log" and i + 1 < len(args):
            return args[i + 1]
    return os.environ.get("SUPERVISE_TERMINATION_LOG", DEFAULT_TERMINATION_LOG)


def _config_error(message: str, args: list[str], supervising: bool) -> NoReturn:
    code = ExitCode.CONFIG_ERROR
    print(f"supervise: error: {message}", file=sys.stderr)
    if supervising:
        finding = Finding("config", "config_error", message, code, Urgency.STOP)
        text = termination_message(code, message, [finding])
        write_termination_message(_termination_log_from(args), text)
    sys.exit(code.code)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: `supervise ...`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in _commands() | {"--help", "-h"}:
        args = ["run", *args]
    elif args[0] in ("--help", "-h"):
        args = ["run", "--help"]
    supervising = args[0] == "run"
    try:
        # Without standalone mode, click returns the code of a `typer.Exit` instead of raising.
        returned = app(args=args, prog_name="supervise", standalone_mode=False)
    except ConfigError as err:
        _config_error(str(err), args, supervising)
    except _ClickError as err:
        _config_error(err.format_message(), args, supervising)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(ExitCode.PREEMPTED.code)
    sys.exit(returned if isinstance(returned, int) else 0)
