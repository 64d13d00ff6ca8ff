"""A tiny instrumented "trainer" the hang tests run as a real process.

    python trainer.py STEPS INTERVAL THEN [PHASE]

It attaches, optionally enters PHASE, calls `sup.step(i)` STEPS times INTERVAL seconds
apart, prints "stepped", then does THEN: "stall" (sleep in plain Python), "finish" (mark
finished and linger), "exit" (return, so atexit marks it finished) or "crash" (os._exit 3).
STEPS = 0 with THEN = stall is a hang before the first step.
"""

import contextlib
import os
import sys
import time

import supervisor.client as client


def stall_here() -> None:  # a recognisable frame name for the stack tests
    print("stepped", flush=True)  # from in here, so a reader that saw it finds this frame
    time.sleep(600)  # real process: the stall under test (killed by the test or supervise)


def main() -> None:
    steps, interval, then = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    phase = sys.argv[4] if len(sys.argv) > 4 else None
    sup = client.attach()
    ctx = sup.phase(phase) if phase else contextlib.nullcontext()
    with ctx:
        for i in range(steps):
            time.sleep(interval)  # real process: the step time under test
            sup.step(i)
        if then == "stall":
            stall_here()
        print("stepped", flush=True)
        if then == "finish":
            sup.finish()
            time.sleep(600)  # real process: finished and silent, yet alive
        elif then == "crash":
            os._exit(3)


if __name__ == "__main__":
    main()
