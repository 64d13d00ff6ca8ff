"""The supervisor's decisions: `step(state, event) -> (state, actions)`, pure and table-driven.

Nothing here touches the world. The loop feeds events in (signals, child exits, findings
from watchdogs, ticks of the clock) and executes the actions that come out. Time arrives
inside events (`at`, monotonic seconds), so the same inputs always give the same outputs
and every transition is unit-tested without processes.

Phases:

    STARTING --ChildStarted--> RUNNING --stop signal / STOP or CHECKPOINT finding--> STOPPING
    STOPPING --Tick past the deadline--> KILLED
    RUNNING | STOPPING | KILLED --ChildExited--> DONE        (Exit is the last action)
    STARTING --SpawnFailed--> DONE                            (CONFIG_ERROR)

`TRANSITIONS` is the whole table; `describe()` prints it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace

from supervisor.classify import classify
from supervisor.events import (
    FORWARDED_SIGNALS,
    SIGTERM,
    STOP_SIGNALS,
    Action,
    ChildExited,
    ChildStarted,
    ChildStatus,
    Emit,
    Event,
    Exit,
    Finding,
    Found,
    KillTree,
    RequestCheckpoint,
    SignalChild,
    SignalReceived,
    SpawnFailed,
    Tick,
    Urgency,
    signal_name,
)
from supervisor.exitcodes import ExitCode


class Phase(enum.StrEnum):
    STARTING = "starting"  # the command is being spawned
    RUNNING = "running"
    STOPPING = "stopping"  # the child was asked to stop; SIGKILL at `deadline`
    KILLED = "killed"  # the tree was SIGKILLed; waiting for the child to be reaped
    DONE = "done"  # Exit has been issued; every later event is ignored


@dataclass(frozen=True)
class Config:
    """The policy's knobs, taken from `Options` by the loop."""

    grace_period: float  # after an outside stop signal, or a checkpoint request
    failure_grace: float = 3.0  # after supervise itself stops a failed run (hang, dead GPU)


@dataclass(frozen=True)
class State:
    phase: Phase = Phase.STARTING
    findings: tuple[Finding, ...] = ()
    deadline: float | None = None  # monotonic; when a Tick at or after it must act


Result = tuple[State, tuple[Action, ...]]
Handler = Callable[[Config, State, Event], Result]


# ------------------------------------------------------------------------- handlers


def _started(config: Config, state: State, event: ChildStarted) -> Result:
    return replace(state, phase=Phase.RUNNING), (Emit("child_started", {"pid": event.pid}),)


def _spawn_failed(config: Config, state: State, event: SpawnFailed) -> Result:
    finding = Finding("child", "spawn_failed", event.reason, ExitCode.CONFIG_ERROR, Urgency.STOP)
    findings = (*state.findings, finding)
    done = State(Phase.DONE, findings)
    return done, (Exit(ExitCode.CONFIG_ERROR, event.reason, findings),)


def _signal(config: Config, state: State, event: SignalReceived) -> Result:
    name = signal_name(event.signum)
    if event.signum not in FORWARDED_SIGNALS:
        return state, (Emit("signal_ignored", {"signal": name}),)
    forward = SignalChild(event.signum)
    if event.signum not in STOP_SIGNALS:
        return state, (Emit("signal_forwarded", {"signal": name}), forward)
    finding = Finding(
        "signal",
        "external_signal",
        f"supervise received {name} from outside (eviction, preemption, drain or deletion).",
        ExitCode.PREEMPTED,
        Urgency.STOP,
        {"signal": name},
    )
    state = replace(state, findings=(*state.findings, finding))
    if state.phase is Phase.RUNNING:
        stopping = replace(state, phase=Phase.STOPPING, deadline=event.at + config.grace_period)
        fields = {"signal": name, "grace_period_s": config.grace_period}
        return stopping, (Emit("stopping", fields), forward)
    # Already stopping: pass it on (a second Ctrl-C reaches the trainer) but keep the deadline.
    return state, (Emit("signal_forwarded", {"signal": name}), forward)


def _found(config: Config, state: State, event: Found) -> Result:
    finding = event.finding
    state = replace(state, findings=(*state.findings, finding))
    actions: list[Action] = [Emit("finding", finding.as_dict())]
    if finding.urgency in (Urgency.STOP, Urgency.CHECKPOINT) and state.phase is Phase.RUNNING:
        # A hung or broken process rarely honours SIGTERM, and every second of its grace
        # idles the whole job; a degraded one is still healthy enough to checkpoint.
        if finding.urgency is Urgency.CHECKPOINT:
            deadline = event.at + config.grace_period
            actions.append(RequestCheckpoint(finding.summary, deadline))
        else:
            deadline = event.at + config.failure_grace
        actions += [Emit("stopping", {"reason": finding.summary}), SignalChild(SIGTERM)]
        state = replace(state, phase=Phase.STOPPING, deadline=deadline)
    return state, tuple(actions)


def _tick(config: Config, state: State, event: Tick) -> Result:
    if state.phase is not Phase.STOPPING or state.deadline is None or event.at < state.deadline:
        return state, ()
    killed = replace(state, phase=Phase.KILLED, deadline=None)
    return killed, (Emit("grace_expired", {"grace_period_s": config.grace_period}), KillTree())


def _exited(config: Config, state: State, event: ChildExited) -> Result:
    status: ChildStatus = event.status
    child = Finding(
        "child", "exit", f"The training command {status.describe()}.", detail=status.as_dict()
    )
    findings = (*state.findings, child)
    code, reason = classify(status, findings)
    return State(Phase.DONE, findings), (KillTree(), Exit(code, reason, findings))


def _ignore(config: Config, state: State, event: Event) -> Result:
    return state, ()


_LIVE = (Phase.RUNNING, Phase.STOPPING, Phase.KILLED)

TRANSITIONS: dict[tuple[Phase, type], Handler] = {
    (Phase.STARTING, ChildStarted): _started,
    (Phase.STARTING, SpawnFailed): _spawn_failed,
    **{(phase, SignalReceived): _signal for phase in _LIVE},
    **{(phase, Found): _found for phase in _LIVE},
    **{(phase, ChildExited): _exited for phase in _LIVE},
    (Phase.STOPPING, Tick): _tick,
}
"""(phase, event type) → handler. Pairs not listed leave the state unchanged, no actions."""


def step(config: Config, state: State, event: Event) -> Result:
    """Apply one event. Pure: the same arguments always give the same result."""
    handler = TRANSITIONS.get((state.phase, type(event)), _ignore)
    return handler(config, state, event)  # type: ignore[arg-type]


def describe() -> str:
    """The transition table as text, one row per (phase, event)."""
    rows = [
        f"{phase.value:<9} {event.__name__:<15} {handler.__name__.lstrip('_')}"
        for (phase, event), handler in TRANSITIONS.items()
    ]
    return "\n".join(["phase     event           handler", *rows])
