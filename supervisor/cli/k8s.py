"""`supervise k8s job|jobset [OPTIONS] -- CMD...` and `supervise explain CODE`.

The commands print to stdout and touch nothing else. Bad input raises `ConfigError`, which
`supervisor.cli.main` turns into one line on stderr and exit 81. Heavy imports (the
renderer, pyyaml) happen inside the commands so `supervise` itself starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from supervisor.cli.flags import PORT, SECONDS, Arg, Flag, Range, command

if TYPE_CHECKING:
    from supervisor.k8s.spec import RenderOptions

_HEADER = (
    "Rendered by `supervise k8s {kind}` from the exit-code contract. Do not edit by hand:\n"
    "change the flags and re-render (launch/regenerate.sh does it for the examples here)."
)

# Kubernetes stores these counts as int32.
INT32 = Range(0, 2**31 - 1)

K8S = "K8S"  # the scope of the twins of flags that only describe manifests

# Requests that keep a training pod out of the BestEffort QoS class, which the kubelet evicts
# first under node pressure; GPUs do not count towards a pod's QoS, only cpu and memory do.
DEFAULT_CPU = "1"
DEFAULT_MEMORY = "4Gi"

CMD = Arg(
    "command", list[str] | None, "The training command, after `--`.", default=None, metavar="CMD"
)

# What `k8s job` and `k8s jobset` both take. Every twin is in the K8S scope, those of the
# flags named like the run command's (--nnodes, --checkpoint-dir, --grace-period, ...)
# included: a manifest is rendered from its flags, never from the SUPERVISE_* environment a
# shell may hold for a local run.
MANIFEST = (
    CMD,
    Flag(
        "name",
        str,
        "train",
        "Name of the Job/JobSet and its Service (a DNS label).",
        scope=K8S,
    ),
    Flag("image", str, "", "Container image with supervise and the training code.", scope=K8S),
    Flag(
        "namespace",
        str | None,
        None,
        "Namespace of the Job/JobSet and its Service. Default: none, so kubectl's context decides.",
        scope=K8S,
    ),
    Flag(
        "nnodes",
        int,
        1,
        "Pods (nodes) in the gang.",
        scope=K8S,
        range=Range(1, 65_536),
    ),
    Flag(
        "nproc-per-node",
        int | None,
        None,
        "Launch CMD (a script) through torchrun with this many ranks per pod. Without it, "
        "CMD runs as is.",
        scope=K8S,
        range=Range(1, 1024),
    ),
    Flag(
        "gpus-per-node",
        int | None,
        None,
        "GPUs requested per pod. Default: --nproc-per-node, else 0.",
        scope=K8S,
        range=Range(0, 1024),
    ),
    Flag(
        "gpu-resource",
        str,
        "nvidia.com/gpu",
        "The extended resource the GPUs are requested as.",
        scope=K8S,
    ),
    Flag(
        "checkpoint-dir",
        str | None,
        None,
        "Checkpoint URL or path, passed to the pod as SUPERVISE_CHECKPOINT_DIR.",
        scope=K8S,
    ),
    Flag(
        "grace-period",
        float,
        25.0,
        "Seconds training gets to checkpoint and exit after SIGTERM.",
        scope=K8S,
        range=SECONDS,
    ),
    Flag(
        "shutdown-margin",
        float,
        5.0,
        "Seconds added for supervise itself; terminationGracePeriodSeconds is "
        "ceil(grace period + margin).",
        scope=K8S,
        range=Range(0, 3600),
    ),
    Flag(
        "training-failed-fails-job",
        bool,
        False,
        "Make TRAINING_FAILED (80) fail the Job/JobSet instead of being retried.",
        scope=K8S,
        off="training-failed-counts",
    ),
    Flag(
        "restart-in-place",
        list[str] | None,
        None,
        "A retriable class (name or code) the kubelet restarts in place, via container "
        "restartPolicyRules (Kubernetes 1.35+, beta). Repeatable.",
        scope=K8S,
    ),
    Flag(
        "master-port",
        int,
        29500,
        "Port of the torchrun rendezvous on the master pod.",
        scope=K8S,
        range=PORT,
    ),
    Flag(
        "metrics-port",
        int | None,
        None,
        "Port of supervise's Prometheus /metrics in each pod: passed as "
        "SUPERVISE_METRICS_PORT, declared as the container port `metrics`, and announced "
        "by the prometheus.io/scrape, /port and /path pod annotations.",
        shown="off",
        scope=K8S,
        range=PORT,
    ),
    Flag(
        "shm-size",
        str | None,
        None,
        "sizeLimit of the memory-backed /dev/shm (e.g. 16Gi); it counts against the pod's "
        "memory. Default: no limit.",
        scope=K8S,
    ),
    Flag(
        "cpu",
        str | None,
        DEFAULT_CPU,
        "CPU request of the trainer container; '' for none. A request keeps the pod out of "
        "the BestEffort class, which is evicted first: set it to what the training needs.",
        scope=K8S,
    ),
    Flag(
        "memory",
        str | None,
        DEFAULT_MEMORY,
        "Memory request of the trainer container (e.g. 200Gi); '' for none.",
        scope=K8S,
    ),
    Flag("cpu-limit", str | None, None, "CPU limit. Default: none.", scope=K8S),
    Flag(
        "memory-limit",
        str | None,
        None,
        "Memory limit; with --cpu-limit equal to --cpu and this equal to --memory, the pod "
        "is Guaranteed. Default: none.",
        scope=K8S,
    ),
    Flag(
        "run-as-user",
        int | None,
        None,
        "UID the pod runs as. Default: the image's USER, which must not be root.",
        scope=K8S,
        range=Range(0, 2**31 - 1),
    ),
    Flag(
        "allow-root",
        bool,
        False,
        "Drop runAsNonRoot, for images that run as root (the pod then fails Pod Security "
        '"restricted").',
        scope=K8S,
    ),
    Flag(
        "label",
        list[str] | None,
        None,
        "KEY=VALUE label on the Job/JobSet and its pods. Repeatable.",
        scope=K8S,
    ),
    Flag(
        "annotation",
        list[str] | None,
        None,
        "KEY=VALUE annotation on the Job/JobSet and its pods. Repeatable.",
        scope=K8S,
    ),
    Flag(
        "node-selector",
        list[str] | None,
        None,
        "KEY=VALUE node label the pods must land on. Repeatable.",
        scope=K8S,
    ),
    Flag(
        "toleration",
        list[str] | None,
        None,
        "A taint the pods tolerate, as kubectl taint writes it: KEY[=VALUE][:EFFECT]. Repeatable.",
        scope=K8S,
    ),
    Flag("priority-class", str | None, None, "priorityClassName of the pods.", scope=K8S),
    Flag("scheduler-name", str | None, None, "schedulerName of the pods.", scope=K8S),
    Flag(
        "queue",
        str | None,
        None,
        "Kueue LocalQueue: labels the Job/JobSet kueue.x-k8s.io/queue-name and creates it "
        "suspended, for Kueue to admit.",
        scope=K8S,
    ),
    Flag(
        "active-deadline",
        int | None,
        None,
        "activeDeadlineSeconds of each Job: seconds it may run before it is failed.",
        scope=K8S,
        range=Range(1, 2**63 - 1),
    ),
    Flag(
        "kubernetes-version",
        str | None,
        None,
        "The oldest Kubernetes the manifest must work on (e.g. 1.34): a feature it would "
        "drop silently is refused. Default: 1.35 or newer.",
        scope=K8S,
    ),
)
JOB = (
    Flag(
        "backoff-limit",
        int,
        6,
        "Counted pod failures before the Job fails.",
        scope=K8S,
        range=INT32,
    ),
    Flag(
        "backoff-limit-per-index",
        int | None,
        None,
        "Count failures per index instead (GA in Kubernetes 1.33).",
        scope=K8S,
        range=INT32,
    ),
    Flag(
        "max-failed-indexes",
        int | None,
        None,
        "With --backoff-limit-per-index: failed indexes the Job tolerates.",
        shown="0: one exhausted index fails the Job",
        scope=K8S,
        range=INT32,
    ),
)
JOBSET = (
    Flag(
        "max-restarts",
        int,
        3,
        "JobSet restarts charged by retriable classes before it fails.",
        scope=K8S,
        range=INT32,
    ),
)


def _options(
    command: list[str] | None,
    restart_in_place: list[str] | None,
    gpus_per_node: int | None,
    label: list[str] | None,
    annotation: list[str] | None,
    node_selector: list[str] | None,
    toleration: list[str] | None,
    **fields: object,
) -> RenderOptions:
    """RenderOptions from the parsed flags; RenderOptions raises ConfigError on bad values."""
    from supervisor.core.errors import ConfigError
    from supervisor.core.exitcodes import ExitCode
    from supervisor.k8s.explain import resolve_code
    from supervisor.k8s.spec import RenderOptions, Toleration, parse_pairs

    try:
        in_place = tuple(ExitCode.from_code(resolve_code(text)) for text in restart_in_place or ())
    except ConfigError as err:
        raise ConfigError(f"--restart-in-place: {err}") from None
    if gpus_per_node is None:  # one GPU per rank unless told otherwise
        gpus_per_node = fields["nproc_per_node"] or 0  # type: ignore[assignment]
    for quantity in ("cpu", "memory", "cpu_limit", "memory_limit"):
        fields[quantity] = fields[quantity] or None  # '' asks for none
    return RenderOptions(
        command=tuple(command or ()),
        restart_in_place=in_place,
        gpus_per_node=gpus_per_node,
        labels=parse_pairs("--label", tuple(label or ()), label=True),
        annotations=parse_pairs("--annotation", tuple(annotation or ()), label=False),
        node_selector=parse_pairs("--node-selector", tuple(node_selector or ()), label=True),
        tolerations=tuple(Toleration.parse(text) for text in toleration or ()),
        **fields,  # type: ignore[arg-type]
    )


@command(*MANIFEST, *JOB)
def job_command(**given: Any) -> None:
    """Print an Indexed Job and its headless Service as YAML."""
    opts = _options(**given)
    from supervisor.k8s.render import render_job, to_yaml

    print(to_yaml(render_job(opts), _HEADER.format(kind="job")), end="")


@command(*MANIFEST, *JOBSET)
def jobset_command(**given: Any) -> None:
    """Print a JobSet (jobset.x-k8s.io/v1alpha2) as YAML."""
    opts = _options(**given)
    from supervisor.k8s.render import render_jobset, to_yaml

    print(to_yaml(render_jobset(opts), _HEADER.format(kind="jobset")), end="")


@command(Arg("code", str, "An exit code (0-255) or a class name."))
def explain_command(code: str) -> None:
    """Say what an exit code means, what Kubernetes does with it, and what to look at next."""
    from supervisor.k8s.explain import explain, resolve_code

    print(explain(resolve_code(code)), end="")


def register(app: typer.Typer) -> None:
    """Add `k8s job`, `k8s jobset` and `explain` to the `supervise` app."""
    k8s = typer.Typer(
        help="Render Kubernetes manifests from the exit-code contract.", no_args_is_help=True
    )
    k8s.command("job")(job_command)
    k8s.command("jobset")(jobset_command)
    app.add_typer(k8s, name="k8s")
    app.command("explain")(explain_command)
