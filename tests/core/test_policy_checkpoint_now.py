"""An operator's checkpoint (`CheckpointNow`) in the policy's table, without processes.

It is not a stop: the run stays RUNNING, the request goes out with reason `requested`, and
every asker is answered once: committed, missed at the deadline, or refused.
"""

from __future__ import annotations

import signal

import pytest

from supervisor.core import policy
from supervisor.core.actions import AnswerRequests, Outcome, RequestCheckpoint, RequestStop
from supervisor.core.events import (
    Attached,
    CheckpointCommitted,
    CheckpointNow,
    ChildExited,
    ChildStatus,
    SignalReceived,
    Tick,
)
from supervisor.core.exitcodes import ExitCode
from supervisor.core.outputs import CheckpointRequestAnswered, CheckpointRequested
from supervisor.core.policy import Phase
from tests.core.test_policy import CONFIG, Run


def attached() -> Run:
    run = Run().started()
    run.send(Attached, 1)
    return run


def answers(run: Run) -> list[AnswerRequests]:
    return [a for a in run.actions if isinstance(a, AnswerRequests)]


def test_a_request_is_sent_with_reason_requested_and_the_run_keeps_running() -> None:
    run = attached()
    t0 = run.clock.monotonic()
    assert run.send(CheckpointNow, "a", 30.0) == [RequestCheckpoint("requested", t0 + 30, 1)]
    assert run.state.phase is Phase.RUNNING and run.state.deadline == t0 + 30
    said = [a for a in run.actions if isinstance(a, CheckpointRequested)]
    assert said[0].reason == "requested" and said[0].generation == 1
    run.clock.advance(3)
    # The commit answers the asker; nobody is asked to leave.
    assert run.send(CheckpointCommitted, 40, 1) == [
        AnswerRequests(("a",), Outcome.COMMITTED, "checkpoint step 40 was committed", 40)
    ]
    assert run.state.phase is Phase.RUNNING and run.state.deadline is None
    assert not [a for a in run.actions if isinstance(a, RequestStop)]
    run.send(ChildExited, ChildStatus(exit_status=0))
    assert run.exit.code is ExitCode.SUCCEEDED


def test_a_missed_deadline_answers_missed_and_leaves_training_alone() -> None:
    run = attached()
    run.send(CheckpointNow, "a", 2.0)
    run.clock.advance(1.9)
    assert run.send(Tick) == []
    run.clock.advance(0.1)
    (missed,) = run.send(Tick)
    assert missed.outcome is Outcome.MISSED and missed.requests == ("a",)
    assert "should_checkpoint" in missed.message
    assert run.state.phase is Phase.RUNNING and run.state.deadline is None
    # A late commit is only a commit.
    assert run.send(CheckpointCommitted, 7, 1) == []


def test_requests_while_one_is_pending_join_it_and_one_commit_answers_all() -> None:
    run = attached()
    t0 = run.clock.monotonic()
    run.send(CheckpointNow, "a", 10.0)
    run.clock.advance(1)
    assert run.send(CheckpointNow, "b", 30.0) == []  # no second request on the channel
    assert run.state.asked == ("a", "b") and run.state.deadline == t0 + 31
    assert run.send(CheckpointCommitted, 12, 1)[0].requests == ("a", "b")
    assert run.state.asked == ()
    # The next request is a new one.
    assert run.send(CheckpointNow, "c", 5.0)[0].generation == 2


def test_a_periodic_commit_does_not_answer_a_request() -> None:
    run = attached()
    run.send(CheckpointNow, "a", 10.0)
    assert run.send(CheckpointCommitted, 5, 0) == []
    assert run.state.asked == ("a",)


def test_the_trainer_not_attached_is_refused_at_once() -> None:
    run = Run().started()
    (refused,) = run.send(CheckpointNow, "a", 10.0)
    assert refused.outcome is Outcome.REFUSED and "supervisor.attach()" in refused.message
    assert run.state.phase is Phase.RUNNING and run.state.asked == ()


def _checkpointing() -> Run:
    run = attached()
    run.send(SignalReceived, signal.SIGTERM)
    return run


def _leaving() -> Run:
    run = _checkpointing()
    run.send(CheckpointCommitted, 3, 1)
    return run


def _stopping() -> Run:
    run = _checkpointing()
    run.clock.advance(CONFIG.grace_period)
    run.send(Tick)
    return run


@pytest.mark.parametrize(
    ("make", "phase", "words"),
    [
        (Run, Phase.STARTING, "starting"),
        (_checkpointing, Phase.CHECKPOINTING, "stopping"),
        (_leaving, Phase.LEAVING, "stopping"),
        (_stopping, Phase.STOPPING, "stopping"),
    ],
)
def test_a_request_while_the_run_is_not_running_is_refused(make, phase, words) -> None:
    run = make()
    assert run.state.phase is phase
    before = run.state
    (refused,) = run.send(CheckpointNow, "a", 10.0)
    assert refused.outcome is Outcome.REFUSED and words in refused.message
    assert run.state == before  # nothing else changes


def test_a_stop_signal_while_waiting_serves_the_asker_with_the_checkpoint_on_the_way_out() -> None:
    run = attached()
    run.send(CheckpointNow, "a", 30.0)
    assert run.send(SignalReceived, signal.SIGTERM)[0].reason == "preempted"
    assert run.state.phase is Phase.CHECKPOINTING
    actions = run.send(CheckpointCommitted, 9, 2)
    assert actions[0] == AnswerRequests(
        ("a",), Outcome.COMMITTED, "checkpoint step 9 was committed", 9
    )
    assert actions[-1] == RequestStop()


def test_the_command_exiting_while_waiting_refuses_the_asker() -> None:
    run = attached()
    run.send(CheckpointNow, "a", 30.0)
    (refused, *_) = run.send(ChildExited, ChildStatus(exit_status=0))
    assert refused.outcome is Outcome.REFUSED and "exited with status 0" in refused.message
    assert run.exit.code is ExitCode.SUCCEEDED


def test_every_answer_is_also_an_output_for_the_event_log() -> None:
    run = attached()
    run.send(CheckpointNow, "a", 1.0)
    run.clock.advance(1)
    run.send(Tick)
    said = [a for a in run.actions if isinstance(a, CheckpointRequestAnswered)]
    assert [(s.requests, s.outcome, s.step) for s in said] == [(("a",), "missed", None)]


def test_the_table_has_a_row_for_every_phase_that_can_hear_a_request() -> None:
    rows = {phase for phase, event in policy.TRANSITIONS if event is CheckpointNow}
    assert rows == set(Phase) - {Phase.DONE}
    assert (Phase.RUNNING, Tick) in policy.TRANSITIONS
