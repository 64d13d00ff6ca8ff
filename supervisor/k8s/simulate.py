"""How Kubernetes reads the rendered rules: a faithful model, for `explain` and the tests.

`job_verdict` follows the Job controller's podFailurePolicy matching
(pkg/controller/job/pod_failure_policy.go, batch/v1 GA 1.31): rules in order, first match
wins; an `onExitCodes` rule looks at app containers, then init containers, skips
containers that exited 0 or have not terminated, honours `containerName`, and supports
In/NotIn (an unknown operator never matches); an `onPodConditions` rule matches a pod
condition with the same type and status (status defaults to True); no match means Count.
A FailJob verdict carries the message the controller records, which is what a JobSet
matches on.

`jobset_verdict` follows JobSet's failurePolicy (jobset api/jobset/v1alpha2): a rule
matches when the Job's failure reason is in `onJobFailureReasons` AND its message matches
one of `onJobFailureMessagePatterns` (an empty list matches anything); first match wins;
no match means RestartJobSet. `jobset_reconcile` is the same decision when one reconcile
sees several failed Jobs: rules in order, and for the first rule that matches any of them,
the Job that failed earliest (pkg/controllers/failure_policy.go
findFirstFailedPolicyRuleAndJob). Whatever it picks, the JobSet restarts or fails once, and
the other failed Jobs are deleted unevaluated.

`restarts_in_place` follows container restartPolicyRules (KEP-5307).

Pure: no I/O, safe on any thread. Patterns are compiled with Python's `re`; the rendered
patterns use only syntax RE2 shares with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

COUNT = "Count"


@dataclass(frozen=True)
class FailedPod:
    """The parts of a failed pod that podFailurePolicy reads."""

    namespace: str = "default"
    name: str = "pod"
    containers: Mapping[str, int | None] = field(default_factory=dict)  # None: not terminated
    init_containers: Mapping[str, int | None] = field(default_factory=dict)
    conditions: Mapping[str, str] = field(default_factory=dict)  # type -> "True"/"False"


@dataclass(frozen=True)
class JobVerdict:
    """What the Job controller does with one failed pod."""

    action: str  # FailJob, FailIndex, Ignore or Count
    rule_index: int | None  # None when no rule matched (the implicit Count)
    message: str | None = None  # the Job's failure message, for FailJob only


def _exit_code_match(
    requirement: Mapping[str, Any], statuses: Mapping[str, int | None]
) -> tuple[str, int] | None:
    wanted = requirement.get("containerName")
    values = set(requirement.get("values", ()))
    for name, code in statuses.items():
        if code is None or code == 0:
            continue  # still running, or succeeded: no exit code to judge
        if wanted is not None and wanted != name:
            continue
        operator = requirement.get("operator")
        if (operator == "In" and code in values) or (operator == "NotIn" and code not in values):
            return name, code
    return None


def _condition_match(
    patterns: Sequence[Mapping[str, Any]], conditions: Mapping[str, str]
) -> str | None:
    for ctype, status in conditions.items():
        for pattern in patterns:
            if pattern.get("type") == ctype and pattern.get("status", "True") == status:
                return ctype
    return None


def job_verdict(pod_failure_policy: Mapping[str, Any] | None, pod: FailedPod) -> JobVerdict:
    """The action the Job controller takes for `pod` under `pod_failure_policy`."""
    if not pod_failure_policy:
        return JobVerdict(COUNT, None)
    for index, rule in enumerate(pod_failure_policy.get("rules", ())):
        action = rule["action"]
        if "onExitCodes" in rule:
            hit = _exit_code_match(rule["onExitCodes"], pod.containers)
            if hit is None:
                hit = _exit_code_match(rule["onExitCodes"], pod.init_containers)
            if hit is None:
                continue
            message = None
            if action == "FailJob":
                message = (
                    f"Container {hit[0]} for pod {pod.namespace}/{pod.name} failed with exit "
                    f"code {hit[1]} matching FailJob rule at index {index}"
                )
            return JobVerdict(action, index, message)
        if "onPodConditions" in rule:
            ctype = _condition_match(rule["onPodConditions"], pod.conditions)
            if ctype is None:
                continue
            message = None
            if action == "FailJob":
                message = (
                    f"Pod {pod.namespace}/{pod.name} has condition {ctype} matching FailJob "
                    f"rule at index {index}"
                )
            return JobVerdict(action, index, message)
    return JobVerdict(COUNT, None)


RESTART_JOBSET = "RestartJobSet"
CHARGED = frozenset({RESTART_JOBSET})  # the JobSet actions that charge maxRestarts


@dataclass(frozen=True)
class JobSetVerdict:
    action: str
    rule_name: str | None  # None when no rule matched (the implicit RestartJobSet)


@dataclass(frozen=True)
class FailedJob:
    """A child Job with a true Failed condition, as the JobSet controller reads it."""

    name: str
    reason: str
    message: str
    failed_at: float  # the condition's lastTransitionTime, in any one unit


def _rule_matches(rule: Mapping[str, Any], reason: str, message: str) -> bool:
    reasons = rule.get("onJobFailureReasons") or []
    patterns = rule.get("onJobFailureMessagePatterns") or []
    if reasons and reason not in reasons:
        return False
    return not patterns or any(re.search(p, message) for p in patterns)


def jobset_verdict(failure_policy: Mapping[str, Any], reason: str, message: str) -> JobSetVerdict:
    """The JobSet's action when one of its Jobs failed with `reason` and `message`."""
    for rule in failure_policy.get("rules", ()):
        if _rule_matches(rule, reason, message):
            return JobSetVerdict(rule["action"], rule.get("name"))
    return JobSetVerdict(RESTART_JOBSET, None)


def jobset_reconcile(
    failure_policy: Mapping[str, Any], failed: Sequence[FailedJob]
) -> tuple[JobSetVerdict, FailedJob] | None:
    """The one action a reconcile takes when it sees the Jobs `failed`, and the Job it
    names; None when nothing has failed yet."""
    if not failed:
        return None
    for rule in failure_policy.get("rules", ()):
        matching = [job for job in failed if _rule_matches(rule, job.reason, job.message)]
        if matching:
            first = min(matching, key=lambda job: job.failed_at)
            return JobSetVerdict(rule["action"], rule.get("name")), first
    return JobSetVerdict(RESTART_JOBSET, None), min(failed, key=lambda job: job.failed_at)


def restarts_in_place(container: Mapping[str, Any], exit_code: int) -> bool:
    """True when the kubelet restarts `container` in place after it exits with `exit_code`."""
    for rule in container.get("restartPolicyRules", ()):
        codes = rule.get("exitCodes", {})
        values = set(codes.get("values", ()))
        operator = codes.get("operator")
        if (operator == "In" and exit_code in values) or (
            operator == "NotIn" and exit_code not in values
        ):
            return rule.get("action") == "Restart"
    policy = container.get("restartPolicy")
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)
