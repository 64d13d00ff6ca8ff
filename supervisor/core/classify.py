"""Which class a finished run belongs to: a table lookup over evidence (pure, L1).

The rule, in full:

1. Findings that stopped the run (urgency STOP or CHECKPOINT: an external SIGTERM, a failed or
   degraded GPU, a detected hang) decide the class whatever the child's status was. A
   trainer that exits 0 after SIGTERM is still PREEMPTED.
2. Otherwise a child that exited 0 SUCCEEDED.
3. Otherwise the child failed on its own. Findings that explain a failure (urgency ON_EXIT:
   matched log lines, application Xids) pick the class; with none, it is TRAINING_FAILED.

When several findings argue for different classes, `PRECEDENCE` decides: causes outside the
workload (hardware, then the pod being told to leave) outrank their symptoms (a collective
that timed out because a peer vanished, transport errors), which outrank the application.
PEER_LEFT sits between the two: no local watchdog ever argues for it; it comes only from a
peer's verdict in the run ledger, which explains this pod's symptoms but yields to a cause
found here.
Among findings of the same class the earliest wins, because the first error is usually the
root cause.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from supervisor.core.events import ChildStatus, Finding, Urgency
from supervisor.core.exitcodes import ExitCode

PRECEDENCE: tuple[ExitCode, ...] = (
    ExitCode.DEVICE_FAILED,
    ExitCode.DEVICE_DEGRADED,
    ExitCode.PREEMPTED,
    ExitCode.PEER_LEFT,
    ExitCode.HANG,
    ExitCode.INFRA_FAILED,
    ExitCode.TRAINING_FAILED,
)

STOPPING = frozenset({Urgency.STOP, Urgency.CHECKPOINT})
EXPLAINING = frozenset({Urgency.ON_EXIT})


def strongest(findings: Iterable[Finding], urgencies: frozenset[Urgency]) -> Finding | None:
    """The finding of highest precedence among those with one of `urgencies`, or None."""
    best: Finding | None = None
    for finding in findings:
        if finding.exit_code is None or finding.urgency not in urgencies:
            continue
        if finding.exit_code not in PRECEDENCE:
            continue
        if best is None or PRECEDENCE.index(finding.exit_code) < PRECEDENCE.index(
            best.exit_code  # type: ignore[arg-type]
        ):
            best = finding
    return best


def classify(child: ChildStatus, findings: Iterable[Finding]) -> tuple[ExitCode, str]:
    """The class of a run whose child ended with `child`, and one sentence saying why."""
    findings = tuple(findings)
    stopped_by = strongest(findings, STOPPING)
    if stopped_by is not None:
        return stopped_by.exit_code, stopped_by.summary  # type: ignore[return-value]
    if child.succeeded:
        return ExitCode.SUCCEEDED, "The training command exited 0."
    explained_by = strongest(findings, EXPLAINING)
    if explained_by is not None:
        return (
            explained_by.exit_code,  # type: ignore[return-value]
            f"{_sentence(explained_by.summary)} The training command then {child.describe()}.",
        )
    return (
        ExitCode.TRAINING_FAILED,
        f"The training command {child.describe()}, with no sign of a hardware, hang or "
        "infrastructure cause.",
    )


def worker_error_finding(
    message: str, detail: Mapping[str, object], matched: Finding | None
) -> Finding:
    """What the root-cause error torchrun recorded says about the class.

    `matched` is what the log matcher makes of `message` (an NCCL transport error, a peer
    that vanished...); without a match the worker's own exception is a training failure.
    Either way it explains a failure (ON_EXIT): it never overrides a stop supervise made.
    """
    if matched is not None and matched.exit_code is not None:
        return Finding(
            "torchrun",
            matched.kind,
            matched.summary,
            matched.exit_code,
            Urgency.ON_EXIT,
            {**matched.detail, **detail},
        )
    return Finding(
        "torchrun",
        "worker_error",
        f"The first failed worker raised {message}",
        ExitCode.TRAINING_FAILED,
        Urgency.ON_EXIT,
        detail,
    )


def _sentence(text: str) -> str:
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."
