"""The gang stop's latency, and what the run ledger costs on object storage.

1. Latency, through the real CLI: two "nodes" of an Indexed Job on loopback, each a
   `supervise --nproc-per-node 1` with its own JOB_COMPLETION_INDEX and one shared
   `--checkpoint-dir` (and so one ledger), running `tests/process/gang_trainer.py` on gloo.
   At step 30 (see below) node 1's trainer raises (TRAINING_FAILED, 80) and node 0 blocks
   on the rendezvous store, which outlives node 1 and would hold it for 10 minutes: only the
   ledger can tell node 0, which must exit PEER_LEFT (87). The latency is node 0's `exit`
   event (its event log's `time`) minus the `wall` of node 1's verdict record under
   `<ckpt>/_ledger/verdicts/`; both are one machine's wall clock. The `stopping` event
   (when node 0 acted on the finding) is printed beside it, so the poll's share and the
   stop's share can be told apart. The poll interval is supervise's default unless
   `--poll` is given: the expected latency is about half of it on average, plus the stop.
   Both nodes start together, so with one fixed trigger step the verdict would land at an
   almost fixed phase of node 0's polls, set by start-up time; the trigger step is
   therefore stepped across one poll interval over the runs (`--fixed-at`: step 30 always,
   exactly as the test).
   Optionally (`--xid-runs`), the same for a fatal Xid on node 1 (fake NVML), with the
   example trainer on node 0 still training: there gloo may notice the lost peer first,
   and the line says which of the two stopped node 0.

2. Cost: one node's gang-stop watchdog (`Member(...).watchdog()`, started with a report
   callback, as the run loop starts it) against a real S3 API server (moto's
   `ThreadedMotoServer` on loopback) through `FsLedger`, with a ledger that already holds
   `--earlier` attempts of earlier incidents (a start and a verdict each, and one claim per
   16). Requests are counted at the HTTP level: a WSGI wrapper around the moto server's
   application sees every request and sorts it by method and target (LIST = GET on the
   bucket; GET/HEAD/PUT on an object), and by the access key in its signature, so each
   simulated pod is counted alone. The watchdog runs `--seconds` at `--bench-poll`; its
   steady per-poll requests are extrapolated to a node-hour at the default poll interval
   and priced at S3 Standard request prices (stated in the output). A peer then writes a
   cause verdict; the poll that sees it, and each pod's begin/settle, are counted too.

Every latency is printed as the median over the runs (at least 5) with its spread
(min-max), and as a multiple of the poll interval.

Usage: python bench/bench_gang.py [--runs 6] [--poll S] [--fixed-at] [--xid-runs 5]
       [--xid-at 12] [--earlier 200]
       [--seconds 10] [--bench-poll 0.2] [--skip-latency] [--skip-cost]
Needs torch (the trainer), moto[server] and s3fs (the cost part).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rounds import MIN_ROUNDS, spread

from supervisor.core.actions import Exit
from supervisor.core.events import Found
from supervisor.core.exitcodes import ExitCode
from supervisor.gang import records
from supervisor.gang.options import DEFAULT_POLL_INTERVAL, LEDGER_PREFIX, GangOptions, Identity
from supervisor.run.gang import Member, VerdictFacts

ROOT = Path(__file__).resolve().parents[1]
SUPERVISE = str(Path(sys.executable).with_name("supervise"))
GANG_TRAINER = str(ROOT / "tests" / "process" / "gang_trainer.py")
TRAIN = str(ROOT / "examples" / "train.py")
STEP_S = 0.02  # gang_trainer.py's sleep per step; the all-reduce adds a little

# S3 Standard request prices (us-east-1), USD per 1,000 requests.
PRICE_PER_1000 = {"LIST": 0.005, "PUT": 0.005, "GET": 0.0004, "HEAD": 0.0004}
HOURS_PER_MONTH = 730


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seconds(values: list[float]) -> str:
    """The median with its spread (min-max) over the runs, or "no runs"."""
    return spread(values, ".3f", " s") if values else "no runs"


# ------------------------------------------------------------------ 1. latency, real CLI


def node(tmp: Path, index: int, port: int, extra: list[str], command: list[str]):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JOB_COMPLETION_INDEX": str(index),
        "SUPERVISE_NNODES": "2",
        "HOSTNAME": f"train-{index}",
        "SUPERVISE_SUBDOMAIN": "train",
    }
    argv = [
        SUPERVISE,
        "--termination-log",
        str(tmp / f"node{index}.term"),
        "--event-log",
        str(tmp / f"node{index}.events"),
        "--checkpoint-dir",
        str(tmp / "ckpt"),
        "--nproc-per-node",
        "1",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        *extra,
        "--",
        *command,
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def wall_of(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def one_gang_run(
    tmp: Path, extra: list[str], per_node: dict[int, list[str]], command: list[str]
) -> dict[str, Any]:
    """Both nodes to their exit; the marks that the latency is read from."""
    port = free_port()
    procs = [node(tmp, i, port, extra + per_node.get(i, []), command) for i in (0, 1)]
    codes = []
    for proc in (procs[1], procs[0]):
        try:
            codes.append(proc.wait(timeout=900))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    out: dict[str, Any] = {"codes": (codes[1], codes[0])}  # (node 0, node 1)
    verdicts = {}
    for path in (tmp / "ckpt" / "_ledger" / "verdicts").glob("*.json"):
        record = json.loads(path.read_text())
        verdicts[record["pod"]] = record
    events = [json.loads(line) for line in (tmp / "node0.events").read_text().splitlines()]
    if "train-1" in verdicts:
        out["verdict"] = verdicts["train-1"]["wall"]
    for event in events:
        if event["event"] == "finding" and "first_finding" not in out:
            out["first_finding"] = event["finding"]["kind"]
        if event["event"] == "exit":
            out["exit"] = wall_of(event["time"])
        elif event["event"] == "stopping" and "stopping" not in out:
            out["stopping"] = wall_of(event["time"])
            out["gang_stop"] = "Another pod of the gang left first" in event.get("reason", "")
    return out


def latency(
    label: str, runs: int, expect: tuple[int, int], make: Callable[[Path, int], dict], poll: float
) -> None:
    to_exit, to_stopping, by_gang, failed = [], [], 0, []
    first_seen: Counter[str] = Counter()
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            marks = make(Path(tmp), run)
        if marks["codes"] != expect or "verdict" not in marks or "exit" not in marks:
            failed.append(f"run {run + 1}: exit codes {marks['codes']} (node 0, node 1)")
            continue
        to_exit.append(marks["exit"] - marks["verdict"])
        stopping = "no `stopping` event"
        if "stopping" in marks:
            to_stopping.append(marks["stopping"] - marks["verdict"])
            stopping = f"`stopping` {to_stopping[-1]:.3f} s"
        by_gang += bool(marks.get("gang_stop"))
        first_seen[str(marks.get("first_finding"))] += 1
        print(
            f"  run {run + 1}: verdict -> {stopping}, exit {to_exit[-1]:.3f} s "
            f"(node 0's first finding: {marks.get('first_finding')})",
            flush=True,
        )
    print(f"{label}:")
    print(f"  peer's verdict -> node 0's exit (87):     {seconds(to_exit)}")
    print(f"  peer's verdict -> node 0's `stopping`:    {seconds(to_stopping)}")
    if to_exit:
        in_polls = [t / poll for t in to_exit]
        print(f"  exit latency / poll interval:            {spread(in_polls, '.2f', 'x')}")
    seen = ", ".join(f"{kind} x{n}" for kind, n in first_seen.most_common())
    print(f"  node 0's first finding: {seen or 'none'}")
    print(f"  stopped by the gang watchdog in {by_gang} of {len(to_exit)} runs", end="")
    print(f"; {len(failed)} run(s) with other exit codes" if failed else "")
    for line in failed:
        print(f"    {line}")


def latency_part(args: argparse.Namespace) -> None:
    poll = args.poll if args.poll is not None else DEFAULT_POLL_INTERVAL
    extra = ["--gang-poll-interval", str(args.poll)] if args.poll is not None else []
    print(
        f"== 1. peer's verdict to a symptom pod's exit (real CLI, 2 nodes on loopback) ==\n"
        f"--gang-poll-interval {poll:g} s ({'given' if extra else 'the default'}); a uniform "
        f"phase gives poll/2 = {poll / 2:g} s on average, at most {poll:g} s, plus the stop"
    )
    # With one trigger step the verdict lands at a nearly fixed time after node 0's watchdog
    # started (both start together), so its phase against the polls would be set by start-up
    # time, not spread: the step is stepped across one poll interval, run by run.
    span = 0 if args.fixed_at else round(poll / STEP_S)

    def at(run: int) -> int:
        return 30 + (span * (2 * run + 1)) // (2 * args.runs)

    print(
        "trigger step: 30 (the test's) for every run"
        if args.fixed_at
        else f"trigger step: 30 + 0..{span} (one poll interval at {STEP_S:g} s a step), evenly "
        f"spaced over the runs: {[at(run) for run in range(args.runs)]}"
    )

    def raise_and_block(tmp: Path, run: int) -> dict:
        script = [GANG_TRAINER, "--raise-on", "1", "--block-on", "0", "--at", str(at(run))]
        return one_gang_run(tmp, extra, {}, script)

    latency(
        f"node 1's trainer raises, node 0 blocked on the store ({args.runs} runs)",
        args.runs,
        (87, 80),
        raise_and_block,
        poll,
    )
    if args.xid_runs:

        def xid(tmp: Path, run: int) -> dict:
            scenario = tmp / "xid79.json"
            timeline = [{"at": args.xid_at, "gpu": 0, "xid": 79}]
            scenario.write_text(json.dumps({"gpus": 1, "timeline": timeline}))
            on_1 = ["--fake-gpus", str(scenario), "--gpu-poll-interval", "0.2"]
            train = [TRAIN, "--steps", "100000", "--step-time", "0.01"]
            return one_gang_run(tmp, extra, {1: on_1}, [*train, "--checkpoint-every", "1000"])

        latency(
            f"fatal Xid 79 on node 1 at {args.xid_at:g} s, node 0 training ({args.xid_runs} runs)",
            args.xid_runs,
            (87, 82),
            xid,
            poll,
        )


# ------------------------------------------------------------------- 2. cost on S3 (moto)


class RequestCounter:
    """WSGI middleware: counts each HTTP request by (access key, operation)."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        key = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else "?"
        path = environ.get("PATH_INFO", "/").strip("/")
        method = environ["REQUEST_METHOD"]
        on_object = "/" in path  # path-style: /bucket/key
        if method == "GET":
            op = "GET" if on_object else "LIST"
        elif method in ("PUT", "POST"):
            op = "PUT"  # PUT, COPY, POST and LIST are priced alike on S3
        else:
            op = method  # HEAD (priced as GET), DELETE (free)
        with self.lock:
            self.counts[key, op] += 1
        return self.app(environ, start_response)

    def of(self, key: str) -> Counter[str]:
        with self.lock:
            return Counter({op: n for (k, op), n in self.counts.items() if k == key})


def dollars(counts: Counter[str]) -> float:
    return sum(n * PRICE_PER_1000.get(op, 0.0) / 1000 for op, n in counts.items())


def show(counts: Counter[str]) -> str:
    order = ["LIST", "GET", "HEAD", "PUT", "DELETE"]
    parts = [f"{op} {counts[op]}" for op in order if counts[op]]
    parts += [f"{op} {n}" for op, n in counts.items() if op not in order]
    return ", ".join(parts) or "none"


def seed(ledger: Any, earlier: int) -> int:
    """Earlier incidents of a 16-node gang: each attempt's start and verdict, a claim per 16."""
    wall = time.time() - 86400
    classes = [ExitCode.PEER_LEFT] * 14 + [ExitCode.DEVICE_FAILED, ExitCode.TRAINING_FAILED]
    written = 0
    for i in range(earlier):
        pod = f"train-{i % 16}"
        ident = records.attempt_id(pod, 0, 1, records.new_nonce())
        start = records.AttemptStart(ident, pod, wall + i, node_rank=i % 16, node=f"n{i % 16}")
        code = classes[i % 16]
        role = records.Role.SYMPTOM if code is ExitCode.PEER_LEFT else records.Role.CAUSE
        verdict = records.Verdict(
            ident, pod, wall + i + 60, code.name, code.code, role, reason="an earlier incident"
        )
        batch = [start, verdict]
        if i % 16 == 15:
            batch.append(records.Claim(i // 16, ident, pod, wall + i + 61, code.name))
        for record in batch:
            ledger.create(records.name_of(record), records.encode(record))
            written += 1
    return written


class Pod:
    """One simulated pod: its own FsLedger (own s3fs client, own access key) and Member."""

    def __init__(
        self, endpoint: str, counter: RequestCounter, url: str, key: str, poll: float, **ident
    ) -> None:
        from supervisor.storage.ledger import FsLedger

        self.key, self.counter = key, counter
        self.notes: list[str] = []
        self.member = Member(
            FsLedger(url, server_options(endpoint, key)),
            Identity(nnodes=2, **ident),
            GangOptions(poll_interval=poll),
            note=self.notes.append,
        )

    def counted(self, call: Callable[[], Any]) -> tuple[Any, Counter[str], float]:
        before, started = self.counter.of(self.key), time.monotonic()
        result = call()
        return result, self.counter.of(self.key) - before, time.monotonic() - started


def server_options(endpoint: str, key: str) -> dict[str, Any]:
    return {
        "key": key,
        "secret": "testing",
        "skip_instance_cache": True,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


def cost_part(args: argparse.Namespace) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    from supervisor.storage.ledger import FsLedger

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    counter = RequestCounter(server._server.app)
    server._server.app = counter  # werkzeug calls `server.app` on every request
    endpoint = f"http://127.0.0.1:{port}"
    try:
        bucket = f"ckpt-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="seed",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=bucket)
        url = f"s3://{bucket}/run/{LEDGER_PREFIX}"
        objects = seed(FsLedger(url, server_options(endpoint, "seed")), args.earlier)
        print(
            f"\n== 2. the ledger on S3 (moto server on loopback), requests counted at the HTTP "
            f"level ==\nledger: {objects} earlier objects ({args.earlier} attempts of a 16-node "
            f"gang: start + verdict each, a claim per 16)\nprices (S3 Standard, per 1,000 "
            f"requests): LIST/PUT ${PRICE_PER_1000['LIST']}, GET/HEAD ${PRICE_PER_1000['GET']}"
        )
        watcher = Pod(
            endpoint, counter, url, "node0", args.bench_poll, pod="train-0", node_rank=0, node="n0"
        )
        peer = Pod(
            endpoint, counter, url, "node1", args.bench_poll, pod="train-1", node_rank=1, node="n1"
        )
        member = watcher.member

        _, begin, begin_s = watcher.counted(lambda: member.begin(1, 1000))
        polls: list[tuple[Counter[str], float]] = []
        read = member.read

        def counted_read(*folders: str, skip: frozenset[str] | None = None):
            view, counts, took = watcher.counted(lambda: read(*folders, skip=skip))
            polls.append((counts, took))
            return view

        member.read = counted_read  # type: ignore[method-assign]
        found: list[Found] = []
        reported = threading.Event()

        def report(event: Found) -> None:
            found.append(event)
            reported.set()

        watchdog = member.watchdog()
        watchdog.start(report, time.monotonic)
        time.sleep(args.seconds)
        steady_polls = len(polls)
        # A peer joins this incident, fails on its own (a counted cause) and says so.
        peer.member.begin(1, 1000)
        cause = Exit(ExitCode.TRAINING_FAILED, "the trainer raised", ())
        _, peer_settle, peer_settle_s = peer.counted(
            lambda: peer.member.settle(cause, VerdictFacts({1: 1030}, 1000))
        )
        saw = reported.wait(timeout=10 * member.options.poll_interval + 10)
        watchdog.stop()
        member.read = read  # type: ignore[method-assign]
        seen_poll = polls[-1] if saw else None
        stopped = Exit(ExitCode.PEER_LEFT, "a peer left", (found[0].finding,) if saw else ())
        _, settle, settle_s = watcher.counted(
            lambda: member.settle(stopped, VerdictFacts({0: 1030}, 1000))
        )
        # A device cause on a third node: its verdict is written before the tree stops,
        # after the node's bound on free exits has read the node's history.
        device = Pod(
            endpoint, counter, url, "node7", args.bench_poll, pod="train-7", node_rank=7, node="n7"
        )
        _, dev_begin, _ = device.counted(lambda: device.member.begin(1, 1000))
        xid = Exit(ExitCode.DEVICE_FAILED, "Xid 79", ())
        _, dev_decided, dev_s = device.counted(
            lambda: device.member.decided(xid, VerdictFacts({7: 1030}, 1000))
        )
        _, dev_settle, _ = device.counted(
            lambda: device.member.settle(xid, VerdictFacts({7: 1030}, 1000))
        )
    finally:
        server.stop()

    first, first_s = polls[0]
    rest = polls[1:steady_polls]
    per_poll = Counter()
    for counts, _ in rest:
        per_poll.update(counts)
    n_rest = max(1, len(rest))
    hourly_polls = 3600 / DEFAULT_POLL_INTERVAL
    hourly = Counter({op: n / n_rest * hourly_polls for op, n in per_poll.items()})
    took = statistics.median(t for _, t in rest) if rest else float("nan")
    print(
        f"watchdog: {args.seconds:g} s at --gang-poll-interval {member.options.poll_interval:g} s:"
        f" {steady_polls} polls before the peer's verdict"
    )
    print(f"  begin (list the ledger, write the start): {show(begin)}  [{begin_s:.3f} s]")
    print(f"  first poll:  {show(first)}  [{first_s:.3f} s]")
    print(
        f"  each later poll: {show(Counter({op: n / n_rest for op, n in per_poll.items()}))}"
        f" on average over {len(rest)} polls  [median {took * 1000:.1f} ms]"
    )
    if seen_poll is not None:
        print(f"  the poll that saw the peer's verdict: {show(seen_poll[0])}")
        print(f"  reported: {found[0].finding.kind} ({found[0].finding.exit_code.name})")
    else:
        print("  the peer's verdict was NOT reported within 10 polls")
    print(f"  settle as PEER_LEFT (after the gang stop): {show(settle)}  [{settle_s:.3f} s]")
    print(
        f"peer (counted cause, TRAINING_FAILED): settle {show(peer_settle)} [{peer_settle_s:.3f} s]"
    )
    print(
        f"device cause (DEVICE_FAILED, with a node name): begin {show(dev_begin)}; decided "
        f"{show(dev_decided)} [{dev_s:.3f} s]; settle {show(dev_settle)}"
    )
    notes = watcher.notes + peer.notes + device.notes
    if notes:
        print(f"notes from the ledger: {notes}")
    print(
        f"per node-hour at the default --gang-poll-interval {DEFAULT_POLL_INTERVAL:g} s "
        f"({hourly_polls:g} polls): {show(Counter({k: round(v) for k, v in hourly.items()}))}"
        f" = ${dollars(hourly):.4f}/node-hour, ${dollars(hourly) * HOURS_PER_MONTH:.2f}"
        f"/node-month ({HOURS_PER_MONTH} h)"
    )
    per_attempt = begin + first + settle
    print(
        f"per attempt (begin + first poll + settle, this ledger): {show(per_attempt)} = "
        f"${dollars(per_attempt):.6f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="latency runs (raise + block)")
    parser.add_argument("--poll", type=float, help="--gang-poll-interval (default: supervise's)")
    parser.add_argument(
        "--fixed-at", action="store_true", help="trigger at step 30 every run, as the test does"
    )
    parser.add_argument(
        "--xid-runs", type=int, default=0, help="latency runs with an Xid (at least 5), or 0"
    )
    parser.add_argument("--xid-at", type=float, default=12.0, help="when the Xid happens (s)")
    parser.add_argument("--earlier", type=int, default=200, help="earlier attempts in the ledger")
    parser.add_argument("--seconds", type=float, default=10.0, help="watchdog time measured")
    parser.add_argument("--bench-poll", type=float, default=0.2, help="the watchdog's poll (s)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    args.runs = max(args.runs, MIN_ROUNDS)
    args.xid_runs = max(args.xid_runs, MIN_ROUNDS) if args.xid_runs else 0
    if not args.skip_latency:
        latency_part(args)
    if not args.skip_cost:
        cost_part(args)


if __name__ == "__main__":
    main()
