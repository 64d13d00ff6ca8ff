"""The supervisor's half of the checkpoint handshake, over the shared-memory channel.

* `publish_request` writes a checkpoint request into the channel header: a generation
  number (one more than the last), the reason, and the deadline in CLOCK_MONOTONIC
  nanoseconds (the clock the ranks read too). A rank sees it on its next
  `sup.checkpoint_requested` / `sup.should_checkpoint(step)`.
* `publish_stop` raises the header's stop flag once a requested checkpoint is committed:
  the ranks read it as `sup.stop_requested` and should exit by themselves.
* `publish_attempt` starts a new attempt of the command: it records the step to resume
  from and the restart count, and clears any pending request (reason 0) while keeping the
  generation counter, so a request from an earlier attempt is never acted on again.
* `HandshakeWatcher` (a `Watcher`, one per attempt, fed by the attempt's sampler) reports
  `Attached` when the first rank claims a slot, and `CheckpointCommitted` each time a rank
  reports a newer committed step than any before, with the request generation it
  acknowledges (0 for a save nobody asked for). A commit is one marker for all ranks.
  Both events carry the sample's time.

The header has one writer: the loop's thread calls every publish function.
"""

from __future__ import annotations

from supervisor.channel import Channel, Header
from supervisor.child_contract import CHECKPOINT_REASONS
from supervisor.core.actions import RequestCheckpoint
from supervisor.core.events import Attached, CheckpointCommitted, Event
from supervisor.watch.sample import Sample


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


def publish_stop(channel: Channel) -> None:
    header = channel.read_header()
    channel.write_header(
        Header(
            ckpt_generation=header.ckpt_generation,
            ckpt_reason=header.ckpt_reason,
            stop_requested=True,
            ckpt_deadline_ns=header.ckpt_deadline_ns,
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


class HandshakeWatcher:
    """Reports `Attached` and `CheckpointCommitted` from the slots."""

    name = "handshake"
    done = False  # watches the whole attempt

    def __init__(self) -> None:
        self._attached = False
        self._reported = -1  # a commit is one marker for all ranks: report each step once

    def observe(self, sample: Sample) -> list[Event]:
        seen: list[Event] = []
        if sample.slots and not self._attached:
            self._attached = True
            seen.append(Attached(len(sample.slots), sample.now))
        for slot in sample.slots:
            if slot.ckpt_step > self._reported:
                self._reported = slot.ckpt_step
                seen.append(
                    CheckpointCommitted(
                        slot.ckpt_step, slot.ckpt_ack, sample.now, for_peer=slot.ckpt_for_peer
                    )
                )
        return seen
