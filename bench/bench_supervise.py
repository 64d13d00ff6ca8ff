"""What supervise costs when nothing fails: startup, streaming throughput, memory.

Every figure is a ratio of two measurements taken side by side in this run, interleaved so
that machine noise hits both sides alike:

* startup: `supervise -- true` against `true` (median of N runs each);
* streaming: a child writing S MiB to stdout through supervise against the same child
  writing directly, both into a pipe that a reader drains (median of runs);
* memory: supervise's own peak RSS (VmHWM) while it streams.

Targets (issue 2): added startup ≤ 0.3 s, streaming ≥ 0.9x direct, RSS ≤ 60 MB.

    python bench/bench_supervise.py [--runs 15] [--mib 512]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

SUPERVISE = str(Path(sys.executable).with_name("supervise"))
QUIET = ["--termination-log", os.devnull, "--event-log", os.devnull, "--"]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def writer(mib: int) -> list[str]:
    code = (
        "import sys\nblock = b'x' * (1 << 20)\nout = sys.stdout.buffer\n"
        f"for _ in range({mib}):\n    out.write(block)\nout.flush()\n"
        "import time; time.sleep(0.3)\n"  # lets the bench read supervise's peak RSS
    )
    return [sys.executable, "-c", code]


def stream(argv: list[str], mib: int, watch_rss: bool) -> tuple[float, float, int]:
    """(wall seconds to the last byte, seconds from first to last byte, peak RSS in kB).

    The clock stops at the last byte, not at EOF, so the writer's closing sleep (there to
    let the sampler see supervise's peak) is in neither side's figure. First-to-last byte
    is the streaming throughput proper; the wall figure also carries startup.
    """
    # Both sides write into a 1 MiB pipe: supervise widens the pipes it writes to, and a
    # direct writer given the default 64 KiB would lose for that reason alone.
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, 1031, 1 << 20)  # F_SETPIPE_SZ
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=write_end)
    os.close(write_end)
    proc.stdout = os.fdopen(read_end, "rb")
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
    assert proc.stdout is not None
    want, got, first = mib << 20, 0, 0.0
    while got < want:
        chunk = proc.stdout.read1(1 << 20)
        if not chunk:
            raise SystemExit(f"{argv[0]} ended after {got} of {want} bytes")
        if not got:
            first = time.perf_counter()
        got += len(chunk)
    last = time.perf_counter()
    proc.stdout.read()
    proc.wait()
    if watch_rss:
        sampler.join()
    return last - start, last - first, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--mib", type=int, default=512)
    args = parser.parse_args()

    bare, supervised = [], []
    for _ in range(args.runs):
        bare.append(timed(["true"]))
        supervised.append(timed([SUPERVISE, *QUIET, "true"]))
    added = statistics.median(supervised) - statistics.median(bare)

    direct, through = [], []
    for _ in range(max(3, args.runs // 3)):
        direct.append(stream(writer(args.mib), args.mib, watch_rss=False))
        through.append(stream([SUPERVISE, *QUIET, *writer(args.mib)], args.mib, watch_rss=True))

    def median(runs: list[tuple[float, float, int]], i: int) -> float:
        return statistics.median(run[i] for run in runs)

    throughput_ratio = median(direct, 1) / median(through, 1)
    wall_ratio = median(direct, 0) / median(through, 0)
    rss_mib = max(run[2] for run in through) / 1024

    print(
        f"startup: supervise -- true {statistics.median(supervised) * 1000:.0f} ms, "
        f"true {statistics.median(bare) * 1000:.1f} ms, added {added:.3f} s "
        f"(target <= 0.3 s) {'OK' if added <= 0.3 else 'MISSED'}"
    )
    print(
        f"streaming {args.mib} MiB: through supervise {throughput_ratio:.2f}x direct "
        f"throughput, first to last byte (target >= 0.9x) "
        f"{'OK' if throughput_ratio >= 0.9 else 'MISSED'}; {wall_ratio:.2f}x in wall time "
        "including startup"
    )
    print(
        f"peak RSS of supervise while streaming: {rss_mib:.1f} MiB "
        f"(target <= 60 MB) {'OK' if rss_mib <= 60 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
