"""What a heartbeat costs: `sup.step()` in ns/op, and a toy training loop with and without it.

Every figure is measured side by side in this run, interleaved so that machine noise hits
both sides alike, and reported as a ratio: per round, then the median over the rounds with
their spread (min-max; see `rounds.py`):

1. `sup.step(i)` on a live channel, against the no-op handle and an empty loop;
   target: ≤ 1 µs per call.
2. A toy training loop (a small MLP on CPU, one torch thread) in this process: bare
   against attached to a live channel (`sup.step` every iteration); target: ≤ 1.01x.
3. The same loop as a child process: `python toy` against `supervise -- python toy`
   (the child times only its loop, so startup is excluded); target: ≤ 1.01x.

    python bench/bench_heartbeat.py [--rounds 6] [--calls 1000000] [--steps 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rounds import MIN_ROUNDS, ratios, spread, verdict

REPO = str(Path(__file__).resolve().parents[1])
SUPERVISE = str(Path(sys.executable).with_name("supervise"))


def ns_per_call(fn, calls: int) -> float:
    start = time.perf_counter_ns()
    for i in range(calls):
        fn(i)
    return (time.perf_counter_ns() - start) / calls


def toy_loop(sup, steps: int) -> float:
    """Seconds for `steps` iterations of a small MLP training step on CPU."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 128), torch.randn(64, 1)
    for _ in range(20):  # warm-up, not timed
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    start = time.perf_counter()
    for step in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sup.step(step)
    return time.perf_counter() - start


def child_main(steps: int) -> None:
    import torch

    torch.set_num_threads(1)
    import supervisor

    print(f"LOOP {toy_loop(supervisor.attach(), steps):.6f}", flush=True)


def attached_handle(tmp: str):
    from supervisor import client
    from supervisor.channel import Channel

    chan = Channel.create(os.path.join(tmp, "run", "channel"), slots=8)
    return client.Handle(chan, 0), client.NoopHandle()


def bench_step_call(calls: int, rounds: int, live, noop) -> float:
    def empty(i: int) -> None:
        pass

    live_ns, noop_ns, empty_ns = [], [], []
    for _ in range(rounds):
        live_ns.append(ns_per_call(live.step, calls))
        noop_ns.append(ns_per_call(noop.step, calls))
        empty_ns.append(ns_per_call(empty, calls))
    live_m, empty_m = statistics.median(live_ns), statistics.median(empty_ns)
    print(f"sup.step() live channel : {spread(live_ns, '7.1f', ' ns/op')} ({calls} calls a round)")
    print(f"sup.step() no-op handle : {spread(noop_ns, '7.1f', ' ns/op')}")
    print(f"empty Python call       : {spread(empty_ns, '7.1f', ' ns/op')}")
    print(
        f"  -> live/empty = {spread(ratios(live_ns, empty_ns), '.2f', 'x')}; heartbeat itself ≈ "
        f"{live_m - empty_m:.0f} ns; target ≤ 1000 ns: {'met' if live_m <= 1000 else 'MISSED'}"
    )
    return live_m


def bench_in_process(steps: int, rounds: int, live, noop, step_ns: float) -> None:
    import torch

    torch.set_num_threads(1)
    bare, with_hb = [], []
    for i in range(rounds):  # alternate which side goes first, so drift hits both
        if i % 2:
            with_hb.append(toy_loop(live, steps))
            bare.append(toy_loop(noop, steps))
        else:
            bare.append(toy_loop(noop, steps))
            with_hb.append(toy_loop(live, steps))
    ratio = ratios(with_hb, bare)
    per_step = statistics.median(bare) / steps * 1e6
    print(
        f"toy loop in process     : bare {statistics.median(bare):.3f} s, with heartbeats "
        f"{statistics.median(with_hb):.3f} s ({steps} steps of ≈{per_step:.0f} µs)"
    )
    print(
        f"  -> ratio {spread(ratio, '.4f', 'x')}; target ≤ 1.01x: "
        f"{verdict(ratio, lambda r: r <= 1.01)}"
    )
    # The ratio above carries the machine's noise; this is the cost it is trying to see.
    share = step_ns / (per_step * 1000)
    print(f"  -> sup.step() ns/op ÷ step time = {share:.4%} of a step ({1 + share:.5f}x)")


def run_child(argv: list[str], env: dict[str, str]) -> float:
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return float(next(line for line in out.splitlines() if line.startswith("LOOP ")).split()[1])


def bench_under_supervise(steps: int, rounds: int) -> None:
    if not os.path.exists(SUPERVISE):
        print("under supervise         : skipped (no supervise console script)")
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISE_")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    child = [sys.executable, __file__, "--child", "--steps", str(steps)]
    wrapped = [SUPERVISE, "--termination-log", os.devnull, "--event-log", os.devnull, "--"]
    bare, sup = [], []
    for i in range(rounds):
        first, second = (wrapped + child, child) if i % 2 else (child, wrapped + child)
        a, b = run_child(first, env), run_child(second, env)
        (sup if i % 2 else bare).append(a)
        (bare if i % 2 else sup).append(b)
    ratio = ratios(sup, bare)
    print(
        f"toy loop as a child     : bare {statistics.median(bare):.3f} s, under supervise "
        f"{statistics.median(sup):.3f} s (loop time only)"
    )
    print(
        f"  -> ratio {spread(ratio, '.4f', 'x')}; target ≤ 1.01x: "
        f"{verdict(ratio, lambda r: r <= 1.01)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.steps)
        return
    args.rounds = max(args.rounds, MIN_ROUNDS)
    with tempfile.TemporaryDirectory() as tmp:
        live, noop = attached_handle(tmp)
        step_ns = bench_step_call(args.calls, args.rounds, live, noop)
        bench_in_process(args.steps, args.rounds, live, noop, step_ns)
    bench_under_supervise(args.steps, args.rounds)


if __name__ == "__main__":
    main()
