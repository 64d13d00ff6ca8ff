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
condition rule). An Ignore or Count verdict inside the Job would either hide the failure
from the JobSet (Ignore: the Job quietly replaces one pod of a gang whose peers are
about to fail) or reach it as a bare `BackoffLimitExceeded` with no code to route on. So
inside a JobSet every class, and DisruptionTarget, is FailJob: the Job fails at the first
classified pod failure, and the JobSet rules route on the code in the message:
device classes and preemption → RestartJobSetAndIgnoreMaxRestarts; retriable classes →
RestartJobSet (counted against maxRestarts); CONFIG_ERROR → FailJobSet. Unclassified codes
are Counted with `backoffLimit: 0`, so the Job fails with `BackoffLimitExceeded`, no
JobSet rule matches, and JobSet's default action RestartJobSet (counted) applies.
(jobset api/jobset/v1alpha2 jobset_types.go: rules match on reasons AND message
patterns, first match wins, default RestartJobSet.)

A caveat both shapes share: a gang fails together. When one node exits DEVICE_FAILED, its
peers lose a rank and exit too (usually INFRA_FAILED). In a plain Job each pod is judged
alone, so the peers' failures are counted. In a JobSet the first FailJob wins the Job's
verdict, so the route depends on which pod the Job controller sees fail first.

Pure: no I/O, safe on any thread.
"""

from __future__ import annotations

from collections.abc import Iterable

from supervisor.core.exitcodes import Action, ExitCode
from supervisor.k8s.spec import CONTAINER

DISRUPTION_TARGET = "DisruptionTarget"

# JobSet failurePolicy actions (jobset.x-k8s.io/v1alpha2).
FAIL_JOBSET = "FailJobSet"
RESTART_JOBSET = "RestartJobSet"
RESTART_JOBSET_FREE = "RestartJobSetAndIgnoreMaxRestarts"
# The Job condition reason a FailJob rule produces (batch/v1 JobReasonPodFailurePolicy).
REASON_POD_FAILURE_POLICY = "PodFailurePolicy"


def classes() -> list[ExitCode]:
    """Every failure class (every code but SUCCEEDED), ordered by code."""
    return sorted((c for c in ExitCode if c is not ExitCode.SUCCEEDED), key=lambda c: c.code)


def job_action(code: ExitCode, *, training_failed_fails_job: bool = False) -> str:
    """The podFailurePolicy action a plain Job takes for `code`: the contract's, or FailJob."""
    if code is ExitCode.TRAINING_FAILED and training_failed_fails_job:
        return Action.FAIL_JOB.value
    return code.action.value


def jobset_action(code: ExitCode, *, training_failed_fails_job: bool = False) -> str:
    """What the JobSet does when one of its Jobs fails with `code`."""
    action = job_action(code, training_failed_fails_job=training_failed_fails_job)
    return {
        Action.FAIL_JOB.value: FAIL_JOBSET,
        Action.IGNORE.value: RESTART_JOBSET_FREE,
        Action.COUNT.value: RESTART_JOBSET,
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
    rules = [_disruption_rule(Action.IGNORE.value)]
    for code in classes():
        action = job_action(code, training_failed_fails_job=training_failed_fails_job)
        rules.append(_exit_code_rule(action, [code]))
    return {"rules": rules}


def jobset_pod_failure_policy() -> dict[str, object]:
    """`spec.podFailurePolicy` for a Job inside a JobSet: every classified failure fails it."""
    rules = [_disruption_rule(Action.FAIL_JOB.value)]
    rules.extend(_exit_code_rule(Action.FAIL_JOB.value, [code]) for code in classes())
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


def jobset_failure_policy(
    *, max_restarts: int, training_failed_fails_job: bool = False
) -> dict[str, object]:
    """`spec.failurePolicy` for a JobSet whose Jobs use `jobset_pod_failure_policy()`."""
    rules: list[dict[str, object]] = [
        {
            "name": "disrupted",
            "action": RESTART_JOBSET_FREE,
            "onJobFailureReasons": [REASON_POD_FAILURE_POLICY],
            "onJobFailureMessagePatterns": [DISRUPTION_MESSAGE_PATTERN],
        }
    ]
    for code in classes():
        rules.append(
            {
                "name": rule_name(code),
                "action": jobset_action(code, training_failed_fails_job=training_failed_fails_job),
                "onJobFailureReasons": [REASON_POD_FAILURE_POLICY],
                "onJobFailureMessagePatterns": [failjob_message_pattern(code)],
            }
        )
    return {"maxRestarts": max_restarts, "restartStrategy": "Recreate", "rules": rules}


def restart_policy_rules(codes: Iterable[ExitCode]) -> list[dict[str, object]]:
    """Container `restartPolicyRules` restarting in place on `codes` (KEP-5307, beta 1.35)."""
    values = sorted(c.code for c in codes)
    return [{"action": "Restart", "exitCodes": {"operator": "In", "values": values}}]
