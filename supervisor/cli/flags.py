"""One declaration per command-line flag: name, type, default, help and environment twin.

A `Flag` is declared once, and everything else reads it: `command()` turns a tuple of them
into the parameters typer builds `--help` and the parser from, and `markdown_table()` turns
them into the README's flag table (a test keeps the two equal). The environment twin is
derived from the name (`--grace-period` -> `SUPERVISE_GRACE_PERIOD`), so it cannot drift.
Commands share flags by listing the same declarations, such as `GPU` here, which the run
command and `supervise doctor` both take.

Cost at start: nothing imports typer until a command is built (`parameter()`), so a run
started through the hand-written parser (`supervisor.cli.fast`) never loads it. Building a
command then costs one `typer.Option` per flag, as hand-written parameters had. The types
are objects rather than annotation strings, so typer has none to evaluate.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

from supervisor.core.errors import ConfigError

ENV_PREFIX = "SUPERVISE_"

# Keyword-only: typer passes every value by name, and keyword-only parameters may come in
# any order of required and optional.
_KEYWORD = inspect.Parameter.KEYWORD_ONLY

# Flag and Arg are NamedTuples rather than frozen dataclasses because they are defined at
# every start: a dataclass's generated methods cost about 1.5 ms each there, a NamedTuple's 0.2.


class Range(NamedTuple):
    """The values a number flag takes: `low` to `high`, both included unless `above` says
    `low` itself is not. NaN and the infinities are never in a range.

    Every duration and count has one, so that a value no run could mean (a grace period of
    1e10 s overflows `select`, a 23-digit rank count makes torchrun spin) is refused at the
    flag, before any of it is used.
    """

    low: float
    high: float
    above: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not math.isfinite(value) or value > self.high:
            return False
        return value > self.low if self.above else value >= self.low

    @property
    def text(self) -> str:
        """`[0, 86400]`, or `(0, 86400]` where `low` is excluded."""
        return f"{'(' if self.above else '['}{_number(self.low)}, {_number(self.high)}]"

    @property
    def bounds(self) -> str:
        """The range in words for an error: `>= 0 and <= 86400`."""
        return f"{'>' if self.above else '>='} {_number(self.low)} and <= {_number(self.high)}"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


# The ranges the flags share: durations in seconds, and counts.
DAY = 86_400
WEEK = 7 * DAY
SECONDS = Range(0, DAY)  # a wait that may be zero: at most a day
TIMEOUT = Range(0, WEEK, above=True)  # a timeout that must be positive: at most a week
PORT = Range(1, 65_535)


class Flag(NamedTuple):
    """`--NAME`: the callback receives its value as NAME with `-` made `_` (its `dest`).

    `type` is what typer converts to (`float`, `int | None`, `list[str] | None` for a
    repeatable flag); a `default` of `...` makes the flag required. `shown` stands for the
    default in `--help` and the README where the value says nothing by itself (a None that
    means "derived"). `scope` puts the twin in a namespace (`SUPERVISE_K8S_NAME`);
    `twin=False` is for the flags of one-shot tools that no pod spec sets (`--json`). `off`
    names a boolean's negative form; `callback` runs as soon as the flag is parsed.
    `range` bounds a number: a value outside it (NaN, the infinities, too) from the flag or
    its twin raises `ConfigError` naming where it came from, the range and the value.
    """

    name: str
    type: Any
    default: Any
    help: str
    shown: str | None = None
    scope: str = ""
    twin: bool = True
    off: str | None = None
    callback: Callable[[Any], Any] | None = None
    range: Range | None = None

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def option(self) -> str:
        return f"--{self.name}"

    @property
    def envvar(self) -> str | None:
        """The environment twin, or None for a flag declared without one."""
        if not self.twin:
            return None
        scope = f"{self.scope}_" if self.scope else ""
        return f"{ENV_PREFIX}{scope}{self.dest.upper()}"

    @property
    def default_text(self) -> str:
        """The default as the README's flag table gives it."""
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, int | float):
            return f"{self.default:g}"
        return f"`{self.default}`" if self.default else "none"

    @property
    def described(self) -> str:
        """The help with the range, as `--help` and the README's table give it."""
        if self.range is None:
            return self.help
        return f"{self.help} Range: {self.range.text}."

    def check(self, ctx: Any, param: Any, value: Any) -> Any:
        """click's callback for a flag with a range: the value, or `ConfigError`.

        Runs in the parser for the default too (a default is always in its range). Names
        the twin when the value came from the environment, since that is what to fix.
        """
        if value is None or self.range is None or value in self.range:
            return value
        source = ctx.get_parameter_source(param.name)
        if self.envvar and source is not None and source.name == "ENVIRONMENT":
            where = f"{self.envvar} (the twin of {self.option})"
            shown = os.environ.get(self.envvar, value)
        else:
            where, shown = self.option, value
        raise ConfigError(f"{where} must be {self.range.bounds}, got {shown}")

    def parameter(self) -> inspect.Parameter:
        import typer

        declared = f"{self.option}/--{self.off}" if self.off else self.option
        info = typer.Option(
            self.default,
            declared,
            envvar=self.envvar,
            show_envvar=self.twin,
            show_default=True if self.shown is None else self.shown,
            help=self.described,
            callback=self.check if self.range is not None else self.callback,
            is_eager=self.callback is not None,
        )
        return inspect.Parameter(self.dest, _KEYWORD, default=info, annotation=self.type)


class Arg(NamedTuple):
    """A positional argument, received as `name`; a `default` of `...` makes it required."""

    name: str
    type: Any
    help: str
    default: Any = ...
    metavar: str | None = None

    def parameter(self) -> inspect.Parameter:
        import typer

        info = typer.Argument(
            self.default, metavar=self.metavar, help=self.help, show_default=False
        )
        return inspect.Parameter(self.name, _KEYWORD, default=info, annotation=self.type)


Callback = TypeVar("Callback", bound=Callable[..., Any])


def command(*declared: Flag | Arg) -> Callable[[Callback], Callback]:
    """Give the decorated callback the parameters of `declared`, in that order.

    typer reads a callback's `__signature__`, so this is all it sees; the callback takes the
    values by their names, as parameters of its own or as `**given`. Raises ValueError when a
    name is declared twice and TypeError when the callback's own parameters are not exactly
    the declared names, both when the decorated module is imported.
    """

    def attach(callback: Callback) -> Callback:
        signature = inspect.Signature([item.parameter() for item in declared])
        code = callback.__code__
        if not code.co_flags & inspect.CO_VARKEYWORDS:
            own = set(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
            if own != set(signature.parameters):
                raise TypeError(
                    f"{callback.__name__} takes {sorted(own)} but declares "
                    f"{sorted(signature.parameters)}"
                )
        callback.__signature__ = signature  # type: ignore[attr-defined]
        return callback

    return attach


def markdown_table(flags: Iterable[Flag]) -> str:
    """The flags as the Markdown table the README embeds (a test keeps them equal)."""
    lines = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for flag in flags:
        twin = f"`{flag.envvar}`" if flag.envvar else "-"
        lines.append(f"| `{flag.option}` | {twin} | {flag.default_text} | {flag.described} |")
    return "\n".join(lines)


# --- shared by more than one command ------------------------------------------------------

# The GPU flags of `supervise doctor`, which the run command takes too (for `--preflight`
# and its GPU watchdog).
GPU = (
    Flag(
        "fake-gpus",
        str | None,
        None,
        "Play a GPU fault scenario (a file, or a shipped one by name such as xid79; see "
        "examples/faults) instead of reading NVML, to test a "
        "Job's failure policy on machines without GPUs.",
        shown="off: real NVML",
    ),
    Flag(
        "gpu-config",
        str | None,
        None,
        "JSON file overriding Xid and rule classes and thresholds.",
        shown="built-in catalog",
    ),
    Flag(
        "require-gpus",
        bool,
        False,
        "Exit CONFIG_ERROR (81) when NVML or the pod's GPUs cannot be found, instead of "
        "going on without GPU health checks.",
    ),
    Flag(
        "nvml-timeout",
        float,
        5.0,
        "Seconds one NVML query may take; longer means a wedged GPU (DEVICE_FAILED).",
        range=Range(0.1, 600),
    ),
)
