"""Peer attribution: one incident is counted at most once across the gang (L1).

Every decision here is a function of what one read of the ledger returned, the time the
caller measured, and this attempt's own start record. The caller (a storage-backed ledger
and the loop) does the listing, the reading and the create-only writes.

**What a gang, an incarnation and an incident are.** The gang is every pod writing to one
ledger (one run: the ledger lives under the run's checkpoint URL). Records also carry the
gang's name (`gang`: the Job or JobSet) and, where the platform has one, an exact
incarnation (`incarnation`: a JobSet's restart attempt, shared by every pod of one restart
of the whole set); two records whose names, or whose incarnations, are both known and
differ are never of the same incident. An *incident* is what ends an incarnation: the
first verdict that holds a cause, and every verdict it brings about.

**The same incident, without trusting clocks.** Whether a peer's record belongs to this
attempt's incident is decided by the ledger's own order, not by comparing wall clocks: at
its start, an attempt lists the ledger and keeps the names it saw (`seen_at_start`).
Anything already there happened before this attempt joined the gang and belongs to an
earlier incident; anything that appears later happened while it was a member. The ledger's
objects are create-only and its listings strongly consistent (local files, S3, GCS,
memory), so this needs no clock at all, and a skew of any size between nodes cannot move a
record from one incident to another. Wall time is used only where the start listing failed
(`seen_at_start=None`): then a record counts when its wall time is no earlier than this
attempt's start minus `skew` (default `DEFAULT_SKEW_S`), which tolerates a skew that small
and misattributes a record written within it before this attempt started.

One known limit: in a plain Job (no exact incarnation), a pod of the previous incarnation
that is still stopping when a replacement of another index starts, and that then writes a
*cause* verdict, is taken by that replacement as a peer of its own gang, which then stops
with PEER_LEFT before training: one extra, uncounted restart.

**Exactly one holder.** Every counted verdict must hold its incident's claim: the
create-only object `claims/<n>` with `n` one past the highest claim listed. Of pods deciding
at the same moment, one create succeeds; the others read the claim (it appeared after they
started: same incident) and leave with PEER_LEFT naming the holder. A pod that decides
later sees the claim, or the holder's verdict, the same way. A claim of an earlier incident
was already listed at the start of every attempt that began after it, so at least the
holder's own replacement treats it as old, and the next incident is claimed afresh.

**How each verdict decides** (`decide`):

| verdict | looks for a peer's verdict | then |
|---|---|---|
| SUCCEEDED, PEER_LEFT | no | keep |
| uncounted cause (DEVICE_*, PREEMPTED by a signal) or CONFIG_ERROR | no | keep |
| counted cause (TRAINING_FAILED, a hang with a local suspect) | once, no wait | claim |
| counted symptom (HANG, INFRA_FAILED) | until `wait_limit` | claim |
| uncounted symptom (a peer's checkpoint request) | until `wait_limit` | keep |

A peer's verdict *explains* this one when it is of the same incident and either holds a
cause or kept a counted class (its holder has the claim); a fresh claim held by another
attempt explains it too. Either way the result is PEER_LEFT with a finding that names
that pod. Uncounted causes keep their class even when a peer failed first: their evidence
is local (a GPU), and the bound on free exits per node counts them.

**Gang stop** (`gang_stop`): while training runs, a peer's verdict that explains a
failure of this gang means the gang cannot go on; stop at once with PEER_LEFT.

Pure: no I/O, no clock of its own; safe on any thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from supervisor.core.events import Finding, Urgency
from supervisor.core.exitcodes import ExitCode, JobAction
from supervisor.gang.options import DEFAULT_PEER_WAIT
from supervisor.gang.records import (
    AttemptStart,
    Claim,
    LedgerView,
    PeerRef,
    Role,
    Verdict,
    claim_number,
    next_claim_name,
)

DEFAULT_SKEW_S = 5.0  # only without a start listing: how far apart two nodes' clocks may be
DEFAULT_WAIT_S = DEFAULT_PEER_WAIT  # how long a symptom looks for a peer's verdict


# ---------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Keep:
    """Exit with this attempt's own class. `claim`: the claim it holds, if it took one."""

    why: str
    claim: str | None = None


@dataclass(frozen=True)
class PeerLeft:
    """Exit PEER_LEFT: `peer` holds the incident; `finding` names it, for the evidence."""

    peer: PeerRef
    finding: Finding


@dataclass(frozen=True)
class Wait:
    """No peer's verdict yet and the wait is not over: read the ledger again later."""

    why: str


@dataclass(frozen=True)
class TryClaim:
    """Create `claim` under `name`, create-only. Created: `Keep`. Already there: read the
    ledger again and decide again (the new claim names the holder)."""

    name: str
    claim: Claim


Decision = Keep | PeerLeft | Wait | TryClaim


# ----------------------------------------------------------------------- the same incident


def _compatible(mine: str | None, theirs: str | None) -> bool:
    return mine is None or theirs is None or mine == theirs


def of_my_incident(
    me: AttemptStart,
    name: str,
    record: Verdict | Claim | None,
    seen_at_start: frozenset[str] | None,
    skew: float = DEFAULT_SKEW_S,
) -> bool:
    """Whether the object `name` (decoded as `record`, None if undecodable) was written by
    another attempt during this attempt's membership of the gang."""
    if record is not None:
        if record.id == me.id or (record.pod, record.node_rank) == (me.pod, me.node_rank):
            return False  # this attempt, or an earlier one of this pod: never a peer
        if not _compatible(me.gang, record.gang):
            return False
        if not _compatible(me.incarnation, record.incarnation):
            return False
    if seen_at_start is not None:
        return name not in seen_at_start
    return record is not None and record.wall >= me.wall - skew


def _counted(verdict: Verdict) -> bool:
    code = verdict.exit_code
    return code is not None and code.action is JobAction.COUNT


def explains(verdict: Verdict) -> bool:
    """Whether a peer's verdict, of the same incident, explains this pod's failure: it
    holds a cause, or it kept a counted class (and so holds the incident's claim)."""
    if verdict.name in (ExitCode.SUCCEEDED.name, ExitCode.PEER_LEFT.name):
        return False
    return verdict.role is Role.CAUSE or (verdict.role is Role.SYMPTOM and _counted(verdict))


def explaining_verdict(
    me: AttemptStart,
    ledger: LedgerView,
    seen_at_start: frozenset[str] | None,
    skew: float = DEFAULT_SKEW_S,
) -> tuple[str, Verdict] | None:
    """The peer verdict of this incident that explains it, if any: a cause before a
    counted symptom, then the earliest by its writer's clock, then by name."""
    found = [
        (name, v)
        for name, v in ledger.verdicts()
        if explains(v) and of_my_incident(me, name, v, seen_at_start, skew)
    ]
    if not found:
        return None
    return min(found, key=lambda item: (item[1].role is not Role.CAUSE, item[1].wall, item[0]))


def fresh_claim(
    me: AttemptStart,
    ledger: LedgerView,
    seen_at_start: frozenset[str] | None,
    skew: float = DEFAULT_SKEW_S,
) -> tuple[str, Claim | None] | None:
    """The lowest-numbered claim of this incident (None as the claim when it could not be
    decoded), or None when the incident is not claimed. May be this attempt's own."""
    for name in ledger.claim_names():
        record = ledger.records.get(name)
        claim = record if isinstance(record, Claim) else None
        if claim is not None and claim.id == me.id:
            return name, claim
        if of_my_incident(me, name, claim, seen_at_start, skew):
            return name, claim
    return None


# ------------------------------------------------------------------------------- decide


def decide(
    code: ExitCode,
    role: Role | None,
    me: AttemptStart,
    ledger: LedgerView,
    *,
    seen_at_start: frozenset[str] | None,
    waited: float,
    wait_limit: float = DEFAULT_WAIT_S,
    now_wall: float,
    skew: float = DEFAULT_SKEW_S,
) -> Decision:
    """What an attempt whose verdict is `code` (with `role`) does, given one read of the
    ledger. `waited`: seconds since it started looking (the caller's monotonic clock);
    `now_wall`: Unix seconds, stamped on a claim.

    Call it again with a fresh read after `Wait`, and after a `TryClaim` whose create found
    the name taken. It never returns `Wait` once `waited >= wait_limit`.
    """
    if code in (ExitCode.SUCCEEDED, ExitCode.PEER_LEFT):
        return Keep(f"{code.name} needs no attribution")
    counted = code.action is JobAction.COUNT
    if role is Role.CAUSE and not counted:
        return Keep(f"a cause never waits, and {code.name} is not counted")
    explained = explaining_verdict(me, ledger, seen_at_start, skew)
    if explained is not None:
        return _peer_left_by_verdict(*explained)
    claimed = fresh_claim(me, ledger, seen_at_start, skew)
    if claimed is not None:
        name, claim = claimed
        if claim is not None and claim.id == me.id:
            return Keep(f"this attempt holds the incident's claim {name}", claim=name)
        return _peer_left_by_claim(name, claim)
    if role is not Role.CAUSE and waited < wait_limit:
        return Wait(f"no peer's verdict yet ({waited:.1f} of {wait_limit:g} s)")
    if not counted:
        return Keep(f"no peer's verdict within {wait_limit:g} s; {code.name} is not counted")
    name = next_claim_name(ledger.names)
    claim = Claim(
        number=claim_number(name) or 0,
        id=me.id,
        pod=me.pod,
        wall=now_wall,
        name=code.name,
        node_rank=me.node_rank,
        node=me.node,
        gang=me.gang,
        incarnation=me.incarnation,
    )
    return TryClaim(name, claim)


def won_claim(name: str) -> Keep:
    """The decision after the create of claim `name` succeeded."""
    return Keep(f"this attempt holds the incident's claim {name}", claim=name)


GRACEFUL: frozenset[str] = frozenset({ExitCode.PREEMPTED.name, ExitCode.DEVICE_DEGRADED.name})
"""Classes whose pod leaves gracefully: it checkpoints first, and its trainers agree on the
step with every peer's, so a peer that stopped at once would cut that checkpoint short."""


def stop_delay(left: PeerLeft, grace: float) -> float:
    """Seconds after this pod first saw `left` that the gang stop acts: `grace` for a peer
    that leaves gracefully (its peers save with it, then stop on their own), else none."""
    return grace if left.peer.name in GRACEFUL else 0.0


def gang_stop(
    me: AttemptStart,
    ledger: LedgerView,
    *,
    seen_at_start: frozenset[str] | None,
    skew: float = DEFAULT_SKEW_S,
) -> PeerLeft | None:
    """While training runs: a peer's verdict of this incarnation that explains a failure
    means the gang cannot go on. Stop now with the returned PEER_LEFT; None: carry on."""
    explained = explaining_verdict(me, ledger, seen_at_start, skew)
    return _peer_left_by_verdict(*explained) if explained is not None else None


def attributed(
    decision: Decision, code: ExitCode, reason: str, evidence: Iterable[Finding]
) -> tuple[ExitCode, str, tuple[Finding, ...]]:
    """The verdict after `decision`: PEER_LEFT with the peer's finding first, or unchanged."""
    if isinstance(decision, PeerLeft):
        return ExitCode.PEER_LEFT, decision.finding.summary, (decision.finding, *evidence)
    return code, reason, tuple(evidence)


# ---------------------------------------------------------------------------- findings


def _who(pod: str | None, node_rank: int | None, node: str | None) -> str:
    where = [f"node rank {node_rank}"] if node_rank is not None else []
    if node:
        where.append(f"node {node}")
    return f"pod {pod or 'unknown'}" + (f" ({', '.join(where)})" if where else "")


def _peer_left_by_verdict(name: str, verdict: Verdict) -> PeerLeft:
    v = verdict
    peer = PeerRef("verdict", v.id, v.pod, v.node_rank, v.node, v.name)
    held = "holds the cause" if verdict.role is Role.CAUSE else "kept the counted class"
    reason = verdict.reason.rstrip(".")
    summary = (
        f"Another pod of the gang left first: {_who(verdict.pod, verdict.node_rank, verdict.node)} "
        f"ended with {verdict.name} ({verdict.code}) and {held}"
        + (f": {reason}." if reason else ".")
    )
    detail: dict[str, object] = {"peer": _peer_detail(peer), "ledger_object": name}
    if verdict.evidence:
        detail["peer_evidence"] = dict(verdict.evidence[0])
    finding = Finding("ledger", "peer_verdict", summary, ExitCode.PEER_LEFT, Urgency.STOP, detail)
    return PeerLeft(peer, finding)


def _peer_left_by_claim(name: str, claim: Claim | None) -> PeerLeft:
    if claim is None:
        peer = PeerRef("claim")
        summary = (
            f"Another pod of the gang holds this incident (claim {name}, which this "
            "supervise cannot read: written by a newer version?)."
        )
    else:
        peer = PeerRef("claim", claim.id, claim.pod, claim.node_rank, claim.node, claim.name)
        summary = (
            f"Another pod of the gang holds this incident: "
            f"{_who(claim.pod, claim.node_rank, claim.node)} kept {claim.name} and is "
            "counted once for every pod."
        )
    detail = {"peer": _peer_detail(peer), "ledger_object": name}
    finding = Finding("ledger", "peer_claim", summary, ExitCode.PEER_LEFT, Urgency.STOP, detail)
    return PeerLeft(peer, finding)


def peer_named(evidence: Iterable[Finding]) -> PeerRef | None:
    """The peer a PEER_LEFT finding among `evidence` names (the gang watchdog's, which
    stopped this pod before its exit was attributed); None when none names one."""
    for finding in evidence:
        if finding.exit_code is not ExitCode.PEER_LEFT:
            continue
        detail = finding.detail.get("peer")
        if isinstance(detail, Mapping) and isinstance(detail.get("via"), str):
            rank = detail.get("nodeRank")
            return PeerRef(
                via=detail["via"],
                id=_text(detail.get("attempt")),
                pod=_text(detail.get("pod")),
                node_rank=rank if isinstance(rank, int) and not isinstance(rank, bool) else None,
                node=_text(detail.get("node")),
                name=_text(detail.get("class")),
            )
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _peer_detail(peer: PeerRef) -> dict[str, object]:
    fields = {
        "via": peer.via,
        "attempt": peer.id,
        "pod": peer.pod,
        "nodeRank": peer.node_rank,
        "node": peer.node,
        "class": peer.name,
    }
    return {key: value for key, value in fields.items() if value is not None}
