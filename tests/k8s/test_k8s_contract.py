"""Walk the contract through the rendered rules, as the Job and JobSet controllers read them.

For every exit code, the first matching podFailurePolicy rule of the rendered Job must take
the action the contract names; inside a JobSet, the Job must fail with a message the
JobSet routes to the action the class calls for. The model of the controllers
(`supervisor.k8s.simulate`) is itself pinned below against cases from the Job controller's
own tests (pkg/controller/job/pod_failure_policy_test.go).
"""

from __future__ import annotations

import dataclasses

import pytest

from supervisor.core.exitcodes import ExitCode, JobAction
from supervisor.k8s import rules
from supervisor.k8s.render import render_job, render_jobset
from supervisor.k8s.simulate import (
    FailedJob,
    FailedPod,
    job_verdict,
    jobset_reconcile,
    jobset_verdict,
    restarts_in_place,
)
from supervisor.k8s.spec import CONTAINER, RenderOptions

OPTS = RenderOptions(name="train", image="registry.example/train:1", command=("train.py",))
CLASSES = [c for c in ExitCode if c is not ExitCode.SUCCEEDED]
UNCLASSIFIED = [1, 2, 126, 127, 134, 137, 139, 143]
DT = rules.DISRUPTION_TARGET


def _job_policy(opts: RenderOptions = OPTS) -> dict:
    return render_job(opts)[1]["spec"]["podFailurePolicy"]


def _jobset(opts: RenderOptions = OPTS) -> tuple[dict, dict]:
    (jobset,) = render_jobset(opts)
    inner = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["podFailurePolicy"]
    return inner, jobset["spec"]["failurePolicy"]


def _pod(code: int, **kw: object) -> FailedPod:
    return FailedPod(namespace="ml", name="train-1-abcde", containers={CONTAINER: code}, **kw)


# --- the plain Indexed Job -------------------------------------------------------------------


@pytest.mark.parametrize("code", CLASSES, ids=lambda c: c.name)
def test_first_matching_rule_takes_the_contract_action(code: ExitCode) -> None:
    verdict = job_verdict(_job_policy(), _pod(code.code))
    assert verdict.action == code.action.value
    assert verdict.rule_index is not None  # an explicit rule, not the implicit Count


def test_training_failed_can_fail_the_job_and_nothing_else_changes() -> None:
    strict = dataclasses.replace(OPTS, training_failed_fails_job=True)
    for code in CLASSES:
        verdict = job_verdict(_job_policy(strict), _pod(code.code))
        expected = "FailJob" if code is ExitCode.TRAINING_FAILED else code.action.value
        assert verdict.action == expected, code


@pytest.mark.parametrize("code", [c.code for c in CLASSES] + UNCLASSIFIED)
def test_a_disrupted_pod_is_ignored_whatever_it_exited_with(code: int) -> None:
    verdict = job_verdict(_job_policy(), _pod(code, conditions={"DisruptionTarget": "True"}))
    assert (verdict.action, verdict.rule_index) == ("Ignore", 0)


@pytest.mark.parametrize("code", UNCLASSIFIED)
def test_codes_outside_the_contract_are_counted(code: int) -> None:
    verdict = job_verdict(_job_policy(), _pod(code))
    assert (verdict.action, verdict.rule_index) == ("Count", None)


def test_every_exit_code_rule_names_the_trainer_and_covers_the_enum_exactly() -> None:
    policy = _job_policy()
    exit_rules = [r for r in policy["rules"] if "onExitCodes" in r]
    assert all(r["onExitCodes"]["containerName"] == CONTAINER for r in exit_rules)
    covered = sorted(v for r in exit_rules for v in r["onExitCodes"]["values"])
    assert covered == sorted(c.code for c in CLASSES)  # generated from the enum, nothing more
    assert len(policy["rules"]) <= 20  # the API's limit


def test_a_sidecar_exiting_with_a_contract_code_is_not_a_verdict() -> None:
    pod = FailedPod(containers={CONTAINER: 1, "log-shipper": ExitCode.CONFIG_ERROR.code})
    assert job_verdict(_job_policy(), pod).action == "Count"


# --- the JobSet ------------------------------------------------------------------------------

JOBSET_ACTION = {
    JobAction.IGNORE: "RestartJobSetAndIgnoreMaxRestarts",
    JobAction.COUNT: "RestartJobSet",
    JobAction.FAIL_JOB: "FailJobSet",
}


@pytest.mark.parametrize("code", rules.jobset_classes(), ids=lambda c: c.name)
def test_jobset_routes_each_class_through_a_failjob_message(code: ExitCode) -> None:
    inner, outer = _jobset()
    verdict = job_verdict(inner, _pod(code.code))
    assert verdict.action == "FailJob" and verdict.message is not None
    assert f"exit code {code.code} matching FailJob" in verdict.message
    routed = jobset_verdict(outer, "PodFailurePolicy", verdict.message)
    assert routed.action == JOBSET_ACTION[code.action]
    assert routed.rule_name == rules.rule_name(code)


def test_jobset_peer_left_is_replaced_inside_its_job_and_has_no_jobset_rule() -> None:
    inner, outer = _jobset()
    assert rules.jobset_classes() == [c for c in CLASSES if c is not ExitCode.PEER_LEFT]
    verdict = job_verdict(inner, _pod(ExitCode.PEER_LEFT.code))
    assert (verdict.action, verdict.message) == ("Ignore", None)
    assert rules.rule_name(ExitCode.PEER_LEFT) not in {r["name"] for r in outer["rules"]}
    with pytest.raises(ValueError, match="PEER_LEFT"):
        rules.jobset_action(ExitCode.PEER_LEFT)
    # Evicted while leaving with its gang, it is still a disruption like any other pod.
    evicted = job_verdict(inner, _pod(ExitCode.PEER_LEFT.code, conditions={DT: "True"}))
    assert (evicted.action, evicted.rule_index) == ("FailJob", 0)


def test_jobset_device_classes_are_free_and_config_error_is_final() -> None:
    _, outer = _jobset()
    by_code = {}
    for code in CLASSES:
        message = (
            f"Container {CONTAINER} for pod ml/p failed with exit code {code.code} "
            "matching FailJob rule at index 4"
        )
        by_code[code] = jobset_verdict(outer, "PodFailurePolicy", message).action
    for code in (ExitCode.DEVICE_FAILED, ExitCode.DEVICE_DEGRADED, ExitCode.PREEMPTED):
        assert by_code[code] == "RestartJobSetAndIgnoreMaxRestarts"
    assert by_code[ExitCode.CONFIG_ERROR] == "FailJobSet"
    assert {by_code[c] for c in CLASSES if c.retriable} == {"RestartJobSet"}


def test_jobset_training_failed_option_fails_the_jobset() -> None:
    inner, outer = _jobset(dataclasses.replace(OPTS, training_failed_fails_job=True))
    message = job_verdict(inner, _pod(ExitCode.TRAINING_FAILED.code)).message
    assert message is not None
    assert jobset_verdict(outer, "PodFailurePolicy", message).action == "FailJobSet"


def test_jobset_disruption_restarts_for_free() -> None:
    inner, outer = _jobset()
    verdict = job_verdict(inner, _pod(137, conditions={"DisruptionTarget": "True"}))
    assert verdict.message == (
        "Pod ml/train-1-abcde has condition DisruptionTarget matching FailJob rule at index 0"
    )
    assert jobset_verdict(outer, "PodFailurePolicy", verdict.message).action == (
        "RestartJobSetAndIgnoreMaxRestarts"
    )


@pytest.mark.parametrize("code", UNCLASSIFIED)
def test_jobset_unclassified_exit_is_a_counted_restart(code: int) -> None:
    (jobset,) = render_jobset(OPTS)
    job_spec = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job_spec["backoffLimit"] == 0  # so one counted failure fails the Job
    assert job_verdict(job_spec["podFailurePolicy"], _pod(code)).action == "Count"
    verdict = jobset_verdict(jobset["spec"]["failurePolicy"], "BackoffLimitExceeded", "limit")
    assert (verdict.action, verdict.rule_name) == ("RestartJobSet", None)


def test_jobset_patterns_do_not_match_a_neighbouring_code_or_container() -> None:
    _, outer = _jobset()
    other = (
        "Container sidecar for pod ml/p failed with exit code 81 matching FailJob rule at index 2"
    )
    assert jobset_verdict(outer, "PodFailurePolicy", other).rule_name is None
    longer = (
        "Container trainer for pod ml/p failed with exit code 810 matching FailJob rule at index 2"
    )
    assert jobset_verdict(outer, "PodFailurePolicy", longer).rule_name is None


# --- in-place restarts -----------------------------------------------------------------------


def test_in_place_rules_restart_only_the_chosen_codes() -> None:
    opts = dataclasses.replace(OPTS, restart_in_place=(ExitCode.HANG, ExitCode.INFRA_FAILED))
    container = render_job(opts)[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["restartPolicy"] == "Never"
    for code in [c.code for c in ExitCode] + UNCLASSIFIED:
        assert restarts_in_place(container, code) == (code in (84, 86)), code
    plain = render_job(OPTS)[1]["spec"]["template"]["spec"]["containers"][0]
    assert "restartPolicyRules" not in plain
    assert not any(restarts_in_place(plain, c.code) for c in ExitCode)


# --- the model of the Job controller, pinned to its own test cases ---------------------------


def _rule(action: str, operator: str, values: list[int], container: str | None = None) -> dict:
    req: dict = {"operator": operator, "values": values}
    if container is not None:
        req["containerName"] = container
    return {"action": action, "onExitCodes": req}


def test_model_first_match_wins_and_reports_the_rule_index() -> None:
    policy = {"rules": [_rule("Count", "In", [1, 2, 3]), _rule("FailJob", "In", [4, 5, 6])]}
    pod = FailedPod(name="mypod", containers={"main-container": 6})
    verdict = job_verdict(policy, pod)
    assert verdict.action == "FailJob" and verdict.rule_index == 1
    assert verdict.message == (
        "Container main-container for pod default/mypod failed with exit code 6 "
        "matching FailJob rule at index 1"
    )


def test_model_not_in_skips_succeeded_containers_and_reads_init_containers() -> None:
    policy = {"rules": [_rule("FailJob", "NotIn", [111])]}
    ok = FailedPod(containers={"main": 111, "support": 0}, init_containers={"init": 0})
    assert job_verdict(policy, ok).action == "Count"  # 0 never matches, 111 is excluded
    init_failed = FailedPod(containers={"main": None}, init_containers={"init": 3})
    assert job_verdict(policy, init_failed).action == "FailJob"


def test_model_unknown_operator_never_matches_and_container_name_restricts() -> None:
    policy = {"rules": [_rule("Ignore", "Sometimes", [2]), _rule("FailJob", "In", [2], "main")]}
    assert job_verdict(policy, FailedPod(containers={"main": 2})).rule_index == 1
    assert job_verdict(policy, FailedPod(containers={"other": 2})).action == "Count"


def test_model_condition_status_defaults_to_true() -> None:
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    assert job_verdict(policy, FailedPod(conditions={"DisruptionTarget": "True"})).action == (
        "Ignore"
    )
    assert job_verdict(policy, FailedPod(conditions={"DisruptionTarget": "False"})).action == (
        "Count"
    )
    assert job_verdict(None, FailedPod(containers={"main": 9})).action == "Count"


def test_model_jobset_reconcile_takes_rules_in_order_then_the_earliest_failed_job() -> None:
    # The cases of TestFindFirstFailedPolicyRuleAndJob (jobset pkg/controllers/
    # failure_policy_test.go): rule order beats failure order; among the Jobs one rule
    # matches, the one that failed earliest is named; no rule: the default, earliest Job.
    def rule(reason: str) -> dict:
        return {"name": reason, "action": "RestartJobSet", "onJobFailureReasons": [reason]}

    job1 = FailedJob("job1", "BackoffLimitExceeded", "", failed_at=-6)
    job1_earlier = FailedJob("job1dup", "BackoffLimitExceeded", "", failed_at=-12)
    job2 = FailedJob("job2", "DeadlineExceeded", "", failed_at=-3)
    job3 = FailedJob("job3", "FailedIndexes", "", failed_at=-1)
    three = {"rules": [rule(job.reason) for job in (job1, job2, job3)]}
    assert jobset_reconcile(three, []) is None
    for job in (job1, job2, job3):
        verdict, named = jobset_reconcile(three, [job])  # type: ignore[misc]
        assert (verdict.rule_name, named) == (job.reason, job)
    verdict, named = jobset_reconcile(three, [job3, job2])  # type: ignore[misc]
    assert (verdict.rule_name, named) == ("DeadlineExceeded", job2)
    verdict, named = jobset_reconcile(three, [job1, job1_earlier])  # type: ignore[misc]
    assert (verdict.rule_name, named) == ("BackoffLimitExceeded", job1_earlier)
    default = {"rules": [rule("DeadlineExceeded")]}
    verdict, named = jobset_reconcile(default, [job1, job1_earlier])  # type: ignore[misc]
    assert (verdict.action, verdict.rule_name, named) == ("RestartJobSet", None, job1_earlier)


def test_model_jobset_needs_both_reason_and_pattern() -> None:
    policy = {
        "rules": [
            {
                "name": "a",
                "action": "FailJobSet",
                "onJobFailureReasons": ["X"],
                "onJobFailureMessagePatterns": ["boom"],
            }
        ]
    }
    assert jobset_verdict(policy, "X", "a boom").action == "FailJobSet"
    assert jobset_verdict(policy, "Y", "a boom").action == "RestartJobSet"
    assert jobset_verdict(policy, "X", "quiet").action == "RestartJobSet"
