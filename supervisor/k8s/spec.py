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

# RFC 1123 label, the rule for pod hostnames and Service names.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A Kubernetes resource quantity such as 16Gi or 512M (apimachinery resource.Quantity).
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def _positive(flag: str, value: int, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{flag} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class RenderOptions:
    """Everything `supervise k8s job|jobset` needs. Invalid combinations raise ConfigError.

    `grace_period` is the supervisor's --grace-period (the training's time to checkpoint
    and exit after SIGTERM); `shutdown_margin` is added on top for supervise itself, and the
    sum, rounded up, becomes `terminationGracePeriodSeconds`. `restart_in_place` lists the
    retriable classes the kubelet restarts in place (container `restartPolicyRules`, beta
    and on by default in Kubernetes 1.35, KEP-5307).
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
    max_restarts: int = DEFAULT_MAX_RESTARTS
    master_port: int = DEFAULT_MASTER_PORT
    shm_size: str | None = None

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.name):
            raise ConfigError(
                f"--name {self.name!r} is not a DNS label: use lower-case letters, digits "
                "and '-', starting and ending with a letter or digit"
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
        _positive("--backoff-limit", self.backoff_limit, minimum=0)
        if self.backoff_limit_per_index is not None:
            _positive("--backoff-limit-per-index", self.backoff_limit_per_index, minimum=0)
        _positive("--max-restarts", self.max_restarts, minimum=0)
        if not 1 <= self.master_port <= 65535 or isinstance(self.master_port, bool):
            raise ConfigError(f"--master-port must be in 1..65535, got {self.master_port}")
        if self.shm_size is not None and not _QUANTITY.match(self.shm_size):
            raise ConfigError(f"--shm-size {self.shm_size!r} is not a quantity such as 16Gi")
        # Pod hostnames are DNS labels too: <job>-<index> for an Indexed Job and
        # <jobset>-<replicatedJob>-<jobIndex>-<podIndex> for a JobSet.
        longest = f"{self.name}-{REPLICATED_JOB}-0-{self.nnodes - 1}"
        if len(longest) > 63:
            raise ConfigError(
                f"--name {self.name!r} is too long: pod hostnames such as {longest!r} "
                "must fit in 63 characters"
            )

    @property
    def termination_grace_seconds(self) -> int:
        """The pod's terminationGracePeriodSeconds: the child's grace plus supervise's margin."""
        return math.ceil(self.grace_period + self.shutdown_margin)
