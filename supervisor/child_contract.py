"""What supervise and the training ranks it starts agree on, apart from the channel's bytes.

Both sides import this module: the supervisor to tell a child where things are, and
`supervisor.client` in every rank to find them. Standard library only, so the training
side stays fast to import.

* The child's environment (`ENV_*`): where the heartbeat channel and the stack-dump
  directory are, which step the attempt resumes from, how many restarts came before it,
  and where checkpoints go. Without `ENV_CHANNEL`, `supervisor.attach()` is a no-op.
* Stack dumps: an attached rank dumps every thread's Python stack on `STACK_SIGNAL` into
  `stacks_file_name(rank, pid)` inside `$SUPERVISE_STACKS_DIR` (`supervisor.client`
  registers the handler, `supervisor.hang.stacks` sends the signal and reads the file).
* Why a checkpoint is requested (`CHECKPOINT_REASONS`): the channel header carries a
  reason's index plus one (0: no request), and checkpoint manifests record its name.
"""

from __future__ import annotations

import signal

ENV_CHANNEL = "SUPERVISE_CHANNEL"
ENV_CHECKPOINT_DIR = "SUPERVISE_CHECKPOINT_DIR"
ENV_STACKS_DIR = "SUPERVISE_STACKS_DIR"
ENV_RESUME_STEP = "SUPERVISE_RESUME_STEP"
ENV_RESTART_COUNT = "SUPERVISE_RESTART_COUNT"

STACK_SIGNAL = signal.SIGUSR2

CHECKPOINT_REASONS: tuple[str, ...] = ("periodic", "degraded", "preempted", "requested", "final")


def stacks_file_name(rank: int, pid: int) -> str:
    """The file rank `rank` (process `pid`) appends its faulthandler dumps to."""
    return f"rank{rank}-{pid}.txt"
