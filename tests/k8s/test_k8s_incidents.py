"""One incident is charged at most once across the gang, read through the rendered rules.

An incident: one pod of an N-pod gang holds it (the cause's class, or, when every pod only
saw symptoms, the one pod that kept its counted class), and every other pod exits
PEER_LEFT. The rendered manifests must charge it exactly as the holder's class says, once,
whatever order the pods fail in:

* plain Indexed Job: every pod is judged alone, so the Count verdicts are summed;
* JobSet: the Job controller fails a Job at its first FailJob pod (or its first Count, with
  `backoffLimit: 0`), and the JobSet controller acts once, on whatever failed Jobs its
  reconcile happens to see. Every order of pod failures and every point a reconcile can
  look at is tried, for the rendered layout (one Job of N pods) and for N Jobs of one pod.

The checker is shown to catch the failures it exists for: the old behaviour (peers exit
INFRA_FAILED) and PEER_LEFT routed through FailJob.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from supervisor.core.exitcodes import ExitCode, JobAction
from supervisor.k8s import rules
from supervisor.k8s.render import render_job, render_jobset
from supervisor.k8s.simulate import CHARGED, FailedJob, FailedPod, job_verdict, jobset_reconcile
from supervisor.k8s.spec import CONTAINER, RenderOptions

OPTS = RenderOptions(name="train", image="registry.example/train:1", command=("train.py",))
PEER = ExitCode.PEER_LEFT
HOLDERS = [c for c in rules.classes() if c is not PEER]  # any class can hold an incident
KEEPERS = [c for c in HOLDERS if c.retriable]  # what an all-symptom incident keeps
SIZES = [2, 3, 4]


def _pod(index: int, code: ExitCode | int, disrupted: bool = False) -> FailedPod:
    conditions = {rules.DISRUPTION_TARGET: "True"} if disrupted else {}
    value = code.code if isinstance(code, ExitCode) else code
    return FailedPod("ml", f"train-{index}", {CONTAINER: value}, conditions=conditions)


def _incident(holder: ExitCode, size: int, disrupted: bool = False) -> list[FailedPod]:
    """Pod 0 holds the incident (it could be any pod: every order is tried)."""
    return [_pod(0, holder, disrupted)] + [_pod(i, PEER) for i in range(1, size)]


# --- plain Indexed Job -----------------------------------------------------------------------


def job_counts(policy: Mapping[str, Any], pods: Sequence[FailedPod]) -> int:
    return sum(job_verdict(policy, pod).action == JobAction.COUNT.value for pod in pods)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("holder", HOLDERS, ids=lambda c: c.name)
def test_job_counts_an_incident_once_exactly_when_its_holder_is_counted(
    holder: ExitCode, size: int
) -> None:
    policy = render_job(OPTS)[1]["spec"]["podFailurePolicy"]
    assert job_counts(policy, _incident(holder, size)) == (1 if holder.retriable else 0)
    # An evicted holder is never counted, whatever it exited with.
    assert job_counts(policy, _incident(holder, size, disrupted=True)) == 0


@pytest.mark.parametrize("size", SIZES)
def test_job_an_incident_with_no_supervised_holder_is_counted_once(size: int) -> None:
    # The holder's supervise was killed (137) and the others attributed nothing to it and
    # left uncounted; whatever killed it is counted, once.
    policy = render_job(OPTS)[1]["spec"]["podFailurePolicy"]
    assert job_counts(policy, [_pod(0, 137)] + [_pod(i, PEER) for i in range(1, size)]) == 1


# --- JobSet ----------------------------------------------------------------------------------


def _job_failure(
    policy: Mapping[str, Any], pods: Sequence[FailedPod], backoff_limit: int
) -> tuple[str, str] | None:
    """How the Job controller fails a Job whose pods failed in this order, if it does."""
    counted = 0
    for pod in pods:
        verdict = job_verdict(policy, pod)
        if verdict.action == JobAction.FAIL_JOB.value:
            assert verdict.message is not None
            return rules.REASON_POD_FAILURE_POLICY, verdict.message
        if verdict.action == JobAction.COUNT.value:
            counted += 1
            if counted > backoff_limit:
                return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    return None


def jobset_outcomes(
    jobset: Mapping[str, Any], pods: Sequence[FailedPod], pods_per_job: int
) -> set[str]:
    """Every JobSet action one of the failure orders and reconcile points can produce."""
    job_spec = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    policy, backoff = job_spec["podFailurePolicy"], job_spec["backoffLimit"]
    outcomes: set[str] = set()
    for order in itertools.permutations(range(len(pods))):
        failed: dict[int, FailedJob] = {}
        for end in range(1, len(order) + 1):
            seen = order[:end]
            for job in {i // pods_per_job for i in seen} - failed.keys():
                mine = [pods[i] for i in seen if i // pods_per_job == job]
                failure = _job_failure(policy, mine, backoff)
                if failure is not None:
                    failed[job] = FailedJob(f"job-{job}", *failure, failed_at=end)
            result = jobset_reconcile(jobset["spec"]["failurePolicy"], list(failed.values()))
            if result is not None:  # a reconcile here acts once; the rest is deleted unread
                outcomes.add(result[0].action)
    return outcomes


def _expected(holder: ExitCode) -> str:
    return rules.jobset_action(holder)


def layouts(size: int) -> Iterator[int]:
    yield size  # the rendered JobSet: one Indexed Job holding every pod
    yield 1  # one Job per pod


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("holder", HOLDERS, ids=lambda c: c.name)
def test_jobset_acts_on_an_incident_as_its_holder_says_in_every_order(
    holder: ExitCode, size: int
) -> None:
    (jobset,) = render_jobset(OPTS)
    for per_job in layouts(size):
        outcomes = jobset_outcomes(jobset, _incident(holder, size), per_job)
        assert outcomes == {_expected(holder)}, (per_job, outcomes)
        assert len(outcomes & CHARGED) <= 1
        evicted = jobset_outcomes(jobset, _incident(holder, size, disrupted=True), per_job)
        assert evicted == {rules.RESTART_JOBSET_FREE}, (per_job, evicted)


@pytest.mark.parametrize("keeper", KEEPERS, ids=lambda c: c.name)
def test_an_all_symptom_incident_is_charged_once_in_both_shapes(keeper: ExitCode) -> None:
    # Every pod only saw symptoms; exactly one kept its counted class.
    pods = _incident(keeper, 4)
    assert job_counts(render_job(OPTS)[1]["spec"]["podFailurePolicy"], pods) == 1
    (jobset,) = render_jobset(OPTS)
    assert jobset_outcomes(jobset, pods, 4) == {rules.RESTART_JOBSET}


def test_a_gang_of_peers_alone_fails_nothing() -> None:
    pods = [_pod(i, PEER) for i in range(3)]
    assert job_counts(render_job(OPTS)[1]["spec"]["podFailurePolicy"], pods) == 0
    (jobset,) = render_jobset(OPTS)
    assert jobset_outcomes(jobset, pods, 3) == set()


# --- the checker catches what it is for ------------------------------------------------------


def test_checker_catches_peers_that_exit_infra_failed() -> None:
    # Before PEER_LEFT: one dead GPU, and every peer exits INFRA_FAILED (Count).
    pods = [_pod(0, ExitCode.DEVICE_FAILED)] + [_pod(i, ExitCode.INFRA_FAILED) for i in (1, 2, 3)]
    assert job_counts(render_job(OPTS)[1]["spec"]["podFailurePolicy"], pods) == 3
    (jobset,) = render_jobset(OPTS)
    assert jobset_outcomes(jobset, pods, 4) == {rules.RESTART_JOBSET_FREE, rules.RESTART_JOBSET}


def test_checker_catches_peer_left_routed_through_failjob() -> None:
    # The rejected design: PEER_LEFT fails its Job and the JobSet restarts for free. A
    # counted holder then goes uncharged whenever a PEER_LEFT pod fails first.
    (jobset,) = render_jobset(OPTS)
    rejected = copy.deepcopy(jobset)
    job_spec = rejected["spec"]["replicatedJobs"][0]["template"]["spec"]
    for rule in job_spec["podFailurePolicy"]["rules"]:
        if rule.get("onExitCodes", {}).get("values") == [PEER.code]:
            rule["action"] = JobAction.FAIL_JOB.value
    rejected["spec"]["failurePolicy"]["rules"].append(
        {
            "name": rules.rule_name(PEER),
            "action": rules.RESTART_JOBSET_FREE,
            "onJobFailureReasons": [rules.REASON_POD_FAILURE_POLICY],
            "onJobFailureMessagePatterns": [rules.failjob_message_pattern(PEER)],
        }
    )
    outcomes = jobset_outcomes(rejected, _incident(ExitCode.TRAINING_FAILED, 3), 3)
    assert outcomes == {rules.RESTART_JOBSET, rules.RESTART_JOBSET_FREE}
