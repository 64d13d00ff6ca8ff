"""A fault soak: does `supervise report` tell where the time went? And what does supervise buy?

Two "nodes" of an Indexed Job on loopback (node ranks 0 and 1, each a real
`supervise --nproc-per-node 1` over torchrun and one gloo rank of examples/train.py, run by
`bench/soak_trainer.py`, which keeps ground-truth books), one shared checkpoint dir and so
one run ledger. The bench plays the Job controller: when a pod exits, its exit code (and,
for a pod the bench evicted, the DisruptionTarget condition) goes through the rendered
Job's `podFailurePolicy` in the project's simulation of the controller
(`supervisor.k8s.simulate.job_verdict`): FailJob ends the soak, Count is charged against
`backoffLimit`, Ignore is free, and either way the index gets a replacement pod. A pod that
left for a device class (82, 83) is replaced on a new node, as the scheduler would once a
node agent tainted the bad one. Replacements start when the old gang has fully exited,
with a fresh rendezvous port (a new pod would otherwise find the old one's store).

Faults, one per generation of pods, scheduled by `--seed` over `--minutes`, at least one
of each kind, each on a node drawn by the seed:

  sigterm    the bench sends SIGTERM to the pod (an eviction; the pod gets DisruptionTarget)
  degrade    fake NVML: HW thermal slowdown from a set time (`--fake-gpus` scenario)
  xid        fake NVML: Xid 79, the GPU falls off the bus
  hang       the trainer stops beating and sleeps (soak_trainer.py, by a control file)
  exception  the trainer raises (soak_trainer.py, by a control file)

At the end the bench drains both pods (SIGTERM, like a suspended Job) and replaces nothing.

Ground truth (`soak_truth.py`) comes from the bench's own books: when it forked and reaped
each pod, when each trainer process died (polled in /proc), and each step, save and load
the trainer recorded. Then `supervise report <ckpt> --json` is read and compared bucket by
bucket, in percentage points of the truth's total (lane seconds): PASS within
`--tolerance`.

Baseline, the same schedule under plain torchrun (no supervise, no ledger): the trainer
saves every `--checkpoint-every` steps (as on the supervised side) and nothing else; on any
pod's exit the bench kills the other and restarts both. What each fault does there, as
modelled: sigterm kills torchrun and its worker (no checkpoint); xid kills the worker
(SIGKILL; the CUDA context is gone); degrade does nothing (nobody looks at the GPU, so the
run keeps going: generous to the baseline, which in life would run slow); hang is seen
only by the process group's timeout (`--pg-timeout`, set through soak_trainer.py);
exception as on the supervised side. Its goodput comes from the books only, by the same
rules as the supervised side's truth (the drain costs it the steps since its last save, as
SIGTERM costs a plain torchrun); the figure with its last pods keeping every step is
printed beside it.

Usage: python bench/bench_goodput.py [--minutes 3] [--seed 1] [--tolerance 2]
       [--step-time 0.1] [--checkpoint-every 100] [--checkpoint-time S] [--pg-timeout 60]
       [--plot PNG] [--keep DIR] [--rescore DIR] [--skip-baseline] [--strict]
`--strict` exits 1 when a bucket is out of tolerance (`make bench` goes on otherwise);
`--keep DIR` runs in DIR and leaves it there; `--rescore DIR` runs nothing and scores the
books and ledger that a `--keep` run left (with `--plot`, draws again).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak_truth import BUCKETS, PodBooks, Truth, truth

from supervisor.k8s import rules
from supervisor.k8s.render import render_job
from supervisor.k8s.simulate import FailedPod, job_verdict
from supervisor.k8s.spec import CONTAINER, RenderOptions

ROOT = Path(__file__).resolve().parents[1]
SUPERVISE = str(Path(sys.executable).with_name("supervise"))
TRAINER = str(ROOT / "bench" / "soak_trainer.py")
KINDS = ("sigterm", "degrade", "xid", "hang", "exception")
DEVICE_CODES = {82, 83}  # replaced on a new node
WARM = 15.0  # seconds after a launch before a GPU fault may land (torch import, rendezvous)
STEADY = 3.0  # seconds both pods must have been stepping before the bench fires a fault
SETTLE = 25.0  # seconds of training after the last fault before the drain
GONE = 150.0  # a pod still up this long after its gang's first exit is killed (and said so)
TICK = 0.05
# Steps between periodic saves, on both sides: at --step-time 0.1 (about 0.11 s a step with
# the all-reduce) a save every ~11 s, a third of the ~30 s between faults that a 3-minute
# soak has. At 200 (~22 s) a plain run's generation seldom lives long enough to save at all,
# and the baseline keeps nothing; real jobs save far more often than they fail.
CHECKPOINT_EVERY = 100
JOB = RenderOptions(name="train", image="soak", command=("bench/soak_trainer.py",))
HEALTHY = {"gpus": 1, "timeline": []}
SCENARIOS = {
    "degrade": {"set": {"clock_event_reasons": 64, "temperature_c": 84}},  # HW thermal
    "xid": {"xid": 79},
}


@dataclass
class Fault:
    kind: str
    at: float  # seconds from the soak's start, at the earliest
    lane: int
    fired: float | None = None  # wall time it landed (planned, for a GPU scenario)
    pod: str | None = None


@dataclass
class Pod:
    name: str
    lane: int
    node: str
    gen: int
    start: float
    record: str
    end: float | None = None
    code: int | None = None
    action: str | None = None
    disrupted: bool = False
    trainer_pid: int | None = None
    trainer_exit: float | None = None
    stepping_at: float | None = None  # when the bench first saw a step recorded
    kill_at: float | None = None  # the baseline's restart: SIGKILL if SIGTERM was not enough
    proc: Any = field(default=None, repr=False)

    def books(self) -> PodBooks:
        lines = Path(self.record).read_text().splitlines() if Path(self.record).exists() else []
        assert self.end is not None
        return PodBooks(
            self.name,
            self.lane,
            self.start,
            self.end,
            self.trainer_exit,
            tuple(map(json.loads, lines)),
        )


def schedule(seed: int, seconds: float) -> list[Fault]:
    """At least one fault of each kind, in an order and on nodes drawn by `seed`, spread
    evenly over the first 85% of the soak."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    gap = 0.85 * seconds / len(kinds)
    return [Fault(kind, gap * (i + 0.5), rng.randrange(2)) for i, kind in enumerate(kinds)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- the soak


class Soak:
    """One side of the comparison, from its first launch to its drain."""

    def __init__(self, side: str, where: Path, args: argparse.Namespace) -> None:
        self.side, self.where, self.args = side, where, args
        self.supervised = side == "supervise"
        self.faults = schedule(args.seed, args.minutes * 60)
        self.pods: list[Pod] = []
        self.gen = -1
        self.nodes = [0, 0]  # per lane: how many times its node was replaced
        self.counted = 0
        self.failed_job: str | None = None
        job = render_job(JOB)[1]  # [0] is the headless Service
        self.policy = job["spec"]["podFailurePolicy"]
        self.backoff_limit = job["spec"].get("backoffLimit", JOB.backoff_limit)
        for folder in ("logs", "records", "control"):
            (where / folder).mkdir(parents=True, exist_ok=True)

    def run(self) -> None:
        self.t0 = time.time()
        stop_at = self.t0 + self.args.minutes * 60
        self.launch()
        while True:
            now = time.time()
            self.watch(now)
            current = [p for p in self.pods if p.gen == self.gen]
            if all(p.end is not None for p in current):
                if self.failed_job or now >= self.drain_at(stop_at):
                    break
                self.launch()
                continue
            drain_at = self.drain_at(stop_at)
            if now >= drain_at and (all(p.stepping_at for p in current) or now > drain_at + 60):
                self.drain(current)
                break
            self.fire(now, current)
            self.hurry(now, current)
            time.sleep(TICK)
        self.save()

    def drain_at(self, stop_at: float) -> float:
        fired = [f.fired for f in self.faults]
        if any(f is None for f in fired):
            return float("inf") if time.time() < stop_at + 300 else stop_at  # bounded
        return max(stop_at, max(fired) + SETTLE)  # type: ignore[type-var]

    # --- pods

    def launch(self) -> None:
        self.gen += 1
        port = free_port()
        now = time.time()
        pending = next((f for f in self.faults if f.fired is None), None)
        for lane in (0, 1):
            name = f"train-{lane}-g{self.gen}"
            node = f"node-{lane}{chr(ord('a') + self.nodes[lane])}"
            scenario = dict(HEALTHY)
            if (
                self.supervised
                and pending is not None
                and pending.kind in SCENARIOS
                and pending.lane == lane
            ):
                fire = max(self.t0 + pending.at, now + WARM)
                event = {"at": round(fire - now, 3), "gpu": 0, **SCENARIOS[pending.kind]}
                scenario = {"gpus": 1, "timeline": [event]}
                pending.fired, pending.pod = fire, name
            pod = Pod(
                name, lane, node, self.gen, 0.0, str(self.where / "records" / f"{name}.jsonl")
            )
            command, env = self.command(pod, port, scenario)
            log = open(self.where / "logs" / f"{name}.log", "wb")  # noqa: SIM115
            pod.start = time.time()
            pod.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            log.close()
            self.pods.append(pod)
        print(
            f"  [{self.side} {time.time() - self.t0:6.1f}s] generation {self.gen} started",
            flush=True,
        )

    def command(self, pod: Pod, port: int, scenario: dict) -> tuple[list[str], dict[str, str]]:
        a = self.args
        train = [TRAINER, "--steps", "100000000", "--step-time", str(a.step_time)]
        train += ["--checkpoint-every", str(a.checkpoint_every)]
        if a.checkpoint_time is not None:
            train += ["--checkpoint-time", str(a.checkpoint_time)]
        ckpt = str(self.where / "ckpt")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "SOAK_RECORD": pod.record,
            "SOAK_CONTROL": str(self.where / "control" / pod.name),
        }
        if not self.supervised:
            env["SOAK_PG_TIMEOUT"] = str(a.pg_timeout)
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
            torchrun += ["--nproc-per-node", "1", "--node-rank", str(pod.lane)]
            torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
            torchrun += ["--rdzv-backend", "static", "--max-restarts", "0"]
            return [*torchrun, *train, "--checkpoint-dir", ckpt], env
        path = self.where / "logs" / f"{pod.name}.gpus.json"
        path.write_text(json.dumps(scenario))
        env |= {
            "JOB_COMPLETION_INDEX": str(pod.lane),
            "SUPERVISE_NNODES": "2",
            "HOSTNAME": f"train-{pod.lane}",
            "SUPERVISE_SUBDOMAIN": "train",
            "SUPERVISE_POD_NAME": pod.name,
            "SUPERVISE_NODE_NAME": pod.node,
        }
        logs = self.where / "logs"
        supervise = [SUPERVISE, "--termination-log", str(logs / f"{pod.name}.term")]
        supervise += ["--event-log", str(logs / f"{pod.name}.events"), "--checkpoint-dir", ckpt]
        supervise += ["--nproc-per-node", "1", "--master-addr", "127.0.0.1"]
        supervise += ["--master-port", str(port), "--fake-gpus", str(path)]
        return [*supervise, "--", *train], env

    def watch(self, now: float) -> None:
        """Reap exited pods (and judge them as the Job controller would); note trainers'
        deaths and first steps."""
        for pod in self.pods:
            if pod.end is not None:
                continue
            self.trainer(pod, now)
            code = pod.proc.poll()
            if code is None:
                continue
            pod.end = time.time()
            pod.code = code if code >= 0 else 128 - code
            if pod.trainer_exit is None and pod.trainer_pid is not None:
                pod.trainer_exit = pod.end
            self.judge(pod)

    def trainer(self, pod: Pod, now: float) -> None:
        if pod.trainer_pid is None or pod.stepping_at is None:
            try:
                text = Path(pod.record).read_text()
            except FileNotFoundError:
                return
            if pod.trainer_pid is None and text:
                pod.trainer_pid = json.loads(text.splitlines()[0])["pid"]
            if '"event": "step"' in text:
                pod.stepping_at = now
        if pod.trainer_pid is not None and pod.trainer_exit is None and not _alive(pod.trainer_pid):
            pod.trainer_exit = now

    def judge(self, pod: Pod) -> None:
        assert pod.code is not None
        if not self.supervised:
            pod.action = "restart all"
        else:
            conditions = {rules.DISRUPTION_TARGET: "True"} if pod.disrupted else {}
            failed = FailedPod("soak", pod.name, {CONTAINER: pod.code}, conditions=conditions)
            pod.action = "Succeeded" if pod.code == 0 else job_verdict(self.policy, failed).action
            if pod.action == "Count":
                self.counted += 1
                if self.counted > self.backoff_limit:
                    self.failed_job = "BackoffLimitExceeded"
            if pod.action == "FailJob":
                self.failed_job = f"FailJob on exit {pod.code}"
            if pod.code in DEVICE_CODES:
                self.nodes[pod.lane] += 1
        self.say(f"{pod.name} on {pod.node} exited {pod.code} -> {pod.action}", pod.end)

    def hurry(self, now: float, current: list[Pod]) -> None:
        """Baseline: a plain restart of every pod on any failure. Supervised: the gang leaves
        by itself; one that has not left after GONE seconds is killed, and said so."""
        ended = [p.end for p in current if p.end is not None]
        if not ended:
            return
        plain = not self.supervised or self.failed_job is not None  # FailJob deletes pods
        for pod in current:
            if pod.end is not None:
                continue
            if plain and pod.kill_at is None:
                pod.proc.terminate()
                pod.kill_at = now + 10
            elif (plain and now >= pod.kill_at) or (
                not plain and pod.kill_at is None and now - min(ended) >= GONE
            ):
                if not plain:
                    print(f"  !! {pod.name} still up {GONE:.0f} s after its gang: SIGKILL")
                pod.proc.kill()
                pod.kill_at = float("inf")

    def fire(self, now: float, current: list[Pod]) -> None:
        fault = next((f for f in self.faults if f.fired is None), None)
        if fault is None or any(f.pod and f.fired and f.fired > now for f in self.faults):
            return  # a GPU fault is armed in this generation and still to come
        if not all(p.stepping_at is not None and p.end is None for p in current):
            return
        stepping = max(p.stepping_at for p in current)  # type: ignore[type-var]
        if now < max(self.t0 + fault.at, stepping + STEADY):  # type: ignore[operator]
            return
        names = {p.name for p in current}
        if any(f.pod in names and (self.supervised or f.kind != "degrade") for f in self.faults):
            return  # one fault per generation (a degrade the baseline ignores does not count)
        pod = current[fault.lane]
        fault.fired, fault.pod = now, pod.name
        control = self.where / "control" / pod.name
        if fault.kind == "sigterm":
            pod.disrupted = True
            pod.proc.send_signal(signal.SIGTERM)
        elif fault.kind in ("hang", "exception"):
            control.write_text("hang" if fault.kind == "hang" else "raise")
        elif fault.kind == "xid" and pod.trainer_pid is not None:  # baseline only
            os.kill(pod.trainer_pid, signal.SIGKILL)
        # degrade on the baseline: nothing notices
        self.say(f"fault {fault.kind} -> {pod.name}", now)

    def drain(self, current: list[Pod]) -> None:
        print(
            f"  [{self.side} {time.time() - self.t0:6.1f}s] drain: SIGTERM to every pod", flush=True
        )
        for pod in current:
            pod.disrupted = True
            pod.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 90
        while any(p.end is None for p in current) and time.time() < deadline:
            self.watch(time.time())
            time.sleep(TICK)
        for pod in current:
            if pod.end is None:
                pod.proc.kill()
                pod.proc.wait()
                self.watch(time.time())

    def say(self, what: str, at: float | None = None) -> None:
        print(f"  [{self.side} {(at or time.time()) - self.t0:6.1f}s] {what}", flush=True)

    def save(self) -> None:
        books = {
            "side": self.side,
            "t0": self.t0,
            "failed_job": self.failed_job,
            "faults": [asdict(f) for f in self.faults],
            "pods": [
                {f.name: getattr(p, f.name) for f in fields(p) if f.name != "proc"}
                for p in self.pods
            ],
        }
        (self.where / "books.json").write_text(json.dumps(books, indent=1))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


# ------------------------------------------------------------------------------ scoring


def load(where: Path) -> tuple[dict, list[PodBooks]]:
    books = json.loads((where / "books.json").read_text())
    pods = []
    for kept in books["pods"]:
        pod = Pod(**{f.name: kept[f.name] for f in fields(Pod) if f.name in kept})
        pod.record = str(where / "records" / Path(pod.record).name)  # DIR may have moved
        pods.append(pod.books())
    return books, pods


def supervise_report(where: Path, plot: str | None) -> dict:
    command = [SUPERVISE, "report", str(where / "ckpt"), "--json"]
    if plot:
        command += ["--plot", plot]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"supervise report failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def compare(real: Truth, report: dict, tolerance: float) -> bool:
    """Print the bucket table; True when every bucket is within `tolerance` points."""
    total = real.total_s
    names = list(BUCKETS) + sorted(set(report["buckets"]) - set(BUCKETS))
    print(
        f"\n  {'bucket':<12}{'truth s':>10}{'report s':>10}{'diff pp':>9}  (of {total:.1f} lane-s)"
    )
    ok = True
    for name in names:
        mine = real.buckets.get(name, 0.0)
        theirs = report["buckets"].get(name, 0.0)
        diff = (theirs - mine) / total * 100 if total else 0.0
        good = abs(diff) <= tolerance
        ok &= good
        print(
            f"  {name:<12}{mine:>10.1f}{theirs:>10.1f}{diff:>+9.2f}  {'PASS' if good else 'FAIL'}"
        )
    print(f"  {'total':<12}{total:>10.1f}{report['total_s']:>10.1f}")
    print(f"  {'goodput':<12}{real.goodput:>10.1%}{report['goodput']:>10.1%}")
    return ok


def per_pod(real: Truth, report: dict, books: dict) -> None:
    """Each pod: how it ended; where the report put its start and end against the fork and
    the reaping; and the buckets where truth and report differ most (seconds)."""
    spans = {a["pod"]: a for a in report["attempts"]}
    print("\n  per pod: exit, class, Job action; report's start/end - fork/reap; report - truth")
    for pod in books["pods"]:
        mine = real.per_pod.get(pod["name"], {})
        span = spans.get(pod["name"], {})
        theirs = span.get("buckets", {})
        diffs = {k: theirs.get(k, 0.0) - mine.get(k, 0.0) for k in {*mine, *theirs}}
        worst = sorted(diffs.items(), key=lambda kv: -abs(kv[1]))[:3]
        shown = ", ".join(f"{k} {v:+.1f}" for k, v in worst if abs(v) >= 0.3) or "-"
        edges = "    no attempt   "
        if span:
            edges = f"{span['start'] - pod['start']:+5.1f} {span['end'] - pod['end']:+5.1f} s"
        print(
            f"    {pod['name']:<12} {pod['code']!s:>4} {span.get('class') or '?':<16}"
            f"{pod['action']!s:<7} {edges}  {shown}"
        )


EXPECTED = {  # the class that should hold each injected fault
    "sigterm": "PREEMPTED",
    "degrade": "DEVICE_DEGRADED",
    "xid": "DEVICE_FAILED",
    "hang": "HANG",
    "exception": "TRAINING_FAILED",
}


def causes(report: dict, books: dict) -> None:
    """The report's interruptions by class against the faults injected (and the drain's
    PREEMPTED pods), and its badput by cause."""
    expected: dict[str, int] = {}
    for fault in books["faults"]:
        if fault["fired"]:
            name = EXPECTED[fault["kind"]]
            expected[name] = expected.get(name, 0) + 1
    drained = sum(1 for p in books["pods"] if p["disrupted"]) - expected.get("PREEMPTED", 0)
    expected["PREEMPTED"] = expected.get("PREEMPTED", 0) + drained
    got = report["interruptions"]["by_class"]
    match = "same" if dict(sorted(got.items())) == dict(sorted(expected.items())) else "DIFFER"
    print(f"\n  interruptions by class: report {dict(sorted(got.items()))}")
    print(f"                          faults  {dict(sorted(expected.items()))}  ({match})")
    badput = {c: round(sum(b.values()), 1) for c, b in report["by_cause"].items()}
    print(f"  badput by cause (report, s): {badput}")


def score(where: Path, args: argparse.Namespace) -> tuple[float, bool]:
    books, pods = load(where / "supervise")
    real = truth(pods)
    report = supervise_report(where / "supervise", args.plot)
    print(f"\nsupervise: {len(pods)} pods, faults:")
    for f in books["faults"]:
        at = f"{f['fired'] - books['t0']:.1f}s" if f["fired"] else "never"
        print(f"    {f['kind']:<10} node {f['lane']}  at {at:>7}  on {f['pod']}")
    if books["failed_job"]:
        print(f"  the Job failed: {books['failed_job']}")
    ok = compare(real, report, args.tolerance)
    per_pod(real, report, books)
    causes(report, books)
    print(f"\n  report vs truth: {'PASS' if ok else 'FAIL'} at {args.tolerance:g} pp per bucket")
    return real.goodput, ok


def baseline_goodput(where: Path) -> tuple[float, float] | None:
    """The baseline's goodput by the report's rules (a lane's last pod keeps what it saved),
    and generously (its last pods keep every step, as if the run went on to save them)."""
    if not (where / "baseline" / "books.json").exists():
        return None
    _, pods = load(where / "baseline")
    real = truth(pods)
    shown = ", ".join(f"{k} {v:.0f}" for k, v in real.buckets.items() if v > 0.5)
    print(f"\nbaseline (plain torchrun): {len(pods)} pods; lane seconds: {shown}")
    return real.goodput, truth(pods, keep_last=True).goodput


def _ratio(top: float, bottom: float) -> str:
    return f"{top / bottom:.2f}x" if bottom > 0 else "n/a (the baseline kept nothing)"


def _ratio(top: float, bottom: float) -> str:
    return f"{top / bottom:.2f}x" if bottom > 0 else "n/a (the baseline kept nothing)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=2.0, help="percentage points")
    parser.add_argument("--step-time", type=float, default=0.1)
    parser.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY)
    parser.add_argument("--checkpoint-time", type=float, default=None)
    parser.add_argument("--pg-timeout", type=float, default=60.0)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--keep", default=None)
    parser.add_argument("--rescore", default=None)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a bucket fails")
    args = parser.parse_args()

    if args.keep and Path(args.keep).exists() and any(Path(args.keep).iterdir()):
        # Its old books and ledger would be scored with the new ones as one run.
        parser.error(f"--keep {args.keep}: not empty; give a new directory (or --rescore it)")
    if args.rescore:
        where = Path(args.rescore)
    else:
        where = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="soak-"))
        print(f"soak in {where}: {args.minutes:g} min per side, seed {args.seed}", flush=True)
        Soak("supervise", where / "supervise", args).run()
        if not args.skip_baseline:
            Soak("baseline", where / "baseline", args).run()
    try:
        goodput, ok = score(where, args)
        base = baseline_goodput(where)
        print(f"\ngoodput (truth): supervise {goodput:.1%}", end="")
        if base:
            plain, generous = base
            print(f", plain torchrun {plain:.1%}; ratio {_ratio(goodput, plain)}")
            print(
                f"  (the baseline's last pods keeping their unsaved steps: {generous:.1%}; ", end=""
            )
            print(f"ratio {_ratio(goodput, generous)})")
        else:
            print()
    finally:
        if not args.keep and not args.rescore:
            shutil.rmtree(where, ignore_errors=True)
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
