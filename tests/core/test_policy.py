"""The policy's transition table, without processes."""

from __future__ import annotations

import signal

import pytest

from supervisor.core import policy
from supervisor.core.actions import (
    Decided,
    Exit,
    KillTree,
    RequestCheckpoint,
    RequestStop,
    Respawn,
    SignalChild,
)
from supervisor.core.classify import PRECEDENCE, classify
from supervisor.core.clock import FakeClock
from supervisor.core.events import (
    Attached,
    CheckpointCommitted,
    ChildExited,
    ChildStarted,
    ChildStatus,
    Finding,
    Found,
    SignalReceived,
    SpawnFailed,
    Tick,
    Urgency,
)
from supervisor.core.exitcodes import ExitCode
from supervisor.core.outputs import Output
from supervisor.core.policy import Phase

CONFIG = policy.Config(grace_period=10.0, failure_grace=2.0)


class Run:
    """Drives the pure policy with a fake clock and collects every action."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.state = policy.State()
        self.actions: list = []

    def send(self, make, *args):
        event = make(*args, self.clock.monotonic())
        self.state, actions = policy.step(CONFIG, self.state, event)
        self.actions.extend(actions)
        return [a for a in actions if not isinstance(a, Output | Decided)]

    def started(self) -> Run:
        self.send(ChildStarted, 123)
        return self

    @property
    def exit(self) -> Exit:
        exits = [a for a in self.actions if isinstance(a, Exit)]
        assert len(exits) == 1
        return exits[0]


def finding(code: ExitCode, urgency: Urgency, summary: str = "because") -> Finding:
    return Finding("test", code.name.lower(), summary, code, urgency)


def test_clean_exit_succeeds() -> None:
    run = Run().started()
    assert run.state.phase is Phase.RUNNING
    actions = run.send(ChildExited, ChildStatus(exit_status=0))
    assert actions[0] == KillTree()  # leftovers of a finished run go too
    assert run.exit.code is ExitCode.SUCCEEDED
    assert run.state.phase is Phase.DONE


@pytest.mark.parametrize("status", [1, 2, 3, 80, 127, 255])
def test_nonzero_exit_is_training_failed_with_status_in_evidence(status: int) -> None:
    run = Run().started()
    run.send(ChildExited, ChildStatus(exit_status=status))
    assert run.exit.code is ExitCode.TRAINING_FAILED
    child = [f for f in run.exit.evidence if f.source == "child"]
    assert child[0].detail == {"exitStatus": status}


def test_death_by_signal_is_evidence() -> None:
    run = Run().started()
    run.send(ChildExited, ChildStatus(signal=signal.SIGSEGV))
    assert run.exit.code is ExitCode.TRAINING_FAILED
    assert "SIGSEGV" in run.exit.reason
    assert {"signal": "SIGSEGV", "signum": 11} in [dict(f.detail) for f in run.exit.evidence]


def test_spawn_failure_is_config_error() -> None:
    run = Run()
    run.send(SpawnFailed, "command not found: 'x'")
    assert run.exit.code is ExitCode.CONFIG_ERROR
    assert run.exit.reason == "command not found: 'x'"


def test_sigterm_forwards_then_kills_at_the_deadline() -> None:
    run = Run().started()
    assert run.send(SignalReceived, signal.SIGTERM) == [SignalChild(signal.SIGTERM)]
    assert run.state.phase is Phase.STOPPING
    assert run.state.deadline == run.clock.monotonic() + CONFIG.grace_period
    run.clock.advance(CONFIG.grace_period - 0.001)
    assert run.send(Tick) == []
    run.clock.advance(0.001)
    assert run.send(Tick) == [KillTree()]
    assert run.state.phase is Phase.KILLED
    run.send(ChildExited, ChildStatus(signal=signal.SIGKILL))
    assert run.exit.code is ExitCode.PREEMPTED


def test_trainer_exiting_zero_after_sigterm_is_still_preempted() -> None:
    run = Run().started()
    run.send(SignalReceived, signal.SIGINT)
    run.send(ChildExited, ChildStatus(exit_status=0))
    assert run.exit.code is ExitCode.PREEMPTED


def test_second_stop_signal_is_forwarded_but_keeps_the_deadline() -> None:
    run = Run().started()
    run.send(SignalReceived, signal.SIGTERM)
    deadline = run.state.deadline
    run.clock.advance(3)
    assert run.send(SignalReceived, signal.SIGINT) == [SignalChild(signal.SIGINT)]
    assert run.state.deadline == deadline


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2])
def test_other_signals_pass_through_without_changing_the_class(signum: int) -> None:
    run = Run().started()
    assert run.send(SignalReceived, signum) == [SignalChild(signum)]
    assert run.state.phase is Phase.RUNNING
    run.send(ChildExited, ChildStatus(exit_status=0))
    assert run.exit.code is ExitCode.SUCCEEDED


def test_unwatched_signal_is_ignored() -> None:
    run = Run().started()
    assert run.send(SignalReceived, signal.SIGWINCH) == []


def test_signal_after_the_run_finished_changes_nothing() -> None:
    run = Run().started()
    run.send(ChildExited, ChildStatus(exit_status=0))
    assert run.send(SignalReceived, signal.SIGTERM) == []
    assert run.exit.code is ExitCode.SUCCEEDED


def test_stop_finding_stops_the_run_and_decides_the_class() -> None:
    run = Run().started()
    actions = run.send(Found, finding(ExitCode.DEVICE_FAILED, Urgency.STOP))
    assert actions == [SignalChild(signal.SIGTERM)]
    # a broken run gets the short failure grace, not the checkpoint-sized one
    assert run.state.deadline == run.clock.monotonic() + CONFIG.failure_grace
    run.send(ChildExited, ChildStatus(exit_status=0))
    assert run.exit.code is ExitCode.DEVICE_FAILED


def test_degraded_without_an_attached_trainer_sigterms_with_the_full_grace() -> None:
    run = Run().started()
    actions = run.send(Found, finding(ExitCode.DEVICE_DEGRADED, Urgency.CHECKPOINT, "hot"))
    assert actions == [SignalChild(signal.SIGTERM)]  # most trainers checkpoint on SIGTERM
    assert run.state.deadline == run.clock.monotonic() + CONFIG.grace_period
    run.send(ChildExited, ChildStatus(exit_status=0))
    assert run.exit.code is ExitCode.DEVICE_DEGRADED


def test_on_exit_finding_explains_a_failure_but_not_a_success() -> None:
    oom = finding(ExitCode.TRAINING_FAILED, Urgency.ON_EXIT, "CUDA ran out of memory.")
    run = Run().started()
    assert run.send(Found, oom) == []
    assert run.state.phase is Phase.RUNNING
    run.send(ChildExited, ChildStatus(exit_status=1))
    assert run.exit.code is ExitCode.TRAINING_FAILED
    assert run.exit.reason.startswith("CUDA ran out of memory.")

    ok = Run().started()
    ok.send(Found, finding(ExitCode.HANG, Urgency.ON_EXIT))
    ok.send(ChildExited, ChildStatus(exit_status=0))
    assert ok.exit.code is ExitCode.SUCCEEDED


def test_every_phase_event_pair_in_the_table_is_reachable_by_name() -> None:
    text = policy.describe()
    for phase, event in policy.TRANSITIONS:
        assert f"{phase.value:<13} {event.__name__} " in text


@pytest.mark.parametrize(
    ("findings", "status", "expected"),
    [
        # hardware outranks everything, even a stop signal that came first
        (
            [(ExitCode.PREEMPTED, Urgency.STOP), (ExitCode.DEVICE_FAILED, Urgency.STOP)],
            ChildStatus(signal=15),
            ExitCode.DEVICE_FAILED,
        ),
        # transport errors after a SIGTERM are symptoms of the pod leaving
        (
            [(ExitCode.PREEMPTED, Urgency.STOP), (ExitCode.INFRA_FAILED, Urgency.ON_EXIT)],
            ChildStatus(exit_status=1),
            ExitCode.PREEMPTED,
        ),
        # a collective timeout in the log makes a crash a HANG, not TRAINING_FAILED
        (
            [(ExitCode.TRAINING_FAILED, Urgency.ON_EXIT), (ExitCode.HANG, Urgency.ON_EXIT)],
            ChildStatus(signal=6),
            ExitCode.HANG,
        ),
        # hardware strings in the log outrank a hang they caused
        (
            [(ExitCode.HANG, Urgency.ON_EXIT), (ExitCode.DEVICE_FAILED, Urgency.ON_EXIT)],
            ChildStatus(signal=6),
            ExitCode.DEVICE_FAILED,
        ),
        # a peer's verdict explains the hang this pod then detected while stopping
        (
            [(ExitCode.PEER_LEFT, Urgency.STOP), (ExitCode.HANG, Urgency.STOP)],
            ChildStatus(signal=9),
            ExitCode.PEER_LEFT,
        ),
        # ... but a cause found here outranks it
        (
            [(ExitCode.PEER_LEFT, Urgency.STOP), (ExitCode.DEVICE_FAILED, Urgency.STOP)],
            ChildStatus(exit_status=1),
            ExitCode.DEVICE_FAILED,
        ),
        # notes never decide
        ([(ExitCode.HANG, Urgency.NOTE)], ChildStatus(exit_status=1), ExitCode.TRAINING_FAILED),
    ],
)
def test_precedence(findings, status, expected) -> None:
    evidence = [finding(code, urgency) for code, urgency in findings]
    assert classify(status, evidence)[0] is expected


def test_precedence_covers_every_failure_class() -> None:
    failures = set(ExitCode) - {ExitCode.SUCCEEDED, ExitCode.CONFIG_ERROR}
    assert set(PRECEDENCE) == failures


def test_earliest_finding_of_a_class_wins() -> None:
    first = Finding("log", "a", "first", ExitCode.INFRA_FAILED, Urgency.ON_EXIT)
    second = Finding("log", "b", "second", ExitCode.INFRA_FAILED, Urgency.ON_EXIT)
    code, reason = classify(ChildStatus(exit_status=1), [first, second])
    assert code is ExitCode.INFRA_FAILED and reason.startswith("first")


# ------------------------------------------------------------ the checkpoint handshake


def attached() -> Run:
    run = Run().started()
    run.send(Attached, 2)
    assert run.state.attached
    return run


def test_preemption_asks_an_attached_trainer_to_checkpoint_within_the_budget() -> None:
    run = attached()
    t0 = run.clock.monotonic()
    budget = CONFIG.grace_period - CONFIG.shutdown_timeout
    assert run.send(SignalReceived, signal.SIGTERM) == [
        RequestCheckpoint("preempted", t0 + budget, 1)
    ]
    assert run.state.phase is Phase.CHECKPOINTING
    run.clock.advance(2)
    # The trainer is leaving already: asked through the channel, not signalled.
    assert run.send(CheckpointCommitted, 40, 1) == [RequestStop()]
    assert run.state.phase is Phase.LEAVING
    run.send(ChildExited, ChildStatus(exit_status=0))
    assert run.exit.code is ExitCode.PREEMPTED
    committed = [f for f in run.exit.evidence if f.kind == "committed"]
    assert committed[0].detail == {"step": 40}


def test_a_missed_checkpoint_deadline_stops_the_run_and_says_so() -> None:
    run = attached()
    run.send(CheckpointCommitted, 10, 0)  # an earlier periodic save
    run.send(SignalReceived, signal.SIGTERM)
    run.clock.advance(CONFIG.grace_period - CONFIG.shutdown_timeout)
    assert run.send(Tick) == [SignalChild(signal.SIGTERM)]
    run.clock.advance(CONFIG.shutdown_timeout)
    assert run.send(Tick) == [KillTree()]  # the whole grace is spent, not a second more
    run.send(ChildExited, ChildStatus(signal=signal.SIGKILL))
    assert run.exit.code is ExitCode.PREEMPTED
    missed = [f for f in run.exit.evidence if f.kind == "not_taken"]
    assert missed and "step 10" in missed[0].summary


def test_a_stale_commit_does_not_answer_a_new_request() -> None:
    run = attached()
    run.send(SignalReceived, signal.SIGTERM)
    assert run.send(CheckpointCommitted, 5, 0) == []  # periodic, generation 0
    assert run.state.phase is Phase.CHECKPOINTING


def test_degraded_gpu_asks_an_attached_trainer_with_its_own_deadline() -> None:
    run = attached()
    t0 = run.clock.monotonic()
    actions = run.send(Found, finding(ExitCode.DEVICE_DEGRADED, Urgency.CHECKPOINT, "throttled"))
    assert actions == [RequestCheckpoint("degraded", t0 + CONFIG.degraded_deadline, 1)]
    run.send(CheckpointCommitted, 7, 1)
    run.send(ChildExited, ChildStatus(signal=signal.SIGTERM))
    assert run.exit.code is ExitCode.DEVICE_DEGRADED


def test_a_dead_gpu_during_a_checkpoint_stops_at_once() -> None:
    run = attached()
    run.send(SignalReceived, signal.SIGTERM)
    assert run.send(Found, finding(ExitCode.DEVICE_FAILED, Urgency.STOP)) == [
        SignalChild(signal.SIGTERM)
    ]
    run.send(ChildExited, ChildStatus(signal=signal.SIGTERM))
    assert run.exit.code is ExitCode.DEVICE_FAILED


# ----------------------------------------------------------------- in-place restarts

RESTARTING = policy.Config(grace_period=10.0, failure_grace=2.0, max_restarts=2)


def test_restarts_with_backoff_then_exits_with_the_last_class() -> None:
    run = Run().started()
    hang = finding(ExitCode.HANG, Urgency.STOP)

    def step(event):
        run.state, actions = policy.step(RESTARTING, run.state, event)
        return [a for a in actions if not isinstance(a, Output | Decided)]

    for attempt in (1, 2):
        step(Found(hang, run.clock.monotonic()))
        assert step(ChildExited(ChildStatus(signal=15), run.clock.monotonic())) == [KillTree()]
        assert run.state.phase is Phase.BACKOFF
        delay = RESTARTING.backoff(attempt - 1)
        run.clock.advance(delay - 0.01)
        assert step(Tick(run.clock.monotonic())) == []
        run.clock.advance(0.01)
        assert step(Tick(run.clock.monotonic())) == [Respawn(attempt)]
        step(ChildStarted(100 + attempt, run.clock.monotonic()))
    step(Found(hang, run.clock.monotonic()))
    actions = step(ChildExited(ChildStatus(signal=15), run.clock.monotonic()))
    exit_ = actions[-1]
    assert isinstance(exit_, Exit) and exit_.code is ExitCode.HANG
    restarts = [f for f in exit_.evidence if f.kind == "restarts"]
    assert restarts[0].detail == {"restarts": 2, "previous": ["HANG", "HANG"]}


def test_training_failures_and_preemptions_are_not_restarted_by_default() -> None:
    for events in ([], [(SignalReceived, signal.SIGTERM)]):
        run = Run().started()
        for make, arg in events:
            run.state, _ = policy.step(RESTARTING, run.state, make(arg, 0.0))
        run.state, actions = policy.step(
            RESTARTING, run.state, ChildExited(ChildStatus(exit_status=1), 0.0)
        )
        assert isinstance(actions[-1], Exit)


def test_a_stop_signal_during_backoff_exits_preempted_at_once() -> None:
    run = Run().started()
    run.state, _ = policy.step(
        RESTARTING, run.state, Found(finding(ExitCode.HANG, Urgency.STOP), 0.0)
    )
    run.state, _ = policy.step(RESTARTING, run.state, ChildExited(ChildStatus(signal=15), 0.0))
    assert run.state.phase is Phase.BACKOFF
    run.state, actions = policy.step(RESTARTING, run.state, SignalReceived(signal.SIGTERM, 0.1))
    assert isinstance(actions[-1], Exit) and actions[-1].code is ExitCode.PREEMPTED


def test_a_commit_made_for_a_peer_stops_this_node_as_peer_left() -> None:
    run = attached()
    actions = run.send(lambda at: CheckpointCommitted(30, 0, at, for_peer=True))
    assert actions == [RequestStop()]
    run.send(ChildExited, ChildStatus(exit_status=0))  # the trainer left after saving
    assert run.exit.code is ExitCode.PEER_LEFT
    assert "step 30" in run.exit.reason


def decisions(run: Run) -> list[Decided]:
    return [a for a in run.actions if isinstance(a, Decided)]


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda at: SignalReceived(signal.SIGTERM, at), ExitCode.PREEMPTED),
        (
            lambda at: Found(finding(ExitCode.DEVICE_FAILED, Urgency.STOP), at),
            ExitCode.DEVICE_FAILED,
        ),
        (
            lambda at: Found(finding(ExitCode.DEVICE_DEGRADED, Urgency.CHECKPOINT), at),
            ExitCode.DEVICE_DEGRADED,
        ),
    ],
)
def test_a_stop_is_decided_before_the_child_is_signalled(make, code) -> None:
    run = attached()
    run.send(make)
    (decided,) = decisions(run)
    assert decided.code is code
    first_effect = next(a for a in run.actions if isinstance(a, SignalChild | RequestCheckpoint))
    assert run.actions.index(decided) < run.actions.index(first_effect)


def test_a_note_or_a_matched_line_decides_nothing() -> None:
    run = attached()
    run.send(lambda at: Found(finding(ExitCode.INFRA_FAILED, Urgency.ON_EXIT), at))
    assert decisions(run) == []


def test_a_peer_leaving_does_not_cut_this_pods_own_checkpoint_short() -> None:
    run = attached()
    run.send(SignalReceived, signal.SIGTERM)
    assert run.state.phase is Phase.CHECKPOINTING
    assert run.send(lambda at: Found(finding(ExitCode.PEER_LEFT, Urgency.STOP), at)) == []
    assert run.state.phase is Phase.CHECKPOINTING  # its deadline still bounds it
    run.send(CheckpointCommitted, 40, run.state.generation)
    run.send(ChildExited, ChildStatus(exit_status=0))
    assert run.exit.code is ExitCode.PREEMPTED  # its own cause outranks the peer's


def test_a_periodic_commit_changes_nothing_but_the_evidence() -> None:
    run = attached()
    assert run.send(CheckpointCommitted, 30, 0) == []
    assert run.state.phase is Phase.RUNNING and run.state.committed_step == 30


# ------------------------------------------------------- leaving after a commit

LEAVE = policy.Config(grace_period=30.0, failure_grace=2.0, shutdown_timeout=6.0)


def _committed_after(first: str, commit_at: float) -> tuple[Run, float]:
    """A run asked to checkpoint by `first` at t0, committed `commit_at` seconds later."""
    run = attached()
    t0 = run.clock.monotonic()
    causes = {
        "sigterm": lambda at: SignalReceived(signal.SIGTERM, at),
        "degraded": lambda at: Found(finding(ExitCode.DEVICE_DEGRADED, Urgency.CHECKPOINT), at),
    }
    run.state, _ = policy.step(LEAVE, run.state, causes[first](t0))
    run.clock.advance(commit_at)
    event = CheckpointCommitted(40, run.state.generation, run.clock.monotonic())
    run.state, actions = policy.step(LEAVE, run.state, event)
    assert [a for a in actions if not isinstance(a, Output)] == [RequestStop()]
    return run, t0


@pytest.mark.parametrize(
    ("first", "commit_at", "term_at", "kill_at"),
    [
        # Plenty of the kubelet's grace left: the full shutdown timeout, twice.
        ("sigterm", 2.0, 2.0 + 6.0, 2.0 + 6.0 + 6.0),
        # The commit came late: half of what is left is kept for SIGTERM, all within 30 s.
        ("sigterm", 24.0, 27.0, 30.0),
        # A degraded GPU has no kubelet deadline.
        ("degraded", 50.0, 56.0, 62.0),
    ],
)
def test_after_a_commit_the_trainer_gets_the_shutdown_timeout_then_sigterm_then_sigkill(
    first: str, commit_at: float, term_at: float, kill_at: float
) -> None:
    run, t0 = _committed_after(first, commit_at)
    assert run.state.phase is Phase.LEAVING and run.state.deadline == t0 + term_at

    def tick_at(t: float) -> list:
        run.clock.advance(t0 + t - run.clock.monotonic())
        run.state, actions = policy.step(LEAVE, run.state, Tick(run.clock.monotonic()))
        return [a for a in actions if not isinstance(a, Output)]

    assert tick_at(term_at - 0.01) == []
    assert tick_at(term_at) == [SignalChild(signal.SIGTERM)]
    assert run.state.phase is Phase.STOPPING and run.state.deadline == t0 + kill_at
    assert tick_at(kill_at) == [KillTree()]


def test_a_trainer_that_leaves_by_itself_is_never_signalled() -> None:
    run, _ = _committed_after("sigterm", 2.0)
    run.clock.advance(1.0)
    run.state, actions = policy.step(
        LEAVE, run.state, ChildExited(ChildStatus(exit_status=0), run.clock.monotonic())
    )
    assert not [a for a in actions if isinstance(a, SignalChild)]
    exit_ = actions[-1]
    assert isinstance(exit_, Exit) and exit_.code is ExitCode.PREEMPTED


@pytest.mark.parametrize(
    ("event", "expect"),
    [
        # Another stop signal while leaving: now by signal, within the grace.
        (lambda at: SignalReceived(signal.SIGTERM, at), [SignalChild(signal.SIGTERM)]),
        # A dead GPU while leaving: stop at once.
        (
            lambda at: Found(finding(ExitCode.DEVICE_FAILED, Urgency.STOP), at),
            [SignalChild(signal.SIGTERM)],
        ),
        # A peer leaving changes nothing: this trainer is already on its way out.
        (lambda at: Found(finding(ExitCode.PEER_LEFT, Urgency.STOP), at), []),
    ],
)
def test_what_interrupts_leaving(event, expect) -> None:
    run, _ = _committed_after("sigterm", 2.0)
    run.state, actions = policy.step(LEAVE, run.state, event(run.clock.monotonic()))
    assert [a for a in actions if not isinstance(a, Output | Decided)] == expect
    assert run.state.phase is (Phase.STOPPING if expect else Phase.LEAVING)
