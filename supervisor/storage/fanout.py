"""Run a batch of file transfers, up to `width` at a time.

`run(fn, jobs, width)` calls `fn` on every job and returns the results in job order. With
`width` 1 (or one job) everything runs on the calling thread; otherwise on a short-lived
pool that is gone when `run` returns. Blocks until every job has finished; the first
exception raised by a job (in job order) is re-raised once all have ended, so no transfer
outlives the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

J = TypeVar("J")
R = TypeVar("R")


def run(fn: Callable[[J], R], jobs: Iterable[J], width: int) -> list[R]:
    jobs = list(jobs)
    if width <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    with ThreadPoolExecutor(min(width, len(jobs))) as pool:
        return list(pool.map(fn, jobs))
