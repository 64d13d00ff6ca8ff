"""Every rendered manifest validates against the Kubernetes OpenAPI schemas, strictly.

kubernetes-validate ships strict schemas (unknown fields rejected) per Kubernetes version.
Plain manifests are checked from 1.31 (podFailurePolicy GA) to the newest it ships; the
in-place variants from 1.34, the first schema with container `restartPolicyRules` (alpha
1.34, beta 1.35, KEP-5307). The JobSet is a CRD the package has no schema for: its Job
template is validated here as a batch/v1 Job, and the JobSet itself against JobSet's own
CRD schema and webhook rules in test_jobset_api.py.
"""

from __future__ import annotations

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
    "metrics": RenderOptions(**BASE, nnodes=2, metrics_port=9400, annotations=(("note", "x"),)),
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
