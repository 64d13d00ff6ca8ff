"""Two "nodes" on localhost, as an Indexed Job would run them: `supervise --nproc-per-node 1`
with JOB_COMPLETION_INDEX 0 and 1, one shared checkpoint dir (and so one run ledger).

One incident is counted once across the gang: the pod that holds its cause keeps its class,
and the other pod, which only saw a peer vanish, leaves with PEER_LEFT (87) naming it. Each
case is then read the way the cluster reads it: the rendered Job `podFailurePolicy` and
the JobSet rules, through the project's simulation of both controllers, charge at most one
restart for it.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from supervisor.core.exitcodes import ExitCode, JobAction
from supervisor.k8s.render import render_job, render_jobset
from supervisor.k8s.simulate import CHARGED
from tests.k8s.test_k8s_incidents import OPTS, _pod, job_counts, jobset_outcomes
from tests.process.runs import (
    events,
    finish,
    supervised,
    termination,
    two_nodes,
    wait_for_line,
)

pytestmark = pytest.mark.slow

GANG_TRAINER = str(Path(__file__).with_name("gang_trainer.py"))
POLL = 0.5  # --gang-poll-interval for these runs
FAST_GANG = ["--gang-poll-interval", str(POLL)]


def charged_once(codes: list[int]) -> None:
    """The cluster's view: the rendered rules charge this incident at most once."""
    pods = [_pod(index, code) for index, code in enumerate(codes)]
    assert job_counts(render_job(OPTS)[1]["spec"]["podFailurePolicy"], pods) <= 1
    (jobset,) = render_jobset(OPTS)
    for per_job in (len(pods), 1):
        assert len(jobset_outcomes(jobset, pods, per_job) & CHARGED) <= 1


def peer_named(tmp: Path, name: str, holder: str) -> dict:
    message = termination(tmp, name)
    assert message["name"] == "PEER_LEFT"
    first = message["evidence"][0]
    assert first["kind"] in ("peer_verdict", "peer_claim")
    assert first["peer"]["pod"] == holder
    return first


def ledger_verdicts(ckpt: Path) -> dict[str, dict]:
    found = {}
    for path in (ckpt / "_ledger" / "verdicts").glob("*.json"):
        record = json.loads(path.read_text())
        found[record["pod"]] = record
    return found


def test_two_nodes_train_to_completion(tmp_path: Path) -> None:
    nodes = two_nodes(tmp_path / "ckpt", tmp_path, "run", steps=60)
    assert [finish(n) for n in nodes] == [0, 0]
    verdicts = ledger_verdicts(tmp_path / "ckpt")
    assert {pod: v["name"] for pod, v in verdicts.items()} == {
        "train-0": "SUCCEEDED",
        "train-1": "SUCCEEDED",
    }
    for verdict in verdicts.values():  # where the time went, and how far each rank got
        assert verdict["times"]["init_s"] > 0 and verdict["times"]["steady_s"] > 0
        assert verdict["last_steps"] == {"0": 60}  # train.py beats the step it reached


def test_a_fatal_xid_on_node_1_gives_82_there_and_87_on_node_0(tmp_path: Path) -> None:
    scenario = tmp_path / "xid79.json"
    # Late enough that both nodes are training when the GPU falls off the bus.
    scenario.write_text(json.dumps({"gpus": 1, "timeline": [{"at": 12.0, "gpu": 0, "xid": 79}]}))
    nodes = two_nodes(
        tmp_path / "ckpt",
        tmp_path,
        "run",
        *FAST_GANG,
        steps=100_000,
        per_node={1: ["--fake-gpus", str(scenario), "--gpu-poll-interval", "0.2"]},
    )
    assert finish(nodes[1], timeout=90) == 82
    assert finish(nodes[0], timeout=60) == 87
    device = termination(tmp_path, "run1")
    assert device["name"] == "DEVICE_FAILED"
    assert device["evidence"][0]["xid"] == 79
    peer = peer_named(tmp_path, "run0", "train-1")
    assert peer["peer"]["class"] == "DEVICE_FAILED"
    charged_once([82, 87])


def test_an_exception_in_node_1s_trainer_gives_80_there_and_87_on_node_0(tmp_path) -> None:
    script = [GANG_TRAINER, "--raise-on", "1", "--at", "30"]
    nodes = two_nodes(tmp_path / "ckpt", tmp_path, "run", *FAST_GANG, script=script)
    assert finish(nodes[1], timeout=90) == 80
    assert finish(nodes[0], timeout=60) == 87
    assert termination(tmp_path, "run1")["name"] == "TRAINING_FAILED"
    peer_named(tmp_path, "run0", "train-1")
    charged_once([80, 87])


def test_sigterm_to_node_1_only_gives_85_there_and_87_on_node_0(tmp_path: Path) -> None:
    # An uninstrumented trainer: nothing agrees on a checkpoint; node 0's gloo rank just
    # loses its peer.
    nodes = two_nodes(tmp_path / "ckpt", tmp_path, "run", *FAST_GANG, script=[GANG_TRAINER])
    wait_for_line(nodes[1], b"step 20")
    nodes[1].send_signal(signal.SIGTERM)
    assert finish(nodes[1], timeout=60) == 85
    assert finish(nodes[0], timeout=60) == 87
    peer = peer_named(tmp_path, "run0", "train-1")
    assert peer["peer"]["class"] == "PREEMPTED"
    charged_once([85, 87])


def test_a_peer_verdict_stops_a_node_blocked_in_a_collective_at_once(tmp_path) -> None:
    # Node 0 waits on the rendezvous store, which outlives node 1 and would hold it for
    # 10 minutes; node 1's trainer raises. Only the ledger can tell node 0.
    script = [GANG_TRAINER, "--raise-on", "1", "--block-on", "0", "--at", "30"]
    nodes = two_nodes(tmp_path / "ckpt", tmp_path, "run", *FAST_GANG, script=script)
    assert finish(nodes[1], timeout=90) == 80
    assert finish(nodes[0], timeout=60) == 87
    verdicts = ledger_verdicts(tmp_path / "ckpt")
    verdict_at = verdicts["train-1"]["wall"]
    # The record names the peer as the stopping finding did, so the report charges the
    # incident to its class, not to PEER_LEFT.
    assert verdicts["train-0"]["peer"]["pod"] == "train-1"
    assert verdicts["train-0"]["peer"]["name"] == "TRAINING_FAILED"
    exit_event = events(tmp_path, "run0")[-1]
    assert exit_event["event"] == "exit"
    stopped_after = _wall(exit_event["time"]) - verdict_at
    assert stopped_after < POLL + 2.0, stopped_after
    stopping = next(e for e in events(tmp_path, "run0") if e["event"] == "stopping")
    assert "Another pod of the gang left first" in stopping["reason"]
    charged_once([80, 87])


def test_three_device_verdicts_on_one_node_make_the_fourth_counted(tmp_path: Path) -> None:
    scenario = tmp_path / "xid79.json"
    scenario.write_text(json.dumps({"gpus": 1, "timeline": [{"at": 0.5, "gpu": 0, "xid": 79}]}))
    env = {"SUPERVISE_NODE_NAME": "gpu-node-7", "SUPERVISE_POD_NAME": "train-0"}
    codes = []
    for attempt in range(4):
        proc = supervised(
            tmp_path / "ckpt",
            tmp_path,
            f"run{attempt}",
            "--fake-gpus",
            str(scenario),
            "--gpu-poll-interval",
            "0.2",
            command=[sys.executable, "-c", "import time; time.sleep(60)"],
            env={**env, "SUPERVISE_POD_NAME": f"train-0-{attempt}"},
        )
        codes.append(finish(proc, timeout=60))
    assert codes == [82, 82, 82, 86]
    fourth = termination(tmp_path, "run3")
    assert "gpu-node-7" in fourth["reason"]
    history = fourth["evidence"][0]["history"]
    assert [h["class"] for h in history] == ["DEVICE_FAILED"] * 3
    assert ExitCode.from_code(86).action is JobAction.COUNT

    # --preflight reads the same history: a healthy GPU on that node starts nothing.
    healthy = tmp_path / "healthy.json"
    healthy.write_text(json.dumps({"gpus": 1, "timeline": []}))
    proc = supervised(
        tmp_path / "ckpt",
        tmp_path,
        "run4",
        "--preflight",
        "--fake-gpus",
        str(healthy),
        command=[sys.executable, "-c", f"open({str(tmp_path / 'started')!r}, 'w')"],
        env={**env, "SUPERVISE_POD_NAME": "train-0-4"},
    )
    assert finish(proc, timeout=60) == 86
    refused = termination(tmp_path, "run4")
    assert refused["evidence"][0]["kind"] == "node_free_exits_used"
    assert not (tmp_path / "started").exists()


def _wall(iso: str) -> float:
    from datetime import datetime

    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=None).timestamp() - (
        time.timezone if time.daylight == 0 else time.altzone
    )
