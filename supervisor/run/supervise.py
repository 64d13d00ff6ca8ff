"""`supervise()`: one supervised run, start to verdict, as a table of contents.

0. Hear signals (`supervisor.run.signals`): from here on, a SIGTERM or SIGINT is data.
1. Open the outputs (event log, termination message): everything after this is said there.
2. Build the plan (what to spawn, with what environment) in a fresh run directory, open the
   metrics endpoint with `--metrics-port`, and join the gang through the run ledger, where
   there is one.
3. With `--preflight`, check the GPUs (and the node's history in the ledger) once; a bad
   one is the verdict, nothing starts.
4. Open the session (channel, watchdogs, calibration, the step to resume from).
5. Run the loop until it has a verdict, and return the class.

Whatever stops a run before its command starts (`SuperviseError`: bad configuration 81,
unreadable checkpoint storage 86) is a verdict like any other: one line on stderr for a
person, then the `exit` event and the termination message. So is a stop signal: the steps
that can block on the network (the checkpoint storage, the ledger, the GPUs) wait on a
helper thread while the main thread listens, and SIGTERM or SIGINT ends the run at once as
PREEMPTED (85), the class the loop gives a stop signal while nothing runs. The run directory
is removed when nothing was started.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

from supervisor.core import outputs as out
from supervisor.core import policy
from supervisor.core.actions import Exit
from supervisor.core.errors import Interrupted, SuperviseError
from supervisor.core.events import SignalReceived
from supervisor.core.exitcodes import ExitCode
from supervisor.core.options import Options
from supervisor.gang.options import GangOptions
from supervisor.gpu.watchdog import GpuOptions
from supervisor.hang.options import HangOptions
from supervisor.outputs import Outputs, open_outputs
from supervisor.process.logpump import Activity
from supervisor.run import rundir
from supervisor.run.loop import Supervisor
from supervisor.run.plan import Launch, Plan, build_plan, policy_config
from supervisor.run.session import Session, make_run_dir
from supervisor.run.signals import Signals, install
from supervisor.watch import steptime
from supervisor.watch.live import LiveView

if TYPE_CHECKING:
    from supervisor.run.gang import Member


def supervise(
    options: Options,
    hang: HangOptions,
    gpu: GpuOptions,
    *,
    preflight: bool = False,
    launch: Launch | None = None,
    checkpoint_dir: str | None = None,
    pace: steptime.Config | None = None,
    ledger: str | None = None,
    gang: GangOptions | None = None,
) -> ExitCode:
    """Supervise `options.command` and return the class to exit with. Raises nothing for
    failures of the run; they are verdicts."""
    signals = install()  # before anything that can block; a no-op where the CLI did it
    outputs = open_outputs(options.event_log, options.termination_log)
    run_dir = make_run_dir()
    live = LiveView() if options.metrics_port is not None else None
    started = False
    try:
        notes: list[str] = []  # said as `note` events once the session starts
        try:
            signals.check()
            plan = build_plan(
                options,
                hang,
                gpu,
                run_dir=run_dir,
                environ=_environ(),
                launch=launch,
                checkpoint_dir=checkpoint_dir,
                pace=pace,
                ledger=ledger,
                gang=gang,
            )
            if live is not None and options.metrics_port is not None:
                from supervisor.outputs.metrics import open_metrics

                # A port in use is CONFIG_ERROR, before anything starts.
                outputs.add(open_metrics(options.metrics_port, live))
            member = _member(plan, notes)
            if preflight:
                verdict = _preflight(plan, member, notes, outputs, signals)
                if verdict is not None:
                    return verdict
            session = _open_session(plan, notes, member, signals, live)
        except Interrupted as stop:
            verdict = _stopped_before_start(options, stop.signum)
            outputs.emit(out.Exited(verdict.code, verdict.reason, verdict.evidence))
            return verdict.code
        except SuperviseError as err:  # the outputs say it on stderr too, for a person
            outputs.emit(out.refused(err.exit_code, str(err)))
            return err.exit_code
        started = True
        return Supervisor(plan, session, outputs).run()
    finally:
        if not started:
            rundir.release(run_dir, remove=True)
        outputs.close()


def _member(plan: Plan, notes: list[str]) -> Member | None:
    """This pod's side of the run ledger; None (with a note on a multi-node run) without."""
    if plan.ledger is None or plan.identity is None:
        if plan.identity is not None and plan.identity.multi_node:
            notes.append(
                "peer attribution is off: without --checkpoint-dir or --ledger-dir there is "
                "no run ledger, so a pod that stops because its peer left is counted too"
            )
        return None
    from supervisor.run.gang import Member
    from supervisor.storage.ledger import FsLedger

    return Member(FsLedger(plan.ledger), plan.identity, plan.gang, note=notes.append)


def _stopped_before_start(options: Options, signum: int) -> Exit:
    """The policy's verdict for a stop signal while nothing runs (as between two attempts):
    leave at once, PREEMPTED, with the signal as evidence."""
    idle = policy.State(phase=policy.Phase.BACKOFF)
    event = SignalReceived(signum, time.monotonic())
    _, actions = policy.step(policy_config(options), idle, event)
    return next(action for action in actions if isinstance(action, Exit))


def _preflight(
    plan: Plan, member: Member | None, notes: list[str], outputs: Outputs, signals: Signals
) -> ExitCode | None:
    """`--preflight`: the verdict when a GPU is failed or degraded, or the node has used up
    its free exits in this run; else None (go on)."""
    from supervisor.gpu.doctor import preflight

    verdict = None
    refusal = signals.interruptible(member.history_refusal) if member is not None else None
    if refusal is not None:
        verdict = Exit(ExitCode.INFRA_FAILED, refusal.summary, (refusal,))
    else:
        code, findings = signals.interruptible(lambda: preflight(plan.gpu, notes.append))
        if code is not ExitCode.SUCCEEDED:
            verdict = Exit(code, findings[0].summary, tuple(findings))
    if verdict is None:
        return None
    if member is not None:  # the node's history counts a failed preflight too
        from supervisor.run.gang import VerdictFacts

        member.begin(1, None)
        verdict = member.settle(verdict, VerdictFacts({}, None))
    for note in notes:
        outputs.emit(out.Note(message=note))
    outputs.emit(out.Exited(verdict.code, verdict.reason, verdict.evidence))
    return verdict.code


def _open_session(
    plan: Plan,
    notes: list[str],
    member: Member | None,
    signals: Signals,
    live: LiveView | None = None,
) -> Session:
    from supervisor.gpu.watchdog import build_gpu_watchdog

    gpu_watchdog = signals.interruptible(lambda: build_gpu_watchdog(plan.gpu, notes.append))
    if live is not None and gpu_watchdog is not None:
        live.gpus = tuple((gpu.index, gpu.uuid) for gpu in gpu_watchdog.gpus)
    resolve = _resolver(plan.checkpoint_dir)
    session = Session.open(
        plan,
        Activity(time.monotonic()),
        gpu_watchdog=gpu_watchdog,
        # A silent object store must not deafen us: a stop signal interrupts the look-up
        # (at a restart, `attempt_env` keeps the previous step and the loop hears it).
        resume=None if resolve is None else lambda: signals.interruptible(resolve),
        notes=notes,
        member=member,
        live=live,
    )
    if member is not None:  # from now on its notes reach the event log as they happen
        member.note = session.say
    return session


def _environ() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HOSTNAME", socket.gethostname())  # the Indexed Job derivation reads it
    return env


def _resolver(checkpoint_dir: str | None):  # type: ignore[no-untyped-def]
    """The step to resume from: the newest *verified* step in `checkpoint_dir`, looked up
    afresh for each attempt with the very call `CheckpointStore.latest()` and `load()` use
    (`supervisor.storage.reader`), so the trainer is told the step its `load()` returns.
    One reader serves every attempt, so a step is read in full at most once per run (and
    once per store where `VERIFIED` can be recorded). Torch-free. Raises `StorageError`
    only when storage itself fails; a damaged step is skipped, never raised."""
    if not checkpoint_dir:
        return None
    reader = None

    def latest() -> int | None:
        nonlocal reader
        if reader is None:
            from supervisor.storage.backend import Storage
            from supervisor.storage.reader import Reader

            storage = Storage(checkpoint_dir)
            storage.check_usable()  # a path no save can write is CONFIG_ERROR, before work
            reader = Reader(storage)
        return reader.latest()

    return latest
