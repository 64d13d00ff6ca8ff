"""Failure-policy rules generated from the exit-code contract, for Job and for JobSet.

Every rule list here is built by iterating `ExitCode`; no exit code is written by hand, so
a new class reaches the manifests the day it joins the enum.

**Plain Indexed Job** (`job_pod_failure_policy`). Kubernetes evaluates `podFailurePolicy`
rules in order and the first match wins; no match means Count (batch/v1, GA in 1.31;
pkg/controller/job/pod_failure_policy.go). Rule 0 is `DisruptionTarget → Ignore`, so a pod
evicted, preempted or drained (whatever it exited with, 137 included) never burns a retry.
Then one `onExitCodes` rule per class, naming the `trainer` container, with the action
the contract names (`ExitCode.action`), except that TRAINING_FAILED may be promoted to
FailJob. Codes outside the contract (1, 137, a crash of supervise itself) match nothing
and are counted.

**JobSet** (`jobset_pod_failure_policy` + `jobset_failure_policy`). A JobSet reacts to
*Job* failures, and the only Job failures whose message carries an exit code are FailJob
ones: the Job controller records reason `PodFailurePolicy` and the message
"Container trainer for pod NS/POD failed with exit code N matching FailJob rule at index K"
(or "Pod NS/POD has condition DisruptionTarget matching FailJob rule at index K" for a
condition rule). A Count verdict inside the Job would reach the JobSet as a bare
`BackoffLimitExceeded` with no code to route on. So inside a JobSet every class that holds
an incident, and DisruptionTarget, is FailJob: the Job fails at the first classified pod
failure, and the JobSet rules route on the code in the message: device classes and
preemption → RestartJobSetAndIgnoreMaxRestarts (every Job is recreated and `maxRestarts` is
not charged; the action came with JobSet's configurable failure policy, KEP-262,
kubernetes-sigs/jobset#537, first released in JobSet v0.6.0); retriable classes →
RestartJobSet (charged); CONFIG_ERROR → FailJobSet. Unclassified codes are Counted with
`backoffLimit: 0`, so the Job fails with `BackoffLimitExceeded`, no JobSet rule matches,
and JobSet's default action RestartJobSet (charged) applies. (jobset api/jobset/v1alpha2
jobset_types.go: rules match on reasons AND message patterns, first match wins, default
RestartJobSet.) The rules are listed strictest first, so that a controller older than
v0.10.1, which prunes the message patterns, fails the JobSet rather than restarting it
forever (`jobset_failure_policy`).

**One incident is charged once.** A gang fails together: when one pod holds the cause of
an incident, every other pod of the gang stops too and exits PEER_LEFT, naming it. PEER_LEFT
never fails a Job, in either shape: Ignore in a plain Job (the contract's action), and
Ignore inside a JobSet's Job as well, so it has no JobSet rule (`JOBSET_IGNORED`). The pod
holding the cause fails (or not) with its own code, which alone decides whether anything is
charged. Were PEER_LEFT routed through FailJob to RestartJobSetAndIgnoreMaxRestarts
instead, the incident would go uncharged whenever a PEER_LEFT pod's Job failed first: the
JobSet controller acts on the first reconcile that sees a failed Job (the first rule that
matches any failed Job wins; pkg/controllers/failure_policy.go
findFirstFailedPolicyRuleAndJob), recreates every Job, and the cause's own Job failure is
never evaluated. The PEER_LEFT pod that the Job replaces is deleted with its Job when the
cause's failure restarts the gang.

Pure: no I/O, safe on any thread.
"""

from __future__ import annotations

from collections.abc import Iterable

from supervisor.core.exitcodes import ExitCode, JobAction
from supervisor.k8s.spec import CONTAINER

DISRUPTION_TARGET = "DisruptionTarget"

# JobSet failurePolicy actions (jobset.x-k8s.io/v1alpha2).
FAIL_JOBSET = "FailJobSet"
RESTART_JOBSET = "RestartJobSet"
RESTART_JOBSET_FREE = "RestartJobSetAndIgnoreMaxRestarts"
# The Job condition reason a FailJob rule produces (batch/v1 JobReasonPodFailurePolicy).
REASON_POD_FAILURE_POLICY = "PodFailurePolicy"

# Classes that never fail a JobSet's Job: the pod holds no incident of its own (see above).
JOBSET_IGNORED: frozenset[ExitCode] = frozenset({ExitCode.PEER_LEFT})


def classes() -> list[ExitCode]:
    """Every failure class (every code but SUCCEEDED), ordered by code."""
    return sorted((c for c in ExitCode if c is not ExitCode.SUCCEEDED), key=lambda c: c.code)


def job_action(code: ExitCode, *, training_failed_fails_job: bool = False) -> str:
    """The podFailurePolicy action a plain Job takes for `code`: the contract's, or FailJob."""
    if code is ExitCode.TRAINING_FAILED and training_failed_fails_job:
        return JobAction.FAIL_JOB.value
    return code.action.value


def jobset_classes() -> list[ExitCode]:
    """The classes that fail a Job inside a JobSet, each with its own JobSet rule."""
    return [code for code in classes() if code not in JOBSET_IGNORED]


def jobset_job_action(code: ExitCode) -> str:
    """The podFailurePolicy action of a Job inside a JobSet for `code`."""
    return JobAction.IGNORE.value if code in JOBSET_IGNORED else JobAction.FAIL_JOB.value


def jobset_action(code: ExitCode, *, training_failed_fails_job: bool = False) -> str:
    """What the JobSet does when one of its Jobs fails with `code` (a `jobset_classes()`)."""
    if code in JOBSET_IGNORED:
        raise ValueError(f"{code.name} never fails a Job inside a JobSet")
    action = job_action(code, training_failed_fails_job=training_failed_fails_job)
    return {
        JobAction.FAIL_JOB.value: FAIL_JOBSET,
        JobAction.IGNORE.value: RESTART_JOBSET_FREE,
        JobAction.COUNT.value: RESTART_JOBSET,
    }[action]


def _exit_code_rule(action: str, codes: Iterable[ExitCode]) -> dict[str, object]:
    return {
        "action": action,
        "onExitCodes": {
            "containerName": CONTAINER,
            "operator": "In",
            "values": sorted(c.code for c in codes),  # the API wants them sorted and unique
        },
    }


def _disruption_rule(action: str) -> dict[str, object]:
    return {"action": action, "onPodConditions": [{"type": DISRUPTION_TARGET, "status": "True"}]}


def job_pod_failure_policy(*, training_failed_fails_job: bool = False) -> dict[str, object]:
    """`spec.podFailurePolicy` for a plain Indexed Job: DisruptionTarget first, then per class."""
    rules = [_disruption_rule(JobAction.IGNORE.value)]
    for code in classes():
        action = job_action(code, training_failed_fails_job=training_failed_fails_job)
        rules.append(_exit_code_rule(action, [code]))
    return {"rules": rules}


def jobset_pod_failure_policy() -> dict[str, object]:
    """`spec.podFailurePolicy` for a Job inside a JobSet: a classified failure fails it, except
    a pod that left because a peer did (`JOBSET_IGNORED`), which is replaced uncounted."""
    rules = [_disruption_rule(JobAction.FAIL_JOB.value)]
    rules.extend(_exit_code_rule(jobset_job_action(code), [code]) for code in classes())
    return {"rules": rules}


def rule_name(code: ExitCode) -> str:
    """A JobSet rule name for `code`, e.g. deviceFailed (must match ^[A-Za-z][A-Za-z0-9_,:]*)."""
    first, *rest = code.name.lower().split("_")
    return first + "".join(word.capitalize() for word in rest)


def failjob_message_pattern(code: ExitCode) -> str:
    """An RE2 pattern for the Job message a FailJob on `code` in the trainer produces."""
    return (
        f"^Container {CONTAINER} for pod \\S+ failed with exit code {code.code} "
        "matching FailJob rule at index [0-9]+$"
    )


DISRUPTION_MESSAGE_PATTERN = (
    f"^Pod \\S+ has condition {DISRUPTION_TARGET} matching FailJob rule at index [0-9]+$"
)


# The order the JobSet's rules are listed in: the strictest action first (see
# `jobset_failure_policy`).
_STRICTEST_FIRST = (FAIL_JOBSET, RESTART_JOBSET, RESTART_JOBSET_FREE)


def jobset_failure_policy(
    *, max_restarts: int, training_failed_fails_job: bool = False
) -> dict[str, object]:
    """`spec.failurePolicy` for a JobSet whose Jobs use `jobset_pod_failure_policy()`.

    On a JobSet controller that knows `onJobFailureMessagePatterns` (v0.10.1 and newer) each
    pattern matches one exit code, so no two rules match the same failure and their order
    does not matter. An older controller's CRD prunes the patterns silently, and then every
    rule matches every FailJob failure, so the first rule decides them all. The rules are
    therefore listed strictest first: a pruned policy fails the JobSet on its first
    classified failure (loud, and charged to nobody's GPUs) instead of restarting it for
    free forever, CONFIG_ERROR included.
    """
    rules: list[dict[str, object]] = [
        {
            "name": "disrupted",
            "action": RESTART_JOBSET_FREE,
            "onJobFailureReasons": [REASON_POD_FAILURE_POLICY],
            "onJobFailureMessagePatterns": [DISRUPTION_MESSAGE_PATTERN],
        }
    ]
    for code in jobset_classes():
        rules.append(
            {
                "name": rule_name(code),
                "action": jobset_action(code, training_failed_fails_job=training_failed_fails_job),
                "onJobFailureReasons": [REASON_POD_FAILURE_POLICY],
                "onJobFailureMessagePatterns": [failjob_message_pattern(code)],
            }
        )
    rules.sort(key=lambda rule: _STRICTEST_FIRST.index(rule["action"]))  # stable: by code within
    return {"maxRestarts": max_restarts, "restartStrategy": "Recreate", "rules": rules}


def restart_policy_rules(codes: Iterable[ExitCode]) -> list[dict[str, object]]:
    """Container `restartPolicyRules` restarting in place on `codes` (KEP-5307, beta 1.35)."""
    values = sorted(c.code for c in codes)
    return [{"action": "Restart", "exitCodes": {"operator": "In", "values": values}}]
