"""What `--metrics-port` costs the training: a toy loop bare, under supervise, and under
supervise with the metrics endpoint scraped while it runs.

The child is a small MLP training loop on CPU (one torch thread) that beats every step and
times only its loop (startup is excluded). Three arms, run in a rotating order within each
round so that machine noise hits all alike:

- `bare`: `python toy`;
- `off`: `supervise -- python toy`;
- `on`: `supervise --metrics-port P -- python toy`, with this process scraping `/metrics`
  every `--scrape-interval` seconds for the whole run (Prometheus's default is 15 s; the
  default here, 0.5 s, is 30 times harsher).

Printed: each arm's median loop time with its spread (min-max over rounds), the ratios
on/off and off/bare, the median time of one scrape, and the CPU time supervise itself used
during the loop (read by the child from /proc for its parent), off and on. Target: on/off
≤ 1.01x. On a loaded machine the loop times carry the noise (and the scraper here shares the
CPUs with the child, as Prometheus would not); supervise's CPU seconds are the steadier
measure of what the endpoint costs.

    python bench/bench_metrics.py [--rounds 5] [--steps 3000] [--scrape-interval 0.5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
SUPERVISE = str(Path(sys.executable).with_name("supervise"))


def child_main(steps: int) -> None:
    import torch

    torch.set_num_threads(1)
    import supervisor

    sup = supervisor.attach()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 128), torch.randn(64, 1)
    for _ in range(20):  # warm-up, not timed
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    parent_before = parent_cpu() if os.environ.get("SUPERVISE_RUN_DIR") else 0.0
    start = time.perf_counter()
    for step in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sup.step(step)
    print(f"LOOP {time.perf_counter() - start:.6f}", flush=True)
    if os.environ.get("SUPERVISE_RUN_DIR"):  # under supervise: the parent is supervise
        print(f"SUPCPU {parent_cpu() - parent_before:.6f}", flush=True)


def parent_cpu() -> float:
    """User + system CPU seconds of this process's parent so far (Linux /proc)."""
    with open(f"/proc/{os.getppid()}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scraper:
    """Scrapes `/metrics` every `interval` seconds on a thread until stopped."""

    def __init__(self, port: int, interval: float) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.interval = interval
        self.took: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=2) as reply:
                    reply.read()
            except OSError:
                continue  # not up yet, or already gone
            self.took.append(time.perf_counter() - start)


def run(argv: list[str], env: dict[str, str], cpu: list[float] | None = None) -> float:
    """The child's loop seconds; supervise's CPU seconds during it appended to `cpu`."""
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    said = dict(line.split() for line in out.splitlines() if line.startswith(("LOOP ", "SUPCPU ")))
    if cpu is not None:
        cpu.append(float(said["SUPCPU"]))
    return float(said["LOOP"])


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s [{min(values):.3f}-{max(values):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--scrape-interval", type=float, default=0.5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.steps)
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISE_")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    child = [sys.executable, __file__, "--child", "--steps", str(args.steps)]
    quiet = [SUPERVISE, "--termination-log", os.devnull, "--event-log", os.devnull]
    times: dict[str, list[float]] = {"bare": [], "off": [], "on": []}
    scrapes: list[float] = []
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    arms = list(times)
    for i in range(args.rounds):
        for arm in arms[i % 3 :] + arms[: i % 3]:  # rotate who goes first
            if arm == "bare":
                times[arm].append(run(child, env))
            elif arm == "off":
                times[arm].append(run([*quiet, "--", *child], env, cpu[arm]))
            else:
                port = free_port()
                with Scraper(port, args.scrape_interval) as scraper:
                    argv = [*quiet, "--metrics-port", str(port), "--", *child]
                    times[arm].append(run(argv, env, cpu[arm]))
                scrapes += scraper.took
    print(f"toy loop, {args.steps} steps, {args.rounds} rounds (median [min-max]):")
    for arm, label in (("bare", "bare"), ("off", "supervise"), ("on", "supervise + metrics")):
        print(f"  {label:<20}: {spread(times[arm])}")
    median = {arm: statistics.median(values) for arm, values in times.items()}
    on_off = median["on"] / median["off"]
    print(f"  -> supervise / bare          = {median['off'] / median['bare']:.4f}x")
    print(
        f"  -> metrics on / off          = {on_off:.4f}x; target ≤ 1.01x: "
        f"{'met' if on_off <= 1.01 else 'MISSED'}"
    )
    for arm in ("off", "on"):
        per_s = [c / t for c, t in zip(cpu[arm], times[arm], strict=True)]
        print(
            f"  -> supervise CPU, metrics {arm:<3} = {statistics.median(cpu[arm]) * 1000:.0f} ms "
            f"per loop, {statistics.median(per_s):.2%} of one core [{min(per_s):.2%}-"
            f"{max(per_s):.2%}]"
        )
    if scrapes:
        print(
            f"  -> one scrape of /metrics    = {statistics.median(scrapes) * 1000:.2f} ms median "
            f"({len(scrapes)} scrapes every {args.scrape_interval:g} s)"
        )


if __name__ == "__main__":
    main()
