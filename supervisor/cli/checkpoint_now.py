"""`supervise checkpoint-now`: ask the supervise running in this container for a checkpoint.

    kubectl exec POD -- supervise checkpoint-now [--deadline 300]

It finds the live run (`supervisor.run.rundir`: a run directory whose lock its supervise
holds), leaves a request there (`supervisor.run.requests`) and waits for the answer. The
running supervise asks the trainer through the channel, with reason `requested`; the
trainer saves at its next `sup.should_checkpoint(step)` and goes on training. Nothing is
stopped and no signal is sent.

Exit codes (`CODES`): 0 the checkpoint was committed; 124 (as `timeout` uses it) no commit
within `--deadline`; 1 supervise refused (the run is starting, restarting or stopping, or
the trainer has not attached) or exited while this waited; CONFIG_ERROR (81) no running
supervise was found here, several were and none was chosen, or a flag is wrong. Each
failure is one line on stderr saying what happened and what to do. Blocks for at most
`--deadline` plus `ANSWER_SLACK` seconds. Imports neither torch nor the run's machinery.
"""

from __future__ import annotations

import time

import typer

from supervisor.cli.flags import DAY, Flag, Range, command
from supervisor.core.errors import ConfigError

COMMITTED = 0
REFUSED = 1  # refused by supervise, or supervise exited while this waited
TIMED_OUT = 124  # as timeout(1): the deadline passed without a commit
CODES = {COMMITTED: "committed", REFUSED: "refused or ended", TIMED_OUT: "deadline passed"}
ANSWER_SLACK = 5.0  # seconds past the deadline to wait for supervise's own answer
POLL = 0.1  # seconds between two looks for the answer

# A one-shot tool run by hand: no environment twins.
FLAGS = (
    Flag(
        "deadline",
        float,
        300.0,
        "Seconds the trainer gets to commit the checkpoint; past them this exits 124 and "
        "training is left alone.",
        twin=False,
        range=Range(0, DAY, above=True),
    ),
    Flag(
        "run-dir",
        str | None,
        None,
        "The run directory of the supervise to ask (supervise-run-*), where several run "
        "in this container.",
        shown="the only live one",
        twin=False,
    ),
    Flag(
        "pid",
        int | None,
        None,
        "The PID of the supervise to ask, where several run in this container.",
        shown="the only live one",
        twin=False,
        range=Range(1, 2**22),
    ),
)


def register(app: typer.Typer) -> None:
    app.command("checkpoint-now")(checkpoint_now_command)


@command(*FLAGS)
def checkpoint_now_command(deadline: float, run_dir: str | None, pid: int | None) -> None:
    """Ask the running supervise for a checkpoint now; training goes on after it.

    Exit 0 once committed, 124 when --deadline passes first, 1 when supervise refuses or
    exits, 81 when no running supervise is found here.
    """
    from supervisor.run import requests

    target = find_run_dir(run_dir, pid)
    try:
        request = requests.submit(target, deadline)
    except FileNotFoundError as err:
        raise ConfigError(
            f"the supervise running in {target} takes no checkpoint requests (it is ending, "
            "or an older release): upgrade the image's supervise"
        ) from err
    except OSError as err:
        raise ConfigError(
            f"cannot leave a request in {target}: {err.strerror}; run this as the "
            "container's user (kubectl exec runs as it unless told otherwise)"
        ) from err
    code, message = wait_for_answer(target, request, deadline)
    if code == COMMITTED:
        print(f"supervise: {message}")
    else:
        typer.echo(f"supervise: error: {message}", err=True)
    raise typer.Exit(code)


def find_run_dir(run_dir: str | None, pid: int | None, bases: list[str] | None = None) -> str:
    """The live run directory to ask: `run_dir`, or the only live one in `bases` (with
    `pid`'s supervise, when given). Raises `ConfigError` saying what was found instead."""
    from supervisor.run import rundir

    if run_dir is not None:
        if not rundir.is_live(run_dir):
            raise ConfigError(
                f"no supervise is running in {run_dir}: give the run directory of a live "
                "run (supervise-run-*), or leave --run-dir out to find it"
            )
        return run_dir
    where = bases if bases is not None else rundir.bases()
    found = [path for base in where for path in rundir.live(base)]
    if pid is not None:
        found = [path for path in found if rundir.lock_pid(path) == pid]
        if not found:
            raise ConfigError(
                f"no supervise with PID {pid} is running here (looked in {', '.join(where)}); "
                "run this in the container that runs `supervise -- ...`"
            )
    if not found:
        raise ConfigError(
            f"no running supervise found here (no live supervise-run-* in {', '.join(where)}); "
            "run this in the container that runs `supervise -- ...`: "
            "kubectl exec POD -- supervise checkpoint-now"
        )
    if len(found) > 1:
        listed = ", ".join(f"{path} (PID {rundir.lock_pid(path) or '?'})" for path in found)
        raise ConfigError(
            f"{len(found)} supervise runs are live here: {listed}; choose one with --run-dir "
            "or --pid"
        )
    return found[0]


def wait_for_answer(run_dir: str, request: str, deadline: float) -> tuple[int, str]:
    """(exit code, one line) once supervise answers `request`, exits, or the time is up."""
    from supervisor.run import requests, rundir

    give_up = time.monotonic() + deadline + ANSWER_SLACK
    while True:
        answer = requests.read_answer(run_dir, request)
        if answer is None and not rundir.is_live(run_dir):
            answer = requests.read_answer(run_dir, request)  # said just before it ended
            if answer is None:
                return REFUSED, (
                    "supervise exited before a checkpoint was committed: the run is over; "
                    "its exit event and termination message say why"
                )
        if answer is not None:
            return _said(answer, deadline)
        if time.monotonic() >= give_up:
            if requests.withdraw(run_dir, request):
                return TIMED_OUT, (
                    f"supervise did not take the request within {deadline:g} s (is it stuck, "
                    "or an older release?); nothing was asked of the trainer"
                )
            return TIMED_OUT, f"supervise did not answer within {deadline:g} s"
        time.sleep(POLL)


def _said(answer: dict[str, object], deadline: float) -> tuple[int, str]:
    outcome, message = answer.get("outcome"), answer.get("message", "")
    if outcome == "committed":
        return COMMITTED, (
            f"checkpoint step {answer.get('step')} committed (reason requested); training goes on"
        )
    if outcome == "missed":
        return TIMED_OUT, (
            f"{message} ({deadline:g} s). Make the training loop check "
            "sup.should_checkpoint(step) (see the README, Operator checkpoint), or give a "
            "longer --deadline; training was left alone"
        )
    return REFUSED, f"supervise refused the checkpoint: {message}"
