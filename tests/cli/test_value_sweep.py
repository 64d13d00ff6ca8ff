"""Every value a flag or its twin can be given either works or is refused with one line.

Two layers. The parser, in process, for the exhaustive table: every value-taking flag of
every command, by flag and by twin, over negative, zero, tiny, huge, NaN, infinity, text
and empty; each is refused with a one-line `ConfigError` or click error naming the flag or
the twin, or accepted inside the flag's declared range. Then the real `supervise` CLI, as
subprocesses run a few at a time, each under a timeout: every flag with its worst values
(huge, NaN, negative), and every value the parser accepted, must exit 81 with one line on
stderr, or work (a run of `true` exits 0); never a traceback, never a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from supervisor.cli import main, run
from supervisor.cli.ckpt import KEEP, KEEP_EVERY, STEP
from supervisor.cli.doctor import READING
from supervisor.cli.flags import GPU, Flag
from supervisor.cli.k8s import JOB, JOBSET, MANIFEST
from supervisor.cli.run import FLAGS
from supervisor.core.exitcodes import ExitCode

SUCCEEDED = ExitCode.SUCCEEDED

VALUES = {
    "negative": "-1",
    "zero": "0",
    "tiny": "1e-9",
    "huge": "1e10",
    "huge-int": "12345678901234567890123",
    "nan": "nan",
    "inf": "inf",
    "text": "text",
    "empty": "",
}
TIMEOUT = 30  # seconds one real CLI run may take before it counts as a hang


class Case(NamedTuple):
    command: tuple[str, ...]  # the subcommand path, () for the run
    flag: Flag
    value: str
    twin: bool  # given through the environment instead of the flag


# Each command with the arguments it needs around the flag under test.
def _tail(command: tuple[str, ...], root: str) -> list[str]:
    if command == ():
        return ["--", "true"]
    if command[0] == "k8s":
        return ["--", "train.py"]
    if command[0] == "ckpt":
        return [root]
    return []


def _head(command: tuple[str, ...], flag: Flag) -> list[str]:
    extra: list[str] = []
    if command == () and flag.name not in ("termination-log", "event-log"):
        extra += ["--event-log", "events.jsonl"]
    if command == () and flag.name != "termination-log":
        extra += ["--termination-log", "term.log"]
    if command[:1] == ("k8s",) and flag.name != "image":
        extra += ["--image", "registry.example/train:1"]
    if command == ("ckpt", "prune") and flag.name != "keep":
        extra += ["--keep", "2"]
    return extra


COMMANDS: dict[tuple[str, ...], tuple[Flag, ...]] = {
    (): FLAGS,
    ("doctor",): (*READING, *GPU),
    ("k8s", "job"): tuple(f for f in (*MANIFEST, *JOB) if isinstance(f, Flag)),
    ("k8s", "jobset"): tuple(f for f in (*MANIFEST, *JOBSET) if isinstance(f, Flag)),
    ("ckpt", "verify"): (STEP,),
    ("ckpt", "prune"): (KEEP, KEEP_EVERY),
}


def _cases() -> Iterator[Case]:
    for command, flags in COMMANDS.items():
        for flag in flags:
            for value in VALUES.values():
                if flag.type is not bool:
                    yield Case(command, flag, value, twin=False)
                if flag.envvar:
                    yield Case(command, flag, value, twin=True)


def _argv(case: Case, root: str) -> tuple[list[str], dict[str, str]]:
    args = list(case.command) + _head(case.command, case.flag)
    env = {}
    if case.twin:
        assert case.flag.envvar
        env[case.flag.envvar] = case.value
    else:
        args += [case.flag.option, case.value]
    return args + _tail(case.command, root), env


def test_every_number_flag_declares_a_range() -> None:
    for flags in COMMANDS.values():
        for flag in flags:
            number = flag.type in (int, float, int | None, float | None)
            assert (flag.range is not None) == number, flag.name
            if flag.range is not None and flag.default not in (None, ...):
                assert flag.default in flag.range, flag.name


def _in_process(
    case: Case, root: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str]]:
    """`supervisor.cli.main` on the case, in this process, with the run itself stubbed out:
    (exit status, stderr lines). Everything up to the start of the run is real."""
    args, env = _argv(case, root)
    for name in list(os.environ):
        if name.startswith("SUPERVISE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(args)
    monkeypatch.undo()
    return done.value.code, capsys.readouterr().err.splitlines()  # type: ignore[return-value]


def test_every_value_is_refused_in_one_line_naming_the_flag_or_accepted_in_range(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    started: list[tuple[Any, ...]] = []
    root = tmp_path / "ckpt"
    root.mkdir()
    checked = 0
    for case in _cases():
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(run, "supervise", lambda *a, **k: started.append(a) or SUCCEEDED)
        code, lines = _in_process(case, str(root), monkeypatch, capsys)
        checked += 1
        assert not any("Traceback" in line for line in lines), (case, lines)
        if code != 81:
            continue
        assert len(lines) == 1 and lines[0].startswith("supervise"), (case, lines)
        named = case.flag.option in lines[0] or (case.flag.envvar or "-") in lines[0]
        assert named, (case, lines)
        if case.flag.range is not None and " and <= " in lines[0]:
            assert case.flag.range.bounds in lines[0], (case, lines)
    assert checked > 1000 and started


def _real_cases() -> list[Case]:
    """Every flag with its worst values: huge (1e10 for seconds, 23 digits for a count), NaN
    and negative, through its twin where the flag takes none; NaN through every twin of the
    run; and the run's flags with the in-range values a run starts with (zero, tiny)."""
    chosen = []
    for case in _cases():
        flag = case.flag
        if case.command == ("k8s", "jobset") and flag in MANIFEST:
            continue  # the same declarations as `k8s job`'s
        if flag.range is None and flag.type is not bool:  # text: empty, and some text
            keep = not case.twin and case.value in ("", "text")
        elif case.twin or flag.type is bool:
            nan_twin = case.command == () and case.value == "nan"
            keep = case.twin and case.value in _worst(flag) and (flag.type is bool or nan_twin)
        else:
            starts = case.command == () and case.value in ("0", "1e-9")
            keep = case.value in _worst(flag) or (starts and _number(case.value) in flag.range)
        if keep:
            chosen.append(case)
    return chosen


def _worst(flag: Flag) -> set[str]:
    huge = "1e10" if flag.type in (float, float | None) else VALUES["huge-int"]
    return {huge, "nan", "-1"}


def _number(text: str) -> float:
    return int(text) if text.isdigit() else float(text)


def _run(case: Case, root: Path, workdir: Path) -> str | None:
    """What is wrong with the real CLI's answer to `case`, or None."""
    args, extra = _argv(case, str(root))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISE_")}
    env.update(extra)
    workdir.mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "supervisor", *args],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"hung past {TIMEOUT} s"
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    if "Traceback" in done.stderr:
        return f"traceback: {done.stderr[-2000:]}"
    if done.returncode == 81:
        if len(lines) != 1 or not lines[0].startswith("supervise"):
            return f"81 without exactly one line: {lines}"
        return None
    if case.command == () and done.returncode != 0:
        return f"a run of `true` exited {done.returncode}: {lines}"
    if case.command[:1] in (("k8s",), ("doctor",)) and done.returncode != 0:
        return f"exited {done.returncode}: {lines}"
    return None


def test_the_real_cli_refuses_in_one_line_or_works(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    root.mkdir()
    cases = _real_cases()
    for flags in COMMANDS.values():  # every flag is run with its worst values, at least
        for flag in flags:
            takes_a_value = flag.type is not bool or flag.envvar
            assert any(c.flag is flag for c in cases) or not takes_a_value, flag.name
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(
            pool.map(lambda ic: _run(ic[1], root, tmp_path / f"w{ic[0]}"), enumerate(cases))
        )
    wrong = [
        (" ".join(c.command) or "run", c.flag.envvar if c.twin else c.flag.option, c.value, a)
        for c, a in zip(cases, answers, strict=True)
        if a is not None
    ]
    assert not wrong, "\n".join(map(str, wrong))
