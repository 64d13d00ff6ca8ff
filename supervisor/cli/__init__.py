"""The `supervise` command line.

`supervise [OPTIONS] -- CMD...` supervises CMD; it is the `run` command, named implicitly.
The other commands (`exit-codes`, and those registered by the subsystems) are one-shot
tools. Every run flag has a `SUPERVISE_*` environment twin, shown by `--help`.

Bad flags and bad values exit CONFIG_ERROR (81) with one line saying what to fix, and write
a termination message; so does anything else that stops a run before its command starts
(checkpoint storage that cannot be read exits INFRA_FAILED, 86).
"""

from __future__ import annotations

import json
import os
import sys
from typing import NoReturn

import typer

from supervisor.core.errors import SuperviseError
from supervisor.core.exitcodes import ExitCode, contract_table
from supervisor.core.options import DEFAULT_TERMINATION_LOG

# typer vendors click; its exception base is reachable through the public BadParameter.
_ClickError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="A training supervisor for Kubernetes: `supervise [OPTIONS] -- CMD...`",
)


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

    for name in ("run", "doctor", "ckpt", "checkpoint_now", "k8s"):
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


def _early_exit(code: ExitCode, message: str, args: list[str], supervising: bool) -> NoReturn:
    """Stop before (or instead of) starting the command: say why, and in a run, leave a
    termination message, since in a pod that is where a person looks first."""
    print(f"supervise: error: {message}", file=sys.stderr)
    if supervising:
        from supervisor.core.outputs import refused
        from supervisor.outputs import Outputs, termination_sinks

        Outputs(termination_sinks(_termination_log_from(args))).emit(refused(code, message))
    sys.exit(code.code)


def _print_version() -> NoReturn:
    """`supervise -V`: the installed distribution's version, from its metadata; exits 0."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        print(f"supervise {version('supervise')}")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        print("supervise (version unknown: not installed)")
    sys.exit(0)


def _flags_end(args: list[str]) -> int:
    """Where supervise's own arguments end (`--` or the end)."""
    return args.index("--") if "--" in args else len(args)


def _misspelt(word: str) -> str | None:
    """What the user meant, when the first word looks like a mistyped subcommand rather
    than a training command: not a path, not on PATH, and close to one of ours."""
    import difflib
    import shutil

    if "/" in word or word.startswith("-") or shutil.which(word) is not None:
        return None
    meant = {name: f"supervise {name}" for name in _commands() - {"run"}}
    meant["help"] = "supervise --help"
    match = difflib.get_close_matches(word, list(meant), n=1, cutoff=0.6)
    return meant[match[0]] if match else None


def _click_message(err: Exception) -> str:
    """click's text for `err`. typer already wrote its "Did you mean" into the message of
    an unknown subcommand, and click's `format_message` would say it a second time."""
    message = getattr(err, "message", "")
    if "Did you mean" in message:
        return message
    return err.format_message()  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: `supervise ...`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-V"], ["--version"]):
        _print_version()
    if args and args[0] not in _commands() | {"--help", "-h"}:
        meant = _misspelt(args[0])
        if meant is not None:
            _early_exit(
                ExitCode.CONFIG_ERROR,
                f"command not found: {args[0]!r}; did you mean '{meant}'? (a training "
                f"command goes after `--`: supervise [OPTIONS] -- CMD...)",
                ["run", *args],
                supervising=True,
            )
    if not args or args[0] not in _commands() | {"--help", "-h"}:
        args = ["run", *args]
    elif args[0] in ("--help", "-h"):
        args = ["run", "--help"]
    supervising = args[0] == "run"
    if supervising and not ({"--help", "-h", "--version"} & set(args[: _flags_end(args)])):
        # First, before anything can block: a SIGTERM from here on is data, never lost
        # (PID 1) or fatal (exit 143).
        from supervisor.run.signals import install

        install()
    try:
        # Without standalone mode, click returns the code of a `typer.Exit` instead of raising.
        returned = app(args=args, prog_name="supervise", standalone_mode=False)
    except SuperviseError as err:  # ConfigError (81), StorageError (86), ...
        _early_exit(err.exit_code, str(err), args, supervising)
    except _ClickError as err:
        _early_exit(ExitCode.CONFIG_ERROR, _click_message(err), args, supervising)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(ExitCode.PREEMPTED.code)
    sys.exit(returned if isinstance(returned, int) else 0)
