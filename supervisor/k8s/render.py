"""Render an Indexed Job + headless Service, or a JobSet, from `RenderOptions`.

The output is plain dicts (then YAML via `to_yaml`), correct by construction against the
exit-code contract: the failure-policy rules come from `supervisor.k8s.rules`, which iterates
`ExitCode`. What every pod gets:

- `restartPolicy: Never` (podFailurePolicy forbids OnFailure) and, on the Job,
  `podReplacementPolicy: Failed`, which the API requires with a podFailurePolicy
  (batch/v1; the field is GA in 1.34, beta and on since 1.29);
- `terminationGracePeriodSeconds` = ceil(grace period + shutdown margin), and the same grace
  period handed to supervise as SUPERVISE_GRACE_PERIOD so the two cannot disagree;
- `terminationMessagePolicy: FallbackToLogsOnError`: supervise writes the termination
  message; if it could not (killed), the kubelet falls back to the log tail (core/v1);
- downward-API env: pod name, namespace, uid, node name (and, in a JobSet, the JobSet
  name, replicatedJob name, Job index and restart attempt from the pod's labels);
- GPUs as an extended-resource limit, a memory-backed emptyDir on /dev/shm (the
  container runtime's 64 MiB default starves DataLoader workers and NCCL), and
  SUPERVISE_CHECKPOINT_DIR when a checkpoint URL is given;
- the launch env `supervisor.k8s.launch` reads: SUPERVISE_NNODES, SUPERVISE_SUBDOMAIN
  (the headless Service, also the pod's `subdomain`), SUPERVISE_MASTER_PORT, and in a
  JobSet SUPERVISE_PODS_PER_JOB. The Job controller adds JOB_COMPLETION_INDEX itself, and
  the pod's hostname is <job>-<index> (Indexed Job) or <jobset>-<rjob>-<job>-<pod> (JobSet);
- with `metrics_port`, SUPERVISE_METRICS_PORT, a container port named `metrics`, and the
  pod annotations Prometheus's kubernetes_sd relabelling conventionally reads
  (`prometheus.io/scrape`, `/port`, `/path`; annotation values are strings).

Pure: no I/O, safe on any thread.
"""

from __future__ import annotations

from typing import Any

from supervisor.k8s import rules
from supervisor.k8s.spec import (
    CONTAINER,
    ENV_CHECKPOINT_DIR,
    ENV_GRACE_PERIOD,
    ENV_JOB_INDEX,
    ENV_JOBSET_NAME,
    ENV_MASTER_PORT,
    ENV_METRICS_PORT,
    ENV_NNODES,
    ENV_NODE_NAME,
    ENV_POD_NAME,
    ENV_POD_NAMESPACE,
    ENV_POD_UID,
    ENV_PODS_PER_JOB,
    ENV_REPLICATED_JOB_NAME,
    ENV_RESTART_ATTEMPT,
    ENV_SUBDOMAIN,
    JOB_INDEX_KEY,
    JOB_NAME_LABEL,
    JOBSET_NAME_KEY,
    KUEUE_QUEUE_LABEL,
    MIN_JOBSET,
    REPLICATED_JOB,
    REPLICATED_JOB_NAME_KEY,
    REQUIRES_JOBSET_ANNOTATION,
    RESTART_ATTEMPT_KEY,
    RenderOptions,
    check_jobset_names,
)

Manifest = dict[str, Any]


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _label_env(name: str, key: str) -> dict[str, Any]:
    return _field_env(name, f"metadata.labels['{key}']")


def supervise_command(opts: RenderOptions) -> list[str]:
    """The container `command`: supervise and its launch flag; the user's CMD goes in `args`."""
    if opts.nproc_per_node is None:
        return ["supervise", "--"]
    return ["supervise", "--nproc-per-node", str(opts.nproc_per_node), "--"]


def _env(opts: RenderOptions, subdomain: str, *, jobset: bool) -> list[dict[str, Any]]:
    env = [
        _field_env(ENV_POD_NAME, "metadata.name"),
        _field_env(ENV_POD_NAMESPACE, "metadata.namespace"),
        _field_env(ENV_POD_UID, "metadata.uid"),
        _field_env(ENV_NODE_NAME, "spec.nodeName"),
    ]
    if jobset:
        env += [
            _label_env(ENV_JOBSET_NAME, JOBSET_NAME_KEY),
            _label_env(ENV_REPLICATED_JOB_NAME, REPLICATED_JOB_NAME_KEY),
            _label_env(ENV_JOB_INDEX, JOB_INDEX_KEY),
            _label_env(ENV_RESTART_ATTEMPT, RESTART_ATTEMPT_KEY),
            {"name": ENV_PODS_PER_JOB, "value": str(opts.nnodes)},
        ]
    env += [
        {"name": ENV_NNODES, "value": str(opts.nnodes)},
        {"name": ENV_SUBDOMAIN, "value": subdomain},
        {"name": ENV_MASTER_PORT, "value": str(opts.master_port)},
        # `g` keeps 25.0 as "25": supervise parses either.
        {"name": ENV_GRACE_PERIOD, "value": f"{opts.grace_period:g}"},
    ]
    if opts.checkpoint_dir is not None:
        env.append({"name": ENV_CHECKPOINT_DIR, "value": opts.checkpoint_dir})
    if opts.metrics_port is not None:
        env.append({"name": ENV_METRICS_PORT, "value": str(opts.metrics_port)})
    return env


def _ports(opts: RenderOptions) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = [{"name": "torch-master", "containerPort": opts.master_port}]
    if opts.metrics_port is not None:
        ports.append({"name": "metrics", "containerPort": opts.metrics_port})
    return ports


def _pod_annotations(opts: RenderOptions) -> dict[str, str]:
    """The user's annotations, plus the scrape annotations with a metrics port (the
    user's own value for one of those keys wins)."""
    annotations: dict[str, str] = {}
    if opts.metrics_port is not None:
        annotations = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(opts.metrics_port),
            "prometheus.io/path": "/metrics",
        }
    return {**annotations, **dict(opts.annotations)}


def _resources(opts: RenderOptions) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", opts.cpu), ("memory", opts.memory)) if v is not None}
    limits: dict[str, Any] = {
        k: v for k, v in (("cpu", opts.cpu_limit), ("memory", opts.memory_limit)) if v is not None
    }
    if opts.gpus_per_node:
        limits[opts.gpu_resource] = opts.gpus_per_node
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def _container(opts: RenderOptions, subdomain: str, *, jobset: bool) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": opts.image,
        "command": supervise_command(opts),
        "args": list(opts.command),
        "env": _env(opts, subdomain, jobset=jobset),
        "ports": _ports(opts),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        # Pod Security "restricted" (container part): supervise and torchrun need no
        # privilege; the device plugin makes the GPUs' device nodes accessible.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    resources = _resources(opts)
    if resources:
        container["resources"] = resources
    if opts.restart_in_place:
        # KEP-5307: a container with rules must also name its own restartPolicy. Never keeps
        # every other exit a pod failure that podFailurePolicy judges.
        container["restartPolicy"] = "Never"
        container["restartPolicyRules"] = rules.restart_policy_rules(opts.restart_in_place)
    return container


def _pod_security(opts: RenderOptions) -> dict[str, Any]:
    """Pod Security "restricted" (pod part), unless --allow-root asks for root."""
    context: dict[str, Any] = {}
    if not opts.allow_root:
        context["runAsNonRoot"] = True
    if opts.run_as_user is not None:
        context["runAsUser"] = opts.run_as_user
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


def pod_spec(opts: RenderOptions, subdomain: str, *, jobset: bool) -> dict[str, Any]:
    """The pod template spec shared by the Job and the JobSet's Jobs."""
    shm: dict[str, Any] = {"medium": "Memory"}
    if opts.shm_size is not None:
        shm["sizeLimit"] = opts.shm_size
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": opts.termination_grace_seconds,
        "securityContext": _pod_security(opts),
        "containers": [_container(opts, subdomain, jobset=jobset)],
        "volumes": [{"name": "dshm", "emptyDir": shm}],
    }
    if not jobset:
        # JobSet sets the subdomain itself (spec.network.subdomain); a plain Job needs it
        # for <job>-<index>.<service> to resolve.
        spec["subdomain"] = subdomain
    if opts.node_selector:
        spec["nodeSelector"] = dict(opts.node_selector)
    if opts.tolerations:
        spec["tolerations"] = [toleration.manifest() for toleration in opts.tolerations]
    if opts.priority_class is not None:
        spec["priorityClassName"] = opts.priority_class
    if opts.scheduler_name is not None:
        spec["schedulerName"] = opts.scheduler_name
    return spec


def _labels(opts: RenderOptions) -> dict[str, str]:
    return {"app.kubernetes.io/name": opts.name, **dict(opts.labels)}


def _metadata(opts: RenderOptions, name: str, *, queued: bool = False) -> dict[str, Any]:
    """An object's metadata; `queued` adds the Kueue queue label, which belongs only on the
    object Kueue admits (the Job, or the JobSet), never on the Service."""
    labels = _labels(opts)
    if queued and opts.queue is not None:
        labels[KUEUE_QUEUE_LABEL] = opts.queue
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if opts.namespace is not None:
        meta["namespace"] = opts.namespace
    if queued and opts.annotations:
        meta["annotations"] = dict(opts.annotations)
    return meta


def _job_spec(opts: RenderOptions, subdomain: str, *, jobset: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": opts.nnodes,
        "parallelism": opts.nnodes,
        "podReplacementPolicy": "Failed",
    }
    if jobset:
        # The first counted failure fails the Job, so the JobSet (not the Job) restarts the gang.
        spec["backoffLimit"] = 0
        spec["podFailurePolicy"] = rules.jobset_pod_failure_policy()
    else:
        if opts.backoff_limit_per_index is not None:
            spec["backoffLimitPerIndex"] = opts.backoff_limit_per_index
            spec["maxFailedIndexes"] = opts.effective_max_failed_indexes
        else:
            spec["backoffLimit"] = opts.backoff_limit
        spec["podFailurePolicy"] = rules.job_pod_failure_policy(
            training_failed_fails_job=opts.training_failed_fails_job
        )
        if opts.queue is not None:
            # Kueue admits a Job by unsuspending it; created running, it would start unqueued.
            spec["suspend"] = True
    if opts.active_deadline is not None:
        spec["activeDeadlineSeconds"] = opts.active_deadline
    template_meta: dict[str, Any] = {"labels": _labels(opts)}
    annotations = _pod_annotations(opts)
    if annotations:
        template_meta["annotations"] = annotations
    spec["template"] = {"metadata": template_meta, "spec": pod_spec(opts, subdomain, jobset=jobset)}
    return spec


def render_job(opts: RenderOptions) -> list[Manifest]:
    """An Indexed Job and the headless Service its pods resolve each other through."""
    service: Manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(opts, opts.name),
        "spec": {
            "clusterIP": "None",
            # Rank 0 must resolve before it is Ready, or the other ranks cannot rendezvous.
            "publishNotReadyAddresses": True,
            "selector": {JOB_NAME_LABEL: opts.name},
            "ports": [{"name": "torch-master", "port": opts.master_port}],
        },
    }
    job: Manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(opts, opts.name, queued=True),
        "spec": _job_spec(opts, opts.name, jobset=False),
    }
    return [service, job]


def render_jobset(opts: RenderOptions) -> list[Manifest]:
    """A JobSet with one replicatedJob of one Indexed Job holding every node.

    Raises ConfigError where the JobSet webhook would refuse the names. The JobSet states the
    oldest JobSet controller it is for in an annotation: an older one prunes the failure
    rules' message patterns (see `supervisor.k8s.rules` for why that then fails safe).
    """
    check_jobset_names(opts)
    metadata = _metadata(opts, opts.name, queued=True)
    metadata["annotations"] = {**dict(opts.annotations), REQUIRES_JOBSET_ANNOTATION: MIN_JOBSET}
    spec: dict[str, Any] = {}
    if opts.queue is not None:
        spec["suspend"] = True  # Kueue admits a JobSet by unsuspending it
    jobset: Manifest = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": metadata,
        "spec": {
            **spec,
            "network": {
                "enableDNSHostnames": True,
                "subdomain": opts.name,
                "publishNotReadyAddresses": True,
            },
            "failurePolicy": rules.jobset_failure_policy(
                max_restarts=opts.max_restarts,
                training_failed_fails_job=opts.training_failed_fails_job,
            ),
            "replicatedJobs": [
                {
                    "name": REPLICATED_JOB,
                    "replicas": 1,
                    "template": {"spec": _job_spec(opts, opts.name, jobset=True)},
                }
            ],
        },
    }
    return [jobset]


def _quoting_dumper() -> type:
    """A SafeDumper that quotes every string a YAML 1.1 *or* YAML 1.2 reader would take for
    something else.

    PyYAML resolves plain scalars by YAML 1.1, so it leaves `3e-4`, `1e3` and `0o17` bare:
    strings to it, but numbers to YAML 1.2's core schema and to Go's sigs.k8s.io/yaml, which
    kubectl and the API server read manifests with (`args` is `[]string`, so the Job is then
    rejected); Go's reader also takes a bare `y` or `n` for a boolean. Teaching the dumper
    those forms as implicit numbers and booleans makes its emitter quote any string that
    looks like one, exactly as it already quotes `yes` or `1_000`.
    """
    import re

    import yaml  # runtime dependency; imported here so `supervise` starts without it

    class Dumper(yaml.SafeDumper):
        pass

    digits = list("-+0123456789")
    Dumper.add_implicit_resolver(
        "tag:yaml.org,2002:int",
        # YAML 1.2 core ints, and Go's strconv base-0 forms (0o17, 0b101, 1_000, 0x_10).
        re.compile(r"^[-+]?(0[oO][0-7_]+|0[xX][0-9a-fA-F_]+|0[bB][01_]+|[0-9][0-9_]*)$"),
        digits,
    )
    Dumper.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$"
            r"|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"
        ),
        [*digits, "."],
    )
    # YAML 1.1's one-letter booleans, which Go's reader keeps and PyYAML's resolver lacks.
    Dumper.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^[yYnN]$"), list("yYnN"))
    return Dumper


def to_yaml(manifests: list[Manifest], header: str | None = None) -> str:
    """Multi-document YAML, keys in the order rendered; `header` becomes leading comments.

    Every string reads back as the same string under YAML 1.1 and 1.2 (`_quoting_dumper`).
    """
    import yaml

    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    body = yaml.dump_all(
        manifests,
        Dumper=_quoting_dumper(),
        sort_keys=False,
        default_flow_style=None,
        width=4096,
    )
    return "\n".join([*lines, body]) if lines else body
