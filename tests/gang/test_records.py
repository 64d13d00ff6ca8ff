"""The ledger's records: names, the JSON round trip, and a reader that never fails."""

from __future__ import annotations

import json

import pytest

from supervisor.core.exitcodes import ExitCode
from supervisor.gang import records
from supervisor.gang.records import (
    AttemptStart,
    Claim,
    LedgerView,
    PeerRef,
    PhaseTimes,
    Role,
    Verdict,
    decode,
    encode,
    name_of,
)

ID = "train-0-x7k2p.r0.a1.0a1b2c3d"

ATTEMPT = AttemptStart(
    id=ID,
    pod="train-0-x7k2p",
    wall=1_700_000_000.25,
    node_rank=0,
    namespace="ml",
    node="gpu-node-7",
    pod_uid="6f1c",
    restart_count=0,
    attempt=1,
    resume_step=1200,
    gang="train",
    incarnation="train/3",
    nnodes=2,
)
VERDICT = Verdict(
    id=ID,
    pod="train-0-x7k2p",
    wall=1_700_000_100.5,
    name="PEER_LEFT",
    code=87,
    role=Role.SYMPTOM,
    reason="Another pod of the gang left first.",
    evidence=({"source": "ledger", "kind": "peer_verdict", "summary": "..."},),
    node_rank=0,
    namespace="ml",
    node="gpu-node-7",
    gang="train",
    incarnation="train/3",
    started_wall=1_700_000_000.25,
    last_steps={0: 1250, 1: 1249},
    last_committed_step=1200,
    times=PhaseTimes(init_s=12.5, steady_s=80.0, phases_s={"checkpoint": 7.5}),
    peer=PeerRef("verdict", "train-1-abcde.r0.a1.00ff00ff", "train-1-abcde", 1, "n2", "HANG"),
)
ENDED = records.Ended.of(VERDICT, wall=1_700_000_104.0, last_committed_step=1250)
CLAIM = Claim(
    number=7,
    id=ID,
    pod="train-0-x7k2p",
    wall=1_700_000_101.0,
    name="HANG",
    node_rank=0,
    node="gpu-node-7",
    gang="train",
    incarnation="train/3",
)


@pytest.mark.parametrize("record", [ATTEMPT, VERDICT, ENDED, CLAIM], ids=lambda r: r.kind.value)
def test_every_record_round_trips_under_its_own_name(record: records.Record) -> None:
    name = name_of(record)
    assert records.kind_of(name) is record.kind
    assert decode(name, encode(record)) == record


def test_names_are_the_documented_layout() -> None:
    assert name_of(ATTEMPT) == f"attempts/{ID}.json"
    assert name_of(VERDICT) == f"verdicts/{ID}.json"
    assert name_of(ENDED) == f"ended/{ID}.json"
    assert name_of(CLAIM) == "claims/0000000007.json"
    assert records.kind_of("claims/0000000007.json") is records.Kind.CLAIM
    for other in ("step_000000000012/COMMITTED", "attempts/x.json.tmp", "attempts/a/b.json", ""):
        assert records.kind_of(other) is None


@pytest.mark.parametrize(
    ("pod", "restart", "attempt", "expected"),
    [
        ("train-0-x7k2p", 0, 1, "train-0-x7k2p.r0.a1.cafe"),
        ("host.example.com", 2, 3, "host-example-com.r2.a3.cafe"),  # '.' is the separator
        ("Odd_Name/..", 0, 1, "Odd-Name---.r0.a1.cafe"),
        ("", 0, 1, "pod.r0.a1.cafe"),
    ],
)
def test_attempt_ids_are_safe_path_components(
    pod: str, restart: int, attempt: int, expected: str
) -> None:
    assert records.attempt_id(pod, restart, attempt, "cafe") == expected
    assert decode(
        records.attempt_name(expected), encode(AttemptStart(expected, pod or "p", 1.0))
    ) == AttemptStart(expected, pod or "p", 1.0)


def test_attempt_ids_need_a_hex_nonce_and_nonces_differ() -> None:
    with pytest.raises(ValueError, match="hex"):
        records.attempt_id("p", 0, 1, "not-hex")
    nonces = {records.new_nonce() for _ in range(200)}
    assert len(nonces) == 200 and all(len(n) == 8 for n in nonces)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ([], "claims/0000000000.json"),
        (["claims/0000000000.json"], "claims/0000000001.json"),
        (
            ["claims/0000000003.json", "claims/0000000011.json", "verdicts/x.json", "claims/junk"],
            "claims/0000000012.json",
        ),
    ],
)
def test_next_claim_is_one_past_the_highest_listed(names: list[str], expected: str) -> None:
    assert records.next_claim_name(names) == expected


def test_claim_numbers_stay_in_range() -> None:
    with pytest.raises(ValueError):
        records.claim_name(-1)
    with pytest.raises(ValueError):
        records.claim_name(10**10)
    assert records.claim_number("claims/12.json") is None  # not ten digits: not a claim


def _body(record: records.Record, **changes: object) -> bytes:
    body = json.loads(encode(record))
    for key, value in changes.items():
        if value is DROP:
            body.pop(key)
        else:
            body[key] = value
    return json.dumps(body).encode()


DROP = object()
V = records.verdict_name(ID)
A = records.attempt_name(ID)
C = records.claim_name(7)

SKIPPED = [
    ("not json", V, b"\x00\xff{"),
    ("truncated", V, encode(VERDICT)[:40]),
    ("a list", V, b"[1, 2]"),
    ("another format", V, _body(VERDICT, format="supervise-checkpoint")),
    ("no format", V, _body(VERDICT, format=DROP)),
    ("a newer major version", V, _body(VERDICT, version=2)),
    ("version zero", V, _body(VERDICT, version=0)),
    ("version as bool", V, _body(VERDICT, version=True)),
    ("version as text", V, _body(VERDICT, version="1")),
    ("an unknown kind", V, _body(VERDICT, kind="heartbeat")),
    ("a kind in the wrong folder", A, encode(VERDICT)),
    ("a name that is not its id", records.verdict_name("other.r0.a1.00"), encode(VERDICT)),
    ("a required field missing", V, _body(VERDICT, pod=DROP)),
    ("a required field null", V, _body(VERDICT, wall=None)),
    ("a wrong type", V, _body(VERDICT, code="87")),
    ("a bool for an int", V, _body(VERDICT, node_rank=True)),
    ("a non-finite time", V, _body(VERDICT, wall=float("inf"))),
    ("an unknown role", V, _body(VERDICT, role="bystander")),
    ("a malformed id", V, _body(VERDICT, id="../../etc")),
    ("a step keyed by a word", V, _body(VERDICT, last_steps={"zero": 1})),
    ("a peer without via", V, _body(VERDICT, peer={"pod": "x"})),
    ("a claim numbered unlike its name", C, _body(CLAIM, number=8)),
    ("a claim name that is not a number", "claims/seven.json", encode(CLAIM)),
    ("a name outside the layout", "notes/x.json", encode(VERDICT)),
]


@pytest.mark.parametrize(("why", "name", "data"), SKIPPED, ids=[s[0] for s in SKIPPED])
def test_a_record_this_reader_cannot_use_is_skipped_never_raised(
    why: str, name: str, data: bytes
) -> None:
    assert decode(name, data) is None


def test_unknown_fields_are_ignored_and_optional_ones_default() -> None:
    assert decode(V, _body(VERDICT, added_in_1_4={"x": 1}, gpu_temperature=80)) == VERDICT
    minimal = {
        "format": "supervise-ledger",
        "version": 1,
        "kind": "verdict",
        "id": ID,
        "pod": "p",
        "wall": 5,
        "name": "HANG",
        "code": 84,
        "role": "symptom",
    }
    verdict = decode(V, json.dumps(minimal).encode())
    assert isinstance(verdict, Verdict)
    assert (verdict.wall, verdict.evidence, verdict.last_steps, verdict.times) == (
        5.0,
        (),
        {},
        PhaseTimes(),
    )
    assert verdict.exit_code is ExitCode.HANG


def test_a_class_from_a_newer_contract_decodes_with_no_exit_code() -> None:
    newer = decode(V, _body(VERDICT, name="GANG_SPLIT", code=88))
    assert isinstance(newer, Verdict) and newer.exit_code is None
    renamed = decode(V, _body(VERDICT, name="SOMETHING_ELSE", code=84))
    assert isinstance(renamed, Verdict) and renamed.exit_code is None


def test_encoding_is_compact_sorted_json_with_the_schema_first_class() -> None:
    body = json.loads(encode(CLAIM))
    assert (body["format"], body["version"], body["kind"]) == ("supervise-ledger", 1, "claim")
    assert encode(CLAIM) == encode(CLAIM)  # deterministic
    assert b" " not in encode(ATTEMPT)


def test_evidence_is_compacted_for_the_ledger() -> None:
    stacks = {str(rank): "x" * 3000 for rank in range(8)}  # nested: too big as a whole
    huge = {"source": "hang", "kind": "heartbeat_stall", "summary": "s", "stacks": stacks}
    long_line = {"source": "log", "kind": "nccl_remote_error", "line": "y" * 2000}
    many = [{"source": "gpu", "kind": f"k{i}", "summary": "z" * 300} for i in range(100)]
    kept = records.compact_evidence([huge, long_line, *many])
    assert kept[0] == {"source": "hang", "kind": "heartbeat_stall", "summary": "s"}
    assert kept[1]["line"] == "y" * records.MAX_EVIDENCE_STRING + "..."
    assert 3 < len(kept) < 102
    assert sum(len(json.dumps(item)) for item in kept) <= records.MAX_EVIDENCE_BYTES


def test_a_view_keeps_every_name_and_decodes_what_it_can() -> None:
    objects = {
        name_of(ATTEMPT): encode(ATTEMPT),
        name_of(VERDICT): encode(VERDICT),
        name_of(ENDED): encode(ENDED),
        name_of(CLAIM): encode(CLAIM),
        "claims/0000000008.json": b"written by supervise 9",
        "claims/0000000009.json": None,  # listed, but the read failed
        "stray.txt": b"hello",
    }
    view = LedgerView.read(objects)
    assert view.names == frozenset(objects)
    assert view.attempts() == [(name_of(ATTEMPT), ATTEMPT)]
    assert view.verdicts() == [(name_of(VERDICT), VERDICT)]  # peers never see the end
    assert view.ended() == [(name_of(ENDED), ENDED)]
    assert view.claims() == [(name_of(CLAIM), CLAIM)]
    assert view.claim_names() == [
        "claims/0000000007.json",
        "claims/0000000008.json",
        "claims/0000000009.json",
    ]
