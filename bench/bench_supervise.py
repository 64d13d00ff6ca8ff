"""What supervise costs when nothing fails: startup, streaming throughput, memory.

Every figure comes from rounds (`rounds.py`): each round runs both sides of a comparison,
interleaved, in an order that rotates, and gives one figure; the median over the rounds is
printed with its spread (min-max).

* startup: `supervise -- true` against `true`, `--starts` runs of each per round (the
  round's figure: the difference of their medians). Also shown: the same run forced
  through typer (`main(fast=False)`), which is what every run paid before the fast parser.
* streaming: a child writing to stdout through supervise against the same child writing
  directly, both into a 1 MiB pipe that this process drains; the round's figure: direct
  over supervised time from the first byte to the last. Twice: `--mib` MiB without a
  newline (what moving the bytes costs: the target) and `--line-mib` MiB of 128-byte lines
  (moving them and showing every line to the log matchers, whose keyword scan, a few ms per
  MiB, bounds this one at some hundreds of MiB/s, far above what a trainer logs).
* memory: supervise's own peak RSS (VmHWM) while it streams.

Targets: added startup ≤ 0.1 s, streaming without newlines ≥ 0.95x direct, RSS ≤ 60 MB.

    python bench/bench_supervise.py [--rounds 7] [--starts 5] [--mib 256] [--line-mib 64]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from rounds import interleaved, ratios, spread, verdict

SUPERVISE = str(Path(sys.executable).with_name("supervise"))
QUIET = ["--termination-log", os.devnull, "--event-log", os.devnull, "--"]
THROUGH_TYPER = [  # before the fast parser, `main` had no `fast` and always used typer
    sys.executable,
    "-c",
    "import inspect, sys; from supervisor.cli import main\n"
    "main(sys.argv[1:], **({'fast': False} if 'fast' in inspect.signature(main).parameters"
    " else {}))",
]
F_SETPIPE_SZ = 1031


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and everything it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def writer(mib: int, lines: bool) -> list[str]:
    """A child that writes `mib` MiB (of 128-byte lines, or no newline at all), 1 MiB per
    write, then lingers."""
    block = "(b'y' * 127 + b'\\n') * 8192" if lines else "b'x' * (1 << 20)"
    code = (
        f"import sys\nblock = {block}\nout = sys.stdout.buffer\n"
        f"for _ in range({mib}):\n    out.write(block)\nout.flush()\n"
        "import time; time.sleep(0.3)\n"  # lets the bench read supervise's peak RSS
    )
    return [sys.executable, "-c", code]


def stream(argv: list[str], mib: int, watch_rss: bool) -> tuple[float, int]:
    """(seconds from the first byte to the last, peak RSS in kB).

    The clock stops at the last byte, not at EOF, so the writer's closing sleep (there to
    let the sampler see supervise's peak) is in neither side's figure, and it starts at
    the first byte, so neither is startup.
    """
    # Both sides write into a 1 MiB pipe: supervise widens the pipes it writes to, and a
    # direct writer given the default 64 KiB would lose for that reason alone.
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, F_SETPIPE_SZ, 1 << 20)
    proc = subprocess.Popen(argv, stdout=write_end)
    os.close(write_end)
    peak = 0

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    if watch_rss:
        sampler.start()
    want, got, first = mib << 20, 0, 0.0
    while got < want:
        chunk = os.read(read_end, 1 << 20)
        if not chunk:
            raise SystemExit(f"{argv[0]} ended after {got} of {want} bytes")
        if not got:
            first = time.perf_counter()
        got += len(chunk)
    last = time.perf_counter()
    while os.read(read_end, 1 << 20):
        pass
    os.close(read_end)
    proc.wait()
    if watch_rss:
        sampler.join()
    return last - first, peak


def startup(rounds: int, starts: int) -> None:
    added, typer_added, true_ms, sup_ms, sup_cpu, typer_cpu = [], [], [], [], [], []
    for _ in range(max(rounds, 5)):
        runs = interleaved(
            starts,
            {
                "true": lambda: timed(["true"]),
                "supervise": lambda: timed([SUPERVISE, *QUIET, "true"]),
                "typer": lambda: timed([*THROUGH_TYPER, *QUIET, "true"]),
            },
        )
        wall = {side: statistics.median(w for w, _ in done) for side, done in runs.items()}
        true_ms.append(wall["true"] * 1000)
        sup_ms.append(wall["supervise"] * 1000)
        added.append(wall["supervise"] - wall["true"])
        typer_added.append(wall["typer"] - wall["true"])
        sup_cpu.append(statistics.median(c for _, c in runs["supervise"]) * 1000)
        typer_cpu.append(statistics.median(c for _, c in runs["typer"]) * 1000)
    print(
        f"startup: supervise -- true {spread(sup_ms, '.0f', ' ms')}; true "
        f"{statistics.median(true_ms):.1f} ms"
    )
    print(
        f"  added {spread(added, '.3f', ' s')} (target <= 0.1 s) "
        f"{verdict(added, lambda v: v <= 0.1)}"
    )
    print(f"  the same run forced through typer: added {spread(typer_added, '.3f', ' s')}")
    # CPU time hardly depends on what else the machine runs, where wall time does.
    print(
        f"  CPU time (user+sys, with its children): {spread(sup_cpu, '.0f', ' ms')}; "
        f"through typer {spread(typer_cpu, '.0f', ' ms')}"
    )


def streaming(rounds: int, mib: int, lines: bool) -> None:
    runs = interleaved(
        rounds,
        {
            "direct": lambda: stream(writer(mib, lines), mib, watch_rss=False),
            "through": lambda: stream(
                [SUPERVISE, *QUIET, *writer(mib, lines)], mib, watch_rss=True
            ),
        },
    )
    direct = [seconds for seconds, _ in runs["direct"]]
    through = [seconds for seconds, _ in runs["through"]]
    ratio = ratios(direct, through)
    if lines:
        print(
            f"streaming {mib} MiB of 128-byte lines: through supervise "
            f"{spread(ratio, '.2f', 'x')} direct throughput (every line shown to the matchers)"
        )
    else:
        print(
            f"streaming {mib} MiB without newlines: through supervise {spread(ratio, '.2f', 'x')}"
            f" direct throughput, first to last byte (target >= 0.95x) "
            f"{verdict(ratio, lambda v: v >= 0.95)}"
        )
    print(
        f"  direct {spread([mib / s for s in direct], '.0f', ' MiB/s')}; through supervise "
        f"{spread([mib / s for s in through], '.0f', ' MiB/s')}"
    )
    rss = [peak / 1024 for _, peak in runs["through"]]
    print(
        f"  peak RSS of supervise: {spread(rss, '.1f', ' MiB')} (target <= 60 MB) "
        f"{verdict(rss, lambda v: v <= 60)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--starts", type=int, default=5, help="runs of each side per round")
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--line-mib", type=int, default=64)
    parser.add_argument("--only", choices=("startup", "streaming"))
    args = parser.parse_args()
    if args.only != "streaming":
        startup(args.rounds, args.starts)
    if args.only != "startup":
        streaming(args.rounds, args.mib, lines=False)
        streaming(args.rounds, args.line_mib, lines=True)


if __name__ == "__main__":
    main()
