"""Peer attribution, table by table, and the gang protocol run over a create-only ledger.

The ledger here is a dict with a create-only `create`: the one property of the real
storage that the protocol relies on. Pods are generators that read, decide and write one
atomic step at a time, so a seeded scheduler can interleave them in every way that matters.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode, JobAction
from supervisor.gang import attribution
from supervisor.gang.attribution import Keep, PeerLeft, TryClaim, Wait, decide, gang_stop
from supervisor.gang.records import (
    AttemptStart,
    Claim,
    LedgerView,
    Role,
    Verdict,
    attempt_id,
    claim_name,
    encode,
    name_of,
)

CAUSE, SYMPTOM = Role.CAUSE, Role.SYMPTOM
LIMIT = 10.0  # seconds a symptom waits for a peer's verdict
T0 = 1_700_000_000.0


class Ledger:
    """Create-only objects, like the storage the ledger lives on."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def create(self, name: str, data: bytes) -> bool:
        if name in self.objects:
            return False
        self.objects[name] = data
        return True

    def write(self, record: AttemptStart | Verdict | Claim) -> None:
        assert self.create(name_of(record), encode(record))

    def view(self) -> LedgerView:
        return LedgerView.read(self.objects)

    def names(self) -> frozenset[str]:
        return frozenset(self.objects)


@dataclass
class Pod:
    me: AttemptStart
    seen: frozenset[str] | None


def start(
    ledger: Ledger,
    rank: int,
    wall: float = T0,
    *,
    attempt: int = 1,
    incarnation: str | None = None,
    gang: str | None = "train",
    node: str | None = None,
) -> Pod:
    """An attempt starts: it lists the ledger, then writes its start record."""
    seen = ledger.names()
    pod = f"train-{rank}-pod{attempt}"
    me = AttemptStart(
        id=attempt_id(pod, 0, attempt, f"{rank:02x}{attempt:02x}"),
        pod=pod,
        wall=wall,
        node_rank=rank,
        node=node or f"node-{rank}",
        gang=gang,
        incarnation=incarnation,
    )
    ledger.write(me)
    return Pod(me, seen)


def verdict(pod: Pod, code: ExitCode, role: Role | None, wall: float, reason: str = "") -> Verdict:
    me = pod.me
    return Verdict(
        id=me.id,
        pod=me.pod,
        wall=wall,
        name=code.name,
        code=code.code,
        role=role,
        reason=reason or f"{code.name} on rank {me.node_rank}.",
        evidence=({"source": "test", "kind": "k", "summary": "why"},),
        node_rank=me.node_rank,
        node=me.node,
        gang=me.gang,
        incarnation=me.incarnation,
    )


def ask(
    pod: Pod, code: ExitCode, role: Role | None, ledger: Ledger, waited: float = 0.0
) -> attribution.Decision:
    return decide(
        code,
        role,
        pod.me,
        ledger.view(),
        seen_at_start=pod.seen,
        waited=waited,
        wait_limit=LIMIT,
        now_wall=T0 + 100,
    )


# --- single decisions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "role"),
    [
        (ExitCode.SUCCEEDED, None),
        (ExitCode.PEER_LEFT, SYMPTOM),
        (ExitCode.DEVICE_FAILED, CAUSE),
        (ExitCode.DEVICE_DEGRADED, CAUSE),
        (ExitCode.PREEMPTED, CAUSE),
        (ExitCode.CONFIG_ERROR, CAUSE),
    ],
)
def test_these_keep_their_class_even_when_a_peer_failed_first(
    code: ExitCode, role: Role | None
) -> None:
    ledger = Ledger()
    me, peer = start(ledger, 0), start(ledger, 1)
    ledger.write(verdict(peer, ExitCode.DEVICE_FAILED, CAUSE, T0 + 5))
    assert isinstance(ask(me, code, role, ledger), Keep)
    assert not any(n.startswith("claims/") for n in ledger.objects)


@pytest.mark.parametrize("code", [ExitCode.HANG, ExitCode.INFRA_FAILED])
@pytest.mark.parametrize(
    "cause", [ExitCode.DEVICE_FAILED, ExitCode.TRAINING_FAILED, ExitCode.PREEMPTED]
)
def test_a_symptom_becomes_peer_left_naming_the_peer_that_holds_the_cause(
    code: ExitCode, cause: ExitCode
) -> None:
    ledger = Ledger()
    me, peer = start(ledger, 0), start(ledger, 1)
    ledger.write(verdict(peer, cause, CAUSE, T0 + 5, reason="Xid 79 on GPU-1."))
    decision = ask(me, code, SYMPTOM, ledger)
    assert isinstance(decision, PeerLeft)
    assert (decision.peer.via, decision.peer.pod, decision.peer.name) == (
        "verdict",
        peer.me.pod,
        cause.name,
    )
    f = decision.finding
    assert (f.source, f.kind, f.exit_code, f.urgency) == (
        "ledger",
        "peer_verdict",
        ExitCode.PEER_LEFT,
        Urgency.STOP,
    )
    assert peer.me.pod in f.summary and "node rank 1" in f.summary and cause.name in f.summary
    assert "Xid 79 on GPU-1" in f.summary
    assert f.detail["peer"]["attempt"] == peer.me.id  # type: ignore[index]
    assert f.detail["peer_evidence"] == {"source": "test", "kind": "k", "summary": "why"}


def test_a_symptom_waits_then_claims_and_keeps_its_class() -> None:
    ledger = Ledger()
    me, _ = start(ledger, 0), start(ledger, 1)
    assert isinstance(ask(me, ExitCode.HANG, SYMPTOM, ledger, waited=LIMIT - 0.1), Wait)
    decision = ask(me, ExitCode.HANG, SYMPTOM, ledger, waited=LIMIT)
    assert isinstance(decision, TryClaim)
    assert decision.name == claim_name(0)
    claim = decision.claim
    assert (claim.id, claim.name, claim.number, claim.node_rank) == (me.me.id, "HANG", 0, 0)
    assert ledger.create(decision.name, encode(claim))
    assert ask(me, ExitCode.HANG, SYMPTOM, ledger, waited=LIMIT) == Keep(
        f"this attempt holds the incident's claim {decision.name}", claim=decision.name
    )
    assert attribution.won_claim(decision.name).claim == decision.name


def test_a_counted_cause_claims_at_once_and_never_waits() -> None:
    ledger = Ledger()
    me, _ = start(ledger, 0), start(ledger, 1)
    assert isinstance(ask(me, ExitCode.TRAINING_FAILED, CAUSE, ledger, waited=0.0), TryClaim)


def test_a_counted_cause_yields_to_a_peer_verdict_already_there() -> None:
    # The trainer raised because its peer's GPU had died a moment before: one incident.
    ledger = Ledger()
    me, peer = start(ledger, 0), start(ledger, 1)
    ledger.write(verdict(peer, ExitCode.DEVICE_FAILED, CAUSE, T0 + 5))
    assert isinstance(ask(me, ExitCode.TRAINING_FAILED, CAUSE, ledger), PeerLeft)


def test_an_uncounted_symptom_names_its_peer_or_keeps_its_class_after_the_wait() -> None:
    # A peer's checkpoint request (the trainer saved for a leaving rank): PREEMPTED today.
    ledger = Ledger()
    me, peer = start(ledger, 0), start(ledger, 1)
    assert isinstance(ask(me, ExitCode.PREEMPTED, SYMPTOM, ledger), Wait)
    assert isinstance(ask(me, ExitCode.PREEMPTED, SYMPTOM, ledger, waited=LIMIT), Keep)
    assert not any(n.startswith("claims/") for n in ledger.objects)  # uncounted: no claim
    ledger.write(verdict(peer, ExitCode.PREEMPTED, CAUSE, T0 + 5))
    assert isinstance(ask(me, ExitCode.PREEMPTED, SYMPTOM, ledger), PeerLeft)


@pytest.mark.parametrize(
    ("theirs", "role", "explains"),
    [
        (ExitCode.DEVICE_FAILED, CAUSE, True),
        (ExitCode.TRAINING_FAILED, CAUSE, True),
        (ExitCode.HANG, SYMPTOM, True),  # it kept the counted class: it holds the claim
        (ExitCode.INFRA_FAILED, SYMPTOM, True),
        (ExitCode.PEER_LEFT, SYMPTOM, False),  # it names someone else
        (ExitCode.SUCCEEDED, None, False),
        (ExitCode.PREEMPTED, SYMPTOM, False),  # an uncounted symptom holds nothing
    ],
)
def test_which_peer_verdicts_explain_a_failure(
    theirs: ExitCode, role: Role | None, explains: bool
) -> None:
    ledger = Ledger()
    me, peer = start(ledger, 0), start(ledger, 1)
    ledger.write(verdict(peer, theirs, role, T0 + 5))
    assert isinstance(ask(me, ExitCode.HANG, SYMPTOM, ledger), PeerLeft) is explains
    assert (gang_stop(me.me, ledger.view(), seen_at_start=me.seen) is not None) is explains


def test_a_cause_is_named_before_a_keeper_and_the_earliest_cause_first() -> None:
    ledger = Ledger()
    me, a, b, c = (start(ledger, r) for r in range(4))
    ledger.write(verdict(a, ExitCode.HANG, SYMPTOM, T0 + 1))
    ledger.write(verdict(b, ExitCode.DEVICE_FAILED, CAUSE, T0 + 9))
    ledger.write(verdict(c, ExitCode.DEVICE_DEGRADED, CAUSE, T0 + 7))
    decision = ask(me, ExitCode.INFRA_FAILED, SYMPTOM, ledger)
    assert isinstance(decision, PeerLeft) and decision.peer.pod == c.me.pod


# --- the same incident -----------------------------------------------------------------------


def test_a_record_already_listed_at_start_is_an_earlier_incident_whatever_its_clock() -> None:
    ledger = Ledger()
    peer = start(ledger, 1)
    ledger.write(verdict(peer, ExitCode.DEVICE_FAILED, CAUSE, T0 + 3600))  # a clock far ahead
    me = start(ledger, 0, wall=T0 + 10)
    assert isinstance(ask(me, ExitCode.HANG, SYMPTOM, ledger), Wait)
    assert gang_stop(me.me, ledger.view(), seen_at_start=me.seen) is None


def test_a_record_written_after_start_is_this_incident_whatever_its_clock() -> None:
    ledger = Ledger()
    me, peer = start(ledger, 0, wall=T0), start(ledger, 1)
    ledger.write(verdict(peer, ExitCode.DEVICE_FAILED, CAUSE, T0 - 3600))  # a clock far behind
    assert isinstance(ask(me, ExitCode.HANG, SYMPTOM, ledger), PeerLeft)


@pytest.mark.parametrize(
    ("offset", "mine"),
    [(+30.0, True), (0.0, True), (-attribution.DEFAULT_SKEW_S, True), (-5.01, False), (-60, False)],
)
def test_without_a_start_listing_wall_time_decides_within_the_skew(
    offset: float, mine: bool
) -> None:
    ledger = Ledger()
    me, peer = start(ledger, 0, wall=T0), start(ledger, 1)
    ledger.write(verdict(peer, ExitCode.DEVICE_FAILED, CAUSE, T0 + offset))
    decision = decide(
        ExitCode.HANG,
        SYMPTOM,
        me.me,
        ledger.view(),
        seen_at_start=None,
        waited=0.0,
        wait_limit=LIMIT,
        now_wall=T0 + 100,
    )
    assert isinstance(decision, PeerLeft) is mine


@pytest.mark.parametrize(
    ("field_name", "mine", "theirs", "same"),
    [
        ("incarnation", "train/3", "train/2", False),  # a JobSet restart apart
        ("incarnation", "train/3", "train/3", True),
        ("incarnation", "train/3", None, True),  # unknown on one side: cannot tell apart
        ("gang", "train", "other-job", False),  # two runs sharing a checkpoint URL
        ("gang", None, "other-job", True),
    ],
)
def test_known_gang_and_incarnation_must_agree(
    field_name: str, mine: str | None, theirs: str | None, same: bool
) -> None:
    ledger = Ledger()
    me = start(ledger, 0, **{field_name: mine})  # type: ignore[arg-type]
    peer = start(ledger, 1, **{field_name: theirs})  # type: ignore[arg-type]
    ledger.write(verdict(peer, ExitCode.DEVICE_FAILED, CAUSE, T0 + 5))
    assert isinstance(ask(me, ExitCode.HANG, SYMPTOM, ledger), PeerLeft) is same


def test_an_earlier_attempt_of_this_pod_is_never_its_peer() -> None:
    # supervise restarted the command in place; without a start listing the first
    # attempt's verdict is within the skew of the second's start.
    ledger = Ledger()
    first = start(ledger, 0, wall=T0)
    ledger.write(verdict(first, ExitCode.TRAINING_FAILED, CAUSE, T0 + 9))
    second = start(ledger, 0, wall=T0 + 10, attempt=2)
    second.me = AttemptStart(**{**second.me.__dict__, "pod": first.me.pod})
    for seen in (second.seen, None):
        decision = decide(
            ExitCode.HANG,
            SYMPTOM,
            second.me,
            ledger.view(),
            seen_at_start=seen,
            waited=LIMIT,
            wait_limit=LIMIT,
            now_wall=T0 + 20,
        )
        assert isinstance(decision, TryClaim), seen


def test_a_claim_this_reader_cannot_decode_still_holds_the_incident() -> None:
    ledger = Ledger()
    me, _ = start(ledger, 0), start(ledger, 1)
    ledger.create(claim_name(0), b'{"format": "supervise-ledger", "version": 2}')
    decision = ask(me, ExitCode.HANG, SYMPTOM, ledger, waited=LIMIT)
    assert isinstance(decision, PeerLeft) and decision.peer.via == "claim"
    assert decision.peer.pod is None and "cannot read" in decision.finding.summary
    # without a start listing nothing says when it was written: it is not trusted
    blind = decide(
        ExitCode.HANG,
        SYMPTOM,
        me.me,
        ledger.view(),
        seen_at_start=None,
        waited=LIMIT,
        wait_limit=LIMIT,
        now_wall=T0,
    )
    assert isinstance(blind, TryClaim) and blind.name == claim_name(1)


def test_the_lost_reply_of_a_successful_create_is_recognised_on_the_next_read() -> None:
    ledger = Ledger()
    me, _ = start(ledger, 0), start(ledger, 1)
    decision = ask(me, ExitCode.INFRA_FAILED, SYMPTOM, ledger, waited=LIMIT)
    assert isinstance(decision, TryClaim)
    ledger.create(decision.name, encode(decision.claim))  # ...and the reply never came
    again = ask(me, ExitCode.INFRA_FAILED, SYMPTOM, ledger, waited=LIMIT)
    assert isinstance(again, Keep) and again.claim == decision.name


def test_attributed_rewrites_the_verdict_only_for_peer_left() -> None:
    mine = Finding("hang", "heartbeat_stall", "stalled", ExitCode.HANG, Urgency.STOP)
    ledger = Ledger()
    me, peer = start(ledger, 0), start(ledger, 1)
    ledger.write(verdict(peer, ExitCode.DEVICE_FAILED, CAUSE, T0 + 5))
    left = ask(me, ExitCode.HANG, SYMPTOM, ledger)
    code, reason, evidence = attribution.attributed(left, ExitCode.HANG, "stalled", [mine])
    assert code is ExitCode.PEER_LEFT and evidence == (left.finding, mine)  # type: ignore[union-attr]
    assert reason == left.finding.summary  # type: ignore[union-attr]
    kept = attribution.attributed(Keep("x"), ExitCode.HANG, "stalled", [mine])
    assert kept == (ExitCode.HANG, "stalled", (mine,))


def test_the_peer_a_stopping_finding_names_is_recovered_from_the_evidence() -> None:
    # The gang watchdog stops a pod with its finding only; the verdict record still names
    # the peer, by verdict or by claim.
    mine = Finding("hang", "heartbeat_stall", "stalled", ExitCode.HANG, Urgency.STOP)
    ledger = Ledger()
    me, peer = start(ledger, 0), start(ledger, 1)
    ledger.write(verdict(peer, ExitCode.DEVICE_FAILED, CAUSE, T0 + 5))
    left = ask(me, ExitCode.HANG, SYMPTOM, ledger)
    assert isinstance(left, PeerLeft)
    assert attribution.peer_named([mine, left.finding]) == left.peer
    assert left.peer.name == "DEVICE_FAILED"
    assert attribution.peer_named([mine]) is None
    unreadable = attribution._peer_left_by_claim("claims/x.json", None)
    assert attribution.peer_named([unreadable.finding]) == attribution.PeerRef("claim")


# --- the protocol: exactly one pod keeps a counted class ---------------------------------------


@dataclass
class Outcome:
    code: ExitCode
    decision: attribution.Decision


@dataclass
class Member:
    pod: Pod
    code: ExitCode
    role: Role
    outcome: Outcome | None = None
    steps: list[str] = field(default_factory=list)


def member_process(m: Member, ledger: Ledger, clock: list[float]) -> Iterator[None]:
    """One pod's end of an incident, one atomic ledger step per `yield`."""
    waited = 0.0
    while True:
        decision = ask(m.pod, m.code, m.role, ledger, waited)
        m.steps.append(type(decision).__name__)
        yield
        if isinstance(decision, Wait):
            waited = LIMIT  # time passes; the next look is past the wait
            continue
        if isinstance(decision, TryClaim):
            created = ledger.create(decision.name, encode(decision.claim))
            m.steps.append("created" if created else "taken")
            yield
            if not created:
                continue
            decision = attribution.won_claim(decision.name)
        code = ExitCode.PEER_LEFT if isinstance(decision, PeerLeft) else m.code
        role = SYMPTOM if code is ExitCode.PEER_LEFT else m.role
        clock[0] += 1
        ledger.write(verdict(m.pod, code, role, clock[0]))
        m.outcome = Outcome(code, decision)
        return


def run_incident(members: list[Member], ledger: Ledger, rng: random.Random) -> list[Member]:
    clock = [T0]
    running = {i: member_process(m, ledger, clock) for i, m in enumerate(members)}
    while running:
        i = rng.choice(sorted(running))
        try:
            next(running[i])
        except StopIteration:
            del running[i]
    return members


def counted(members: list[Member]) -> list[Member]:
    return [
        m for m in members if m.outcome is not None and m.outcome.code.action is JobAction.COUNT
    ]


def check_names(members: list[Member]) -> None:
    """Every PEER_LEFT names a pod of the incident that holds it (a cause or a keeper)."""
    holders = {
        m.pod.me.id
        for m in members
        if m.outcome is not None
        and m.outcome.code is not ExitCode.PEER_LEFT
        and (m.role is CAUSE or m.outcome.code.action is JobAction.COUNT)
    }
    for m in members:
        assert m.outcome is not None
        if isinstance(m.outcome.decision, PeerLeft):
            assert m.outcome.decision.peer.id in holders, (m.steps, m.outcome)


INCIDENTS = {
    "every rank hangs": [(ExitCode.HANG, SYMPTOM)] * 4,
    "hangs and lost peers": [(ExitCode.HANG, SYMPTOM), (ExitCode.INFRA_FAILED, SYMPTOM)] * 2,
    "one bug raised on every rank": [(ExitCode.TRAINING_FAILED, CAUSE)] * 3,
    "a bug, and its peers lost": [(ExitCode.TRAINING_FAILED, CAUSE)]
    + [(ExitCode.INFRA_FAILED, SYMPTOM)] * 3,
    "a local hang suspect, and collectives waiting for it": [(ExitCode.HANG, CAUSE)]
    + [(ExitCode.HANG, SYMPTOM)] * 3,
}


@pytest.mark.parametrize("incident", list(INCIDENTS), ids=str)
def test_exactly_one_pod_keeps_the_counted_class_in_any_order(incident: str) -> None:
    rng = random.Random(f"gang-{incident}")
    races = 0
    for _ in range(300):
        ledger = Ledger()
        members = [
            Member(start(ledger, r), c, role) for r, (c, role) in enumerate(INCIDENTS[incident])
        ]
        run_incident(members, ledger, rng)
        assert len(counted(members)) == 1, [(m.steps, m.outcome) for m in members]
        check_names(members)
        assert len([n for n in ledger.objects if n.startswith("claims/")]) == 1
        races += sum("taken" in m.steps for m in members)
    assert races > 0  # some orders really had pods racing for the same claim


PEERS_OF_A_FREE_CAUSE = [
    (ExitCode.HANG, SYMPTOM),
    (ExitCode.INFRA_FAILED, SYMPTOM),
    (ExitCode.TRAINING_FAILED, CAUSE),  # the trainer raised when its peer vanished
]


@pytest.mark.parametrize(
    "cause", [ExitCode.DEVICE_FAILED, ExitCode.DEVICE_DEGRADED, ExitCode.PREEMPTED]
)
def test_an_uncounted_cause_leaves_nothing_counted_in_any_order(cause: ExitCode) -> None:
    # The cause writes its verdict before it stops its tree, so before its peers' waits end.
    rng = random.Random(f"free-{cause.name}")
    for _ in range(300):
        ledger = Ledger()
        holder = start(ledger, 0)
        members = [
            Member(start(ledger, r), c, role)
            for r, (c, role) in enumerate(PEERS_OF_A_FREE_CAUSE, start=1)
        ]
        ledger.write(verdict(holder, cause, CAUSE, T0 + 1))
        run_incident(members, ledger, rng)
        assert counted(members) == []
        for m in members:
            assert isinstance(m.outcome.decision, PeerLeft)  # type: ignore[union-attr]
            assert m.outcome.decision.peer.id == holder.me.id  # type: ignore[union-attr]


def test_the_next_incident_is_claimed_afresh_even_with_a_straggler() -> None:
    ledger = Ledger()
    rng = random.Random("two-incidents")
    first = [Member(start(ledger, r), ExitCode.HANG, SYMPTOM) for r in range(3)]
    # A replacement for rank 3 starts while the first incident is still being decided: it
    # lists the ledger before the claim exists.
    straggler = start(ledger, 3, attempt=2)
    run_incident(first, ledger, rng)
    assert len(counted(first)) == 1
    # Everyone else restarts after the first incident's claim and verdicts exist.
    second = [Member(start(ledger, r, attempt=2), ExitCode.HANG, SYMPTOM) for r in range(3)]
    second.append(Member(straggler, ExitCode.HANG, SYMPTOM))
    run_incident(second, ledger, rng)
    assert len(counted(second)) == 1
    assert sorted(n for n in ledger.objects if n.startswith("claims/")) == [
        claim_name(0),
        claim_name(1),
    ]


def test_jobset_pods_of_an_earlier_restart_never_stop_the_new_one() -> None:
    ledger = Ledger()
    old = start(ledger, 1, incarnation="train/0")
    new = [start(ledger, r, incarnation="train/1", attempt=2) for r in range(2)]
    # The old pod is deleted by the JobSet's restart and leaves PREEMPTED: a cause, written
    # after the new incarnation started.
    ledger.write(verdict(old, ExitCode.PREEMPTED, CAUSE, T0 + 30))
    for pod in new:
        assert gang_stop(pod.me, ledger.view(), seen_at_start=pod.seen) is None
    ledger.write(verdict(new[1], ExitCode.DEVICE_FAILED, CAUSE, T0 + 40))
    stop = gang_stop(new[0].me, ledger.view(), seen_at_start=new[0].seen)
    assert stop is not None and stop.peer.id == new[1].me.id


@pytest.mark.parametrize(
    ("name", "delay"),
    [("PREEMPTED", 25.0), ("DEVICE_DEGRADED", 25.0), ("DEVICE_FAILED", 0.0), ("HANG", 0.0)],
)
def test_a_graceful_peer_is_given_the_grace_before_the_gang_stops(name: str, delay: float):
    finding = Finding("ledger", "peer_verdict", "left", ExitCode.PEER_LEFT, Urgency.STOP)
    left = PeerLeft(attribution.PeerRef("verdict", "a", "train-1", 1, None, name), finding)
    assert attribution.stop_delay(left, 25.0) == delay
