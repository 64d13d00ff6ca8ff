"""Rendered manifests as the cluster reads them, not as our own YAML library does.

kubectl and the API server read YAML with Go's sigs.k8s.io/yaml, which takes `3e-4` or
`0o17` for numbers where PyYAML (YAML 1.1) writes them as bare strings; `args` is `[]string`,
so such a Job is rejected. `kubectl label --local -f FILE x=y -o json` parses a file exactly
as kubectl applies it, with no cluster, and prints what it read. Every manifest must come
back from it, and from a YAML 1.2 reader (ruamel.yaml), equal to what was rendered.

The rest pins what a cluster does with the pod spec: Pod Security "restricted", the QoS
class the requests give, the Kueue and scheduling fields, and what happens to the JobSet's
failure policy on a controller older than v0.10, which prunes the message patterns.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisor.core.exitcodes import ExitCode
from supervisor.k8s import rules
from supervisor.k8s.render import render_job, render_jobset, to_yaml
from supervisor.k8s.simulate import FailedPod, job_verdict, jobset_verdict
from supervisor.k8s.spec import (
    KUEUE_QUEUE_LABEL,
    MIN_JOBSET,
    REQUIRES_JOBSET_ANNOTATION,
    RenderOptions,
    Toleration,
)

KUBECTL = shutil.which("kubectl")
# .ci/run installs kubectl where it is missing and sets REQUIRE_KUBECTL, so CI never skips.
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None and not os.environ.get("REQUIRE_KUBECTL"),
    reason="kubectl is not installed (.ci/run installs Debian's kubernetes-client)",
)

# Strings that YAML 1.1, YAML 1.2 or Go's reader could take for something else.
AWKWARD = [
    "3e-4",
    "1e3",
    "-1E+3",
    "0x10",
    "0o17",
    "0b101",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "N",
    "True",
    "FALSE",
    "null",
    "Null",
    "~",
    ".inf",
    "-.Inf",
    ".nan",
    "007",
    "1_000",
    "1.",
    ".5",
    "+1",
    "-0",
    "1:20",
    "2001-12-14",
    "",
    "a: b",
    "#c",
    "a #b",
    "- x",
    "[a]",
    "{a: 1}",
    "*ref",
    "&anchor",
    "!tag",
    "%TAG",
    "@x",
    "`x",
    "|",
    ">",
    "'q'",
    '"q"',
    " lead",
    "trail ",
    "two\nlines",
    "tab\tx",
    "ünï",
    "=",
    "<<",
    "---",
    "...",
]
BASE = {"name": "train", "image": "registry.example/train:1"}


def _awkward_manifests() -> list[dict[str, Any]]:
    """Jobs and JobSets carrying every awkward string in `args`, and each one in turn as
    an env `value` (the checkpoint dir) where the renderer accepts it."""
    manifests: list[dict[str, Any]] = []
    for render in (render_job, render_jobset):
        manifests += render(RenderOptions(**BASE, command=("train.py", *AWKWARD)))
    for value in AWKWARD:
        if not value.strip():
            continue  # an empty --checkpoint-dir is refused at the flag
        (_, job) = render_job(RenderOptions(**BASE, command=("t.py",), checkpoint_dir=value))
        manifests.append(job)
    for render in (render_job, render_jobset):  # annotation values must stay strings
        manifests += render(RenderOptions(**BASE, command=("t.py",), metrics_port=9400))
    return manifests


def _kubectl_read(text: str, tmp_path: Path) -> list[dict[str, Any]]:
    assert KUBECTL, "kubectl is required here (REQUIRE_KUBECTL is set)"
    path = tmp_path / "manifests.yaml"
    path.write_text(text)
    result = subprocess.run(
        [KUBECTL, "label", "--local", "-f", str(path), "x=y", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "none")},
    )
    assert result.returncode == 0, result.stderr
    # One JSON object per document, one after another.
    decoder, out, objects = json.JSONDecoder(), result.stdout.strip(), []
    while out:
        obj, end = decoder.raw_decode(out)
        objects.append(obj)
        out = out[end:].lstrip()
    return objects


def _strings(container: dict[str, Any]) -> list[Any]:
    env = [item["value"] for item in container["env"] if "value" in item]
    return [*container["command"], *container["args"], *env]


def _containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    spec = manifest["spec"]
    if manifest["kind"] == "JobSet":
        spec = spec["replicatedJobs"][0]["template"]["spec"]
    if manifest["kind"] == "Service":
        return []
    return spec["template"]["spec"]["containers"]


@needs_kubectl
def test_kubectl_reads_every_string_back_as_the_same_string(tmp_path: Path) -> None:
    manifests = _awkward_manifests()
    read = _kubectl_read(to_yaml(manifests, "header"), tmp_path)
    assert len(read) == len(manifests)
    for ours, theirs in zip(manifests, read, strict=True):
        labels = theirs["metadata"]["labels"]
        assert labels.pop("x") == "y"  # the one change the command made
        assert theirs == ours
        for container in _containers(theirs):
            assert all(isinstance(value, str) for value in _strings(container))
    job = read[1]
    assert _containers(job)[0]["args"] == ["train.py", *AWKWARD]
    for metrics in read[-3:]:  # the Job and the JobSet with --metrics-port
        if metrics["kind"] != "Service":
            assert _pod(metrics)["metadata"]["annotations"]["prometheus.io/port"] == "9400"


@needs_kubectl
def test_the_kubectl_check_can_fail(tmp_path: Path) -> None:
    """Guard against a vacuous check: PyYAML's own plain output is read as numbers."""
    (_, job) = render_job(RenderOptions(**BASE, command=("train.py", "--lr", "3e-4")))
    (read,) = _kubectl_read(yaml.safe_dump(job), tmp_path)
    assert _containers(read)[0]["args"] == ["train.py", "--lr", 0.0003]


def test_a_yaml_1_2_reader_and_pyyaml_read_what_was_rendered() -> None:
    from ruamel.yaml import YAML

    manifests = _awkward_manifests()
    text = to_yaml(manifests, "header")
    assert list(YAML(typ="safe", pure=True).load_all(text)) == manifests
    assert list(yaml.safe_load_all(text)) == manifests


def test_the_yaml_1_2_check_can_fail() -> None:
    from ruamel.yaml import YAML

    assert YAML(typ="safe", pure=True).load(yaml.safe_dump(["3e-4", "0o17"])) == [0.0003, 15]


# --- the k8s commands render from their flags alone ------------------------------------------


def _supervise(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISE_")}
    return subprocess.run(
        ["supervise", *args], capture_output=True, text=True, timeout=60, env={**clean, **env}
    )


@pytest.mark.parametrize("kind", ["job", "jobset"])
def test_runtime_twins_in_the_shell_do_not_leak_into_a_render(kind: str) -> None:
    args = ("k8s", kind, "--image", "r/i:1", "--", "train.py")
    clean = _supervise(*args, env={})
    leaky = _supervise(
        *args,
        env={
            "SUPERVISE_GRACE_PERIOD": "2",
            "SUPERVISE_CHECKPOINT_DIR": "/tmp/x",
            "SUPERVISE_NNODES": "5",
            "SUPERVISE_NPROC_PER_NODE": "3",
            "SUPERVISE_MASTER_PORT": "1234",
        },
    )
    assert clean.returncode == leaky.returncode == 0, leaky.stderr
    assert leaky.stdout == clean.stdout and leaky.stderr == ""
    assert "terminationGracePeriodSeconds: 30" in clean.stdout
    # The K8S-scoped twins are the ones a render reads.
    scoped = _supervise(*args, env={"SUPERVISE_K8S_GRACE_PERIOD": "2"})
    assert "terminationGracePeriodSeconds: 7" in scoped.stdout


# --- names, versions: refused with one line and CONFIG_ERROR ---------------------------------


@pytest.mark.parametrize(
    ("args", "fix"),
    [
        (["job", "--name", "1abc"], "DNS-1035"),
        (["jobset", "--name", "1abc"], "DNS-1035"),
        (["job", "--name", "a" * 62, "--nnodes", "2"], "63 characters"),
        (["jobset", "--name", "a" * 49, "--nnodes", "2"], "at most 48"),
        (["job", "--kubernetes-version", "1.30"], "1.31 or newer"),
        (["job", "--kubernetes-version", "one"], "--kubernetes-version"),
        (
            ["jobset", "--kubernetes-version", "1.34", "--restart-in-place", "HANG"],
            "drops container restartPolicyRules silently",
        ),
        (["job", "--max-failed-indexes", "1"], "needs --backoff-limit-per-index"),
        (["job", "--label", "a=b c"], "--label"),
        (["job", "--label", "noequals"], "KEY=VALUE"),
        (["job", "--toleration", "gpu:Sometimes"], "NoSchedule"),
        (["job", "--cpu", "lots"], "--cpu"),
        (["job", "--run-as-user", "0"], "--allow-root"),
        (["job", "--priority-class", "High"], "--priority-class"),
    ],
)
def test_bad_manifest_flags_are_one_line_and_config_error(args: list[str], fix: str) -> None:
    result = _supervise("k8s", *args[:1], "--image", "i", *args[1:], "--", "t.py", env={})
    assert result.returncode == ExitCode.CONFIG_ERROR.code, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fix in lines[0], result.stderr


def test_the_longest_names_each_shape_accepts() -> None:
    # A Job's pod hostname <name>-<index> is a 63-character label.
    render_job(RenderOptions(**{**BASE, "name": "a" * 61}, command=("t.py",), nnodes=2))
    # A JobSet's longest pod name <name>-node-0-<index>-xxxxx is one too (its webhook).
    (jobset,) = render_jobset(RenderOptions(**{**BASE, "name": "a" * 48}, command=("t",), nnodes=2))
    longest = f"{jobset['metadata']['name']}-node-0-1-abcde"
    assert len(longest) == 63


def test_a_version_new_enough_renders_in_place_restarts() -> None:
    opts = RenderOptions(
        **BASE, command=("t.py",), restart_in_place=(ExitCode.HANG,), kubernetes_version="v1.35.1"
    )
    (_, job) = render_job(opts)
    assert job["spec"]["template"]["spec"]["containers"][0]["restartPolicyRules"]


# --- JobSet: an old controller fails safe ----------------------------------------------------


def _message(code: ExitCode) -> str | None:
    (jobset,) = render_jobset(RenderOptions(**BASE, command=("t.py",)))
    inner = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["podFailurePolicy"]
    pod = FailedPod(namespace="ns", name="p", containers={"trainer": code.code})
    return job_verdict(inner, pod).message


def test_a_jobset_states_the_controller_it_needs() -> None:
    (jobset,) = render_jobset(RenderOptions(**BASE, command=("t.py",)))
    assert jobset["metadata"]["annotations"][REQUIRES_JOBSET_ANNOTATION] == MIN_JOBSET == "v0.10.1"


@pytest.mark.parametrize("training_failed_fails_job", [False, True])
def test_pruned_message_patterns_fail_the_jobset_instead_of_restarting_forever(
    training_failed_fails_job: bool,
) -> None:
    (jobset,) = render_jobset(
        RenderOptions(
            **BASE, command=("t.py",), training_failed_fails_job=training_failed_fails_job
        )
    )
    policy = jobset["spec"]["failurePolicy"]
    pruned = {
        **policy,
        "rules": [
            {k: v for k, v in rule.items() if k != "onJobFailureMessagePatterns"}
            for rule in policy["rules"]
        ],
    }
    for code in rules.jobset_classes():
        message = _message(code)
        assert message is not None
        # On v0.10+ each class keeps its own route...
        wanted = rules.jobset_action(code, training_failed_fails_job=training_failed_fails_job)
        assert jobset_verdict(policy, "PodFailurePolicy", message).action == wanted
        # ...and a controller that pruned the patterns stops the JobSet on any of them.
        assert jobset_verdict(pruned, "PodFailurePolicy", message).action == rules.FAIL_JOBSET


# --- the pod spec: security, QoS, scheduling, queueing, limits -------------------------------

EVERYTHING = RenderOptions(
    **BASE,
    command=("train.py",),
    nnodes=2,
    nproc_per_node=8,
    gpus_per_node=8,
    cpu="32",
    memory="200Gi",
    cpu_limit="32",
    memory_limit="200Gi",
    shm_size="64Gi",
    run_as_user=10001,
    labels=(("team", "llm"), ("tier", "007")),
    annotations=(("note", "yes: really"),),
    node_selector=(("nvidia.com/gpu.product", "H100-SXM"),),
    tolerations=(Toleration.parse("nvidia.com/gpu:NoSchedule"), Toleration.parse("pool=a")),
    priority_class="training-high",
    scheduler_name="volcano",
    queue="team-a",
    active_deadline=86_400,
    backoff_limit_per_index=2,
)


def _pod(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest["spec"]
    if manifest["kind"] == "JobSet":
        spec = spec["replicatedJobs"][0]["template"]["spec"]
    return spec["template"]


def _restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """The Pod Security Standards "restricted" profile's checks that a pod like ours could
    fail (kubernetes.io/docs/concepts/security/pod-security-standards, policy v1.31+)."""
    found = []
    pod_ctx = pod_spec.get("securityContext", {})
    if any(key in pod_spec for key in ("hostNetwork", "hostPID", "hostIPC")):
        found.append("host namespaces")
    for volume in pod_spec.get("volumes", ()):
        kinds = set(volume) - {"name"}
        allowed = {"emptyDir", "configMap", "secret", "persistentVolumeClaim", "projected"}
        if not kinds <= allowed | {"csi", "downwardAPI", "ephemeral"}:
            found.append(f"volume {volume['name']}")
    for container in pod_spec["containers"]:
        ctx = container.get("securityContext", {})
        if ctx.get("privileged"):
            found.append("privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append("allowPrivilegeEscalation")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", ()) or set(caps.get("add", ())) - {"NET_BIND_SERVICE"}:
            found.append("capabilities")
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
            found.append("runAsNonRoot")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            found.append("runAsUser 0")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
        if seccomp.get("type") not in {"RuntimeDefault", "Localhost"}:
            found.append("seccompProfile")
        if any(port.get("hostPort") for port in container.get("ports", ())):
            found.append("hostPort")
    return found


def _qos_class(pod_spec: dict[str, Any]) -> str:
    """The pod's QoS class as the kubelet computes it from cpu and memory only
    (pkg/apis/core/v1/helper/qos GetPodQOS): limits stand in for missing requests."""
    guaranteed, any_set = True, False
    for container in pod_spec["containers"]:
        resources = container.get("resources", {})
        limits = resources.get("limits", {})
        requests = {**limits, **resources.get("requests", {})}
        for name in ("cpu", "memory"):
            any_set |= name in requests or name in limits
            if name not in limits or requests.get(name) != limits[name]:
                guaranteed = False
    if guaranteed and any_set:
        return "Guaranteed"
    return "Burstable" if any_set else "BestEffort"


@pytest.mark.parametrize("render", [render_job, render_jobset])
@pytest.mark.parametrize(
    "opts",
    [
        RenderOptions(**BASE, command=("t.py",), cpu="1", memory="4Gi"),
        EVERYTHING,
        RenderOptions(**BASE, command=("t.py",), allow_root=True),
    ],
    ids=["defaults", "everything", "allow-root"],
)
def test_pod_security_restricted_unless_root_is_allowed(render: Any, opts: RenderOptions) -> None:
    pod = _pod(render(opts)[-1])["spec"]
    violations = _restricted_violations(pod)
    assert violations == (["runAsNonRoot"] if opts.allow_root else [])


def test_the_check_for_restricted_can_fail() -> None:
    (_, job) = render_job(EVERYTHING)
    pod = _pod(job)["spec"]
    pod["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    assert _restricted_violations(pod) == ["volume h", "capabilities"]


def test_requests_keep_the_pod_out_of_best_effort() -> None:
    gpu_only = RenderOptions(**BASE, command=("t.py",), gpus_per_node=8)
    assert _qos_class(_pod(render_job(gpu_only)[1])["spec"]) == "BestEffort"  # GPUs don't count
    defaults = RenderOptions(**BASE, command=("t.py",), gpus_per_node=8, cpu="1", memory="4Gi")
    assert _qos_class(_pod(render_job(defaults)[1])["spec"]) == "Burstable"
    assert _qos_class(_pod(render_job(EVERYTHING)[1])["spec"]) == "Guaranteed"


def test_scheduling_queueing_and_limits_land_where_the_apis_read_them() -> None:
    service, job = render_job(EVERYTHING)
    (jobset,) = render_jobset(EVERYTHING)
    for obj in (job, jobset):
        assert obj["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a"
        assert obj["metadata"]["labels"]["team"] == "llm"
        assert obj["metadata"]["annotations"]["note"] == "yes: really"
        template = _pod(obj)
        assert template["metadata"]["labels"]["tier"] == "007"
        assert template["metadata"]["annotations"] == {"note": "yes: really"}
        pod = template["spec"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100-SXM"}
        assert pod["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "pool", "operator": "Equal", "value": "a"},
        ]
        assert pod["priorityClassName"] == "training-high"
        assert pod["schedulerName"] == "volcano"
        assert pod["securityContext"]["runAsUser"] == 10001
    # Kueue admits the object by unsuspending it; the Service is not a workload.
    assert KUEUE_QUEUE_LABEL not in service["metadata"]["labels"]
    assert job["spec"]["suspend"] is True and jobset["spec"]["suspend"] is True
    assert job["spec"]["activeDeadlineSeconds"] == 86_400
    # One exhausted index stops the gang: it cannot train without one of its nodes.
    assert (job["spec"]["backoffLimitPerIndex"], job["spec"]["maxFailedIndexes"]) == (2, 0)
    assert "backoffLimit" not in job["spec"]
    inner = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert inner["activeDeadlineSeconds"] == 86_400 and "suspend" not in inner


def test_nothing_optional_is_rendered_unasked() -> None:
    (_, job) = render_job(RenderOptions(**BASE, command=("t.py",)))
    spec = job["spec"]
    pod = spec["template"]["spec"]
    for absent in ("suspend", "activeDeadlineSeconds", "maxFailedIndexes"):
        assert absent not in spec
    for absent in ("nodeSelector", "tolerations", "priorityClassName", "schedulerName"):
        assert absent not in pod
    assert "annotations" not in job["metadata"]
    assert "resources" not in pod["containers"][0]  # the CLI's flags supply the defaults


@needs_kubectl
def test_kubectl_reads_the_launch_examples_as_committed(tmp_path: Path) -> None:
    launch = Path(__file__).resolve().parents[2] / "launch"
    files = sorted(launch.glob("*.yaml"))
    assert len(files) == 4, files
    for path in files:
        ours = list(yaml.safe_load_all(path.read_text()))
        read = _kubectl_read(path.read_text(), tmp_path)
        for obj in read:
            assert obj["metadata"]["labels"].pop("x") == "y"
        assert read == ours, path.name


def test_a_metrics_port_is_announced_to_prometheus_and_passed_to_supervise() -> None:
    opts = RenderOptions(**BASE, command=("t.py",), metrics_port=9400, annotations=(("a", "b"),))
    (_, job) = render_job(opts)
    (jobset,) = render_jobset(opts)
    for obj in (job, jobset):
        template = _pod(obj)
        assert template["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9400",
            "prometheus.io/path": "/metrics",
            "a": "b",
        }
        (container,) = template["spec"]["containers"]
        assert {"name": "metrics", "containerPort": 9400} in container["ports"]
        assert {"name": "SUPERVISE_METRICS_PORT", "value": "9400"} in container["env"]
    # Off by default: nothing of it is rendered.
    (_, plain) = render_job(RenderOptions(**BASE, command=("t.py",)))
    text = to_yaml([plain], "header")
    assert "prometheus.io" not in text and "METRICS" not in text and "metrics" not in text


def test_a_metrics_port_on_the_rendezvous_port_is_refused() -> None:
    args = ("k8s", "job", "--image", "r/i:1", "--metrics-port", "29500", "--", "t.py")
    result = _supervise(*args, env={})
    assert result.returncode == 81 and "--master-port" in result.stderr, result.stderr
