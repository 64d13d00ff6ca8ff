"""`supervise k8s job|jobset [OPTIONS] -- CMD...` and `supervise explain CODE`.

The commands print to stdout and touch nothing else. Bad input raises `ConfigError`, which
`supervisor.cli.main` turns into one line on stderr and exit 81. Heavy imports (the
renderer, pyyaml) happen inside the commands so `supervise` itself starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from supervisor.k8s.spec import RenderOptions

_HEADER = (
    "Rendered by `supervise k8s {kind}` from the exit-code contract. Do not edit by hand:\n"
    "change the flags and re-render (launch/regenerate.sh does it for the examples here)."
)

Name = Annotated[
    str,
    typer.Option(
        "--name",
        envvar="SUPERVISE_K8S_NAME",
        show_envvar=True,
        help="Name of the Job/JobSet and its Service (a DNS label).",
    ),
]
Image = Annotated[
    str,
    typer.Option(
        "--image",
        envvar="SUPERVISE_K8S_IMAGE",
        show_envvar=True,
        help="Container image with supervise and the training code.",
    ),
]
Namespace = Annotated[
    str | None,
    typer.Option("--namespace", envvar="SUPERVISE_K8S_NAMESPACE", show_envvar=True),
]
Nnodes = Annotated[
    int,
    typer.Option(
        "--nnodes", envvar="SUPERVISE_NNODES", show_envvar=True, help="Pods (nodes) in the gang."
    ),
]
NprocPerNode = Annotated[
    int | None,
    typer.Option(
        "--nproc-per-node",
        envvar="SUPERVISE_NPROC_PER_NODE",
        show_envvar=True,
        help="Launch CMD (a script) through torchrun with this many ranks per pod. "
        "Without it, CMD runs as is.",
    ),
]
GpusPerNode = Annotated[
    int | None,
    typer.Option(
        "--gpus-per-node",
        envvar="SUPERVISE_K8S_GPUS_PER_NODE",
        show_envvar=True,
        help="GPUs requested per pod. Default: --nproc-per-node, else 0.",
    ),
]
GpuResource = Annotated[
    str,
    typer.Option("--gpu-resource", envvar="SUPERVISE_K8S_GPU_RESOURCE", show_envvar=True),
]
CheckpointDir = Annotated[
    str | None,
    typer.Option(
        "--checkpoint-dir",
        envvar="SUPERVISE_CHECKPOINT_DIR",
        show_envvar=True,
        help="Checkpoint URL or path, passed to the pod as SUPERVISE_CHECKPOINT_DIR.",
    ),
]
GracePeriod = Annotated[
    float,
    typer.Option(
        "--grace-period",
        envvar="SUPERVISE_GRACE_PERIOD",
        show_envvar=True,
        help="Seconds training gets to checkpoint and exit after SIGTERM.",
    ),
]
ShutdownMargin = Annotated[
    float,
    typer.Option(
        "--shutdown-margin",
        envvar="SUPERVISE_K8S_SHUTDOWN_MARGIN",
        show_envvar=True,
        help="Seconds added for supervise itself; terminationGracePeriodSeconds is "
        "ceil(grace period + margin).",
    ),
]
TrainingFailedFailsJob = Annotated[
    bool,
    typer.Option(
        "--training-failed-fails-job/--training-failed-counts",
        envvar="SUPERVISE_K8S_TRAINING_FAILED_FAILS_JOB",
        show_envvar=True,
        help="Make TRAINING_FAILED (80) fail the Job/JobSet instead of being retried.",
    ),
]
RestartInPlace = Annotated[
    list[str] | None,
    typer.Option(
        "--restart-in-place",
        envvar="SUPERVISE_K8S_RESTART_IN_PLACE",
        show_envvar=True,
        help="A retriable class (name or code) the kubelet restarts in place, via container "
        "restartPolicyRules (Kubernetes 1.35+, beta). Repeatable.",
    ),
]
MasterPort = Annotated[
    int, typer.Option("--master-port", envvar="SUPERVISE_MASTER_PORT", show_envvar=True)
]
ShmSize = Annotated[
    str | None,
    typer.Option(
        "--shm-size",
        envvar="SUPERVISE_K8S_SHM_SIZE",
        show_envvar=True,
        help="sizeLimit of the memory-backed /dev/shm (e.g. 16Gi). Default: no limit.",
    ),
]
Command = Annotated[
    list[str] | None,
    typer.Argument(metavar="CMD", help="The training command, after `--`.", show_default=False),
]


def _options(
    command: list[str] | None,
    restart_in_place: list[str] | None,
    gpus_per_node: int | None,
    **fields: object,
) -> RenderOptions:
    """RenderOptions from the parsed flags; RenderOptions raises ConfigError on bad values."""
    from supervisor.core.exitcodes import ExitCode
    from supervisor.k8s.explain import resolve_code
    from supervisor.k8s.spec import RenderOptions

    in_place = tuple(ExitCode.from_code(resolve_code(text)) for text in restart_in_place or ())
    if gpus_per_node is None:  # one GPU per rank unless told otherwise
        gpus_per_node = fields["nproc_per_node"] or 0  # type: ignore[assignment]
    return RenderOptions(
        command=tuple(command or ()),
        restart_in_place=in_place,
        gpus_per_node=gpus_per_node,
        **fields,  # type: ignore[arg-type]
    )


def job_command(
    command: Command = None,
    name: Name = "train",
    image: Image = "",
    namespace: Namespace = None,
    nnodes: Nnodes = 1,
    nproc_per_node: NprocPerNode = None,
    gpus_per_node: GpusPerNode = None,
    gpu_resource: GpuResource = "nvidia.com/gpu",
    checkpoint_dir: CheckpointDir = None,
    grace_period: GracePeriod = 25.0,
    shutdown_margin: ShutdownMargin = 5.0,
    training_failed_fails_job: TrainingFailedFailsJob = False,
    restart_in_place: RestartInPlace = None,
    backoff_limit: Annotated[
        int,
        typer.Option(
            "--backoff-limit",
            envvar="SUPERVISE_K8S_BACKOFF_LIMIT",
            show_envvar=True,
            help="Counted pod failures before the Job fails.",
        ),
    ] = 6,
    backoff_limit_per_index: Annotated[
        int | None,
        typer.Option(
            "--backoff-limit-per-index",
            envvar="SUPERVISE_K8S_BACKOFF_LIMIT_PER_INDEX",
            show_envvar=True,
            help="Count failures per index instead (GA in Kubernetes 1.33).",
        ),
    ] = None,
    master_port: MasterPort = 29500,
    shm_size: ShmSize = None,
) -> None:
    """Print an Indexed Job and its headless Service as YAML."""
    opts = _options(**locals())  # every parameter, before anything else is bound
    from supervisor.k8s.render import render_job, to_yaml

    print(to_yaml(render_job(opts), _HEADER.format(kind="job")), end="")


def jobset_command(
    command: Command = None,
    name: Name = "train",
    image: Image = "",
    namespace: Namespace = None,
    nnodes: Nnodes = 1,
    nproc_per_node: NprocPerNode = None,
    gpus_per_node: GpusPerNode = None,
    gpu_resource: GpuResource = "nvidia.com/gpu",
    checkpoint_dir: CheckpointDir = None,
    grace_period: GracePeriod = 25.0,
    shutdown_margin: ShutdownMargin = 5.0,
    training_failed_fails_job: TrainingFailedFailsJob = False,
    restart_in_place: RestartInPlace = None,
    max_restarts: Annotated[
        int,
        typer.Option(
            "--max-restarts",
            envvar="SUPERVISE_K8S_MAX_RESTARTS",
            show_envvar=True,
            help="JobSet restarts charged by retriable classes before it fails.",
        ),
    ] = 3,
    master_port: MasterPort = 29500,
    shm_size: ShmSize = None,
) -> None:
    """Print a JobSet (jobset.x-k8s.io/v1alpha2) as YAML."""
    opts = _options(**locals())  # every parameter, before anything else is bound
    from supervisor.k8s.render import render_jobset, to_yaml

    print(to_yaml(render_jobset(opts), _HEADER.format(kind="jobset")), end="")


def explain_command(
    code: Annotated[str, typer.Argument(help="An exit code (0-255) or a class name.")],
) -> None:
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
