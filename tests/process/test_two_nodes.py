"""Two "nodes" on localhost, as an Indexed Job would run them: `supervise --nproc-per-node 1`
with JOB_COMPLETION_INDEX 0 and 1, training the DDP example over gloo.

A fatal Xid injected on node 1 (a fake GPU) must make node 1 exit DEVICE_FAILED (82, the
Job reschedules it without counting) and node 0, whose peer vanished mid-collective, exit
INFRA_FAILED (86, counted): gloo raises "Connection closed by peer" within seconds, which
is a transport failure, not node 0's training code, and not a hang, since nothing waits
for a timeout.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.process.runs import finish, termination, two_nodes

pytestmark = pytest.mark.slow


def test_two_nodes_train_to_completion(tmp_path: Path) -> None:
    nodes = two_nodes(tmp_path / "ckpt", tmp_path, "run", steps=60)
    assert [finish(n) for n in nodes] == [0, 0]


def test_a_fatal_xid_on_node_1_gives_82_there_and_86_on_node_0(tmp_path: Path) -> None:
    scenario = tmp_path / "xid79.json"
    # Late enough that both nodes are training when the GPU falls off the bus.
    scenario.write_text(json.dumps({"gpus": 1, "timeline": [{"at": 12.0, "gpu": 0, "xid": 79}]}))
    nodes = two_nodes(
        tmp_path / "ckpt",
        tmp_path,
        "run",
        steps=100_000,
        per_node={1: ["--fake-gpus", str(scenario), "--gpu-poll-interval", "0.2"]},
    )
    assert finish(nodes[1], timeout=60) == 82
    failed_at = time.monotonic()
    assert finish(nodes[0], timeout=60) == 86
    assert time.monotonic() - failed_at < 30  # bounded: no collective timeout is waited out

    device = termination(tmp_path, "run1")
    assert device["name"] == "DEVICE_FAILED"
    assert device["evidence"][0]["xid"] == 79
    peer = termination(tmp_path, "run0")
    assert peer["name"] == "INFRA_FAILED"
    assert peer["evidence"][0]["kind"] in ("peer_connection_lost", "dist_network_error")
