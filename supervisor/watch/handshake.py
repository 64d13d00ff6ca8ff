"""The supervisor's half of the checkpoint handshake, over the shared-memory channel.

* `publish_request` writes a checkpoint request into the channel header: a generation
  number (one more than the last), the reason, and the deadline in CLOCK_MONOTONIC
  nanoseconds (the clock the ranks read too). A rank sees it on its next
  `sup.checkpoint_requested` / `sup.should_checkpoint(step)`.
* `publish_attempt` starts a new attempt of the command: it records the step to resume
  from and the restart count, and clears any pending request (reason 0) while keeping the
  generation counter, so a request from an earlier attempt is never acted on again.
* `HandshakeWatcher` (a `Watchdog`, one per attempt) polls the rank slots on its own thread
  and reports `Attached` when the first rank claims a slot, and `CheckpointCommitted` each
  time a rank reports a newer committed step than any before, with the request generation
  it acknowledges (0 for a save nobody asked for). A commit is one marker for all ranks.

The header has one writer: the loop's thread calls both publish functions.
"""

from __future__ import annotations

from supervisor.channel import Channel, Header, SlotState
from supervisor.child_contract import CHECKPOINT_REASONS
from supervisor.core.events import (
    Attached,
    CheckpointCommitted,
    RequestCheckpoint,
)
from supervisor.watch.poller import Poller

POLL_INTERVAL = 0.1  # seconds; a commit is noticed within this, well inside any budget


def reason_code(reason: str) -> int:
    """The channel's code for a reason: its index in CHECKPOINT_REASONS, plus one."""
    return CHECKPOINT_REASONS.index(reason) + 1


def publish_request(channel: Channel, request: RequestCheckpoint) -> None:
    header = channel.read_header()
    channel.write_header(
        Header(
            ckpt_generation=request.generation,
            ckpt_reason=reason_code(request.reason),
            stop_requested=header.stop_requested,
            ckpt_deadline_ns=int(request.deadline * 1e9),
            resume_step=header.resume_step,
            restart_count=header.restart_count,
        )
    )


def publish_attempt(channel: Channel, resume_step: int | None, restart_count: int) -> None:
    header = channel.read_header()
    channel.write_header(
        Header(
            ckpt_generation=header.ckpt_generation,
            resume_step=-1 if resume_step is None else resume_step,
            restart_count=restart_count,
        )
    )


class HandshakeWatcher(Poller):
    """Reports `Attached` and `CheckpointCommitted` from the slots."""

    def __init__(self, channel: Channel, interval: float = POLL_INTERVAL) -> None:
        super().__init__("handshake", interval)
        self._channel = channel
        self._attached = False
        self._reported = -1  # a commit is one marker for all ranks: report each step once

    def poll(self) -> bool:
        running = [s for s in self._channel.read_slots() if s.state is not SlotState.UNUSED]
        if running and not self._attached:
            self._attached = True
            self._report(Attached(len(running), self._now()))
        for slot in running:
            if slot.ckpt_step > self._reported:
                self._reported = slot.ckpt_step
                self._report(
                    CheckpointCommitted(
                        slot.ckpt_step, slot.ckpt_ack, self._now(), for_peer=slot.ckpt_for_peer
                    )
                )
        return False
