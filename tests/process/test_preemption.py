"""The headline: stopped mid-run, a supervised trainer checkpoints in time, leaves with the
right code, and the next run continues to the same parameters, bit for bit.

Real processes throughout: the installed `supervise`, examples/train.py with torch on the
CPU, the checkpoint store on a local directory, real signals, and torchrun with gloo.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

import supervisor
from tests.process.runs import (
    STEPS,
    TRAIN,
    events,
    finish,
    supervised,
    termination,
    two_nodes,
    wait_for_event,
    wait_for_line,
)

pytestmark = pytest.mark.slow


def final_state(ckpt: Path) -> dict:
    store = supervisor.CheckpointStore(str(ckpt))
    assert store.latest() == STEPS
    return store.load(STEPS)


def assert_bitwise_equal(a: dict, b: dict) -> None:
    for part in ("model", "optimizer"):
        flat_a, flat_b = _flatten(a[part]), _flatten(b[part])
        assert flat_a.keys() == flat_b.keys()
        for key, value in flat_a.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, flat_b[key]), f"{part}.{key} differs"
            else:
                assert value == flat_b[key], f"{part}.{key} differs"


def _flatten(tree: object, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out: dict = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, list | tuple):
        return _flatten(dict(enumerate(tree)), prefix)
    return {prefix: tree}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The reference: the same training, never stopped."""
    tmp = tmp_path_factory.mktemp("reference")
    assert finish(supervised(tmp / "ckpt", tmp, "ref")) == 0
    return final_state(tmp / "ckpt")


def test_sigterm_checkpoints_within_the_budget_and_resumes_bitwise(uninterrupted, tmp_path):
    ckpt = tmp_path / "ckpt"
    grace, shutdown = 12.0, 4.0
    proc = supervised(
        ckpt, tmp_path, "first", "--grace-period", str(grace), "--shutdown-timeout", str(shutdown)
    )
    wait_for_line(proc, b"step   100")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert finish(proc) == 85
    took = time.monotonic() - sent

    message = termination(tmp_path, "first")
    assert message["name"] == "PREEMPTED"
    committed = next(e for e in message["evidence"] if e["kind"] == "committed")
    step = committed["step"]
    assert 100 <= step < STEPS
    requested = next(e for e in events(tmp_path, "first") if e["event"] == "checkpoint_requested")
    done = next(e for e in events(tmp_path, "first") if e["event"] == "checkpoint_committed")
    assert requested["reason"] == "preempted"
    assert done["mono"] - requested["mono"] <= grace - shutdown  # inside the checkpoint budget
    assert took < grace
    assert supervisor.CheckpointStore(str(ckpt)).manifest(step).reason == "preempted"

    second = supervised(ckpt, tmp_path, "second")
    assert finish(second) == 0
    assert f"resumed from step {step}" in second.output
    assert_bitwise_equal(final_state(ckpt), uninterrupted)


def test_a_degraded_gpu_checkpoints_exits_83_and_resumes_bitwise(uninterrupted, tmp_path):
    scenario = tmp_path / "throttle.json"
    # Late enough that the trainer (importing torch on a busy machine) has attached.
    scenario.write_text(
        json.dumps(
            {
                "gpus": 1,
                "timeline": [{"at": 12.0, "gpu": 0, "set": {"clock_event_reasons": 64}}],
            }
        )
    )
    ckpt = tmp_path / "ckpt"
    args = ["--fake-gpus", str(scenario), "--gpu-poll-interval", "0.2"]
    slow = [
        sys.executable,
        TRAIN,
        "--steps",
        str(STEPS),
        "--step-time",
        "0.05",
        "--checkpoint-every",
        "1000",
    ]
    assert finish(supervised(ckpt, tmp_path, "first", *args, command=slow)) == 83
    message = termination(tmp_path, "first")
    assert message["name"] == "DEVICE_DEGRADED"
    step = next(e for e in message["evidence"] if e["kind"] == "committed")["step"]
    assert supervisor.CheckpointStore(str(ckpt)).manifest(step).reason == "degraded"

    assert finish(supervised(ckpt, tmp_path, "second")) == 0
    assert_bitwise_equal(final_state(ckpt), uninterrupted)


NEVER_CHECKS = """
import time, supervisor
sup = supervisor.attach()
print("ready", flush=True)
step = 0
while True:  # beats, but never looks at checkpoint requests
    step += 1
    sup.step(step)
    time.sleep(0.01)
"""


def test_a_trainer_that_never_checkpoints_is_stopped_at_the_deadline(tmp_path):
    grace, shutdown = 3.0, 1.0
    proc = supervised(
        tmp_path / "ckpt",
        tmp_path,
        "run",
        "--grace-period",
        str(grace),
        "--shutdown-timeout",
        str(shutdown),
        command=[sys.executable, "-c", NEVER_CHECKS],
    )
    wait_for_line(proc, b"ready")
    wait_for_event(tmp_path, "run", "trainer_attached")  # the handshake watcher saw the rank
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert finish(proc) == 85
    assert time.monotonic() - sent < grace + 1.5
    message = termination(tmp_path, "run")
    missed = next(e for e in message["evidence"] if e["kind"] == "not_taken")
    assert "No checkpoint was taken" in missed["summary"]


@pytest.fixture(scope="module")
def uninterrupted_ddp(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("reference-ddp")
    nodes = two_nodes(tmp / "ckpt", tmp, "ref")
    assert [finish(n) for n in nodes] == [0, 0]
    return final_state(tmp / "ckpt")


def test_two_nodes_preempting_one_checkpoints_both_at_one_step_and_resume_bitwise(
    uninterrupted_ddp, tmp_path
):
    ckpt = tmp_path / "ckpt"
    nodes = two_nodes(ckpt, tmp_path, "first")
    wait_for_line(nodes[0], b"step   100")
    nodes[0].send_signal(signal.SIGTERM)  # only node 0's pod is told to leave
    assert [finish(n) for n in nodes] == [85, 87]  # node 1 left with its peer: PEER_LEFT
    steps = []
    for index in (0, 1):
        message = termination(tmp_path, f"first{index}")
        kinds = {e["kind"]: e for e in message["evidence"]}
        steps.append(kinds["committed"]["step"] if index == 0 else kinds["peer_preempted"]["step"])
    assert steps[0] == steps[1]  # one agreed step on both
    assert supervisor.CheckpointStore(str(ckpt)).latest() == steps[0]

    again = two_nodes(ckpt, tmp_path, "second")
    assert [finish(n) for n in again] == [0, 0]
    assert_bitwise_equal(final_state(ckpt), uninterrupted_ddp)
