"""The supervisor's decisions: `step(config, state, event) -> (state, actions)`, pure.

Nothing here touches the world. The loop feeds events in (signals, child exits, findings
from watchdogs, the trainer's checkpoint reports, ticks of the clock) and executes the
actions that come out. Time arrives inside events (`at`, monotonic seconds), so the same
inputs always give the same outputs and every transition is unit-tested without processes.

Phases:

    STARTING --ChildStarted--> RUNNING
    RUNNING --stop signal, or a CHECKPOINT finding, trainer attached--> CHECKPOINTING
    RUNNING --stop signal / STOP finding (or CHECKPOINT, trainer not attached)--> STOPPING
    CHECKPOINTING --CheckpointCommitted--> LEAVING             (RequestStop on the channel)
    CHECKPOINTING --its deadline passes--> STOPPING
    LEAVING --Tick past the deadline--> STOPPING               (the trainer is still there)
    STOPPING --Tick past the deadline--> KILLED               (SIGKILL the tree)
    any live phase --ChildExited--> DONE, or BACKOFF when the class is restartable
    BACKOFF --Tick past the backoff--> STARTING               (Respawn)
    STARTING --SpawnFailed--> DONE                             (CONFIG_ERROR)

An operator's checkpoint (`CheckpointNow`, from `supervise checkpoint-now`) is not a stop:
RUNNING stays RUNNING. The request goes out on the channel with reason `requested`, the
asker waits in `asked`, and `deadline` (unused in RUNNING otherwise) bounds the wait. The
first commit that acknowledges the request (any save the trainer commits after seeing it)
answers every asker at once (`AnswerRequests`); a Tick past the deadline answers "missed".
A request made while one is pending joins it. In any other phase the run is starting,
restarting or on its way out, and the request is refused at once, as it is when the
trainer has not attached. A request still waiting when the command exits is refused then.

Budgets. After an outside SIGTERM the whole `grace_period` must fit the pod's
terminationGracePeriodSeconds: an attached trainer gets `grace_period - shutdown_timeout`
to commit a checkpoint, then `shutdown_timeout` to exit, then the tree is SIGKILLed.

After a commit the trainer is not signalled at once: it is already leaving (save, then
break), and a SIGTERM landing in its interpreter shutdown would kill it for nothing. The
channel's stop flag is raised instead (`RequestStop`) and the trainer has
`shutdown_timeout` to exit by itself; only a trainer still there then gets SIGTERM, and
SIGKILL `shutdown_timeout` later. Where the kubelet's budget (`stop_by`) is nearer, both
fit inside it: at least half of what is left is kept for the SIGTERM.

A degraded GPU has no kubelet deadline; `degraded_deadline` bounds it anyway.
A run supervise stops for a failure (hang, failed GPU) gets `failure_grace`.

`TRANSITIONS` is the whole table; `describe()` prints it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from supervisor.core import outputs as out
from supervisor.core.actions import (
    Action,
    AnswerRequests,
    Decided,
    Exit,
    KillTree,
    Outcome,
    RequestCheckpoint,
    RequestStop,
    Respawn,
    SignalChild,
)
from supervisor.core.classify import classify
from supervisor.core.events import (
    FORWARDED_SIGNALS,
    SIGTERM,
    STEP_TIME_REGRESSION,
    STOP_SIGNALS,
    Attached,
    CheckpointCommitted,
    CheckpointNow,
    ChildExited,
    ChildStarted,
    ChildStatus,
    Event,
    Finding,
    Found,
    SignalReceived,
    Source,
    SpawnFailed,
    Tick,
    Urgency,
    signal_name,
)
from supervisor.core.exitcodes import ExitCode


class Phase(enum.StrEnum):
    STARTING = "starting"  # the command is being spawned
    RUNNING = "running"
    CHECKPOINTING = "checkpointing"  # a checkpoint was requested; waiting for its commit
    LEAVING = "leaving"  # committed; the trainer was asked to exit; SIGTERM at `deadline`
    STOPPING = "stopping"  # the child was sent SIGTERM; SIGKILL at `deadline`
    KILLED = "killed"  # the tree was SIGKILLed; waiting for the child to be reaped
    BACKOFF = "backoff"  # waiting to restart the command in place
    DONE = "done"  # Exit has been issued; every later event is ignored


@dataclass(frozen=True)
class Config:
    """The policy's knobs, taken from `Options` by the loop."""

    grace_period: float  # SIGTERM → SIGKILL after an outside stop signal
    failure_grace: float = 3.0  # SIGTERM → SIGKILL after supervise stops a failed run
    shutdown_timeout: float = 5.0  # of grace_period, kept for exiting after the checkpoint
    degraded_deadline: float = 120.0  # for the checkpoint a degraded GPU asks for
    degrade_on_step_time: bool = False  # a slowdown alone (no GPU signal) is DEGRADED
    max_restarts: int = 0
    restart_on: frozenset[ExitCode] = frozenset({ExitCode.HANG, ExitCode.INFRA_FAILED})
    backoff_initial: float = 1.0
    backoff_max: float = 60.0

    def backoff(self, restarts_so_far: int) -> float:
        """Seconds before restart number `restarts_so_far + 1`: doubling, capped."""
        return min(self.backoff_max, self.backoff_initial * 2**restarts_so_far)


@dataclass(frozen=True)
class State:
    phase: Phase = Phase.STARTING
    findings: tuple[Finding, ...] = ()
    deadline: float | None = None  # monotonic; a Tick at or after it must act
    stop_by: float | None = None  # after a stop signal: when the whole grace runs out
    attached: bool = False  # a rank speaks the channel, so it can be asked to checkpoint
    generation: int = 0  # checkpoint requests issued so far
    committed_step: int | None = None  # the last checkpoint the trainer reported
    restarts: int = 0
    previous: tuple[str, ...] = field(default=())  # classes of earlier attempts
    asked: tuple[str, ...] = ()  # operators' checkpoint requests waiting for a commit
    asked_generation: int = 0  # the channel request that serves them


Result = tuple[State, tuple[Action, ...]]
Handler = Callable[[Config, State, Event], Result]


# ------------------------------------------------------------------------- helpers


def _stop(state: State, at: float, grace: float, why: str, signum: int = SIGTERM) -> Result:
    """Signal the child; SIGKILL the tree `grace` seconds later (or at `stop_by`)."""
    deadline = at + grace
    if state.stop_by is not None:
        deadline = min(deadline, state.stop_by)
    stopping = replace(state, phase=Phase.STOPPING, deadline=deadline)
    return stopping, (
        out.Stopping(reason=why, signal=signal_name(signum), kill_in_s=round(deadline - at, 3)),
        SignalChild(signum),
    )


def _leave(config: Config, state: State, at: float, why: str) -> Result:
    """Ask the trainer to exit by itself; SIGTERM at `deadline` if it has not.

    It gets `shutdown_timeout`; before `stop_by`, at least half of the time left is kept
    for the SIGTERM and the SIGKILL after it."""
    deadline = at + config.shutdown_timeout
    if state.stop_by is not None:
        deadline = max(at, min(deadline, at + (state.stop_by - at) / 2))
    leaving = replace(state, phase=Phase.LEAVING, deadline=deadline)
    said = out.LeaveRequested(reason=why, term_in_s=round(deadline - at, 3))
    return leaving, (said, RequestStop())


def _request_checkpoint(state: State, at: float, budget: float, reason: str, why: str) -> Result:
    generation = state.generation + 1
    deadline = at + max(0.0, budget)
    asking = replace(state, phase=Phase.CHECKPOINTING, deadline=deadline, generation=generation)
    said = out.CheckpointRequested(
        reason=reason, why=why, generation=generation, deadline_in_s=round(budget, 3)
    )
    return asking, (
        said,
        RequestCheckpoint(reason, deadline, generation),
    )


def _checkpoint_outcome(state: State, taken: bool) -> Finding:
    if taken:
        summary = f"Checkpoint step {state.committed_step} was committed before stopping."
        return Finding("checkpoint", "committed", summary, detail={"step": state.committed_step})
    summary = "No checkpoint was taken before the deadline; the next pod resumes from " + (
        f"step {state.committed_step}."
        if state.committed_step is not None
        else "the last checkpoint committed before this run, if any."
    )
    return Finding(
        "checkpoint", "not_taken", summary, detail={"last_committed_step": state.committed_step}
    )


def _answer(state: State, outcome: Outcome, message: str) -> Result:
    """Answer every operator request waiting (none: nothing); in RUNNING their deadline
    goes with them."""
    if not state.asked:
        return state, ()
    step = state.committed_step if outcome is Outcome.COMMITTED else None
    said = out.CheckpointRequestAnswered(
        requests=state.asked, outcome=outcome.value, step=step, message=message
    )
    answered = replace(state, asked=())
    if state.phase is Phase.RUNNING:
        answered = replace(answered, deadline=None)
    return answered, (said, AnswerRequests(state.asked, outcome, message, step))


# Why an operator's checkpoint cannot be taken in a phase other than RUNNING.
_NOT_NOW = {
    Phase.STARTING: "the training command is starting; ask again once it runs",
    Phase.CHECKPOINTING: "the run is stopping: a checkpoint on the way out is being taken, "
    "and the run ends after it",
    Phase.LEAVING: "the run is stopping: its checkpoint is committed and the trainer was "
    "asked to exit",
    Phase.STOPPING: "the run is stopping",
    Phase.KILLED: "the run is stopping",
    Phase.BACKOFF: "the training command is restarting in place; ask again once it runs",
}


# ------------------------------------------------------------------------- handlers


def _started(config: Config, state: State, event: ChildStarted) -> Result:
    running = replace(state, phase=Phase.RUNNING, attached=False, deadline=None)
    return running, (out.ChildStarted(pid=event.pid, attempt=state.restarts + 1),)


def _spawn_failed(config: Config, state: State, event: SpawnFailed) -> Result:
    finding = Finding("child", "spawn_failed", event.reason, ExitCode.CONFIG_ERROR, Urgency.STOP)
    findings = (*state.findings, finding)
    return State(Phase.DONE, findings), (Exit(ExitCode.CONFIG_ERROR, event.reason, findings),)


def _attached(config: Config, state: State, event: Attached) -> Result:
    if state.attached:
        return state, ()
    return replace(state, attached=True), (out.TrainerAttached(ranks=event.ranks),)


def _checkpoint_now(config: Config, state: State, event: CheckpointNow) -> Result:
    refusal = _NOT_NOW.get(state.phase)
    if refusal is None and not state.attached:
        refusal = (
            "the trainer has not attached to supervise (supervisor.attach()), so it cannot "
            "be asked to checkpoint"
        )
    if refusal is not None:
        said = out.CheckpointRequestAnswered((event.request,), Outcome.REFUSED.value, None, refusal)
        return state, (said, AnswerRequests((event.request,), Outcome.REFUSED, refusal))
    deadline = event.at + max(0.0, event.budget)
    if state.asked:  # one commit answers every request made before it: join the pending one
        joined = max(deadline, state.deadline or deadline)
        return replace(state, asked=(*state.asked, event.request), deadline=joined), ()
    generation = state.generation + 1
    asking = replace(
        state,
        deadline=deadline,
        generation=generation,
        asked=(event.request,),
        asked_generation=generation,
    )
    said = out.CheckpointRequested(
        reason="requested",
        why="an operator asked for it (supervise checkpoint-now); training goes on after it",
        generation=generation,
        deadline_in_s=round(event.budget, 3),
    )
    return asking, (said, RequestCheckpoint("requested", deadline, generation))


def _committed(config: Config, state: State, event: CheckpointCommitted) -> Result:
    state = replace(state, committed_step=event.step)
    actions: tuple[Action, ...] = (
        out.CheckpointCommitted(step=event.step, generation=event.generation),
    )
    if state.asked and event.generation >= state.asked_generation:
        state, answered = _answer(
            state, Outcome.COMMITTED, f"checkpoint step {event.step} was committed"
        )
        actions += answered
    if state.phase is Phase.CHECKPOINTING and event.generation >= state.generation:
        state = replace(state, findings=(*state.findings, _checkpoint_outcome(state, True)))
        state, leave = _leave(config, state, event.at, "checkpoint committed")
        actions += leave
    elif event.for_peer and state.phase is Phase.RUNNING:
        # Another node's pod is leaving and every rank saved with it. This trainer leaves
        # too; its pod must be replaced with the others (PEER_LEFT: Ignore), not marked
        # Succeeded.
        left = Finding(
            "checkpoint",
            "peer_preempted",
            f"Another rank's pod was told to leave; every rank committed step {event.step} "
            "together and this one stopped with them.",
            ExitCode.PEER_LEFT,
            Urgency.STOP,
            {"step": event.step},
        )
        state = replace(state, findings=(*state.findings, left))
        state, leave = _leave(config, state, event.at, left.summary)
        actions += (_decided(state), *leave)
    return state, actions


def _signal(config: Config, state: State, event: SignalReceived) -> Result:
    name = signal_name(event.signum)
    if event.signum not in FORWARDED_SIGNALS:
        return state, (out.SignalIgnored(signal=name),)
    if event.signum not in STOP_SIGNALS:
        return state, (out.SignalForwarded(signal=name), SignalChild(event.signum))
    finding = Finding(
        "signal",
        "external_signal",
        f"supervise received {name} from outside (eviction, preemption, drain or deletion).",
        ExitCode.PREEMPTED,
        Urgency.STOP,
        {"signal": name},
    )
    state = replace(state, findings=(*state.findings, finding))
    if state.phase is Phase.BACKOFF:  # nothing is running: leave now
        return _finish(state, None)
    if state.stop_by is None:
        state = replace(state, stop_by=event.at + config.grace_period)
    if state.phase is Phase.RUNNING:
        budget = config.grace_period - config.shutdown_timeout
        if state.attached and budget > 0:  # else the grace is too short to ask for anything
            state, ask = _request_checkpoint(
                state, event.at, budget, "preempted", f"{name} received"
            )
        else:
            state, ask = _stop(
                state, event.at, config.grace_period, f"{name} received", event.signum
            )
        return state, (_decided(state), *ask)
    if state.phase is Phase.CHECKPOINTING:  # keep saving, but within the kubelet's budget
        deadline = min(state.deadline or event.at, state.stop_by - config.shutdown_timeout)
        return replace(state, deadline=deadline), (out.SignalReceived(signal=name),)
    if state.phase is Phase.LEAVING:  # the stop is asked for already: now by signal
        return _stop(state, event.at, config.shutdown_timeout, f"{name} received", event.signum)
    # Already stopping: pass it on (a second Ctrl-C reaches the trainer), keep the deadline.
    return state, (out.SignalForwarded(signal=name), SignalChild(event.signum))


def _corroborated_slowdown(config: Config, state: State) -> Finding | None:
    """A sustained step-time regression plus a GPU signal (or the user's opt-in) is a
    degraded device; a slowdown alone is only a warning (see `supervisor.watch.steptime`)."""
    slow = next((f for f in state.findings if f.kind == STEP_TIME_REGRESSION), None)
    if slow is None:
        return None
    gpu = next((f for f in state.findings if f.source == Source.GPU), None)
    if gpu is None and not config.degrade_on_step_time:
        return None
    why = f" and the GPU reported: {gpu.summary}" if gpu else " (--degrade-on-step-time)"
    return Finding(
        "steptime",
        "degraded_slowdown",
        slow.summary.rstrip(".") + why,
        ExitCode.DEVICE_DEGRADED,
        Urgency.CHECKPOINT,
        dict(slow.detail),
    )


def _found(config: Config, state: State, event: Found) -> Result:
    finding = event.finding
    state = replace(state, findings=(*state.findings, finding))
    actions: tuple[Action, ...] = ()  # `step` reports the finding
    if finding.urgency is Urgency.NOTE and state.phase is Phase.RUNNING:
        escalated = _corroborated_slowdown(config, state)
        if escalated is not None:
            state, more = _found(config, state, Found(escalated, event.at))
            return state, actions + more
    if state.phase is Phase.BACKOFF and finding.urgency is Urgency.STOP:
        return _finish(state, None)
    if finding.exit_code is ExitCode.PEER_LEFT and state.phase in _ENDING_BY_ITSELF:
        return state, actions  # the checkpoint under way ends this run within its deadline
    if finding.urgency is Urgency.STOP and state.phase in (Phase.RUNNING, *_ENDING_BY_ITSELF):
        state, stop = _stop(state, event.at, config.failure_grace, finding.summary)
        return state, (*actions, _decided(state), *stop)
    if finding.urgency is Urgency.CHECKPOINT and state.phase is Phase.RUNNING:
        if state.attached:
            state, ask = _request_checkpoint(
                state, event.at, config.degraded_deadline, "degraded", finding.summary
            )
        else:  # the trainer cannot be asked; a SIGTERM is how most trainers checkpoint
            state, ask = _stop(state, event.at, config.grace_period, finding.summary)
        return state, (*actions, _decided(state), *ask)
    return state, actions


def _tick(config: Config, state: State, event: Tick) -> Result:
    if state.deadline is None or event.at < state.deadline:
        return state, ()
    if state.phase is Phase.RUNNING:  # only an operator's request has a deadline here
        return _answer(
            state,
            Outcome.MISSED,
            "no checkpoint was committed within the deadline: the trainer did not act on "
            "sup.should_checkpoint(step), or its save took longer",
        )
    if state.phase is Phase.CHECKPOINTING:
        state = replace(state, findings=(*state.findings, _checkpoint_outcome(state, False)))
        return _stop(state, event.at, config.shutdown_timeout, "checkpoint deadline passed")
    if state.phase is Phase.LEAVING:
        why = "the trainer had not exited after its checkpoint"
        return _stop(state, event.at, config.shutdown_timeout, why)
    if state.phase is Phase.STOPPING:
        killed = replace(state, phase=Phase.KILLED, deadline=None)
        return killed, (out.GraceExpired(), KillTree())
    if state.phase is Phase.BACKOFF:
        attempt = state.restarts + 1
        respawning = replace(state, phase=Phase.STARTING, deadline=None, restarts=attempt)
        return respawning, (Respawn(attempt),)
    return state, ()


def _exited(config: Config, state: State, event: ChildExited) -> Result:
    status: ChildStatus = event.status
    child = Finding(
        "child", "exit", f"The training command {status.describe()}.", detail=status.as_dict()
    )
    state = replace(state, findings=(*state.findings, child))
    state, answered = _answer(
        state,
        Outcome.REFUSED,
        f"the training command {status.describe()} before a checkpoint was committed",
    )
    code, reason = classify(status, state.findings)
    if code in config.restart_on and state.restarts < config.max_restarts:
        delay = config.backoff(state.restarts)
        backoff = State(
            Phase.BACKOFF,
            deadline=event.at + delay,
            committed_step=state.committed_step,
            restarts=state.restarts,
            previous=(*state.previous, code.name),
        )
        said = out.RestartScheduled(
            klass=code.name,
            reason=reason,
            attempt=state.restarts + 1,
            restart_in_s=delay,
            restarts_left=config.max_restarts - state.restarts,
        )
        return backoff, (*answered, KillTree(), said)
    done, actions = _finish(state, (code, reason))
    return done, (*answered, *actions)


def _decided(state: State) -> Decided:
    """The class the findings so far settle on, now that one of them stops the run."""
    code, reason = classify(ChildStatus(exit_status=0), state.findings)
    return Decided(code, reason, state.findings)


def _finish(state: State, verdict: tuple[ExitCode, str] | None) -> Result:
    """DONE: kill what is left, exit with `verdict` (or classify what is known now)."""
    if verdict is None:
        verdict = classify(ChildStatus(exit_status=0), state.findings)
    findings = state.findings
    if state.previous:
        findings += (
            Finding(
                "restart",
                "restarts",
                f"The command was restarted {len(state.previous)} time(s) in place.",
                detail={"restarts": len(state.previous), "previous": list(state.previous)},
            ),
        )
    done = replace(state, phase=Phase.DONE, findings=findings, deadline=None)
    return done, (KillTree(), Exit(verdict[0], verdict[1], findings))


def _ignore(config: Config, state: State, event: Event) -> Result:
    return state, ()


_LIVE = (Phase.RUNNING, Phase.CHECKPOINTING, Phase.LEAVING, Phase.STOPPING, Phase.KILLED)
_ENDING_BY_ITSELF = (Phase.CHECKPOINTING, Phase.LEAVING)

TRANSITIONS: dict[tuple[Phase, type], Handler] = {
    (Phase.STARTING, ChildStarted): _started,
    (Phase.STARTING, SpawnFailed): _spawn_failed,
    **{(phase, SignalReceived): _signal for phase in (*_LIVE, Phase.BACKOFF)},
    **{(phase, Found): _found for phase in (*_LIVE, Phase.BACKOFF)},
    **{(phase, Attached): _attached for phase in _LIVE},
    **{(phase, CheckpointCommitted): _committed for phase in (*_LIVE, Phase.BACKOFF)},
    **{(phase, ChildExited): _exited for phase in _LIVE},
    **{
        (phase, CheckpointNow): _checkpoint_now for phase in (Phase.STARTING, *_LIVE, Phase.BACKOFF)
    },
    **{
        (phase, Tick): _tick
        for phase in (
            Phase.RUNNING,
            Phase.CHECKPOINTING,
            Phase.LEAVING,
            Phase.STOPPING,
            Phase.BACKOFF,
        )
    },
}
"""(phase, event type) → handler. Pairs not listed leave the state unchanged, no actions."""


def step(config: Config, state: State, event: Event) -> Result:
    """Apply one event. Pure: the same arguments always give the same result.

    Every finding the event adds, whichever handler adds it (a watchdog's, a stop signal,
    the child's exit status, a checkpoint's outcome), is reported first, as a `finding`
    output: each piece of evidence the verdict lists was on the event log before it."""
    handler = TRANSITIONS.get((state.phase, type(event)), _ignore)
    after, actions = handler(config, state, event)  # type: ignore[arg-type]
    return after, (*_new_findings(state, after), *actions)


def _new_findings(before: State, after: State) -> tuple[Action, ...]:
    old, new = before.findings, after.findings
    if len(new) <= len(old) or any(a is not b for a, b in zip(old, new, strict=False)):
        return ()  # none added, or a new attempt that starts its evidence afresh
    return tuple(out.FindingReported(finding) for finding in new[len(old) :])


def describe() -> str:
    """The transition table as text, one row per (phase, event)."""
    rows = [
        f"{phase.value:<13} {event.__name__:<19} {handler.__name__.lstrip('_')}"
        for (phase, event), handler in TRANSITIONS.items()
    ]
    return "\n".join(["phase         event               handler", *rows])
