"""The exit-code contract: one distinct code per failure class.

This enum is the single source of truth. The CLI table (`supervise exit-codes`), the README
table, the termination message and the rendered Kubernetes manifests are all generated from
it, and tests pin the numbers: Job manifests in the field depend on them, so a code never
changes meaning.

The codes avoid 1, 2, 126-128 and 128+N, which shells, Python, torchrun and the kernel
already use: a shell reports a death by signal N as 128+N and an exec failure as 126/127,
Python exits 1 on an exception and 2 on a usage error, and torchrun exits 1 for everything.

`JobAction` is what a Job's `podFailurePolicy` does with a code; it is not a policy action
(those are in `supervisor.core.actions`).
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class JobAction(enum.StrEnum):
    """A Job `podFailurePolicy` action (batch/v1, GA in Kubernetes 1.31)."""

    NONE = "-"  # exit 0: the Job counts the pod as succeeded, no rule applies
    COUNT = "Count"
    FAIL_JOB = "FailJob"
    IGNORE = "Ignore"


class _Row(NamedTuple):
    code: int
    action: JobAction
    meaning: str
    next_step: str


class ExitCode(_Row, enum.Enum):
    """How a supervised run ended. `int(ExitCode.X)` is not defined; use `.code`."""

    SUCCEEDED = _Row(0, JobAction.NONE, "The training command finished successfully.", "Nothing.")
    TRAINING_FAILED = _Row(
        80,
        JobAction.COUNT,
        "The training command failed on its own: an exception, a non-zero exit or a crash, "
        "with no sign of a hardware or infrastructure cause.",
        "Read the evidence and the container log: the child's exit status and the last "
        "matched error line say where to start.",
    )
    CONFIG_ERROR = _Row(
        81,
        JobAction.FAIL_JOB,
        "supervise was misconfigured: bad flags, a command that cannot be found or run, "
        "or an unsupported setting. Nothing was started.",
        "Fix the flag or command named in the reason; retrying cannot help.",
    )
    DEVICE_FAILED = _Row(
        82,
        JobAction.IGNORE,
        "A GPU failed (fatal Xid, uncorrectable ECC, row-remap failure, GPU lost or NVML hung).",
        "Reschedule away from the node; the evidence names the GPU UUID and bus id for the "
        "node agent or operator to drain and repair.",
    )
    DEVICE_DEGRADED = _Row(
        83,
        JobAction.IGNORE,
        "A GPU degraded (throttling, rising error counts, pending remap, step-time "
        "regression); training was asked to checkpoint and stopped.",
        "Reschedule; the next pod resumes from the committed checkpoint in the evidence.",
    )
    HANG = _Row(
        84,
        JobAction.COUNT,
        "Training stopped making progress (no heartbeat, or an NCCL collective timed out).",
        "Read the stacks and the stalled rank in the event log; check the network and the "
        "rank named first.",
    )
    PREEMPTED = _Row(
        85,
        JobAction.IGNORE,
        "The pod was told to leave (SIGTERM or SIGINT from outside: eviction, preemption, "
        "drain or deletion).",
        "Nothing; the replacement pod resumes from the last committed checkpoint.",
    )
    INFRA_FAILED = _Row(
        86,
        JobAction.COUNT,
        "Infrastructure failed: NCCL transport errors, rendezvous failure, or checkpoint "
        "storage unreachable.",
        "Check the network fabric and storage named in the evidence; a retry often succeeds.",
    )
    PEER_LEFT = _Row(
        87,
        JobAction.IGNORE,
        "Another pod of the same gang left first, and this one stopped because the gang "
        "cannot go on without it.",
        "Nothing for this pod; the evidence names the pod that left first, whose exit code "
        "and evidence say what happened and what to do.",
    )

    @property
    def retriable(self) -> bool:
        """True for classes a retry of the same command may fix (counted against backoff)."""
        return self.action is JobAction.COUNT

    @classmethod
    def from_code(cls, code: int) -> ExitCode:
        """Look a class up by its numeric code; raises `ValueError` for unknown codes."""
        for member in cls:
            if member.code == code:
                return member
        raise ValueError(f"{code} is not a supervise exit code; see `supervise exit-codes`")

    def as_dict(self) -> dict[str, object]:
        """The JSON shape used by `supervise exit-codes --json` and the docs."""
        return {
            "code": self.code,
            "name": self.name,
            "action": self.action.value,
            "meaning": self.meaning,
            "next": self.next_step,
        }


def contract_table() -> list[dict[str, object]]:
    """Every class, ordered by code, as plain dicts."""
    return [member.as_dict() for member in sorted(ExitCode, key=lambda m: m.code)]


def markdown_table() -> str:
    """The contract as the Markdown table the README embeds (a test keeps them equal)."""
    lines = ["| code | name | podFailurePolicy | meaning |", "|---|---|---|---|"]
    for row in contract_table():
        lines.append(f"| {row['code']} | `{row['name']}` | {row['action']} | {row['meaning']} |")
    return "\n".join(lines)
