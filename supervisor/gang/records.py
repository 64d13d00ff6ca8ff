"""The run ledger's records, their encoding, and the object names they live under (L0).

The ledger is a folder of small objects beside the checkpoints. Every object is written once,
create-only, and never changed, so no writer ever needs a lock, an append or a
read-modify-write, and a reader sees each object whole or not at all. Names are relative
to the ledger's prefix:

    attempts/<attempt id>.json      an attempt started          (one per attempt)
    verdicts/<attempt id>.json      how that attempt ended      (at most one per attempt)
    ended/<attempt id>.json         the same verdict at the pod's exit, where it was written
                                    early (a cause writes before it stops its tree)
    claims/<number, 10 digits>.json the counted class of one incident is held (see below)

An attempt id is `<pod>.r<restart count>.a<attempt>.<nonce>`: the pod name, the container's
restart count, supervise's own attempt number inside the pod, and a random nonce, so ids
are unique without coordination even where the pod name is not (outside Kubernetes). A
verdict has the id of the attempt it ends, so the two pair up without a lookup.

Claims are numbered, and a claim's number is the arbiter: of all pods trying to create
`claims/0000000007.json`, exactly one succeeds (create-only), and every other one learns
who holds the incident by reading it. `next_claim_name` picks one more than the highest
number listed.

Every record is one JSON object: `{"format": "supervise-ledger", "version": 1, "kind": ...,
...fields}`. Readers are tolerant by contract: unknown fields are ignored, and an object
of another format, a newer major version, an unknown kind, with a field of the wrong type,
or that is not JSON at all is skipped (`decode` returns None). A reader never fails on a
record it does not understand; it just does not count it. Fields are only ever added
within a major version.

Pure: no I/O; `new_nonce` is the one function that draws randomness.
"""

from __future__ import annotations

import enum
import json
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from supervisor.core.exitcodes import ExitCode

FORMAT = "supervise-ledger"
VERSION = 1  # the major version; a reader skips records of a newer one

ATTEMPTS = "attempts"
VERDICTS = "verdicts"
CLAIMS = "claims"
ENDED = "ended"
SUFFIX = ".json"
CLAIM_DIGITS = 10

# Evidence kept in a verdict: the ledger feeds peers' termination messages (4096 bytes) and
# goodput reports, not forensics; the event log keeps everything.
MAX_EVIDENCE_BYTES = 8192
MAX_EVIDENCE_STRING = 500


class Kind(enum.StrEnum):
    ATTEMPT = "attempt"
    VERDICT = "verdict"
    CLAIM = "claim"
    ENDED = "ended"


class Role(enum.StrEnum):
    """Whether a verdict holds the cause of an incident or only saw a symptom of it."""

    CAUSE = "cause"
    SYMPTOM = "symptom"


_FOLDERS = {
    ATTEMPTS: Kind.ATTEMPT,
    VERDICTS: Kind.VERDICT,
    CLAIMS: Kind.CLAIM,
    ENDED: Kind.ENDED,
}
_UNSAFE = re.compile(r"[^A-Za-z0-9-]")
_CLAIM_RE = re.compile(rf"^{CLAIMS}/(\d{{{CLAIM_DIGITS}}}){re.escape(SUFFIX)}$")
_ID_RE = re.compile(r"^[A-Za-z0-9-]+\.r\d+\.a\d+\.[0-9a-f]+$")


# ------------------------------------------------------------------------------- names


def new_nonce() -> str:
    """Eight random hex digits for an attempt id."""
    return secrets.token_hex(4)


def attempt_id(pod: str, restart_count: int, attempt: int, nonce: str) -> str:
    """The id of one attempt: `<pod>.r<restart count>.a<attempt>.<nonce>`.

    Characters outside [A-Za-z0-9-] in the pod name become `-` (Kubernetes allows `.`,
    which the id uses as its separator). Raises ValueError for a nonce that is not hex.
    """
    if not re.fullmatch(r"[0-9a-f]+", nonce):
        raise ValueError(f"nonce {nonce!r} is not lowercase hex")
    safe = _UNSAFE.sub("-", pod) or "pod"
    return f"{safe}.r{max(0, restart_count)}.a{max(0, attempt)}.{nonce}"


def attempt_name(attempt: str) -> str:
    return f"{ATTEMPTS}/{attempt}{SUFFIX}"


def verdict_name(attempt: str) -> str:
    return f"{VERDICTS}/{attempt}{SUFFIX}"


def ended_name(attempt: str) -> str:
    return f"{ENDED}/{attempt}{SUFFIX}"


def claim_name(number: int) -> str:
    if not 0 <= number < 10**CLAIM_DIGITS:
        raise ValueError(f"claim number {number} out of range")
    return f"{CLAIMS}/{number:0{CLAIM_DIGITS}d}{SUFFIX}"


def claim_number(name: str) -> int | None:
    """The number of a claim object's name, or None for any other name."""
    found = _CLAIM_RE.match(name)
    return int(found.group(1)) if found else None


def next_claim_name(names: Iterable[str]) -> str:
    """The claim one past the highest numbered claim among `names` (any names may be mixed
    in; those that are not claims are ignored)."""
    numbers = [n for n in map(claim_number, names) if n is not None]
    return claim_name(max(numbers, default=-1) + 1)


def kind_of(name: str) -> Kind | None:
    """Which record a name holds, from its folder; None for names the ledger does not use."""
    folder, _, rest = name.partition("/")
    if not rest.endswith(SUFFIX) or "/" in rest:
        return None
    return _FOLDERS.get(folder)


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class AttemptStart:
    """An attempt began: written once, when supervise starts the training command."""

    id: str
    pod: str
    wall: float  # Unix seconds, this node's clock
    node_rank: int | None = None
    namespace: str | None = None
    node: str | None = None  # the Kubernetes node name
    pod_uid: str | None = None
    restart_count: int = 0  # the container's restarts in this pod
    attempt: int = 1  # supervise's own attempt inside the container, from 1
    resume_step: int | None = None  # the committed step training resumes from
    gang: str | None = None  # the Job or JobSet the pod belongs to, where known
    incarnation: str | None = None  # an exact gang incarnation, where the platform has one
    nnodes: int | None = None

    kind = Kind.ATTEMPT


@dataclass(frozen=True)
class PhaseTimes:
    """Where an attempt's wall time went, in seconds."""

    init_s: float = 0.0  # from the start to the first step
    steady_s: float = 0.0  # in steady steps
    phases_s: Mapping[str, float] = field(default_factory=dict)  # checkpoint, eval, ...


@dataclass(frozen=True)
class CommitMark:
    """A checkpoint commit as the attempt saw it: the step, when, and the steady step time
    run by then. With it a report splits an attempt's steps into kept and lost."""

    step: int
    at_s: float  # seconds from the attempt's start until supervise saw the commit
    steady_s: float  # steady step seconds the attempt had run by then


@dataclass(frozen=True)
class Progress:
    """How far an attempt's steps went, in time: what a goodput report needs beyond
    `PhaseTimes`. Offsets are seconds from the attempt's start (`Verdict.started_wall`),
    measured on the sampler's monotonic clock, to within its sampling interval (0.1 s)."""

    first_step: int | None = None  # the first step any rank reported in this attempt
    first_step_s: float | None = None  # when it was seen
    last_step: int | None = None  # the highest step any rank reported
    last_progress_s: float | None = None  # when a rank last took a step
    steady_at_last_progress_s: float = 0.0  # steady seconds run by then; the rest stalled
    commits: tuple[CommitMark, ...] = ()  # in order; at most MAX_COMMIT_MARKS, the newest
    step_time_mean_s: float | None = None  # over the steady step intervals measured
    step_time_stdev_s: float | None = None
    step_time_count: int = 0


MAX_COMMIT_MARKS = 256  # a verdict stays a few KiB even for an attempt that saved every step


@dataclass(frozen=True)
class PeerRef:
    """The pod a PEER_LEFT verdict names: the one holding the incident."""

    via: str  # "verdict" (its verdict was read) or "claim" (it held the incident's claim)
    id: str | None = None
    pod: str | None = None
    node_rank: int | None = None
    node: str | None = None
    name: str | None = None  # its class


@dataclass(frozen=True)
class Verdict:
    """How an attempt ended: written once, at exit (by a cause, before it stops its tree)."""

    id: str  # the attempt's id
    pod: str
    wall: float  # Unix seconds when the verdict was reached, this node's clock
    name: str  # the class, e.g. "DEVICE_FAILED"
    code: int
    role: Role | None  # None for SUCCEEDED
    reason: str = ""
    evidence: tuple[Mapping[str, Any], ...] = ()  # the deciding findings, compacted
    node_rank: int | None = None
    namespace: str | None = None
    node: str | None = None
    gang: str | None = None
    incarnation: str | None = None
    started_wall: float | None = None
    last_steps: Mapping[int, int] = field(default_factory=dict)  # rank -> last step seen
    last_committed_step: int | None = None
    times: PhaseTimes = field(default_factory=PhaseTimes)
    peer: PeerRef | None = None  # for PEER_LEFT: who holds the incident
    bounded_from: str | None = None  # the free class the node's bound turned into this one
    progress: Progress | None = None  # None from a writer before this field existed

    kind = Kind.VERDICT

    @property
    def exit_code(self) -> ExitCode | None:
        """The class as this reader knows it; None for a code from a newer contract."""
        try:
            member = ExitCode.from_code(self.code)
        except ValueError:
            return None
        return member if member.name == self.name else None


@dataclass(frozen=True)
class Ended(Verdict):
    """A verdict written early, again at the pod's exit: the same class, reason and
    evidence, with the exit's time (`wall`) and the attempt's steps, commits and times as
    they stood then (the checkpoint a leaving pod saved after deciding included). Peers
    never read it; the goodput report prefers it to the early record."""

    kind = Kind.ENDED

    @classmethod
    def of(cls, verdict: Verdict, **changes: Any) -> Ended:
        """`verdict` as an `Ended` record, with `changes` to its fields."""
        return cls(**{**verdict.__dict__, **changes})


@dataclass(frozen=True)
class Claim:
    """The counted class of one incident is held by attempt `id`; `number` is its name's."""

    number: int
    id: str
    pod: str
    wall: float
    name: str  # the class the holder keeps
    node_rank: int | None = None
    node: str | None = None
    gang: str | None = None
    incarnation: str | None = None

    kind = Kind.CLAIM


Record = AttemptStart | Verdict | Ended | Claim


def name_of(record: Record) -> str:
    """The object name `record` is written under."""
    if isinstance(record, AttemptStart):
        return attempt_name(record.id)
    if isinstance(record, Ended):
        return ended_name(record.id)
    if isinstance(record, Verdict):
        return verdict_name(record.id)
    return claim_name(record.number)


# ---------------------------------------------------------------------------- encoding


def encode(record: Record) -> bytes:
    """The record as the compact JSON object stored in the ledger."""
    body: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kind": record.kind.value}
    if isinstance(record, AttemptStart):
        body.update(_fields(record, _ATTEMPT_FIELDS))
    elif isinstance(record, Verdict):
        body.update(_fields(record, _VERDICT_FIELDS))
        body["role"] = record.role.value if record.role is not None else None
        body["evidence"] = [dict(item) for item in record.evidence]
        body["last_steps"] = {str(rank): step for rank, step in sorted(record.last_steps.items())}
        body["times"] = {
            "init_s": record.times.init_s,
            "steady_s": record.times.steady_s,
            "phases_s": dict(record.times.phases_s),
        }
        if record.peer is not None:
            body["peer"] = _fields(record.peer, _PEER_FIELDS)
        if record.progress is not None:
            body["progress"] = _encode_progress(record.progress)
    else:
        body.update(_fields(record, _CLAIM_FIELDS))
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def decode(name: str, data: bytes) -> Record | None:
    """The record stored as `name`, or None for anything this reader does not understand.

    Never raises: a foreign, newer, truncated or malformed object is skipped, not an error.
    """
    kind = kind_of(name)
    if kind is None:
        return None
    try:
        body = json.loads(data)
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            return None
        version = body.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            return None
        if version > VERSION or body.get("kind") != kind.value:
            return None
        if kind is Kind.ATTEMPT:
            record: Record = _attempt(body)
            expected = attempt_name(record.id)
        elif kind is Kind.VERDICT:
            record = _verdict(body)
            expected = verdict_name(record.id)
        elif kind is Kind.ENDED:
            record = Ended.of(_verdict(body))
            expected = ended_name(record.id)
        else:
            number = claim_number(name)
            if number is None or _get(body, "number", int) != number:
                return None
            record = _claim(body)
            expected = claim_name(number)
    except (_Skip, ValueError, TypeError, RecursionError):
        return None
    return record if expected == name else None


def compact_evidence(
    items: Iterable[Mapping[str, Any]], max_bytes: int = MAX_EVIDENCE_BYTES
) -> tuple[Mapping[str, Any], ...]:
    """Evidence small enough for a verdict: long strings cut, an item too big on its own
    reduced to source, kind, class and summary, and items dropped from the end to fit."""
    kept: list[Mapping[str, Any]] = []
    used = 0
    for item in items:
        slim = {key: _cut(value) for key, value in item.items()}
        size = len(json.dumps(slim, default=str))
        if size > max_bytes // 2:
            slim = {k: slim[k] for k in ("source", "kind", "class", "summary") if k in slim}
            size = len(json.dumps(slim, default=str))
        if used + size > max_bytes:
            break
        kept.append(slim)
        used += size
    return tuple(kept)


# ------------------------------------------------------------------------ the ledger view


@dataclass(frozen=True)
class LedgerView:
    """One read of the ledger: every name listed, and the records among them this reader
    could decode (a name listed but not decodable is in `names` only)."""

    names: frozenset[str] = frozenset()
    records: Mapping[str, Record] = field(default_factory=dict)

    @classmethod
    def read(cls, objects: Mapping[str, bytes | None]) -> LedgerView:
        """Decode what was read: name -> bytes, or None where the object could not be read."""
        records: dict[str, Record] = {}
        for name, data in objects.items():
            record = decode(name, data) if data is not None else None
            if record is not None:
                records[name] = record
        return cls(frozenset(objects), records)

    def verdicts(self) -> list[tuple[str, Verdict]]:
        return [(n, r) for n, r in sorted(self.records.items()) if type(r) is Verdict]

    def ended(self) -> list[tuple[str, Ended]]:
        return [(n, r) for n, r in sorted(self.records.items()) if isinstance(r, Ended)]

    def claims(self) -> list[tuple[str, Claim]]:
        return [(n, r) for n, r in sorted(self.records.items()) if isinstance(r, Claim)]

    def attempts(self) -> list[tuple[str, AttemptStart]]:
        return [(n, r) for n, r in sorted(self.records.items()) if isinstance(r, AttemptStart)]

    def claim_names(self) -> list[str]:
        """Every claim listed, decodable or not, lowest number first."""
        return sorted(n for n in self.names if claim_number(n) is not None)


# ------------------------------------------------------------------------------ internals


class _Skip(Exception):
    """A record this reader cannot use."""


_ATTEMPT_FIELDS = (
    "id",
    "pod",
    "wall",
    "node_rank",
    "namespace",
    "node",
    "pod_uid",
    "restart_count",
    "attempt",
    "resume_step",
    "gang",
    "incarnation",
    "nnodes",
)
_VERDICT_FIELDS = (
    "id",
    "pod",
    "wall",
    "name",
    "code",
    "reason",
    "node_rank",
    "namespace",
    "node",
    "gang",
    "incarnation",
    "started_wall",
    "last_committed_step",
    "bounded_from",
)
_PEER_FIELDS = ("via", "id", "pod", "node_rank", "node", "name")
_CLAIM_FIELDS = ("number", "id", "pod", "wall", "name", "node_rank", "node", "gang", "incarnation")


def _fields(record: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(record, name) for name in names}


_MISSING = object()


def _get(body: Mapping[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    value = body.get(key, _MISSING)
    if value is _MISSING or value is None:
        if optional:
            return None
        raise _Skip(key)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Skip(key)
        if not math.isfinite(value):
            raise _Skip(key)
        return float(value)
    if kind is int and isinstance(value, bool):
        raise _Skip(key)
    if not isinstance(value, kind):
        raise _Skip(key)
    return value


def _id(body: Mapping[str, Any]) -> str:
    value = _get(body, "id", str)
    if not _ID_RE.match(value):
        raise _Skip("id")
    return value


def _attempt(body: Mapping[str, Any]) -> AttemptStart:
    return AttemptStart(
        id=_id(body),
        pod=_get(body, "pod", str),
        wall=_get(body, "wall", float),
        node_rank=_get(body, "node_rank", int, optional=True),
        namespace=_get(body, "namespace", str, optional=True),
        node=_get(body, "node", str, optional=True),
        pod_uid=_get(body, "pod_uid", str, optional=True),
        restart_count=_get(body, "restart_count", int, optional=True) or 0,
        attempt=_get(body, "attempt", int, optional=True) or 1,
        resume_step=_get(body, "resume_step", int, optional=True),
        gang=_get(body, "gang", str, optional=True),
        incarnation=_get(body, "incarnation", str, optional=True),
        nnodes=_get(body, "nnodes", int, optional=True),
    )


def _verdict(body: Mapping[str, Any]) -> Verdict:
    role = _get(body, "role", str, optional=True)
    evidence = _get(body, "evidence", list, optional=True) or []
    steps = _get(body, "last_steps", dict, optional=True) or {}
    times = _get(body, "times", dict, optional=True) or {}
    phases = _get(times, "phases_s", dict, optional=True) or {}
    peer = _get(body, "peer", dict, optional=True)
    progress = _get(body, "progress", dict, optional=True)
    return Verdict(
        id=_id(body),
        pod=_get(body, "pod", str),
        wall=_get(body, "wall", float),
        name=_get(body, "name", str),
        code=_get(body, "code", int),
        role=Role(role) if role is not None else None,  # an unknown role: ValueError, skip
        reason=_get(body, "reason", str, optional=True) or "",
        evidence=tuple(item for item in evidence if isinstance(item, dict)),
        node_rank=_get(body, "node_rank", int, optional=True),
        namespace=_get(body, "namespace", str, optional=True),
        node=_get(body, "node", str, optional=True),
        gang=_get(body, "gang", str, optional=True),
        incarnation=_get(body, "incarnation", str, optional=True),
        started_wall=_get(body, "started_wall", float, optional=True),
        last_steps={int(rank): _get(steps, rank, int) for rank in steps},
        last_committed_step=_get(body, "last_committed_step", int, optional=True),
        times=PhaseTimes(
            init_s=_get(times, "init_s", float, optional=True) or 0.0,
            steady_s=_get(times, "steady_s", float, optional=True) or 0.0,
            phases_s={str(k): _get(phases, k, float) for k in phases},
        ),
        peer=_peer(peer) if peer is not None else None,
        bounded_from=_get(body, "bounded_from", str, optional=True),
        progress=_progress(progress) if progress is not None else None,
    )


def _peer(body: Mapping[str, Any]) -> PeerRef:
    return PeerRef(
        via=_get(body, "via", str),
        id=_get(body, "id", str, optional=True),
        pod=_get(body, "pod", str, optional=True),
        node_rank=_get(body, "node_rank", int, optional=True),
        node=_get(body, "node", str, optional=True),
        name=_get(body, "name", str, optional=True),
    )


_PROGRESS_FIELDS = (
    "first_step",
    "first_step_s",
    "last_step",
    "last_progress_s",
    "steady_at_last_progress_s",
    "step_time_mean_s",
    "step_time_stdev_s",
    "step_time_count",
)


def _encode_progress(progress: Progress) -> dict[str, Any]:
    body = _fields(progress, _PROGRESS_FIELDS)
    body["commits"] = [[m.step, m.at_s, m.steady_s] for m in progress.commits]
    return body


def _progress(body: Mapping[str, Any]) -> Progress:
    commits = _get(body, "commits", list, optional=True) or []
    marks = []
    for item in commits:
        if not isinstance(item, list) or len(item) < 3:
            raise _Skip("commits")
        marks.append(CommitMark(_get({"s": item[0]}, "s", int), *_floats(item[1:3])))
    return Progress(
        first_step=_get(body, "first_step", int, optional=True),
        first_step_s=_get(body, "first_step_s", float, optional=True),
        last_step=_get(body, "last_step", int, optional=True),
        last_progress_s=_get(body, "last_progress_s", float, optional=True),
        steady_at_last_progress_s=_get(body, "steady_at_last_progress_s", float, optional=True)
        or 0.0,
        commits=tuple(marks),
        step_time_mean_s=_get(body, "step_time_mean_s", float, optional=True),
        step_time_stdev_s=_get(body, "step_time_stdev_s", float, optional=True),
        step_time_count=_get(body, "step_time_count", int, optional=True) or 0,
    )


def _floats(values: list[Any]) -> list[float]:
    return [_get({"v": value}, "v", float) for value in values]


def _claim(body: Mapping[str, Any]) -> Claim:
    return Claim(
        number=_get(body, "number", int),
        id=_id(body),
        pod=_get(body, "pod", str),
        wall=_get(body, "wall", float),
        name=_get(body, "name", str),
        node_rank=_get(body, "node_rank", int, optional=True),
        node=_get(body, "node", str, optional=True),
        gang=_get(body, "gang", str, optional=True),
        incarnation=_get(body, "incarnation", str, optional=True),
    )


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_EVIDENCE_STRING:
        return value[:MAX_EVIDENCE_STRING] + "..."
    return value
