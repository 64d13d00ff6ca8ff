"""What a rendered manifest is made from: frozen, validated options and shared names.

`RenderOptions` is validated in `__post_init__` by raising `ConfigError` with a one-line fix;
nothing is silently rewritten. The names below are a contract between the manifests
(`supervisor.k8s.render`) and the code that reads them inside the pod
(`supervisor.k8s.launch`, the CLI): change one side and the other breaks, which the tests
in tests/k8s catch.

Pure: no I/O, safe on any thread.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from supervisor.core.errors import ConfigError
from supervisor.core.exitcodes import ExitCode

# The container every exit-code rule names. podFailurePolicy's `containerName` keeps a
# sidecar's or init container's exit code from being read as a training verdict.
CONTAINER = "trainer"
# The one replicatedJob of a rendered JobSet.
REPLICATED_JOB = "node"
# The annotation/label keys JobSet puts on every pod (jobset api/jobset/v1alpha2
# jobset_types.go); the rendered pod template passes them in through the downward API.
JOBSET_NAME_KEY = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_NAME_KEY = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX_KEY = "jobset.sigs.k8s.io/job-index"
RESTART_ATTEMPT_KEY = "jobset.sigs.k8s.io/restart-attempt"
# Set by the Job controller on every pod of a Job (batch/v1, Kubernetes >= 1.27).
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

# Environment the rendered pod template sets; `supervisor.k8s.launch` reads it.
ENV_NNODES = "SUPERVISE_NNODES"
ENV_SUBDOMAIN = "SUPERVISE_SUBDOMAIN"
ENV_MASTER_PORT = "SUPERVISE_MASTER_PORT"
ENV_METRICS_PORT = "SUPERVISE_METRICS_PORT"
ENV_PODS_PER_JOB = "SUPERVISE_PODS_PER_JOB"
ENV_CHECKPOINT_DIR = "SUPERVISE_CHECKPOINT_DIR"
ENV_GRACE_PERIOD = "SUPERVISE_GRACE_PERIOD"
ENV_POD_NAME = "SUPERVISE_POD_NAME"
ENV_POD_NAMESPACE = "SUPERVISE_POD_NAMESPACE"
ENV_POD_UID = "SUPERVISE_POD_UID"
ENV_NODE_NAME = "SUPERVISE_NODE_NAME"
ENV_RESTART_ATTEMPT = "SUPERVISE_RESTART_ATTEMPT"
# JobSet facts, passed in from the pod's labels (JobSet itself sets no environment).
ENV_JOBSET_NAME = "JOBSET_NAME"
ENV_REPLICATED_JOB_NAME = "REPLICATED_JOB_NAME"
ENV_JOB_INDEX = "JOB_INDEX"
# Set by the Job controller in every container of an Indexed Job.
ENV_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"

DEFAULT_MASTER_PORT = 29500  # torchrun's default (torch/distributed/run.py)
# The supervisor's default --grace-period: what the training gets between SIGTERM and SIGKILL.
DEFAULT_GRACE_PERIOD = 25.0
# What supervise needs after the child's grace: kill the tree, drain pipes, write the
# termination message, before the kubelet's SIGKILL.
DEFAULT_SHUTDOWN_MARGIN = 5.0
DEFAULT_BACKOFF_LIMIT = 6  # the Job API's own default (batch/v1 JobSpec.backoffLimit)
DEFAULT_MAX_RESTARTS = 3

# The oldest Kubernetes the manifests are for: podFailurePolicy went GA in 1.31.
MIN_KUBERNETES = (1, 31)
# Container restartPolicyRules (KEP-5307): alpha behind a feature gate in 1.34, where the API
# server drops the field silently; beta and on by default from 1.35.
IN_PLACE_KUBERNETES = (1, 35)
# JobSet's onJobFailureMessagePatterns arrived in v0.10.0, but that release's Helm chart
# shipped a CRD without it (fixed in v0.10.1); an older CRD prunes the field silently.
MIN_JOBSET = "v0.10.1"
# Stated on every rendered JobSet, so whoever applies it can check their controller.
REQUIRES_JOBSET_ANNOTATION = "supervise.dev/requires-jobset"
# Kueue admits a workload whose object carries this label (kueue.x-k8s.io/v1beta1).
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# The 5-character random suffix the Job controller gives each pod name (generateName).
POD_NAME_SUFFIX = "-abcde"

# RFC 1123 label: a namespace.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# RFC 1035 label: a Service name, and a JobSet's name and its pods' (a leading letter).
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# RFC 1123 subdomain: a PriorityClass name, a scheduler name, a label key's prefix.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# The name part of a label or annotation key, and a label value (apimachinery validation).
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# A Kubernetes resource quantity such as 16Gi, 512M or 500m (apimachinery resource.Quantity).
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _positive(flag: str, value: int, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{flag} must be an integer >= {minimum}, got {value!r}")


def _quantity(flag: str, value: str | None) -> None:
    if value is not None and not _QUANTITY.match(value):
        raise ConfigError(f"{flag} {value!r} is not a quantity such as 8, 500m, 16Gi or 512M")


def _key(flag: str, key: str) -> None:
    """A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name."""
    prefix, _, name = key.rpartition("/")
    if (
        (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)))
        or len(name) > 63
        or not _QUALIFIED_NAME.match(name)
    ):
        raise ConfigError(
            f"{flag}: {key!r} is not a key: [prefix/]name, the name up to 63 letters, digits, "
            "'-', '_' or '.' starting and ending alphanumeric"
        )


def _label_value(flag: str, key: str, value: str) -> None:
    if value and (len(value) > 63 or not _QUALIFIED_NAME.match(value)):
        raise ConfigError(
            f"{flag}: the value of {key!r}, {value!r}, is not a label value: up to 63 letters, "
            "digits, '-', '_' or '.', starting and ending alphanumeric"
        )


def parse_version(text: str) -> tuple[int, int]:
    """`1.34` or `v1.34.2` as (1, 34); raises ConfigError on anything else."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(\.\d+)?", text.strip())
    if match is None:
        raise ConfigError(f"--kubernetes-version {text!r} is not a version such as 1.34")
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class Toleration:
    """One pod toleration, written as kubectl taint writes a taint: KEY[=VALUE][:EFFECT]."""

    key: str
    value: str | None = None
    effect: str | None = None

    @classmethod
    def parse(cls, text: str) -> Toleration:
        """`nvidia.com/gpu:NoSchedule`, `pool=training`, ...; raises ConfigError."""
        rest, _, effect = text.partition(":")
        key, eq, value = rest.partition("=")
        if effect and effect not in _TAINT_EFFECTS:
            raise ConfigError(
                f"--toleration {text!r}: the effect must be one of {', '.join(_TAINT_EFFECTS)}"
            )
        _key("--toleration", key)
        if eq:
            _label_value("--toleration", key, value)
        return cls(key, value if eq else None, effect or None)

    def manifest(self) -> dict[str, str]:
        """The pod spec's toleration: Equal on a value, else Exists; every effect unless named."""
        toleration = {"key": self.key}
        if self.value is None:
            toleration["operator"] = "Exists"
        else:
            toleration["operator"] = "Equal"
            toleration["value"] = self.value
        if self.effect is not None:
            toleration["effect"] = self.effect
        return toleration


def parse_pairs(flag: str, items: tuple[str, ...], *, label: bool) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` items as pairs, checked as label (or annotation) keys and values."""
    pairs: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"{flag} {item!r} is not KEY=VALUE")
        _key(flag, key)
        if label:
            _label_value(flag, key, value)
        if key in pairs:
            raise ConfigError(f"{flag} sets {key!r} twice")
        pairs[key] = value
    return tuple(pairs.items())


@dataclass(frozen=True)
class RenderOptions:
    """Everything `supervise k8s job|jobset` needs. Invalid combinations raise ConfigError.

    `grace_period` is the supervisor's --grace-period (the training's time to checkpoint
    and exit after SIGTERM); `shutdown_margin` is added on top for supervise itself, and the
    sum, rounded up, becomes `terminationGracePeriodSeconds`. `restart_in_place` lists the
    retriable classes the kubelet restarts in place (container `restartPolicyRules`, beta
    and on by default in Kubernetes 1.35, KEP-5307). `kubernetes_version`, when given, is
    the oldest cluster the manifest must work on: a field that version would drop is
    refused rather than rendered. Labels, annotations and node selectors are `(key, value)`
    pairs, already checked by `parse_pairs`.
    """

    name: str
    image: str
    command: tuple[str, ...]
    nnodes: int = 1
    nproc_per_node: int | None = None
    gpus_per_node: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    namespace: str | None = None
    checkpoint_dir: str | None = None
    grace_period: float = DEFAULT_GRACE_PERIOD
    shutdown_margin: float = DEFAULT_SHUTDOWN_MARGIN
    training_failed_fails_job: bool = False
    restart_in_place: tuple[ExitCode, ...] = ()
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT
    backoff_limit_per_index: int | None = None
    max_failed_indexes: int | None = None
    max_restarts: int = DEFAULT_MAX_RESTARTS
    master_port: int = DEFAULT_MASTER_PORT
    metrics_port: int | None = None  # supervise's /metrics: a container port, annotations
    shm_size: str | None = None
    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    run_as_user: int | None = None
    allow_root: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    priority_class: str | None = None
    scheduler_name: str | None = None
    queue: str | None = None
    active_deadline: int | None = None
    kubernetes_version: str | None = None

    def __post_init__(self) -> None:
        if not _DNS_1035.match(self.name) or len(self.name) > 63:
            raise ConfigError(
                f"--name {self.name!r} is not a DNS-1035 label (it names the Service): use "
                "lower-case letters, digits and '-', starting with a letter and ending with a "
                "letter or digit"
            )
        if not self.image or any(ch.isspace() for ch in self.image):
            raise ConfigError(
                f"--image {self.image!r} is not an image reference: pass the image that holds "
                "supervise and the training code (or set SUPERVISE_K8S_IMAGE)"
            )
        if not self.command or not self.command[0]:
            raise ConfigError(
                "no training command: put it after `--`, e.g. `supervise k8s job ... -- train.py`"
            )
        _positive("--nnodes", self.nnodes)
        if self.nproc_per_node is not None:
            _positive("--nproc-per-node", self.nproc_per_node)
        _positive("--gpus-per-node", self.gpus_per_node, minimum=0)
        if self.namespace is not None and not _DNS_LABEL.match(self.namespace):
            raise ConfigError(f"--namespace {self.namespace!r} is not a DNS label")
        if self.checkpoint_dir is not None and not self.checkpoint_dir.strip():
            raise ConfigError("--checkpoint-dir is empty: give a path or URL, or leave it out")
        for flag, seconds in (
            ("--grace-period", self.grace_period),
            ("--shutdown-margin", self.shutdown_margin),
        ):
            if not math.isfinite(seconds) or seconds < 0:
                raise ConfigError(f"{flag} must be a finite number of seconds >= 0, got {seconds}")
        self._check_restart_in_place()
        _positive("--backoff-limit", self.backoff_limit, minimum=0)
        if self.backoff_limit_per_index is not None:
            _positive("--backoff-limit-per-index", self.backoff_limit_per_index, minimum=0)
        if self.max_failed_indexes is not None:
            if self.backoff_limit_per_index is None:
                raise ConfigError(
                    "--max-failed-indexes needs --backoff-limit-per-index (the Job API "
                    "counts failed indexes only then)"
                )
            _positive("--max-failed-indexes", self.max_failed_indexes, minimum=0)
            if self.max_failed_indexes > self.nnodes:
                raise ConfigError(
                    f"--max-failed-indexes {self.max_failed_indexes} is more than the "
                    f"{self.nnodes} indexes (--nnodes)"
                )
        _positive("--max-restarts", self.max_restarts, minimum=0)
        if not 1 <= self.master_port <= 65535 or isinstance(self.master_port, bool):
            raise ConfigError(f"--master-port must be in 1..65535, got {self.master_port}")
        if self.metrics_port is not None:
            if not 1 <= self.metrics_port <= 65535 or isinstance(self.metrics_port, bool):
                raise ConfigError(f"--metrics-port must be in 1..65535, got {self.metrics_port}")
            if self.metrics_port == self.master_port:
                raise ConfigError(
                    f"--metrics-port {self.metrics_port} is the torchrun rendezvous port "
                    "(--master-port): pick another"
                )
        for flag, value in (
            ("--shm-size", self.shm_size),
            ("--cpu", self.cpu),
            ("--memory", self.memory),
            ("--cpu-limit", self.cpu_limit),
            ("--memory-limit", self.memory_limit),
        ):
            _quantity(flag, value)
        if self.run_as_user is not None:
            _positive("--run-as-user", self.run_as_user, minimum=0)
            if self.run_as_user == 0 and not self.allow_root:
                raise ConfigError("--run-as-user 0 is root: pass --allow-root too, or a UID > 0")
        for flag, value in (
            ("--priority-class", self.priority_class),
            ("--scheduler-name", self.scheduler_name),
        ):
            if value is not None and (len(value) > 253 or not _DNS_SUBDOMAIN.match(value)):
                raise ConfigError(f"{flag} {value!r} is not a DNS subdomain (lower-case, '-', '.')")
        if self.queue is not None:
            _label_value("--queue", KUEUE_QUEUE_LABEL, self.queue)
            if not self.queue:
                raise ConfigError("--queue is empty: name a Kueue LocalQueue, or leave it out")
        if self.active_deadline is not None:
            _positive("--active-deadline", self.active_deadline)
        if self.kubernetes_version is not None:
            version = parse_version(self.kubernetes_version)
            if version < MIN_KUBERNETES:
                raise ConfigError(
                    f"--kubernetes-version {self.kubernetes_version}: the manifests need "
                    "Kubernetes 1.31 or newer (podFailurePolicy is GA from 1.31)"
                )
            if self.restart_in_place and version < IN_PLACE_KUBERNETES:
                raise ConfigError(
                    f"--restart-in-place needs Kubernetes 1.35 or newer; on "
                    f"{self.kubernetes_version} the API server drops container "
                    "restartPolicyRules silently (alpha, behind the ContainerRestartRules gate, "
                    "in 1.34): leave --restart-in-place out"
                )
        # A pod's hostname is <job>-<index>, a DNS label of at most 63 characters.
        longest = f"{self.name}-{self.nnodes - 1}"
        if len(longest) > 63:
            raise ConfigError(
                f"--name {self.name!r} is too long: pod hostnames such as {longest!r} "
                "must fit in 63 characters"
            )

    def _check_restart_in_place(self) -> None:
        for code in self.restart_in_place:
            if not code.retriable:
                raise ConfigError(
                    f"--restart-in-place {code.name} ({code.code}) is not retriable: only "
                    + ", ".join(f"{c.name} ({c.code})" for c in ExitCode if c.retriable)
                    + " may restart in place (a failed GPU or a preemption needs a new pod)"
                )
            if code is ExitCode.TRAINING_FAILED and self.training_failed_fails_job:
                raise ConfigError(
                    "--restart-in-place TRAINING_FAILED contradicts --training-failed-fails-job"
                )
        if len(set(self.restart_in_place)) != len(self.restart_in_place):
            raise ConfigError("--restart-in-place lists a class twice")

    @property
    def termination_grace_seconds(self) -> int:
        """The pod's terminationGracePeriodSeconds: the child's grace plus supervise's margin."""
        return math.ceil(self.grace_period + self.shutdown_margin)

    @property
    def effective_max_failed_indexes(self) -> int | None:
        """maxFailedIndexes: with a per-index limit, 0 unless given, so that one exhausted
        index fails the Job (a gang cannot train without one of its nodes)."""
        if self.backoff_limit_per_index is None:
            return None
        return 0 if self.max_failed_indexes is None else self.max_failed_indexes


def check_jobset_names(opts: RenderOptions) -> None:
    """The JobSet webhook's name rules: the longest Job name (<jobset>-<rjob>-<jobIndex>) and
    the longest pod name with the Job controller's random suffix
    (<jobset>-<rjob>-<jobIndex>-<podIndex>-xxxxx) must be DNS-1035 labels (jobset
    pkg/webhooks/jobset_webhook.go, ValidateCreate). Raises ConfigError."""
    longest = f"{opts.name}-{REPLICATED_JOB}-0-{opts.nnodes - 1}{POD_NAME_SUFFIX}"
    if len(longest) > 63:
        room = 63 - (len(longest) - len(opts.name))
        raise ConfigError(
            f"--name {opts.name!r} is too long for a JobSet of {opts.nnodes} nodes: its pod "
            f"names such as {longest!r} (with the Job controller's 5-character suffix) must "
            f"fit in 63 characters, so the name may have at most {room}"
        )
