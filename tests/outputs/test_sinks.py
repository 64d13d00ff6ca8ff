"""Outputs are typed and registered once; the router feeds every sink and survives a dead one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.core import outputs as out
from supervisor.core.clock import FakeClock
from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.outputs import Outputs, open_outputs
from supervisor.outputs.eventlog import EventLog
from supervisor.outputs.termination import TerminationLog
from supervisor.process.logpump import SharedStream


def test_every_output_is_registered_under_its_own_name() -> None:
    assert out.REGISTRY["exit"] is out.Exited
    assert all(cls.name == name for name, cls in out.REGISTRY.items())
    assert all(cls.meaning() for cls in out.REGISTRY.values())


def test_an_output_name_cannot_be_registered_twice() -> None:
    with pytest.raises(TypeError, match="registered twice"):

        class Again(out.Output):
            """A second `note`."""

            name = "note"


def test_outputs_are_immutable_records() -> None:
    stop = out.Stopping(reason="why", signal="SIGTERM", kill_in_s=3.0)
    assert stop == out.Stopping("why", "SIGTERM", 3.0) and stop != out.Stopping(
        "why", "SIGINT", 3.0
    )
    assert stop.fields() == {"reason": "why", "signal": "SIGTERM", "kill_in_s": 3.0}
    assert repr(stop) == "Stopping(reason='why', signal='SIGTERM', kill_in_s=3.0)"
    with pytest.raises(AttributeError):
        stop.reason = "other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing field 'kill_in_s'"):
        out.Stopping(reason="why", signal="SIGTERM")
    with pytest.raises(TypeError, match="unexpected"):
        out.Stopping("why", "SIGTERM", 3.0, kill_in_s=4.0)
    assert out.Exited(ExitCode.SUCCEEDED, "done").evidence == ()  # a default


def test_the_exit_event_and_the_termination_message_agree(tmp_path: Path) -> None:
    child = Finding("child", "exit", "The training command exited with status 1.")
    decisive = Finding("hang", "heartbeat_stall", "rank 1 stalled", ExitCode.HANG, Urgency.STOP)
    verdict = out.Exited(ExitCode.HANG, "rank 1 stalled", (child, decisive))
    events, term = tmp_path / "events", tmp_path / "term"
    outputs = open_outputs(str(events), str(term), clock=FakeClock())
    outputs.emit(verdict)
    outputs.close()
    line = json.loads(events.read_text())
    message = json.loads(term.read_text())
    assert line["event"] == "exit" and line["exitCode"] == message["exitCode"] == 84
    assert line["evidence"] == message["evidence"]
    assert [e["kind"] for e in message["evidence"]] == ["heartbeat_stall", "exit"]


def test_a_sink_that_fails_is_reported_once_and_the_others_go_on(tmp_path: Path) -> None:
    events = tmp_path / "events"
    outputs = Outputs(
        [TerminationLog(str(tmp_path)), EventLog.open(str(events), stderr=SharedStream())],  # a dir
        clock=FakeClock(),
    )
    for _ in range(2):
        outputs.emit(out.refused(ExitCode.CONFIG_ERROR, "bad flag"))
    outputs.close()
    names = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert names == ["output_unwritable", "exit", "exit"]
