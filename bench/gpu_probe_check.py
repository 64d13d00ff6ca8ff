"""Run the real NVML adapter and `supervise doctor` on a real GPU, and print what they read.

For a machine with NVIDIA GPUs and a driver: it checks that every query the adapter makes
works (or is honestly unsupported) on real hardware, and how long each takes. It prints:
* the driver and the pod's GPUs (UUID, bus id, name), resolved as the watchdog does;
* one poll of each GPU (`GpuState`), the time it took, and what the catalog makes of it;
* which device events could be registered, and one 1 s wait for events;
* `supervise doctor --json` run as a subprocess, and its exit code.

Robust where there is no GPU: it says why NVML is not usable and exits 0, so it can run
anywhere; `--require-gpu` makes that exit 2. Never writes anything.

Usage: python bench/gpu_probe_check.py [--samples 3] [--require-gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from supervisor.gpu.catalog import Memory, Rules, assess
from supervisor.gpu.fake import load_fake
from supervisor.gpu.nvml import open_nvml

SUPERVISE = str(Path(sys.executable).with_name("supervise"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3, help="polls per GPU")
    parser.add_argument("--require-gpu", action="store_true", help="exit 2 without NVML")
    parser.add_argument("--fake-gpus", help="dry run against a scenario instead of the GPU")
    args = parser.parse_args()

    lib = load_fake(args.fake_gpus) if args.fake_gpus else None
    started = time.monotonic()
    nvml, why = open_nvml(lib)
    print(f"nvmlInit: {time.monotonic() - started:.3f} s")
    if nvml is None:
        print(f"no NVML here: {why}")
        return 2 if args.require_gpu else 0
    lib = nvml.lib
    try:
        print(f"driver {lib.nvmlSystemGetDriverVersion()}, NVML {lib.nvmlSystemGetNVMLVersion()}")
    except (lib.NVMLError, AttributeError) as err:  # the fake has no driver version
        print(f"driver version unreadable: {err}")
    gpus, missing = nvml.gpus(
        os.environ.get("NVIDIA_VISIBLE_DEVICES"), os.environ.get("CUDA_VISIBLE_DEVICES")
    )
    print(f"GPUs: {len(gpus)}; NVIDIA_VISIBLE_DEVICES entries not found: {missing}")
    rules = Rules()
    for gpu in gpus:
        print(f"\nGPU {gpu.index}: {gpu.uuid} {gpu.bus_id} {gpu.name}")
        memory = Memory()
        for sample in range(args.samples):
            t = time.monotonic()
            state = nvml.read(gpu)
            took = time.monotonic() - t
            findings, memory = assess(gpu, state, memory, rules)
            print(f"  poll {sample + 1}: {took * 1000:.1f} ms")
            if sample == 0:
                values = state.as_dict()
                unread = sorted(
                    f for f in state.__dataclass_fields__ if f not in values and f != "at"
                )
                print(f"  read: {json.dumps(values, default=str)}")
                print(f"  unsupported or not reported: {unread}")
            for finding in findings:
                print(f"  finding: [{finding.exit_code}] {finding.kind}: {finding.summary}")
            time.sleep(0.5)
    registered = nvml.watch_events(gpus)
    print(f"\nevent masks registered: { {u: hex(m) for u, m in registered.items()} }")
    t = time.monotonic()
    event = nvml.wait_event(1000)
    print(f"one event wait (1000 ms): {event} after {time.monotonic() - t:.3f} s")
    nvml.close()

    print("\n$ supervise doctor --json")
    fake = ["--fake-gpus", args.fake_gpus] if args.fake_gpus else []
    done = subprocess.run([SUPERVISE, "doctor", "--json", *fake], capture_output=True, text=True)
    print(done.stdout.strip() or done.stderr.strip())
    print(f"doctor exit code: {done.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
