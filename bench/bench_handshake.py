"""What the checkpoint handshake costs, measured side by side in one run.

Each figure comes from at least 5 rounds (`--rounds`) and is printed as the median over the
rounds with its spread (min-max; see `rounds.py`).

1. The agreement collective: 2 gloo ranks (real torchrun) run the same toy training step
   with and without `sup.should_checkpoint(step)` (one MAX all-reduce of one int), every
   step and every 10 steps. Reported: extra microseconds per step and the step-time ratio.
2. SIGTERM to a committed checkpoint: a supervised trainer with a ~MB-sized state is sent
   SIGTERM; from the event log, the time from the signal to the commit is compared with a
   plain synchronous `CheckpointStore.save` of the same state in the same trainer.

    python bench/bench_handshake.py [--rounds 5] [--steps 1000] [--params-mib 64]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rounds import MIN_ROUNDS, differences, ratios, spread

SUPERVISE = str(Path(sys.executable).with_name("supervise"))

AGREE = r"""
import os, sys, time, torch, torch.distributed as dist
import supervisor
dist.init_process_group("gloo")
sup = supervisor.attach()
steps = int(sys.argv[1])
model = torch.nn.Linear(256, 256)
x = torch.randn(64, 256)
opt = torch.optim.SGD(model.parameters(), lr=1e-3)

def run(every):
    dist.barrier()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = model(x).square().mean()
        opt.zero_grad(); loss.backward()
        for p in model.parameters():  # the gradient all-reduce DDP would do
            dist.all_reduce(p.grad)
        opt.step()
        if every and sup.should_checkpoint(step, every=every):
            raise SystemExit("nobody asked for a checkpoint")
    return (time.perf_counter() - start) / steps

results = {}
for r in range(int(sys.argv[2])):  # interleaved rounds, the order rotating
    order = (0, 1, 10)[r % 3:] + (0, 1, 10)[:r % 3]
    for every in order:
        results.setdefault(every, []).append(run(every))
if dist.get_rank() == 0:
    print(json.dumps({str(k): v for k, v in results.items()}))
dist.destroy_process_group()
""".replace("import os, sys", "import json, os, sys")

TRAINER = r"""
import sys, time, torch, supervisor
sup = supervisor.attach()
store = supervisor.CheckpointStore(sys.argv[1], on_commit=sup.committed)
numel = int(float(sys.argv[2]) * (1 << 20) / 4)
state = {"weights": torch.randn(numel), "step": 0}
start = time.perf_counter()
store.save(1, state, reason="periodic")  # the plain synchronous save, for comparison
print(f"SYNC {time.perf_counter() - start:.6f}", flush=True)
print("ready", flush=True)
step = 1
while True:
    step += 1
    state["weights"].add_(1e-6)
    sup.step(step)
    time.sleep(0.01)
    if sup.should_checkpoint(step):
        state["step"] = step
        store.save(step, state, reason="preempted")
        break
store.close()
"""


def agreement(steps: int, rounds: int) -> dict[str, list[float]]:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(AGREE)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29561",
            f.name,
            str(steps),
            str(rounds),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)
    return json.loads(out.strip().splitlines()[-1])


def sigterm_to_commit(params_mib: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events"
        proc = subprocess.Popen(
            [
                SUPERVISE,
                "--termination-log",
                os.devnull,
                "--event-log",
                str(events),
                "--",
                sys.executable,
                "-c",
                TRAINER,
                str(Path(tmp) / "ckpt"),
                str(params_mib),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        sync = float(proc.stdout.readline().split()[1])
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # the handshake watcher sees the rank attach
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
        log = [json.loads(line) for line in events.read_text().splitlines()]
        asked = next(e["mono"] for e in log if e["event"] == "checkpoint_requested")
        done = next(
            e["mono"] for e in log if e["event"] == "checkpoint_committed" and e["step"] > 1
        )
        return done - asked, sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--params-mib", type=float, default=64)
    args = parser.parse_args()

    rounds = max(args.rounds, MIN_ROUNDS)
    per_step = agreement(args.steps, rounds)
    bare, each, tenth = per_step["0"], per_step["1"], per_step["10"]
    us = [s * 1e6 for s in bare]
    print(f"agreement on 2 gloo ranks: step {spread(us, '.0f', ' us')} bare")
    for label, side in (("every step", each), ("every 10 steps", tenth)):
        extra = [d * 1e6 for d in differences(side, bare)]
        print(
            f"  should_checkpoint {label}: {spread(extra, '+.0f', ' us')}, "
            f"{spread(ratios(side, bare), '.3f', 'x')}"
        )

    handshakes, syncs = [], []
    for _ in range(rounds):
        handshake, sync = sigterm_to_commit(args.params_mib)
        handshakes.append(handshake)
        syncs.append(sync)
    print(
        f"SIGTERM to committed checkpoint of {args.params_mib:g} MiB: "
        f"{spread(handshakes, '.3f', ' s')}; a plain sync save of the same state in the same "
        f"trainer: {spread(syncs, '.3f', ' s')}"
    )
    print(
        f"  ratio {spread(ratios(handshakes, syncs), '.2f', 'x')} (the difference is the wait "
        "for the next step boundary and the 0.1 s handshake poll)"
    )


if __name__ == "__main__":
    main()
