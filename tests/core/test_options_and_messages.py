"""Options validate by raising; the termination message always fits the kubelet's limit."""

from __future__ import annotations

import json
import math

import pytest

from supervisor.core.errors import ConfigError
from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.core.options import Options
from supervisor.core.outputs import Exited
from supervisor.outputs.termination import TERMINATION_MESSAGE_LIMIT, termination_message


@pytest.mark.parametrize("grace", [-1.0, math.inf, math.nan])
def test_bad_grace_period_is_a_config_error(grace: float) -> None:
    with pytest.raises(ConfigError, match="--grace-period"):
        Options(command=("true",), grace_period=grace)


def test_missing_command_says_how_to_give_one() -> None:
    with pytest.raises(ConfigError, match=r"supervise -- python train\.py"):
        Options(command=())


def test_options_are_frozen() -> None:
    options = Options(command=("true",))
    with pytest.raises(AttributeError):
        options.grace_period = 1.0  # type: ignore[misc]


def test_small_message_is_complete() -> None:
    evidence = [
        Finding(
            "child", "exit", "The training command exited with status 3.", detail={"exitStatus": 3}
        )
    ]
    body = json.loads(termination_message(Exited(ExitCode.TRAINING_FAILED, "why", tuple(evidence))))
    assert body == {
        "exitCode": 80,
        "name": "TRAINING_FAILED",
        "action": "Count",
        "reason": "why",
        "evidence": [
            {
                "source": "child",
                "kind": "exit",
                "summary": "The training command exited with status 3.",
                "exitStatus": 3,
            }
        ],
    }


def test_huge_evidence_is_shrunk_below_the_limit_keeping_the_decisive_finding_first() -> None:
    decisive = Finding(
        "hang", "stall", "rank 1 stalled", ExitCode.HANG, Urgency.STOP, {"stack": "x" * 10_000}
    )
    noise = [Finding("log", f"n{i}", "y" * 500, detail={"line": "z" * 2000}) for i in range(50)]
    text = termination_message(Exited(ExitCode.HANG, "r" * 100, (*noise, decisive)))
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    body = json.loads(text)
    assert body["evidence"][0]["kind"] == "stall"
    assert body["evidenceDropped"] > 0


def test_even_an_absurd_reason_fits() -> None:
    text = termination_message(Exited(ExitCode.TRAINING_FAILED, "é" * 10_000))
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert json.loads(text)["exitCode"] == 80
