"""Every rendered manifest validates against the Kubernetes OpenAPI schemas, strictly.

kubernetes-validate ships strict schemas (unknown fields rejected) per Kubernetes version.
Plain manifests are checked from 1.31 (podFailurePolicy GA) to the newest it ships; the
in-place variants from 1.34, the first schema with container `restartPolicyRules` (alpha
1.34, beta 1.35, KEP-5307). The JobSet is a CRD the package has no schema for: its Job
template is validated as a batch/v1 Job, and the JobSet's own fields are checked one by
one against the v1alpha2 types (jobset api/jobset/v1alpha2/jobset_types.go).
"""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
from packaging.version import Version

from supervisor.core.exitcodes import ExitCode
from supervisor.k8s.render import render_job, render_jobset
from supervisor.k8s.spec import RenderOptions, Toleration

ALL_VERSIONS = sorted(
    {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}, key=Version
)
FROM_131 = [v for v in ALL_VERSIONS if Version(v) >= Version("1.31")]
FROM_134 = [v for v in ALL_VERSIONS if Version(v) >= Version("1.34")]

BASE = {"name": "train", "image": "registry.example/train:1", "command": ("train.py", "--lr=3e-4")}
PLAIN = {
    "single": RenderOptions(**BASE),
    "multi-node": RenderOptions(
        **BASE, nnodes=4, nproc_per_node=8, checkpoint_dir="s3://bucket/run", shm_size="64Gi"
    ),
    "per-index": RenderOptions(**BASE, nnodes=2, backoff_limit_per_index=2, namespace="ml"),
    "strict-training": RenderOptions(**BASE, nnodes=2, training_failed_fails_job=True),
    "pod-spec": RenderOptions(
        **BASE,
        nnodes=2,
        cpu="500m",
        memory="8Gi",
        cpu_limit="2",
        memory_limit="8Gi",
        run_as_user=10001,
        labels=(("team", "llm"),),
        annotations=(("note", "x"),),
        node_selector=(("pool", "a100"),),
        tolerations=(Toleration.parse("nvidia.com/gpu:NoSchedule"), Toleration.parse("a=b")),
        priority_class="high",
        scheduler_name="volcano",
        queue="team-a",
        active_deadline=3600,
        backoff_limit_per_index=1,
        max_failed_indexes=1,
    ),
}
IN_PLACE = {
    "in-place": RenderOptions(
        **BASE, nnodes=2, nproc_per_node=8, restart_in_place=(ExitCode.HANG, ExitCode.INFRA_FAILED)
    ),
}


def _validate(manifest: dict, version: str) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


def test_the_package_ships_the_versions_we_claim() -> None:
    assert "1.31" in FROM_131 and len(FROM_131) >= 5, ALL_VERSIONS


@pytest.mark.parametrize("version", FROM_131)
@pytest.mark.parametrize("variant", PLAIN)
def test_job_and_service_validate(variant: str, version: str) -> None:
    for manifest in render_job(PLAIN[variant]):
        _validate(manifest, version)


@pytest.mark.parametrize("version", FROM_134)
@pytest.mark.parametrize("variant", IN_PLACE)
def test_in_place_job_validates_where_the_field_exists(variant: str, version: str) -> None:
    for manifest in render_job(IN_PLACE[variant]):
        _validate(manifest, version)


def _jobset_template_as_job(jobset: dict) -> dict:
    template = jobset["spec"]["replicatedJobs"][0]["template"]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, **template}


@pytest.mark.parametrize("version", FROM_131)
@pytest.mark.parametrize("variant", PLAIN)
def test_jobset_job_template_validates_as_a_job(variant: str, version: str) -> None:
    (jobset,) = render_jobset(PLAIN[variant])
    _validate(_jobset_template_as_job(jobset), version)


@pytest.mark.parametrize("version", FROM_134)
def test_in_place_jobset_template_validates(version: str) -> None:
    (jobset,) = render_jobset(IN_PLACE["in-place"])
    _validate(_jobset_template_as_job(jobset), version)


def test_the_validator_rejects_what_it_should() -> None:
    """Guard against a vacuous check: strict mode really rejects unknown and ill-typed fields."""
    service, job = render_job(PLAIN["multi-node"])
    job["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["containerNmae"] = "typo"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(job, "1.35")
    (_, in_place_job) = render_job(IN_PLACE["in-place"])
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicyRules"):
        _validate(in_place_job, "1.33")  # the field did not exist yet
    service["spec"]["publishNotReadyAddresses"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(service, "1.31")


# --- JobSet fields, checked against jobset.x-k8s.io/v1alpha2 ---------------------------------

JOBSET_SPEC_FIELDS = {
    "replicatedJobs",
    "network",
    "successPolicy",
    "failurePolicy",
    "startupPolicy",
    "suspend",
    "coordinator",
    "managedBy",
    "ttlSecondsAfterFinished",
    "volumeClaimPolicies",
}
NETWORK_FIELDS = {"enableDNSHostnames", "subdomain", "publishNotReadyAddresses"}
FAILURE_POLICY_FIELDS = {"maxRestarts", "restartStrategy", "rules"}
RULE_FIELDS = {
    "name",
    "action",
    "onJobFailureReasons",
    "onJobFailureMessagePatterns",
    "targetReplicatedJobs",
}
RULE_ACTIONS = {
    "FailJobSet",
    "RestartJobSet",
    "RestartJobSetAndIgnoreMaxRestarts",
    "RestartJob",
    "RestartJobAndIgnoreMaxRestarts",
}
RULE_NAME = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
REPLICATED_JOB_FIELDS = {"name", "groupName", "template", "replicas", "dependsOn"}
JOB_FAILURE_REASONS = {
    "PodFailurePolicy",
    "BackoffLimitExceeded",
    "DeadlineExceeded",
    "MaxFailedIndexesExceeded",
    "FailedIndexes",
}


@pytest.mark.parametrize("variant", [*PLAIN, *IN_PLACE])
def test_jobset_shape_matches_v1alpha2(variant: str) -> None:
    opts = {**PLAIN, **IN_PLACE}[variant]
    (jobset,) = render_jobset(opts)
    assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    assert jobset["kind"] == "JobSet"
    assert set(jobset) == {"apiVersion", "kind", "metadata", "spec"}
    spec = jobset["spec"]
    assert set(spec) <= JOBSET_SPEC_FIELDS
    assert set(spec["network"]) <= NETWORK_FIELDS
    assert spec["network"]["enableDNSHostnames"] is True
    policy = spec["failurePolicy"]
    assert set(policy) <= FAILURE_POLICY_FIELDS
    assert isinstance(policy["maxRestarts"], int) and policy["maxRestarts"] >= 0
    assert policy["restartStrategy"] in {"Recreate", "BlockingRecreate", "InPlaceRestart"}
    names = [rule["name"] for rule in policy["rules"]]
    assert len(names) == len(set(names))
    for rule in policy["rules"]:
        assert set(rule) <= RULE_FIELDS
        assert RULE_NAME.match(rule["name"]), rule["name"]
        assert rule["action"] in RULE_ACTIONS
        reasons = rule["onJobFailureReasons"]
        assert len(reasons) == len(set(reasons)) and set(reasons) <= JOB_FAILURE_REASONS
        for pattern in rule["onJobFailureMessagePatterns"]:
            re.compile(pattern)
            # Only syntax RE2 shares with Python: no lookaround, no backreferences.
            assert not re.search(r"\(\?[=!<]|\\[1-9]", pattern), pattern
    (rjob,) = spec["replicatedJobs"]
    assert set(rjob) <= REPLICATED_JOB_FIELDS
    assert isinstance(rjob["replicas"], int) and rjob["replicas"] >= 1
    assert set(rjob["template"]) <= {"metadata", "spec"}
