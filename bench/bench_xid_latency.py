"""How long after a fatal Xid does `supervise` exit? Measured through the real CLI.

Two runs side by side, in rounds (`rounds.py`: at least 5, the order rotating), `--runs`
rounds of one each; every figure is a median over the rounds with its spread (min-max):
* fault: `supervise --fake-gpus <Xid 79 at T s> -- python -c "sleep 30"`: supervise must stop
  the child and exit DEVICE_FAILED (82);
* baseline: `supervise --fake-gpus <healthy> -- sleep T`: the child ends on its own T s
  after it starts, which is the fastest any run of that length can finish.

fault - baseline approximates the Xid-to-exit latency: both pay the same start-up, but the
fake's clock starts when NVML is opened, a little before the child, so the difference
under-states the latency by that gap. Bounds from one clock (CLOCK_MONOTONIC is system-wide,
so the event log's `mono` compares with ours): the fake opened NVML after we spawned
supervise and before the child started, so the Xid happened between `spawned + T` and
`child_started + T`.

Usage: python bench/bench_xid_latency.py [--runs 5] [--at 1.0]
Requires the run command's --fake-gpus (the lead's wiring).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rounds import MIN_ROUNDS, differences, ratios, spread

SUPERVISE = str(Path(sys.executable).with_name("supervise"))


def run(scenario: Path, child: list[str], workdir: Path) -> tuple[float, int, dict[str, float]]:
    events = workdir / "events.jsonl"
    events.unlink(missing_ok=True)
    argv = [
        SUPERVISE,
        "--termination-log",
        str(workdir / "term.json"),
        "--event-log",
        str(events),
        "--fake-gpus",
        str(scenario),
        "--gpu-poll-interval",
        "5",
        "--",
        *child,
    ]
    spawned = time.monotonic()
    code = subprocess.run(argv, capture_output=True).returncode
    ended = time.monotonic()
    marks = {"spawned": spawned, "ended": ended}
    for line in events.read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "child_started":
            marks.setdefault("child_started", record["mono"])
        elif record["event"] == "finding" and record["finding"].get("xid") == 79:
            marks.setdefault("finding", record["mono"])
        elif record["event"] == "exit":
            marks["exit"] = record["mono"]
    return ended - spawned, code, marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--at", type=float, default=1.0, help="when the Xid happens (s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fault = workdir / "xid79.json"
        fault.write_text(
            json.dumps({"gpus": 1, "timeline": [{"at": args.at, "gpu": 0, "xid": 79}]})
        )
        healthy = workdir / "healthy.json"
        healthy.write_text(json.dumps({"gpus": 1}))
        fault_s, base_s, to_exit, lower, upper = [], [], [], [], []
        runs = max(args.runs, MIN_ROUNDS)

        def fault_run() -> None:
            elapsed, code, marks = run(
                fault, [sys.executable, "-c", "import time; time.sleep(30)"], workdir
            )
            if code != 82:
                sys.exit(f"the fault run exited {code}, not 82: is --fake-gpus wired?")
            fault_s.append(elapsed)
            to_exit.append(marks["exit"] - marks["finding"])
            lower.append(marks["exit"] - (marks["child_started"] + args.at))
            upper.append(marks["exit"] - (marks["spawned"] + args.at))

        def baseline_run() -> None:
            elapsed, code, _ = run(healthy, ["sleep", str(args.at)], workdir)
            if code != 0:
                sys.exit(f"the baseline run exited {code}, not 0")
            base_s.append(elapsed)

        for i in range(runs):
            for side in (fault_run, baseline_run) if i % 2 == 0 else (baseline_run, fault_run):
                side()
    print(f"rounds: {runs}, Xid 79 injected at {args.at:g} s")
    print(f"fault run (Xid 79 -> exit 82):   {spread(fault_s, '.3f', ' s')}")
    print(f"baseline (child exits at {args.at:g} s): {spread(base_s, '.3f', ' s')}")
    print(
        f"fault - baseline: {spread(differences(fault_s, base_s), '+.3f', ' s')}; ratio "
        f"fault/baseline {spread(ratios(fault_s, base_s), '.3f', 'x')} (a fault ends a run as "
        "fast as a normal exit)"
    )
    print(
        f"Xid-to-exit latency bounds from the event log: lower {spread(lower, '.3f', ' s')}, "
        f"upper {spread(upper, '.3f', ' s')}"
    )
    print(
        f"finding-to-exit (stop the child, drain, write the message): "
        f"{spread(to_exit, '.3f', ' s')}"
    )
    print(f"worst upper bound over all runs: {max(upper):.3f} s (acceptance: under 1 s)")


if __name__ == "__main__":
    main()
