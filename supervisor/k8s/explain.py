"""`supervise explain CODE`: what a code means and what the rendered policy makes Kubernetes do.

The Kubernetes part is not written by hand: it renders the default Job and JobSet, then
asks `supervisor.k8s.simulate` what the controllers do with a pod that exited with the
code. So `explain` and `supervise k8s job|jobset` cannot drift apart.

Pure: returns text; `resolve_code` raises `ConfigError` for input it cannot read.
"""

from __future__ import annotations

import dataclasses
import signal
from typing import Any

from supervisor.core.errors import ConfigError
from supervisor.core.exitcodes import ExitCode
from supervisor.k8s import render, rules, simulate
from supervisor.k8s.spec import CONTAINER, RenderOptions

_EXAMPLE = RenderOptions(name="train", image="example.invalid/train:1", command=("train.py",))

_JOB_ACTIONS = {
    "Ignore": "the pod is replaced and the failure is not counted against backoffLimit",
    "Count": "the pod is replaced and the failure counts against backoffLimit",
    "FailJob": "the Job fails at once and its other pods are terminated; no retry",
}
_JOBSET_ACTIONS = {
    rules.RESTART_JOBSET_FREE: "every Job is recreated; maxRestarts is not charged",
    rules.RESTART_JOBSET: "every Job is recreated; one restart is charged to maxRestarts",
    rules.FAIL_JOBSET: "the JobSet fails; no retry",
}


def resolve_code(text: str) -> int:
    """A number 0-255 or a class name (any case, '-' or '_'): the numeric exit code."""
    cleaned = text.strip()
    if cleaned.isdigit():
        value = int(cleaned)
        if value > 255:
            raise ConfigError(f"{text!r} is not an exit code: exit codes are 0-255")
        return value
    wanted = cleaned.upper().replace("-", "_")
    for member in ExitCode:
        if member.name == wanted:
            return member.code
    names = ", ".join(m.name for m in sorted(ExitCode, key=lambda m: m.code))
    raise ConfigError(f"{text!r} is neither an exit code (0-255) nor a class name: {names}")


def _rule_text(rule: dict[str, Any]) -> str:
    if "onExitCodes" in rule:
        req = rule["onExitCodes"]
        return f"onExitCodes {req['operator']} {req['values']} (container {req['containerName']})"
    types = ", ".join(p["type"] for p in rule["onPodConditions"])
    return f"onPodConditions {types}"


def _job_lines(code: int, opts: RenderOptions) -> list[str]:
    job = render.render_job(opts)[1]
    policy = job["spec"]["podFailurePolicy"]
    verdict = simulate.job_verdict(policy, simulate.FailedPod(containers={CONTAINER: code}))
    if verdict.rule_index is None:
        where = "no podFailurePolicy rule matches, so the default applies"
    else:
        rule = policy["rules"][verdict.rule_index]
        where = f"podFailurePolicy rule {verdict.rule_index} ({_rule_text(rule)})"
    return [
        f"  Job (supervise k8s job): {where} -> {verdict.action}: {_JOB_ACTIONS[verdict.action]}."
    ]


def _jobset_lines(code: int, opts: RenderOptions) -> list[str]:
    jobset = render.render_jobset(opts)[0]
    job_spec = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    pod = simulate.FailedPod(namespace="ns", name="p", containers={CONTAINER: code})
    inner = simulate.job_verdict(job_spec["podFailurePolicy"], pod)
    if inner.action == "Ignore":
        rule = job_spec["podFailurePolicy"]["rules"][inner.rule_index]
        return [
            f"  JobSet (supervise k8s jobset): podFailurePolicy rule {inner.rule_index} "
            f"({_rule_text(rule)}) -> Ignore: the pod is replaced uncounted and its Job does "
            "not fail, so the JobSet does not react to this pod; the pod that holds the "
            "incident fails its own Job, and its code alone decides the restart."
        ]
    if inner.action == "FailJob" and inner.message is not None:
        reason, message = rules.REASON_POD_FAILURE_POLICY, inner.message
        how = f"the Job fails (FailJob rule {inner.rule_index}, reason {reason})"
    else:
        # Counted with backoffLimit 0: the Job fails at once with BackoffLimitExceeded.
        reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        how = f"the pod is counted and, with backoffLimit 0, the Job fails ({reason})"
    verdict = simulate.jobset_verdict(jobset["spec"]["failurePolicy"], reason, message)
    rule = f"rule {verdict.rule_name}" if verdict.rule_name else "no rule matches (default)"
    return [
        f"  JobSet (supervise k8s jobset): {how}; JobSet {rule} -> {verdict.action}: "
        f"{_JOBSET_ACTIONS[verdict.action]}."
    ]


def explain(code: int) -> str:
    """Several lines of plain text about exit code `code` (0-255)."""
    try:
        member: ExitCode | None = ExitCode.from_code(code)
    except ValueError:
        member = None
    if member is ExitCode.SUCCEEDED:
        return (
            f"{code} SUCCEEDED\n  {member.meaning}\n"
            "  Job and JobSet: the pod succeeds and its index is complete; no rule applies.\n"
            f"  Next: {member.next_step}\n"
        )
    lines: list[str] = []
    if member is not None:
        lines += [f"{code} {member.name}", f"  {member.meaning}"]
    else:
        lines.append(f"{code} is not a supervise exit code.")
        if code > 128:
            try:
                name = signal.Signals(code - 128).name
            except ValueError:
                name = f"signal {code - 128}"
            lines.append(f"  128+{code - 128}: the process was killed by {name}.")
        lines.append(
            "  supervise itself did not classify this exit (it crashed, was killed, or was "
            "not the entrypoint)."
        )
    lines += _job_lines(code, _EXAMPLE)
    if member is ExitCode.TRAINING_FAILED:
        strict = dataclasses.replace(_EXAMPLE, training_failed_fails_job=True)
        lines += [
            line.replace("(supervise k8s job)", "with --training-failed-fails-job")
            for line in _job_lines(code, strict)
        ]
    lines += _jobset_lines(code, _EXAMPLE)
    if member is ExitCode.TRAINING_FAILED:
        lines += [
            line.replace("(supervise k8s jobset)", "with --training-failed-fails-job")
            for line in _jobset_lines(code, strict)
        ]
    if member is not None and member.retriable:
        lines.append(
            f"  With --restart-in-place {member.name}: the kubelet restarts the container in "
            "place (same pod, same GPUs; not a pod failure, so no rule above runs)."
        )
    if member is not None:
        lines.append(f"  Next: {member.next_step}")
    else:
        lines.append("  Next: read the container log and `kubectl describe pod` for the kill.")
    return "\n".join(lines) + "\n"
