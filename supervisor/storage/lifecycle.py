"""The life of an async save, from snapshot to settled, and the store's background thread.

Threads. A store is driven by one training thread. The writes of async saves, and
retention after every commit, run on one background thread (`supervise-ckpt`) in
submission order, so retention never overlaps a write. Everything else runs on the
training thread, `on_commit` included: it is called there once per committed step.

At most one async save is pending: a new save first settles the previous one, so memory is
bounded by one snapshot. *Settling* a pending save means waiting for its write and learning
how it ended, once: on success `on_commit(step)` is called; on failure its error is raised
(once by the store; `SaveHandle.wait` raises it whenever asked).

Alone (one process), these settle: `SaveHandle.wait`, and `wait`, `close`, `save`,
`save_async`, `prune` of the store. `steps`, `latest` and `load` do not wait, but settle
a save that has already finished (so its error surfaces at the next call, whatever it is).

Under torch.distributed (more than one rank when the save started), every rank holds the
pending save, though only rank 0 writes it, and settling is a collective
(`ranks.rank_zero`): rank 0 waits for its write and broadcasts whether it committed; then
every rank calls `on_commit`, or raises (rank 0 its own error, the others
`CheckpointError`). It happens at the calls every rank makes in the same order:
`SaveHandle.wait` (without a timeout), and `wait`, `close`, `save`, `save_async` of the
store. The other calls are local and never settle (`prune` waits for rank 0's write
without settling, so retention never races it). If the process group is gone by the time
a save settles, or a `with` block is left by an exception (the other ranks may not be
there to answer), it settles locally: rank 0 learns its own outcome, the other ranks
learn nothing and call nothing.

A crash loses at most the pending save; the commit protocol leaves nothing readers see.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass

from supervisor.storage import layout, ranks

WORKER = "supervise-ckpt"


@dataclass(eq=False)
class PendingSave:
    """One async save. `future` is the write; None on ranks that do not write."""

    step: int
    future: Future[layout.Manifest] | None
    collective: bool  # started under torch.distributed with more than one rank
    settled: bool = False
    manifest: layout.Manifest | None = None
    error: BaseException | None = None


class SaveHandle:
    """A save in flight. `wait()` settles it: returns its manifest (None on ranks other
    than 0) or raises its error."""

    def __init__(self, pending: PendingSave, lifecycle: Lifecycle) -> None:
        self._pending = pending
        self._lifecycle = lifecycle

    @property
    def step(self) -> int:
        return self._pending.step

    def done(self) -> bool:
        """Never blocks: whether the write has ended (on the rank that writes), or whether
        this rank has settled the save (on the other ranks)."""
        future = self._pending.future
        return future.done() if future is not None else self._pending.settled

    def wait(self, timeout: float | None = None) -> layout.Manifest | None:
        """Settle the save (see the module docstring) and return its manifest.

        Raises the save's error (every time it is asked), TimeoutError if `timeout` passes
        first, and ValueError for a timeout under torch.distributed, where waiting is a
        collective that cannot give up alone."""
        return self._lifecycle.wait(self._pending, timeout)


class Lifecycle:
    """The pending async save, the background thread, and `on_commit`, for one store."""

    def __init__(self, on_commit: Callable[[int], None] | None) -> None:
        self.on_commit = on_commit
        self._pool: ThreadPoolExecutor | None = None
        self._pending: PendingSave | None = None
        self._housekeeping: Future[None] | None = None

    def announce(self, step: int) -> None:
        """Tell `on_commit` that `step` is committed; call on the training thread."""
        if self.on_commit is not None:
            self.on_commit(step)

    # Starting work ---------------------------------------------------------------------

    def start(
        self, step: int, write: Callable[[], layout.Manifest] | None, collective: bool
    ) -> SaveHandle:
        """Run `write` on the background thread as the pending save (call `settle` first).
        `write` is None on ranks that hold the save without writing it."""
        assert self._pending is None, "settle the previous save first"
        future = self._worker().submit(write) if write is not None else None
        self._pending = PendingSave(step, future, collective)
        return SaveHandle(self._pending, self)

    def in_background(self, work: Callable[[], None]) -> None:
        """Run `work` (retention) after the pending write, off the training thread; inline
        if already on the background thread. The next call that waits, waits for it."""
        if threading.current_thread().name.startswith(WORKER):
            work()
        else:
            self._housekeeping = self._worker().submit(work)

    def _worker(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=WORKER)
        return self._pool

    # Settling --------------------------------------------------------------------------

    def settle(self) -> layout.Manifest | None:
        """Settle the pending save, collectively if it is (see the module docstring).
        Returns its manifest, or None if nothing was pending; raises its error."""
        self._tidy()
        pending = self._pending
        return self._settle(pending, collectively=True) if pending is not None else None

    def settle_local(self, wait: bool) -> None:
        """What a call that is not a collective may do: settle a save that is not
        collective (if it has finished, or always if `wait`); for a collective one, wait
        for this rank's write if `wait`, and leave it pending."""
        self._tidy()
        pending = self._pending
        if pending is None:
            return
        if self._is_collective(pending):
            if wait and pending.future is not None:
                wait_for([pending.future])
        elif wait or pending.future is None or pending.future.done():
            self._settle(pending, collectively=False)

    def wait(self, pending: PendingSave, timeout: float | None) -> layout.Manifest | None:
        if not pending.settled:
            if timeout is not None:
                if self._is_collective(pending):
                    raise ValueError(
                        "SaveHandle.wait(timeout) is not supported under torch.distributed: "
                        "waiting is a collective that every rank makes"
                    )
                if pending.future is not None and not wait_for([pending.future], timeout).done:
                    raise TimeoutError(f"checkpoint step {pending.step} is still being written")
            return self._settle(pending, collectively=True)
        if pending.error is not None:
            raise pending.error
        return pending.manifest

    def close(self, collectively: bool = True) -> None:
        """Settle the pending save (locally if not `collectively`), then stop the thread."""
        try:
            self._tidy()
            pending = self._pending
            if pending is not None:
                self._settle(pending, collectively)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _tidy(self) -> None:
        """Wait for retention still running after the last sync save (it only warns)."""
        housekeeping, self._housekeeping = self._housekeeping, None
        if housekeeping is not None:
            housekeeping.result()

    @staticmethod
    def _is_collective(pending: PendingSave) -> bool:
        return pending.collective and ranks.dist() is not None

    def _settle(self, pending: PendingSave, collectively: bool) -> layout.Manifest | None:
        """Learn how `pending` ended, once: announce its commit or raise its error."""
        if self._pending is pending:
            self._pending = None
        pending.settled = True
        future = pending.future
        try:
            if collectively and self._is_collective(pending):
                # Rank 0 always writes, so only rank 0 (which runs this) has a future.
                outcome = ranks.rank_zero(lambda: _result(future), pending.step)
            elif future is not None:
                outcome = future.result()
            else:
                return None  # a rank that did not write, settling alone, cannot know
        except BaseException as err:
            pending.error = err
            raise
        pending.manifest = outcome
        self.announce(pending.step)
        return outcome


def _result(future: Future[layout.Manifest] | None) -> layout.Manifest:
    assert future is not None, "rank 0 holds the write"
    return future.result()
