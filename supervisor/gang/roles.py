"""Which verdicts hold the cause of an incident, and which only saw a peer's failure (L1).

A gang fails together: when one pod's GPU dies, every other pod loses a rank and fails
too. Only the first holds the incident. The rest saw a *symptom* of it, and a symptom
pod looks in the ledger for a peer's verdict before it keeps a class of its own.

The role is decided by the finding that decided the class (`deciding_finding`), by kind
first (`KIND_ROLES`, `OVERRIDES`), then by class (`CLASS_ROLES`):

* **Causes never wait for peers**: DEVICE_FAILED and DEVICE_DEGRADED (this node's GPU),
  PREEMPTED from an external signal (this pod was told to leave), CONFIG_ERROR, and
  TRAINING_FAILED (the trainer's own exception or exit). A hang where the stacks single
  out a rank of this node stuck outside any collective is a cause too: the others wait in
  a collective *for it*.
* **Symptoms** are a lost peer (INFRA_FAILED from transport errors: NCCL remote/system
  errors, an aborted communicator, a dropped connection, an unreachable store), a hang
  inside a collective (the NCCL watchdog, a heartbeat stall with no local suspect, log
  silence), and a peer's checkpoint request (the trainer saved because another rank's pod
  was leaving). INFRA_FAILED and HANG from anything else default to symptoms as well: a
  rendezvous or a store that fails fails for every pod, and a symptom still counts once
  when nobody holds a cause.
* PEER_LEFT is always a symptom (it was attributed already); SUCCEEDED has no role.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from supervisor.core.classify import EXPLAINING, STOPPING, strongest
from supervisor.core.events import Finding
from supervisor.core.exitcodes import ExitCode
from supervisor.gang.records import Role

CAUSE, SYMPTOM = Role.CAUSE, Role.SYMPTOM

CLASS_ROLES: Mapping[ExitCode, Role] = {
    ExitCode.TRAINING_FAILED: CAUSE,
    ExitCode.CONFIG_ERROR: CAUSE,
    ExitCode.DEVICE_FAILED: CAUSE,
    ExitCode.DEVICE_DEGRADED: CAUSE,
    ExitCode.HANG: SYMPTOM,
    ExitCode.PREEMPTED: CAUSE,
    ExitCode.INFRA_FAILED: SYMPTOM,
    ExitCode.PEER_LEFT: SYMPTOM,
}
"""The role of a class when its deciding finding's kind is not listed below."""

KIND_ROLES: Mapping[str, tuple[Role, str]] = {
    # supervisor.core.matchers (source "log", or "torchrun" from its error file)
    "nccl_collective_timeout": (SYMPTOM, "a collective timed out: some rank stopped taking part"),
    "nccl_watchdog_hang": (SYMPTOM, "NCCL's watchdog stalled, usually inside a collective"),
    "nccl_remote_error": (SYMPTOM, "a network failure or a peer process exited early"),
    "nccl_system_error": (SYMPTOM, "a socket or system call under NCCL failed"),
    "nccl_comm_aborted": (SYMPTOM, "the communicator was aborted after a rank or link failed"),
    "peer_connection_lost": (SYMPTOM, "a peer's connection dropped mid-collective"),
    "dist_network_error": (SYMPTOM, "the rendezvous store or a peer could not be reached"),
    "cuda_uncorrectable_ecc": (CAUSE, "this node's GPU memory is faulty"),
    "cuda_uncorrectable_nvlink": (CAUSE, "this node's GPU interconnect is faulty"),
    "cuda_out_of_memory": (CAUSE, "the program ran out of GPU memory"),
    "cuda_device_assert": (CAUSE, "the program's own device-side assert"),
    "worker_error": (CAUSE, "the trainer raised its own exception"),
    # supervisor.hang.watchdog
    "heartbeat_stall": (SYMPTOM, "ranks stopped beating; with no local suspect, a collective"),
    "log_silence": (SYMPTOM, "the command went quiet; nothing says where"),
    # supervisor.core.policy
    "external_signal": (CAUSE, "this pod was told to leave"),
    "peer_preempted": (SYMPTOM, "the trainer saved because another rank's pod was leaving"),
    "spawn_failed": (CAUSE, "the command could not be started here"),
}
"""Finding kinds whose role is known, and why. A kind not listed falls back to its class."""


@dataclass(frozen=True)
class Override:
    """A finding of `kind` whose detail has every `when` item plays `role` instead."""

    kind: str
    role: Role
    why: str
    when: Mapping[str, object] = field(default_factory=dict)

    def applies(self, finding: Finding) -> bool:
        return finding.kind == self.kind and all(
            finding.detail.get(key) == value for key, value in self.when.items()
        )


OVERRIDES: tuple[Override, ...] = (
    Override(
        "heartbeat_stall",
        CAUSE,
        "the stacks single out a rank of this node stuck outside any collective",
        {"named_by": "stacks"},
    ),
)


def role_of(code: ExitCode, deciding: Finding | None) -> Role | None:
    """The role of a verdict of class `code` decided by `deciding` (None: by the child's
    status alone). None for SUCCEEDED."""
    if code is ExitCode.SUCCEEDED:
        return None
    if code is ExitCode.PEER_LEFT:
        return SYMPTOM
    if deciding is not None and deciding.exit_code is code:
        for override in OVERRIDES:
            if override.applies(deciding):
                return override.role
        if deciding.kind in KIND_ROLES:
            return KIND_ROLES[deciding.kind][0]
    return CLASS_ROLES[code]


def deciding_finding(code: ExitCode, findings: Iterable[Finding]) -> Finding | None:
    """The finding that gave a run its class `code`, by the rule `classify` applies; None
    when the class came from the child's status alone or from something other than the
    findings (a bound on free exits, an attribution)."""
    findings = tuple(findings)
    for urgencies in (STOPPING, EXPLAINING):
        found = strongest(findings, urgencies)
        if found is not None:
            return found if found.exit_code is code else None
    return None


def describe() -> str:
    """The role table as text: one line per kind, then the overrides and class defaults."""
    lines = [f"{kind:<26} {role.value:<8} {why}" for kind, (role, why) in KIND_ROLES.items()]
    for o in OVERRIDES:
        when = ", ".join(f"{k}={v}" for k, v in o.when.items())
        lines.append(f"{o.kind:<26} {o.role.value:<8} when {when}: {o.why}")
    lines += [f"{'class ' + c.name:<26} {r.value:<8} (default)" for c, r in CLASS_ROLES.items()]
    return "\n".join(lines)
