"""The run's command line read by hand, so that a run starts without importing typer or click.

`supervise [RUN OPTIONS] -- CMD...` is how every pod starts, and typer and click together
take about 70 ms to import before anything is spawned. `parse` reads the same declarations
the typer command is built from (`supervisor.cli.run.FLAGS`), by the same rules click
applies to them:

* `--name value` and `--name=value`; a repeated flag keeps its last value; a boolean flag
  takes no value (`--name`, or its declared `off` form);
* a flag not given takes its environment twin when that is set and not empty, else its
  default; every value goes through the flag's type as click converts it (`int()`,
  `float()`, click's words for a boolean) and is then checked against the flag's range;
* options end at `--`, or at the first word that is not an option (`-` included), and
  everything after is CMD, verbatim.

Guarantee: `parse` returns either exactly the values typer would pass the run command (the
same keys, types and values) or None. It returns None for anything it does not understand
completely: a first word that is not a long option (a subcommand, a misspelling, `-V`), an
unknown or short option, `--help`, `--version`, a flag without its value, a value that
starts with `-` (other than `-` itself), a value its type or range refuses, and a flag
declared with a type or callback this parser does not know. The caller then uses typer,
so help and every error message stay exactly typer's. `tests/cli/test_fast_path.py` holds
the two parsers equal over a corpus of good and bad command lines and environments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from supervisor.cli.flags import Flag
from supervisor.cli.run import CMD, FLAGS, VERSION

# click's `BoolParamType.bool_states`: the words a boolean twin may say (after `strip` and
# `lower`); any other word is click's error, so typer's.
_BOOL_WORDS = {
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
    "true": True,
    "false": False,
    "on": True,
    "off": False,
    "t": True,
    "f": False,
    "y": True,
    "n": False,
    "": False,
}

# click's shell-completion switch for a program named `supervise`: typer's business.
_COMPLETION_VAR = "_SUPERVISE_COMPLETE"


class _Declined(Exception):
    """Something this parser leaves to typer."""


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = _BOOL_WORDS.get(str(value).strip().lower())
    if word is None:
        raise _Declined
    return word


def _to_str(value: Any) -> str:
    return str(value)


# What click converts each declared type with; a flag of any other type declines.
_CONVERT: dict[Any, Callable[[Any], Any]] = {
    bool: _to_bool,
    int: int,
    int | None: int,
    float: float,
    float | None: float,
    str: _to_str,
    str | None: _to_str,
}


def _table(flags: Sequence[Flag]) -> dict[str, tuple[Flag, bool | None]] | None:
    """`--name` -> (flag, the value a boolean form stores, or None for a flag that takes
    one); None when a declaration is beyond this parser."""
    table: dict[str, tuple[Flag, bool | None]] = {}
    for flag in flags:
        if flag.type not in _CONVERT or flag.callback is not None:
            return None
        if flag.type is bool:
            table[flag.option] = (flag, True)
            if flag.off:
                table[f"--{flag.off}"] = (flag, False)
        elif flag.off:
            return None
        else:
            table[flag.option] = (flag, None)
    return table


_OPTIONS = _table(FLAGS)


def parse(args: Sequence[str], environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The run command's values for `args` (supervise's arguments, without the program
    name) with `environ` for the twins, by `dest` (and `command`, `version`); or None to
    leave the command line to typer. Pure: reads nothing else, raises nothing."""
    if _OPTIONS is None or environ.get(_COMPLETION_VAR) or not args:
        return None
    if not args[0].startswith("--"):
        return None  # a subcommand, a mistyped one, or -V/-h: typer knows
    try:
        given, rest = _options(args, _OPTIONS)
        values = {flag.dest: _value(flag, given, environ) for flag in FLAGS}
    except (_Declined, ValueError):
        return None
    # typer hands a variadic argument over as a list, and its default (None) when empty;
    # an eager flag's value is what its callback returned for the default (None).
    version = VERSION.callback(VERSION.default) if VERSION.callback else VERSION.default
    return {CMD.name: list(rest) if rest else CMD.default, **values, VERSION.dest: version}


def _options(
    args: Sequence[str], table: Mapping[str, tuple[Flag, bool | None]]
) -> tuple[dict[str, Any], Sequence[str]]:
    """(the raw value of each flag given, by dest; CMD)."""
    given: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            return given, args[i:]
        if arg == "-" or not arg.startswith("-"):
            return given, args[i - 1 :]  # the command, without `--`: click stops here too
        if not arg.startswith("--"):
            raise _Declined  # a short option: none is declared
        name, eq, value = arg.partition("=")
        if name not in table:
            raise _Declined  # unknown, --help, --version
        flag, stores = table[name]
        if stores is not None:
            if eq:
                raise _Declined  # click: "does not take a value"
            given[flag.dest] = stores
            continue
        if not eq:
            if i == len(args):
                raise _Declined  # click: "requires an argument"
            value = args[i]
            i += 1
        if value.startswith("-") and value != "-":
            raise _Declined  # a negative number, `--`: rare enough to leave to click
        given[flag.dest] = value
    return given, ()


def _value(flag: Flag, given: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    """The flag's value from the command line, else its twin, else its default, converted
    and range-checked as click and `Flag.check` do; `_Declined` or ValueError if refused."""
    if flag.dest in given:
        raw = given[flag.dest]
    elif flag.envvar and environ.get(flag.envvar):
        raw = environ[flag.envvar]
    elif flag.default is None:
        return None
    elif flag.default is ...:
        raise _Declined  # required, and missing: click says so
    else:
        raw = flag.default
    value = _CONVERT[flag.type](raw)
    if flag.range is not None and value not in flag.range:
        raise _Declined
    return value
