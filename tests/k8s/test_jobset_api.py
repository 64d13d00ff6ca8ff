"""A rendered JobSet is what the JobSet API of v0.10 to v0.12 admits, read as the cluster reads it.

The JobSet CRD's structural schema prunes a field it does not name *silently*, so a flag
whose field is pruned "works" on the command line and does nothing on the cluster. Each
rendered JobSet therefore goes through `tests/k8s/jobset_api/validate.py`: the CRD schema
of each release (vendored, see that folder's README.md), with the Job template checked
against the strict batch/v1 JobSpec of the Kubernetes the release was built with, then the
JobSet webhooks' defaulting and `ValidateCreate` rules, each citing its source.

Rendering goes through the `supervise k8s jobset` command: in-process through typer's
runner for every entry of `FLAG_SETS` (the same parsing and rendering code as the binary),
and through the real `supervise` binary for a few, with its stdout read back as YAML.
PyYAML is the only YAML reader here and it reads YAML 1.1; what `to_yaml` writes quotes
every 1.1-only boolean or number spelling, so a YAML 1.2 reader (kubectl's) reads the same.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from supervisor.cli.k8s import register
from supervisor.k8s.render import render_jobset
from supervisor.k8s.spec import RenderOptions
from tests.k8s.jobset_api.validate import (
    BEFORE_MESSAGE_PATTERNS,
    POD_NAME_RANDOM_SUFFIX,
    RELEASES,
    admission_errors,
    apply_defaults,
    cel_rules,
    job_spec_errors,
    re2_compiles,
    structural_errors,
    webhook_errors,
)

SUPERVISE = str(Path(sys.executable).with_name("supervise"))
IMAGE = ["--image", "registry.example/train:1"]
CMD = ["--", "train.py", "--lr=3e-4"]

# One entry per flag set: the flags after `supervise k8s jobset` (the image and the command
# are added). Add a new flag here as one line; mark what the cluster would refuse.
FLAG_SETS = [
    pytest.param([], id="defaults"),
    pytest.param(["--nnodes", "4", "--nproc-per-node", "8"], id="multi-node"),
    pytest.param(["--nnodes", "2", "--nproc-per-node", "4", "--gpus-per-node", "0"], id="no-gpus"),
    pytest.param(["--gpus-per-node", "8", "--gpu-resource", "amd.com/gpu"], id="gpu-resource"),
    pytest.param(["--checkpoint-dir", "s3://bucket/run-1"], id="checkpoint-dir"),
    pytest.param(["--grace-period", "86400", "--shutdown-margin", "3600"], id="longest-grace"),
    pytest.param(["--grace-period", "0", "--shutdown-margin", "0"], id="no-grace"),
    pytest.param(["--grace-period", "2.5", "--shutdown-margin", "0.1"], id="fractional-grace"),
    pytest.param(["--training-failed-fails-job"], id="training-failed-fails-job"),
    pytest.param(["--restart-in-place", "HANG", "--restart-in-place", "86"], id="in-place"),
    pytest.param(["--max-restarts", "0"], id="max-restarts-0"),
    pytest.param(["--max-restarts", "2147483647"], id="max-restarts-int32"),
    pytest.param(["--master-port", "1"], id="master-port-1"),
    pytest.param(["--master-port", "65535"], id="master-port-65535"),
    pytest.param(["--shm-size", "64Gi"], id="shm-size"),
    pytest.param(["--shm-size", "1.5G"], id="shm-size-decimal"),
    pytest.param(["--namespace", "ml-team"], id="namespace"),
    pytest.param(["--image", f"registry.example/train@sha256:{'0' * 64}"], id="image-digest"),
    pytest.param(["--name", "llama-70b-pretrain"], id="name"),
    pytest.param(["--name", "a" * 48], id="name-longest-admitted"),
    pytest.param(["--nnodes", "65536", "--name", "a" * 44], id="largest-gang"),
    pytest.param(["--cpu", "500m", "--memory", "200Gi"], id="requests"),
    pytest.param(["--cpu", "", "--memory", ""], id="no-requests"),
    pytest.param(["--cpu-limit", "64", "--memory-limit", "1.5Ti"], id="limits"),
    pytest.param(["--run-as-user", "10001"], id="run-as-user"),
    pytest.param(["--allow-root", "--run-as-user", "0"], id="allow-root"),
    pytest.param(["--label", "team=llm", "--label", "example.com/tier=007"], id="labels"),
    pytest.param(["--annotation", "note=yes: really", "--annotation", "a/b="], id="annotations"),
    pytest.param(["--node-selector", "nvidia.com/gpu.product=H100-SXM"], id="node-selector"),
    pytest.param(["--toleration", "nvidia.com/gpu:NoSchedule", "--toleration", "a=b"], id="tol"),
    pytest.param(["--priority-class", "training-high"], id="priority-class"),
    pytest.param(["--scheduler-name", "volcano"], id="scheduler-name"),
    pytest.param(["--queue", "team-a"], id="kueue"),
    pytest.param(["--active-deadline", "86400"], id="active-deadline"),
    pytest.param(["--metrics-port", "9400"], id="metrics-port"),
    pytest.param(["--kubernetes-version", "1.35", "--restart-in-place", "HANG"], id="k8s-1.35"),
]
# What the JobSet webhook (v0.10-v0.12) would reject: the command refuses it with one line.
REFUSED = [
    pytest.param(["--name", "1abc"], id="name-leading-digit"),
    pytest.param(["--name", "a" * 49], id="name-without-suffix-room"),
    pytest.param(["--nnodes", "65536", "--name", "a" * 45], id="gang-without-suffix-room"),
]
# Run through the real binary too (subprocess, ~0.5 s each): a few that touch every stage.
CLI_FLAG_SETS = [
    pytest.param([], id="defaults"),
    pytest.param(
        [
            *("--nnodes", "8", "--nproc-per-node", "8", "--checkpoint-dir", "s3://b/r"),
            *("--restart-in-place", "HANG", "--shm-size", "32Gi", "--namespace", "ml"),
        ],
        id="everything",
    ),
    pytest.param(["--training-failed-fails-job", "--max-restarts", "0"], id="strict"),
]
RELEASE_IDS = list(RELEASES)


def _app() -> typer.Typer:
    app = typer.Typer(rich_markup_mode=None)

    @app.command("run")  # a second command keeps typer from collapsing the app into one
    def run() -> None: ...

    register(app)
    return app


def _parse(stdout: str) -> dict[str, Any]:
    (jobset,) = [doc for doc in yaml.safe_load_all(stdout) if doc is not None]
    return jobset


def render_in_process(flags: list[str]) -> dict[str, Any]:
    argv = ["k8s", "jobset", *IMAGE, *flags, *CMD]
    result = CliRunner().invoke(_app(), argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return _parse(result.output)


def render_binary(flags: list[str]) -> dict[str, Any]:
    argv = [SUPERVISE, "k8s", "jobset", *IMAGE, *flags, *CMD]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return _parse(done.stdout)


@functools.cache
def _rendered(flags: tuple[str, ...]) -> dict[str, Any]:
    """Each flag set rendered once, shared by the per-release cases (nothing mutates it)."""
    return render_in_process(list(flags))


@pytest.mark.parametrize("release", RELEASE_IDS)
@pytest.mark.parametrize("flags", FLAG_SETS)
def test_the_cluster_admits_the_rendered_jobset(flags: list[str], release: str) -> None:
    assert admission_errors(_rendered(tuple(flags)), RELEASES[release]) == []


@pytest.mark.parametrize("flags", REFUSED)
def test_what_the_webhook_rejects_is_refused_at_the_flag(flags: list[str]) -> None:
    argv = [SUPERVISE, "k8s", "jobset", *IMAGE, *flags, *CMD]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 81 and done.stdout == "", done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "--name" in done.stderr


@pytest.mark.parametrize("flags", CLI_FLAG_SETS)
def test_the_binary_prints_a_jobset_every_release_admits(flags: list[str]) -> None:
    jobset = render_binary(flags)
    assert jobset == render_in_process(flags)
    for release in RELEASES.values():
        assert admission_errors(jobset, release) == [], release.name


def test_the_flag_sets_cover_every_jobset_flag() -> None:
    """A new `k8s jobset` flag must appear in FLAG_SETS, or this fails naming it."""
    group = typer.main.get_command(_app())
    jobset = group.commands["k8s"].commands["jobset"]  # type: ignore[attr-defined]
    # A boolean pair is covered by its default (off) plus the flag that turns it on.
    flags = {param.opts[0] for param in jobset.params if param.opts[0].startswith("--")}
    flags -= {"--help"}
    used = {arg for param in FLAG_SETS for arg in param.values[0] if arg.startswith("--")}
    assert flags <= used, sorted(flags - used)


# --- what the schema says about fields we render -------------------------------------------


def test_every_cel_rule_on_a_rendered_field_is_checked_by_hand() -> None:
    """CEL cannot run here. Every rule in the schema is listed; the ones that can bite a
    create are asserted below, the `self == oldSelf` ones only apply to an update."""
    jobset = render_in_process(["--nnodes", "2"])
    for release in RELEASES.values():
        rules = cel_rules(release)
        assert {rule for _, rule, _ in rules} == {
            "self == oldSelf",
            "!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder'"
            " && self.replicatedJobs.exists(x, has(x.dependsOn)))",
        }, rules
        immutable = sorted(path for path, rule, _ in rules if rule == "self == oldSelf")
        assert immutable == [
            ".spec.failurePolicy",
            ".spec.network",
            ".spec.replicatedJobs[].dependsOn",
            ".spec.startupPolicy",
            ".spec.successPolicy",
        ]
    # .spec: '!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder'
    #          && self.replicatedJobs.exists(x, has(x.dependsOn)))'
    spec = apply_defaults(jobset, RELEASES["v0.12"])["spec"]
    in_order = spec["startupPolicy"]["startupPolicyOrder"] == "InOrder"
    assert not (in_order and any("dependsOn" in r for r in spec["replicatedJobs"]))


def test_the_failure_policy_rules_are_what_the_webhook_accepts() -> None:
    """Spelled out for the fields the generic walk cannot see as special."""
    policy = render_in_process([])["spec"]["failurePolicy"]
    names = [rule["name"] for rule in policy["rules"]]
    assert len(names) == len(set(names))
    for rule in policy["rules"]:
        assert rule["onJobFailureReasons"] == ["PodFailurePolicy"]
        assert "targetReplicatedJobs" not in rule  # an empty list applies to every rjob
        for pattern in rule["onJobFailureMessagePatterns"]:
            assert re2_compiles(pattern), pattern


# --- the validator is not vacuous -----------------------------------------------------------


def _base() -> dict[str, Any]:
    return render_jobset(RenderOptions(name="train", image="img:1", command=("train.py",)))


@pytest.mark.parametrize("release", RELEASE_IDS)
def test_the_validator_rejects_what_the_cluster_rejects(release: str) -> None:
    rel = RELEASES[release]
    assert admission_errors(_base()[0], rel) == []

    def errors_after(change) -> list[str]:
        (jobset,) = _base()
        change(jobset)
        return admission_errors(jobset, rel)

    def unknown_jobset_field(js):
        js["spec"]["failurePolicy"]["maxRestart"] = 3  # typo: pruned, the default applies

    def unknown_pod_field(js):
        pod = js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
        pod["containers"][0]["restartPolicyRule"] = []

    def wrong_type(js):
        js["spec"]["network"]["enableDNSHostnames"] = "true"

    def bad_enum(js):
        js["spec"]["failurePolicy"]["rules"][0]["action"] = "Restart"

    def int32_overflow(js):
        js["spec"]["failurePolicy"]["maxRestarts"] = 2**31

    def missing_required(js):
        del js["spec"]["replicatedJobs"][0]["name"]

    def null_field(js):
        js["spec"]["network"]["subdomain"] = None

    def bad_quantity(js):
        pod = js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
        pod["volumes"][0]["emptyDir"]["sizeLimit"] = "16 GiB"

    def leading_digit(js):
        js["metadata"]["name"] = js["spec"]["network"]["subdomain"] = "1abc"

    def over_long_name(js):
        js["metadata"]["name"] = js["spec"]["network"]["subdomain"] = "a" * 49

    def duplicate_rule(js):
        rules = js["spec"]["failurePolicy"]["rules"]
        rules[1]["name"] = rules[0]["name"]

    def bad_rule_name(js):
        js["spec"]["failurePolicy"]["rules"][0]["name"] = "device-failed"

    def lookahead(js):
        js["spec"]["failurePolicy"]["rules"][0]["onJobFailureMessagePatterns"] = ["^(?!x)"]

    def unknown_target(js):
        js["spec"]["failurePolicy"]["rules"][0]["targetReplicatedJobs"] = ["workers"]

    def bad_reason(js):
        js["spec"]["failurePolicy"]["rules"][0]["onJobFailureReasons"] = ["OOMKilled"]

    def bad_label(js):
        js["metadata"]["labels"]["app.kubernetes.io/name"] = "-x"

    for change, expected in [
        (unknown_jobset_field, "maxRestart: unknown field"),
        (unknown_pod_field, "restartPolicyRule"),
        (wrong_type, "is not a boolean"),
        (bad_enum, "is not one of"),
        (int32_overflow, "overflows int32"),
        (missing_required, "missing required 'name'"),
        (null_field, "null"),
        (bad_quantity, "is not a resource quantity"),
        (leading_digit, "is not a DNS-1035 label"),
        (over_long_name, "random suffix"),
        (duplicate_rule, "is not unique"),
        (bad_rule_name, "does not match"),
        (lookahead, "is not an RE2 regexp"),
        (unknown_target, "unknown replicatedJob 'workers'"),
        (bad_reason, "is not a Job failure reason"),
        (bad_label, "is not a valid label value"),
    ]:
        errors = errors_after(change)
        assert any(expected in e for e in errors), (change.__name__, errors)


def test_in_place_restart_strategy_is_refused_before_v0_11() -> None:
    (jobset,) = _base()
    jobset["spec"]["failurePolicy"]["restartStrategy"] = "InPlaceRestart"
    assert any("is not one of" in e for e in structural_errors(jobset, RELEASES["v0.10"]))
    assert structural_errors(jobset, RELEASES["v0.11"]) == []
    assert any("feature gate" in e for e in webhook_errors(jobset, RELEASES["v0.11"]))


def test_restart_job_actions_exist_from_v0_12() -> None:
    (jobset,) = _base()
    jobset["spec"]["failurePolicy"]["rules"][0]["action"] = "RestartJob"
    assert any("is not one of" in e for e in structural_errors(jobset, RELEASES["v0.11"]))
    assert structural_errors(jobset, RELEASES["v0.12"]) == []


def test_a_jobset_before_v0_10_would_drop_the_message_patterns() -> None:
    """The stored pre-v0.10 CRD has no onJobFailureMessagePatterns: every rule would match
    every PodFailurePolicy failure there, so the rendered JobSet needs JobSet >= v0.10."""
    errors = structural_errors(_base()[0], BEFORE_MESSAGE_PATTERNS)
    assert errors and all("onJobFailureMessagePatterns: unknown field" in e for e in errors)


def test_restart_policy_rules_need_the_1_34_job_spec() -> None:
    """Container restartPolicyRules exist from Kubernetes 1.34 (KEP-5307): a JobSet built
    against an older k8s.io/api would prune them from the pod template."""
    plain = render_in_process([])["spec"]["replicatedJobs"][0]["template"]["spec"]
    in_place = render_in_process(["--restart-in-place", "HANG"])
    job = in_place["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job_spec_errors(job, "1.34") == []
    assert any("restartPolicyRules" in e for e in job_spec_errors(job, "1.33"))
    assert job_spec_errors(plain, "1.33") == []


@pytest.mark.parametrize(("length", "admitted"), [(48, True), (49, False)])
def test_the_pod_name_rule_counts_the_random_suffix(length: int, admitted: bool) -> None:
    """jobset_webhook.go: longestPodName := GenPodName(...) + "-abcde"; with one node the
    longest pod is <name>-node-0-0-xxxxx, 15 characters after the name."""
    assert POD_NAME_RANDOM_SUFFIX == "-abcde"
    (jobset,) = _base()
    jobset["metadata"]["name"] = jobset["spec"]["network"]["subdomain"] = "a" * length
    errors = webhook_errors(jobset, RELEASES["v0.12"])
    assert (errors == []) is admitted, errors
    assert admitted or all("random suffix" in e for e in errors)


def test_extract_reduces_a_crd_to_the_vendored_form() -> None:
    """extract.py, run on a CRD shaped like the upstream file, gives back the vendored schema
    (descriptions, status and the embedded JobSpec removed), so a real file can replace it."""
    from tests.k8s.jobset_api.extract import reduce_crd
    from tests.k8s.jobset_api.validate import SCHEMA_FILE

    vendored = json.loads(SCHEMA_FILE.read_text())
    source = vendored.pop("x-source")
    full = copy.deepcopy(vendored)
    full["description"] = "JobSet is the Schema for the jobsets API"
    full["properties"]["spec"]["properties"]["suspend"]["description"] = "suspend suspends..."
    full["properties"]["status"] = {"type": "object", "properties": {"restarts": {}}}
    rjob = full["properties"]["spec"]["properties"]["replicatedJobs"]["items"]["properties"]
    rjob["template"]["properties"]["spec"] = {"type": "object", "properties": {"parallelism": {}}}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "spec": {
            "names": {"kind": "JobSet"},
            "versions": [{"name": "v1alpha2", "schema": {"openAPIV3Schema": full}}],
        },
    }
    documents = [{"kind": "Namespace"}, yaml.safe_load(yaml.safe_dump(crd))]
    assert reduce_crd(documents, source) == {"x-source": source, **vendored}
