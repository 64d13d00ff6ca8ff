"""The training-side API: `sup = supervisor.attach()`, then `sup.step(n)` in the loop.

    import supervisor
    sup = supervisor.attach()
    for step in range(start, total):
        train_one_step()
        sup.step(step)

Guarantees:
* Imports only the standard library, `supervisor.channel`, `supervisor.child_contract` and
  `supervisor.core.errors`; never torch. Safe to import at the top of any training script.
* Outside supervise (no `SUPERVISE_CHANNEL` in the environment) `attach()` returns a no-op
  handle with the same methods, so one script runs with or without supervise.
* `step(n)` writes the step and a CLOCK_MONOTONIC timestamp into this rank's slot of the
  shared-memory channel: no syscalls, no locks, no allocation beyond the integers. Call it
  from one thread (the training loop); it is not thread-safe.
* `finish()` (also run at interpreter exit) marks the rank finished, so the silence of a
  rank that is done is never called a hang. A process forked from the rank (a DataLoader
  worker) inherits the mapping but never marks the rank's slot finished.
* The rank is `LOCAL_RANK`, else `RANK`, else 0: the slot index on this node.
* Stack dumps without ptrace: on attach, if SIGUSR2 still has its default action, the
  client registers `faulthandler` on SIGUSR2, writing all threads' Python stacks to
  `$SUPERVISE_STACKS_DIR/rank<R>-<pid>.txt`. supervise sends SIGUSR2 to every rank's pid
  when it detects a hang. Consequence: a SIGUSR2 sent to the pod (which supervise forwards
  to its child) makes an attached trainer dump its stacks instead of dying, the default
  action. A trainer that installed its own SIGUSR2 handler keeps it and gets no dumps.
* A rank that dies of an uncaught `StorageError` (the checkpoint store could not reach
  its storage) says so in its slot before the traceback is printed: attaching wraps
  `sys.excepthook`, calling the previous hook after. supervise then classifies the exit
  as INFRA_FAILED, not TRAINING_FAILED, without reading the traceback.
* Problems here never stop training: a bad channel prints one line to stderr and the
  handle degrades to a no-op. A channel header that cannot be read consistently (the
  supervisor died, or was descheduled, in the middle of writing it) reads as "no request":
  `checkpoint_requested` is False, `checkpoint_reason` None, and `committed` acknowledges
  only what this rank had already seen. None of them raises.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import IO

from supervisor.channel import Channel, Header, SlotWriter
from supervisor.child_contract import (
    CHECKPOINT_REASONS,
    ENV_CHANNEL,
    ENV_RESTART_COUNT,
    ENV_RESUME_STEP,
    ENV_STACKS_DIR,
    STACK_SIGNAL,
    stacks_file_name,
)
from supervisor.core.errors import StorageError

__all__ = ["ENV_CHANNEL", "ENV_STACKS_DIR", "Handle", "NoopHandle", "attach"]


def _env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        return default


def _local_rank() -> int:
    for name in ("LOCAL_RANK", "RANK"):
        value = _env_int(name, None)
        if value is not None and value >= 0:
            return value
    return 0


class NoopHandle:
    """What `attach()` returns outside supervise: every method does nothing."""

    active = False

    def __init__(self) -> None:
        self.rank = _local_rank()

    def step(self, n: int) -> None:
        """Record that this rank completed step `n` (no-op here)."""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Mark a phase ("init", "train", "eval", "checkpoint", any name; no-op here)."""
        yield

    def finish(self) -> None:
        """Mark this rank done (no-op here)."""

    @property
    def resume_step(self) -> int | None:
        """The step supervise resumed from, or None when starting fresh."""
        return _env_int(ENV_RESUME_STEP, None)

    @property
    def restart_count(self) -> int:
        """How many times supervise has restarted the training command before this run."""
        return _env_int(ENV_RESTART_COUNT, 0) or 0

    @property
    def checkpoint_requested(self) -> bool:
        """True while supervise is asking this rank for a checkpoint (never, here)."""
        return False

    @property
    def checkpoint_reason(self) -> str | None:
        """Why the pending request was made: "preempted", "degraded", "requested", ...;
        None if none. After `should_checkpoint` agreed on a save, the most urgent reason any
        rank had, until the save is committed. "requested" (an operator's
        `supervise checkpoint-now`) is the one to save for and go on training after; for
        the others, save and leave."""
        return self._agreed or self._own_reason()

    def _own_reason(self) -> str | None:
        return None

    @property
    def stop_requested(self) -> bool:
        """True once supervise asks training to exit (never, here).

        supervise raises it after the checkpoint it asked for is committed; a trainer that
        saves and then breaks out of its loop never needs to read it. One that keeps going
        after saving should exit when it turns True: otherwise it gets SIGTERM once the
        shutdown timeout has passed.
        """
        return False

    def should_checkpoint(self, step: int, every: int = 1) -> bool:
        """Whether every rank should save at this step boundary.

        Call it on every rank at the same steps. Under `torch.distributed` with more than
        one rank, the ranks agree with one all-reduce (MAX) of a single int, so a request
        seen by any rank (one node's pod being evicted, say) makes all of them save the
        same step, and `checkpoint_reason` then gives every rank the most urgent reason
        (a rank that would have saved for an operator leaves with a leaving peer).
        `every=K` runs the collective only when `step % K == 0`, to trade reaction time
        for its cost. The collective runs whether or not anything is pending:
        that is what keeps the ranks in step.
        """
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if step % every:
            return False
        mine = _vote(self._own_reason())
        agreed = _agree(mine)  # the most urgent reason any rank has
        self._agreed = _VOTES[min(agreed, len(_VOTES)) - 1] if agreed > mine else None
        if agreed > mine and self._agreed != "requested":
            self._for_peer = True  # another rank is leaving: this one saves and leaves too
        return agreed > 0

    def committed(self, step: int) -> None:
        """Report that checkpoint `step` is committed (CheckpointStore.save does this)."""

    _for_peer = False
    _agreed: str | None = None  # another rank's more urgent reason, agreed on, not yet saved


class Handle(NoopHandle):
    """A rank attached to a live channel. Build it with `attach()`."""

    active = True
    step: Callable[[int], None]  # bound straight to the slot writer: one call on the hot path

    def __init__(self, channel: Channel, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self._channel = channel
        self._writer = SlotWriter(channel, rank)
        self._pid = os.getpid()
        self._finished = False
        self._phase = ""
        self._stacks: IO[str] | None = None
        self._answered = 0  # the newest checkpoint request generation this rank answered
        self._for_peer = False  # agreed to save for another rank's request, not yet saved
        self._writer.claim(self._pid)
        self.step = self._writer.beat
        atexit.register(self.finish)
        self._report_storage_deaths()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Enter phase `name` for the duration of the block; phases nest and restore."""
        outer = self._phase
        self._phase = name
        self._writer.set_phase(name)
        try:
            yield
        finally:
            self._phase = outer
            self._writer.set_phase(outer)

    @property
    def checkpoint_requested(self) -> bool:
        """True from a request's arrival until this rank reports a commit after it.

        One read of the channel header: a few microseconds, no syscalls. Never raises.
        """
        return self._pending() is not None

    @property
    def stop_requested(self) -> bool:
        header = self._header()
        return header is not None and header.stop_requested

    def _own_reason(self) -> str | None:
        header = self._pending()
        if header is None:
            return None
        if header.ckpt_reason > len(CHECKPOINT_REASONS):  # a newer supervise's reason
            return "requested"
        return CHECKPOINT_REASONS[header.ckpt_reason - 1]

    def committed(self, step: int) -> None:
        """Report that checkpoint `step` is committed; it answers any request made so far."""
        header = self._header()
        if header is not None:
            self._answered = max(self._answered, header.ckpt_generation)
        self._writer.set_checkpoint(step, self._answered, self._for_peer)
        self._for_peer = False
        self._agreed = None

    def _header(self) -> Header | None:
        """The channel header, or None while it cannot be read consistently."""
        try:
            return self._channel.read_header()
        except TimeoutError:  # the supervisor stopped mid-write: ask again at the next step
            return None

    def _pending(self) -> Header | None:
        """The header when it carries a request this rank has not answered yet."""
        header = self._header()
        if header is None or header.ckpt_reason == 0 or header.ckpt_generation <= self._answered:
            return None
        return header

    def finish(self) -> None:
        """Mark this rank finished. Idempotent; ignored in a forked child process."""
        if self._finished or os.getpid() != self._pid:
            return
        self._finished = True
        self._writer.finish()

    def _report_storage_deaths(self) -> None:
        """Mark the slot when the process dies of a `StorageError` (see the module doc)."""
        previous = sys.excepthook
        pid, writer = self._pid, self._writer

        def hook(kind: type[BaseException], error: BaseException, tb: object) -> None:
            if os.getpid() == pid and _caused_by_storage(error):
                writer.mark_storage_failed()
            previous(kind, error, tb)  # type: ignore[arg-type]

        sys.excepthook = hook

    def _register_stack_dump(self, stacks_dir: str) -> None:
        if signal.getsignal(STACK_SIGNAL) is not signal.SIG_DFL:
            return  # the trainer owns SIGUSR2; do not take it away
        path = os.path.join(stacks_dir, stacks_file_name(self.rank, self._pid))
        try:
            # Kept open for the life of the process: faulthandler writes to its fd from the
            # signal handler, where opening a file would not be async-signal-safe.
            self._stacks = open(path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as err:
            print(f"supervise: cannot write stack dumps to {path}: {err}", file=sys.stderr)
            return
        faulthandler.register(STACK_SIGNAL, file=self._stacks, all_threads=True, chain=False)


def _caused_by_storage(error: BaseException | None) -> bool:
    """Whether `error`, or an exception it was raised from or while handling, is a
    `StorageError` (a trainer may wrap it in its own exception)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, StorageError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


# What `should_checkpoint` votes: the index of this rank's reason plus one (0: none), in
# rising urgency, so the MAX across ranks is the most urgent. An operator's request is the
# least urgent: a rank whose peer is leaving leaves too.
_VOTES = ("requested", "degraded", "preempted")


def _vote(reason: str | None) -> int:
    if reason is None:
        return 0
    return _VOTES.index(reason) + 1 if reason in _VOTES else len(_VOTES)


def _agree(vote: int) -> int:
    """The MAX of `vote` across ranks when torch.distributed is running; never imports torch."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return vote
    if dist.get_world_size() < 2:
        return vote
    torch = sys.modules["torch"]
    device = "cpu"
    if dist.get_backend() == "nccl":  # NCCL reduces device tensors only
        device = f"cuda:{torch.cuda.current_device()}"
    votes = torch.tensor([vote], dtype=torch.int32, device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return int(votes.item())


_attached: tuple[int, NoopHandle] | None = None  # (pid that attached, its handle)


def attach() -> NoopHandle:
    """This rank's handle: live under supervise, a no-op elsewhere. Idempotent per process."""
    global _attached
    pid = os.getpid()
    if _attached is None:
        _attached = (pid, _attach())
    elif _attached[0] != pid:
        return NoopHandle()  # a process forked from a rank is not that rank
    return _attached[1]


def _attach() -> NoopHandle:
    path = os.environ.get(ENV_CHANNEL)
    if not path:
        return NoopHandle()
    rank = _local_rank()
    try:
        channel = Channel.open(path)
        handle = Handle(channel, rank)
    except (ValueError, IndexError, OSError) as err:  # ConfigError is a ValueError
        print(f"supervise: heartbeats disabled for rank {rank}: {err}", file=sys.stderr)
        return NoopHandle()
    stacks_dir = os.environ.get(ENV_STACKS_DIR)
    if stacks_dir:
        handle._register_stack_dump(stacks_dir)
    return handle
