"""The run's hand-written parser (`supervisor.cli.fast`) and typer agree on every command line.

A plain run starts without typer; everything the fast parser does not understand goes to
typer. Each case of a corpus of good and bad command lines and environments goes through
`supervisor.cli.main` twice in this process, once forced through typer (`fast=False`) and
once as `supervise` runs it, with only the run itself (`run.supervise`) stubbed: the values
handed to the run (key, type and value), the exit status, stdout and stderr must be equal.
Then the real CLI in a few subprocesses (the same comparison, and the termination message),
and the import that the fast path exists to avoid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from supervisor.cli import fast, main, run
from supervisor.cli.flags import Flag, Range
from supervisor.cli.run import FLAGS, VERSION
from supervisor.core.exitcodes import ExitCode
from tests.conftest import SUPERVISE

SUCCEEDED = ExitCode.SUCCEEDED


class Case(NamedTuple):
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    good: bool = False  # a run the fast parser must take itself (else: either may answer)


def _case(*args: str, env: dict[str, str] | None = None, good: bool = False) -> Case:
    return Case(tuple(args), tuple((env or {}).items()), good)


def _numbers(flag: Flag) -> tuple[list[str], list[str]]:
    """(values inside the flag's range, values click or the range refuses), each list led by
    the bounds themselves."""
    assert flag.range is not None
    low, high = int(flag.range.low), int(flag.range.high)
    integer = flag.type in (int, int | None)
    inside = [str(high), str(low + 1), str(low)]
    inside += [f" {low + 1} ", "1_0"] if integer else [f"{flag.range.high:g}", " 2.5 ", "1e1"]
    outside = [str(high + 1), "-1", "", "text", "nan", "inf", "0x10", "+1"]
    outside += ["1.5", "12345678901234567890123"] if integer else ["1,5", "1e10", "-inf"]
    good = [v for v in inside if _number(v) in flag.range]
    return good, [v for v in outside if v not in good]


def _number(text: str) -> float:
    try:
        return int(text)
    except ValueError:
        return float(text)


BOOL_WORDS = ["1", "0", "yes", "NO", " on ", "Off", "t", "F", "y", "n", "true", "FALSE"]
BAD_BOOL_WORDS = ["2", "maybe", "yes please", "enabled"]
TEXTS = ["x", "a=b,c=d", "-", "/tmp/some where/file", "ü", "--", "-x", ""]

QUIET = ("--termination-log", "term.json", "--event-log", "events.jsonl")


def _given(
    flag: Flag, value: str, forms: Any, quiet: tuple[str, ...], good: bool
) -> Iterator[Case]:
    """`value` for `flag` as `--flag value` (0), `--flag=value` (1) or its twin (2)."""
    for form in forms:
        if form == 0:
            yield _case(*quiet, flag.option, value, "--", "true", good=good)
        elif form == 1:
            yield _case(*quiet, f"{flag.option}={value}", "--", "true", good=good)
        elif flag.envvar:  # an empty twin is unset: the default, a good run
            twin = {flag.envvar: value}
            yield _case(*quiet, "--", "true", env=twin, good=good or not value.strip())


def _corpus() -> Iterator[Case]:
    tail = ("--", "true")
    for flag in FLAGS:
        if flag.type is bool:
            yield _case(*QUIET, flag.option, *tail, good=True)
            yield _case(*QUIET, flag.option, flag.option, *tail, good=True)  # repeated
            yield _case(*QUIET, f"{flag.option}=1", *tail)  # a flag takes no value
            yield _case(*QUIET, f"{flag.option}=", *tail)
            yield _case(*QUIET, f"--no-{flag.name}", *tail)  # no off form is declared
            if flag.off:
                yield _case(*QUIET, flag.option, f"--{flag.off}", *tail, good=True)
            for word in [*BOOL_WORDS, *BAD_BOOL_WORDS, ""]:
                yield from _given(flag, word, (2,), QUIET, good=word not in BAD_BOOL_WORDS)
            continue
        if flag.range is not None:
            good, bad = _numbers(flag)
        else:
            good, bad = [v for v in TEXTS if not v.startswith("-") or v == "-"], ["--", "-x"]
        quiet = () if flag.name in ("termination-log", "event-log") else QUIET
        # Each value in one of the three forms, the bounds (first) in all of them.
        for i, value in enumerate(good):
            forms = range(3) if i < 2 else (i % 3,)
            yield from _given(flag, value, forms, quiet, good=True)
        for i, value in enumerate(bad):
            forms = range(3) if i < 2 else (i % 3,)
            yield from _given(flag, value, forms, quiet, good=False)
        if flag.envvar:  # the flag wins over its twin, even a twin that would be refused
            yield _case(*quiet, flag.option, good[0], *tail, env={flag.envvar: bad[0]}, good=True)
        yield _case(*quiet, flag.option)  # the value is missing
        yield _case(*quiet, flag.option, "--", "true")  # `--` taken as the value
        # repeated: the last one counts, and a refused value before it is never converted
        yield _case(*quiet, flag.option, bad[0], flag.option, good[0], *tail)
        yield _case(*quiet, flag.option, good[0], flag.option, bad[1], *tail)
        yield _case(*quiet, flag.option, good[0], flag.option, good[-1], *tail, good=True)
    # The shape of the command line.
    yield _case(*QUIET, "--", "true", good=True)
    yield _case(*QUIET, "--", "sh", "-c", "exit 0", "--", "--grace-period", "x", good=True)
    yield _case(*QUIET, "--")  # empty CMD: the run refuses it
    yield _case(*QUIET)
    yield _case()
    yield _case("--")
    yield _case(*QUIET, "true", good=True)  # `--` left out: CMD starts at the first word
    yield _case(*QUIET, "true", "--grace-period", "x", good=True)  # ...and takes the rest
    yield _case(*QUIET, "-", "x", good=True)
    yield _case("true")  # first word not an option: typer's (misspelt subcommand check)
    yield _case("run", *QUIET, "--", "true")
    yield _case("exit-codes")
    yield _case("exit-codes", "--json")
    yield _case("exitcodes")  # misspelt subcommand
    yield _case("--help")
    yield _case("-h")
    yield _case(*QUIET, "--help", "--", "true")
    yield _case(*QUIET, "-h", "--", "true")
    yield _case("-V")
    yield _case("--version")
    yield _case(*QUIET, "--version", "--", "true")
    yield _case(*QUIET, "--grace-perod", "5", "--", "true")  # misspelt flag
    yield _case(*QUIET, "--grace", "5", "--", "true")  # click takes no abbreviation
    yield _case(*QUIET, "--GRACE-PERIOD", "5", "--", "true")
    yield _case(*QUIET, "-g", "5", "--", "true")
    yield _case(*QUIET, "---grace-period", "5", "--", "true")
    yield _case(*QUIET, "--=5", "--", "true")
    yield _case(*QUIET, "--termination-log", "--", "true")
    # What only the run refuses, after both parsers accepted it.
    yield _case(*QUIET, "--phase-timeouts", "checkpoint=abc", "--", "true", good=True)
    yield _case(*QUIET, "--shutdown-timeout", "30", "--grace-period", "10", "--", "true", good=True)
    yield _case(*QUIET, "--nproc-per-node", "2", "--master-port", "29501", "--", "t.py", good=True)
    yield _case(*QUIET, "--", "true", env={"SUPERVISE_GRACE_PERIOD": "12", "SUPERVISE_NNODES": "2"})
    # click's shell completion is typer's business
    yield _case(*QUIET, "--", "true", env={"_SUPERVISE_COMPLETE": "bash_source"})


CORPUS = list(dict.fromkeys(_corpus()))


def _typed(given: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """The values with their types: 5 and 5.0 are equal, but not the same answer."""
    return {name: (type(value).__name__, repr(value)) for name, value in given.items()}


def _through(
    case: Case, fast_path: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> tuple[Any, str, str, list[dict[str, tuple[str, Any]]]]:
    """(exit status, stdout, stderr, the values handed to the run) for one parse of `case`."""
    seen: list[dict[str, tuple[str, Any]]] = []
    real_start = run.start

    def start(given: dict[str, Any]) -> ExitCode:
        seen.append(_typed(given))
        return real_start(given)

    with monkeypatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("SUPERVISE_") or name == "_SUPERVISE_COMPLETE":
                patch.delenv(name)
        for name, value in case.env:
            patch.setenv(name, value)
        patch.setattr(run, "start", start)
        patch.setattr(run, "supervise", lambda *a, **k: SUCCEEDED)
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(case.args), fast=fast_path)
    out, err = capsys.readouterr()
    return done.value.code, out, err, seen


def test_the_corpus_covers_every_flag_both_ways() -> None:
    for flag in FLAGS:
        mine = [c for c in CORPUS if flag.option in c.args or flag.envvar in dict(c.env)]
        assert any(c.good for c in mine) and any(not c.good for c in mine), flag.name
    assert len(CORPUS) > 500


class _BuiltOnce:
    """The app, with the click command typer builds from it on every call (some 30 ms, which
    a corpus of hundreds of cases would pay thousands of times) built once instead."""

    def __init__(self, app: Any) -> None:
        import typer.main

        self._app = app
        self._command = typer.main.get_command(app)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)

    def __call__(self, **kwargs: Any) -> Any:
        return self._command(**kwargs)


def test_both_parsers_give_the_run_the_same_values_and_every_error_the_same_words(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    import supervisor.cli

    monkeypatch.setattr(supervisor.cli, "app", _BuiltOnce(supervisor.cli.app))
    monkeypatch.chdir(tmp_path)
    taken = declined = 0
    for case in CORPUS:
        env = {k: v for k, v in os.environ.items() if "SUPERVISE_" not in k}
        env.update(case.env)
        parsed = fast.parse(list(case.args), env)
        if case.good:
            assert parsed is not None, case
        taken += parsed is not None
        declined += parsed is None
        typer_answer = _through(case, False, monkeypatch, capsys)
        fast_answer = _through(case, True, monkeypatch, capsys)
        assert fast_answer == typer_answer, case
        if parsed is not None:  # what `parse` says is what typer handed the run
            assert typer_answer[3] == [_typed(parsed)], case
    assert taken > 300 and declined > 200, (taken, declined)


def test_the_fast_parser_declines_declarations_it_does_not_know() -> None:
    listed = Flag("tag", list[str] | None, None, "A repeatable flag.")
    eager = Flag("show", bool, False, "Print and exit.", callback=lambda value: None)
    off = Flag("color", bool, True, "Colour.", off="no-color")
    assert fast._table((*FLAGS, listed)) is None
    assert fast._table((*FLAGS, eager)) is None
    table = fast._table((off,))
    assert table == {"--color": (off, True), "--no-color": (off, False)}
    # The run's own flags are all understood, so the fast path is used at all.
    assert fast._table(FLAGS) is not None
    assert all(f.callback is None for f in FLAGS) and VERSION.callback is not None
    ranged = Flag("wait", float, 1.0, "Seconds.", range=Range(0, 10))
    assert fast._value(ranged, {"wait": "10"}, {}) == 10.0
    with pytest.raises(fast._Declined):
        fast._value(ranged, {"wait": "10.5"}, {})


def test_boolean_words_are_clicks() -> None:
    import click

    assert click.types.BoolParamType.bool_states == fast._BOOL_WORDS


# --- the real CLI -----------------------------------------------------------------------

FORCED_TYPER = "import sys; from supervisor.cli import main; main(sys.argv[1:], fast=False)"


def _real(args: list[str], env: dict[str, str], cwd: Path, fast_path: bool) -> tuple:
    argv = [SUPERVISE, *args] if fast_path else [sys.executable, "-c", FORCED_TYPER, *args]
    base = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISE_")}
    term = cwd / "term.json"
    term.unlink(missing_ok=True)
    done = subprocess.run(
        argv,
        cwd=cwd,
        env={**base, "COLUMNS": "100", **env},
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    message = json.loads(term.read_text()) if term.exists() else None
    if message is not None:
        message.pop("time", None)
    return done.returncode, done.stdout, done.stderr, message


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--termination-log", "term.json", "--event-log", "ev", "--", "sh", "-c", "echo hi"], {}),
        (["--termination-log", "term.json", "--grace-period", "abc", "--", "true"], {}),
        (["--termination-log", "term.json", "--grace-perod", "5", "--", "true"], {}),
        (["--termination-log", "term.json", "--", "true"], {"SUPERVISE_GRACE_PERIOD": "nan"}),
        (["--termination-log", "term.json", "--preflight=yes", "--", "true"], {}),
        (["--termination-log", "term.json", "--"], {}),
        (["--termination-log", "term.json", "--", "true"], {"SUPERVISE_PREFLIGHT": "maybe"}),
        (["--help"], {}),
        (["--termination-log", "term.json", "--help", "--", "true"], {}),
        (["exitcodes"], {"SUPERVISE_TERMINATION_LOG": "term.json"}),
    ],
)
def test_the_real_cli_answers_the_same_through_either_path(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    through_typer = _real(args, env, tmp_path, fast_path=False)
    through_fast = _real(args, env, tmp_path, fast_path=True)
    assert through_fast == through_typer
    assert b"Traceback" not in through_fast[2]


def _imported(args: list[str], cwd: Path) -> set[str]:
    """The modules `supervise ARGS` imported (from `-X importtime`), checking it ran."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "supervisor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]} | {f"rc={done.returncode}"}


def test_a_plain_run_imports_neither_typer_nor_click(tmp_path: Path) -> None:
    ran = _imported(["--termination-log", "t", "--event-log", "e", "--", "true"], tmp_path)
    assert {"rc=0", "supervisor.run.loop"} <= ran  # it really supervised `true`
    assert not {m for m in ran if m.split(".")[0] in ("typer", "click")}
    # The probe sees them where typer does answer: a refused value, and help.
    refused = _imported(["--termination-log", "t", "--grace-period", "x", "--", "true"], tmp_path)
    assert {"rc=81", "typer", "click"} <= refused
    assert {"rc=0", "typer", "click"} <= _imported(["--help"], tmp_path)
