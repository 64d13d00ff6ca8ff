"""The run ledger on every backend (memory://, a local dir, S3 on moto): create-only records,
peer attribution, exactly one counted holder, the gang stop, and a node's free exits.

Two or more `Member`s on one ledger play the pods of a gang; everything they read and write
goes through the real storage edge (`FsLedger`).
"""

from __future__ import annotations

import queue
import threading

import pytest

from supervisor.core.actions import Exit
from supervisor.core.events import Finding, Found, Urgency
from supervisor.core.exitcodes import ExitCode
from supervisor.gang import records
from supervisor.gang.options import GangOptions, Identity
from supervisor.run.gang import Member, VerdictFacts
from supervisor.storage.ledger import FsLedger

FACTS = VerdictFacts({0: 41, 1: 40}, 40)
FAST = GangOptions(peer_wait=3.0, poll_interval=0.1, free_exits=3, io_timeout=20.0)


def ledger(backend) -> FsLedger:
    return FsLedger(backend.url + "/_ledger", backend.options or None)


def member(backend, rank: int, node: str | None = None, **options) -> Member:
    identity = Identity(pod=f"train-{rank}", node_rank=rank, node=node or f"node-{rank}")
    joined = Member(ledger(backend), identity, GangOptions(**{**FAST.__dict__, **options}))
    joined.begin(1, None)
    return joined


def verdict(code: ExitCode, kind: str, urgency: Urgency = Urgency.STOP) -> Exit:
    finding = Finding("test", kind, f"{kind} happened", code, urgency)
    return Exit(code, finding.summary, (finding,))


def test_records_are_create_only_and_listed_by_folder(backend) -> None:
    store = ledger(backend)
    assert store.list() == []
    assert store.create("verdicts/a.json", b"{}") is True
    assert store.create("verdicts/a.json", b"changed") is False
    assert store.read("verdicts/a.json") == b"{}"
    assert store.read("verdicts/missing.json") is None
    assert store.list("verdicts") == ["verdicts/a.json"]
    assert store.list("attempts") == []


def test_a_cause_is_written_when_decided_and_a_symptom_pod_leaves_with_peer_left(backend):
    node0, node1 = member(backend, 0), member(backend, 1)
    xid = verdict(ExitCode.DEVICE_FAILED, "xid")
    assert node1.decided(xid, FACTS) is xid  # written before the tree is stopped
    assert node1.settle(xid, FACTS).code is ExitCode.DEVICE_FAILED

    lost = verdict(ExitCode.INFRA_FAILED, "peer_connection_lost", Urgency.ON_EXIT)
    settled = node0.settle(lost, FACTS)
    assert settled.code is ExitCode.PEER_LEFT
    assert settled.evidence[0].detail["peer"]["pod"] == "train-1"
    assert "DEVICE_FAILED" in settled.reason

    view = records.LedgerView.read(
        {name: ledger(backend).read(name) for name in ledger(backend).list()}
    )
    written = {v.pod: v for _, v in view.verdicts()}
    assert written["train-1"].name == "DEVICE_FAILED" and written["train-1"].role.value == "cause"
    assert written["train-0"].name == "PEER_LEFT" and written["train-0"].peer.pod == "train-1"
    assert written["train-0"].last_steps == {0: 41, 1: 40}
    assert len(view.attempts()) == 2


def test_when_every_pod_hangs_exactly_one_keeps_the_counted_class(backend) -> None:
    pods = [member(backend, rank, peer_wait=0.5) for rank in range(3)]
    stall = verdict(ExitCode.HANG, "heartbeat_stall")
    results: dict[int, ExitCode] = {}

    def settle(rank: int) -> None:
        results[rank] = pods[rank].settle(stall, FACTS).code

    threads = [threading.Thread(target=settle, args=(rank,)) for rank in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(code.name for code in results.values()) == ["HANG", "PEER_LEFT", "PEER_LEFT"]


def test_a_peer_cause_stops_a_running_pod_through_the_gang_watchdog(backend) -> None:
    node0, node1 = member(backend, 0), member(backend, 1)
    found: queue.SimpleQueue[Found] = queue.SimpleQueue()
    watchdog = node0.watchdog()
    watchdog.start(found.put, lambda: 0.0)
    try:
        assert found.empty()
        node1.decided(verdict(ExitCode.DEVICE_FAILED, "xid"), FACTS)
        report = found.get(timeout=30)
    finally:
        watchdog.stop()
    assert report.finding.exit_code is ExitCode.PEER_LEFT
    assert report.finding.urgency is Urgency.STOP
    assert report.finding.detail["peer"]["pod"] == "train-1"


def test_a_node_past_its_free_exits_is_counted_with_its_history(backend) -> None:
    for attempt in range(3):
        pod = member(backend, 1, node="bad-node")
        assert pod.settle(verdict(ExitCode.DEVICE_FAILED, "xid"), FACTS).code.code == 82, attempt
    fourth = member(backend, 1, node="bad-node")
    settled = fourth.settle(verdict(ExitCode.DEVICE_FAILED, "xid"), FACTS)
    assert settled.code is ExitCode.INFRA_FAILED
    assert "bad-node" in settled.reason
    assert len(settled.evidence[0].detail["history"]) == 3
    assert fourth.history_refusal() is not None
    assert member(backend, 0, node="good-node").history_refusal() is None


def test_without_peers_a_symptom_keeps_its_class_after_the_wait(backend) -> None:
    alone = member(backend, 0, peer_wait=0.2)
    lost = verdict(ExitCode.INFRA_FAILED, "peer_connection_lost", Urgency.ON_EXIT)
    assert alone.settle(lost, FACTS).code is ExitCode.INFRA_FAILED


@pytest.mark.parametrize("bad", [{"peer_wait": -1.0}, {"poll_interval": 0.0}, {"free_exits": 0}])
def test_bad_gang_options_are_config_errors(bad) -> None:
    from supervisor.core.errors import ConfigError

    with pytest.raises(ConfigError):
        GangOptions(**bad)


def test_a_new_attempt_never_reads_an_earlier_incidents_records(backend) -> None:
    earlier = [member(backend, rank) for rank in range(4)]
    for pod in earlier:
        pod.settle(verdict(ExitCode.HANG, "heartbeat_stall"), FACTS)

    class Counting(FsLedger):
        reads = 0

        def read(self, name: str) -> bytes | None:
            Counting.reads += 1
            return super().read(name)

    # No node name: its device history (prefetched when there is one) is not in play here.
    identity = Identity(pod="train-0", node_rank=0)
    fresh = Member(Counting(backend.url + "/_ledger", backend.options or None), identity, FAST)
    fresh.begin(2, None)
    assert fresh.watchdog().poll(0.0) is None  # type: ignore[attr-defined]
    assert Counting.reads == 0  # four verdicts and a claim were listed, none fetched
