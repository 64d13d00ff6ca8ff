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
from typing import TYPE_CHECKING, Any, NoReturn

from supervisor.core.errors import SuperviseError
from supervisor.core.exitcodes import ExitCode, contract_table
from supervisor.core.options import DEFAULT_TERMINATION_LOG

if TYPE_CHECKING:
    import typer

    app: typer.Typer


def _build() -> typer.Typer:
    """The typer app with every command: built on first use (`supervisor.cli.app`), since a
    run that the fast parser understands needs neither typer nor click."""
    import typer

    built = typer.Typer(
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        help="A training supervisor for Kubernetes: `supervise [OPTIONS] -- CMD...`",
    )

    @built.command("exit-codes")
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

    _register_subsystems(built)
    return built


def _register_subsystems(app: typer.Typer) -> None:
    """Commands owned by the subsystems; each module adds its own and imports lazily."""
    import importlib

    for name in ("run", "doctor", "ckpt", "checkpoint_now", "report", "k8s"):
        try:
            module = importlib.import_module(f"supervisor.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"supervisor.cli.{name}":
                raise
            continue
        module.register(app)


def __getattr__(name: str) -> Any:
    """`supervisor.cli.app`, built once, on first use."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    built = globals()["app"] = _build()
    return built


def _commands() -> set[str]:
    from supervisor.cli import app

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


def main(argv: list[str] | None = None, *, fast: bool = True) -> NoReturn:
    """Console-script entry point: `supervise ...`.

    A plain run (`supervise [RUN OPTIONS] -- CMD...`) that `supervisor.cli.fast` understands
    completely starts without typer; everything else, `--help` and every error included,
    goes through typer, which says it exactly as it always has. `fast=False` forces typer
    (the tests compare the two)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if fast:
        from supervisor.cli import fast as parser

        given = parser.parse(args, os.environ)
        if given is not None:
            _run(given, ["run", *args])
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
    import typer

    from supervisor.cli import app

    # typer vendors click; its exception base is reachable through the public BadParameter.
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        # Without standalone mode, click returns the code of a `typer.Exit` instead of raising.
        returned = app(args=args, prog_name="supervise", standalone_mode=False)
    except SuperviseError as err:  # ConfigError (81), StorageError (86), ...
        _early_exit(err.exit_code, str(err), args, supervising)
    except click_error as err:
        _early_exit(ExitCode.CONFIG_ERROR, _click_message(err), args, supervising)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(ExitCode.PREEMPTED.code)
    sys.exit(returned if isinstance(returned, int) else 0)


def _run(given: dict[str, Any], args: list[str]) -> NoReturn:
    """The run the fast parser read, ended as the typer path ends it: the same exit codes
    for a verdict, a `SuperviseError`, an interrupt and a closed stdout."""
    from supervisor.run.signals import install

    install()  # as in the typer path: before anything can block

    from supervisor.cli import run

    try:
        code = run.start(given)
    except SuperviseError as err:
        _early_exit(err.exit_code, str(err), args, supervising=True)
    except EOFError:  # click's `main` turns these into an Abort, and an exit of 130
        print(file=sys.stderr)
        sys.exit(ExitCode.PREEMPTED.code)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as err:
        import errno

        if err.errno != errno.EPIPE:
            raise
        from click.utils import PacifyFlushWrapper

        sys.stdout = PacifyFlushWrapper(sys.stdout)  # type: ignore[assignment]
        sys.stderr = PacifyFlushWrapper(sys.stderr)  # type: ignore[assignment]
        sys.exit(1)
    sys.exit(code.code)
