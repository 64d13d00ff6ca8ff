"""`supervise [OPTIONS] -- CMD...`: the run command, its flags, and the run itself.

Each flag has a `SUPERVISE_*` environment twin, listed by `--help`. The flags only build
frozen option objects (validated by raising `ConfigError`); `supervise()` is the run,
step by step.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass

import typer

from supervisor import __version__
from supervisor.child_contract import ENV_CHECKPOINT_DIR
from supervisor.cli.doctor import FAKE_GPUS, GPU_CONFIG, NVML_TIMEOUT, REQUIRE_GPUS
from supervisor.core.errors import ConfigError
from supervisor.core.exitcodes import ExitCode
from supervisor.core.options import (
    DEFAULT_DEGRADED_DEADLINE,
    DEFAULT_FAILURE_GRACE,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_TERMINATION_LOG,
    Options,
)
from supervisor.gpu.watchdog import DEFAULT_POLL_INTERVAL as DEFAULT_GPU_POLL_INTERVAL
from supervisor.gpu.watchdog import GpuOptions
from supervisor.hang.options import DEFAULT_INIT_TIMEOUT, HangOptions, parse_phase_timeouts
from supervisor.outputs.eventlog import termination_message, write_termination_message
from supervisor.watch import steptime

EPILOG = (
    "Other commands: `supervise exit-codes` (the exit-code contract), "
    "`supervise doctor` (GPU health), `supervise ckpt` (checkpoints), "
    "`supervise k8s` (manifests), `supervise explain CODE`. "
    "Each has its own --help."
)


def _version(value: bool) -> None:
    if value:
        print(f"supervise {__version__}")
        raise typer.Exit()


@dataclass(frozen=True)
class Launch:
    """`--nproc-per-node` and the topology overrides, for a torchrun launch."""

    nproc_per_node: int
    nnodes: int | None
    node_rank: int | None
    master_addr: str | None
    master_port: int | None


def run_command(
    command: list[str] = typer.Argument(
        None,
        metavar="CMD",
        help="The training command and its arguments, after `--`.",
        show_default=False,
    ),
    grace_period: float = typer.Option(
        DEFAULT_GRACE_PERIOD,
        "--grace-period",
        envvar="SUPERVISE_GRACE_PERIOD",
        show_envvar=True,
        help="Seconds the child gets after SIGTERM before the whole tree is SIGKILLed. "
        "Keep it below the pod's terminationGracePeriodSeconds (30 s by default).",
    ),
    termination_log: str = typer.Option(
        DEFAULT_TERMINATION_LOG,
        "--termination-log",
        envvar="SUPERVISE_TERMINATION_LOG",
        show_envvar=True,
        help="Where the JSON termination message (≤ 4096 bytes) is written at exit.",
    ),
    event_log: str = typer.Option(
        "-",
        "--event-log",
        envvar="SUPERVISE_EVENT_LOG",
        show_envvar=True,
        help="File to append JSON-lines events to; `-` means stderr.",
    ),
    failure_grace: float = typer.Option(
        DEFAULT_FAILURE_GRACE,
        "--failure-grace-period",
        envvar="SUPERVISE_FAILURE_GRACE_PERIOD",
        show_envvar=True,
        help="Seconds the child gets after supervise stops it for a failure it found itself "
        "(a hang, a failed GPU) before the tree is SIGKILLed.",
    ),
    shutdown_timeout: float = typer.Option(
        DEFAULT_SHUTDOWN_TIMEOUT,
        "--shutdown-timeout",
        envvar="SUPERVISE_SHUTDOWN_TIMEOUT",
        show_envvar=True,
        help="Of the grace period, seconds kept for the trainer to exit after its checkpoint "
        "is committed; the checkpoint gets the rest.",
    ),
    degraded_deadline: float = typer.Option(
        DEFAULT_DEGRADED_DEADLINE,
        "--degraded-deadline",
        envvar="SUPERVISE_DEGRADED_DEADLINE",
        show_envvar=True,
        help="Seconds a trainer gets to commit the checkpoint a degraded GPU asks for.",
    ),
    max_restarts: int = typer.Option(
        0,
        "--max-restarts",
        envvar="SUPERVISE_MAX_RESTARTS",
        show_envvar=True,
        help="Restart the command in place, with backoff, up to this many times after a "
        "HANG or INFRA_FAILED; each attempt resumes from the latest checkpoint.",
    ),
    restart_on_training_failure: bool = typer.Option(
        False,
        "--restart-on-training-failure",
        envvar="SUPERVISE_RESTART_ON_TRAINING_FAILURE",
        show_envvar=True,
        help="Let --max-restarts also restart after TRAINING_FAILED.",
    ),
    step_time_ratio: float = typer.Option(
        steptime.DEFAULT_RATIO,
        "--step-time-ratio",
        envvar="SUPERVISE_STEP_TIME_RATIO",
        show_envvar=True,
        help="A rank is slow when its recent seconds per step exceed this multiple of its "
        "own baseline.",
    ),
    step_time_sustain: float = typer.Option(
        steptime.DEFAULT_SUSTAIN,
        "--step-time-sustain",
        envvar="SUPERVISE_STEP_TIME_SUSTAIN",
        show_envvar=True,
        help="Seconds a slowdown must last to count. With a GPU signal it is DEVICE_DEGRADED; "
        "alone, a warning event.",
    ),
    degrade_on_step_time: bool = typer.Option(
        False,
        "--degrade-on-step-time",
        envvar="SUPERVISE_DEGRADE_ON_STEP_TIME",
        show_envvar=True,
        help="Treat a sustained slowdown as DEVICE_DEGRADED even without a GPU signal.",
    ),
    hang_timeout: float = typer.Option(
        None,
        "--hang-timeout",
        envvar="SUPERVISE_HANG_TIMEOUT",
        show_envvar=True,
        show_default="auto: calibrated from observed step times",
        help="Seconds without a heartbeat (sup.step) after the first step before a rank is hung.",
    ),
    init_timeout: float = typer.Option(
        DEFAULT_INIT_TIMEOUT,
        "--init-timeout",
        envvar="SUPERVISE_INIT_TIMEOUT",
        show_envvar=True,
        help="Seconds a rank that attached may take to its first step.",
    ),
    phase_timeouts: str = typer.Option(
        "",
        "--phase-timeouts",
        envvar="SUPERVISE_PHASE_TIMEOUTS",
        show_envvar=True,
        help="Timeouts for named phases (`with sup.phase(NAME)`), e.g. checkpoint=1800,eval=600.",
    ),
    log_silence_timeout: float = typer.Option(
        None,
        "--log-silence-timeout",
        envvar="SUPERVISE_LOG_SILENCE_TIMEOUT",
        show_envvar=True,
        show_default="off",
        help="For programs without heartbeats: seconds without any output before the run is "
        "called hung.",
    ),
    checkpoint_dir: str = typer.Option(
        None,
        "--checkpoint-dir",
        envvar="SUPERVISE_CHECKPOINT_DIR",
        show_envvar=True,
        show_default="none",
        help="The run's checkpoint directory. supervise keeps its hang calibration there "
        "(local paths), so a resumed run does not start blind.",
    ),
    nproc_per_node: int = typer.Option(
        None,
        "--nproc-per-node",
        envvar="SUPERVISE_NPROC_PER_NODE",
        show_envvar=True,
        show_default="off: run CMD as given",
        help="Launch CMD (a script) through torch.distributed.run with this many ranks; "
        "nodes, node rank and master come from the Indexed Job or JobSet environment.",
    ),
    nnodes: int = typer.Option(
        None,
        "--nnodes",
        envvar="SUPERVISE_NNODES",
        show_envvar=True,
        show_default="derived",
        help="Nodes in the job (with --nproc-per-node).",
    ),
    node_rank: int = typer.Option(
        None,
        "--node-rank",
        envvar="SUPERVISE_NODE_RANK",
        show_envvar=True,
        show_default="derived",
        help="This node's rank (with --nproc-per-node).",
    ),
    master_addr: str = typer.Option(
        None,
        "--master-addr",
        envvar="SUPERVISE_MASTER_ADDR",
        show_envvar=True,
        show_default="derived",
        help="Rendezvous host (with --nproc-per-node).",
    ),
    master_port: int = typer.Option(
        None,
        "--master-port",
        envvar="SUPERVISE_MASTER_PORT",
        show_envvar=True,
        show_default="derived, else 29500",
        help="Rendezvous port (with --nproc-per-node).",
    ),
    fake_gpus: str = FAKE_GPUS,
    gpu_poll_interval: float = typer.Option(
        DEFAULT_GPU_POLL_INTERVAL,
        "--gpu-poll-interval",
        envvar="SUPERVISE_GPU_POLL_INTERVAL",
        show_envvar=True,
        help="Seconds between polls of GPU state (ECC, remaps, clocks, NVLink, PCIe); Xids "
        "arrive as events at once.",
    ),
    gpu_config: str = GPU_CONFIG,
    require_gpus: bool = REQUIRE_GPUS,
    preflight: bool = typer.Option(
        False,
        "--preflight",
        envvar="SUPERVISE_PREFLIGHT",
        show_envvar=True,
        help="Check the GPUs once (as `supervise doctor`) before starting CMD; a failed or "
        "degraded GPU exits 82/83 and starts nothing.",
    ),
    nvml_timeout: float = NVML_TIMEOUT,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Run CMD under supervision and exit with one code per failure class."""
    options = Options(
        command=tuple(command or ()),
        grace_period=grace_period,
        termination_log=termination_log,
        event_log=None if event_log == "-" else event_log,
        failure_grace=failure_grace,
        shutdown_timeout=shutdown_timeout,
        degraded_deadline=degraded_deadline,
        max_restarts=max_restarts,
        restart_on_training_failure=restart_on_training_failure,
        degrade_on_step_time=degrade_on_step_time,
    )
    hang = HangOptions(
        hang_timeout=hang_timeout,
        init_timeout=init_timeout,
        log_silence_timeout=log_silence_timeout,
        phase_timeouts=parse_phase_timeouts(phase_timeouts),
    )
    gpu = GpuOptions(
        poll_interval=gpu_poll_interval,
        fake_gpus=fake_gpus,
        config=gpu_config,
        require_gpus=require_gpus,
        call_timeout=nvml_timeout,
    )
    launch = None
    if nproc_per_node is not None:
        launch = Launch(nproc_per_node, nnodes, node_rank, master_addr, master_port)
    pace = _pace(step_time_ratio, step_time_sustain)
    code = supervise(
        options,
        hang,
        gpu,
        preflight=preflight,
        launch=launch,
        checkpoint_dir=checkpoint_dir,
        pace=pace,
    )
    raise typer.Exit(code.code)


def _pace(ratio: float, sustain: float) -> steptime.Config:
    if not (math.isfinite(ratio) and ratio > 1):
        raise ConfigError(f"--step-time-ratio must be a number > 1, got {ratio}")
    if not (math.isfinite(sustain) and sustain > 0):
        raise ConfigError(f"--step-time-sustain must be a number of seconds > 0, got {sustain}")
    return steptime.Config(ratio=ratio, sustain=sustain)


def supervise(
    options: Options,
    hang: HangOptions,
    gpu: GpuOptions,
    *,
    preflight: bool = False,
    launch: Launch | None = None,
    checkpoint_dir: str | None = None,
    pace: steptime.Config | None = None,
) -> ExitCode:
    """One supervised run. Raises `SuperviseError` for what stops it before it starts."""
    from supervisor.gpu.doctor import preflight as gpu_preflight
    from supervisor.gpu.watchdog import build_gpu_watchdog
    from supervisor.process.logpump import Activity
    from supervisor.run import loop, session

    notes: list[str] = []  # said on the event log as "note" events once it is open
    if preflight:
        code, findings = gpu_preflight(gpu, notes.append)
        if code is not ExitCode.SUCCEEDED:
            for note in notes:
                print(f"supervise: {note}", file=sys.stderr)
            text = termination_message(code, findings[0].summary, findings)
            write_termination_message(options.termination_log, text)
            return code
    run = session.open_session(
        hang,
        Activity(time.monotonic()),
        state_dir=_local_dir(checkpoint_dir),
        gpu_watchdog=build_gpu_watchdog(gpu, notes.append),
        resume=_resolver(checkpoint_dir),
        pace=pace,
    )
    run.notes.extend(notes)
    if checkpoint_dir:  # the trainer's CheckpointStore() finds it there
        run.hooks.extra_env = {**run.hooks.extra_env, ENV_CHECKPOINT_DIR: checkpoint_dir}
    if launch is not None:
        from supervisor.k8s.launch import LaunchOverrides

        overrides = LaunchOverrides(
            launch.nnodes, launch.node_rank, launch.master_addr, launch.master_port
        )
        argv = run.launch_torchrun(
            launch.nproc_per_node, options.command, overrides, options.grace_period
        )
        options = dataclasses.replace(options, command=tuple(argv))
    return loop.run(options, run.hooks)


def _resolver(checkpoint_dir: str | None):  # type: ignore[no-untyped-def]
    """The latest committed step in `checkpoint_dir`, looked up afresh for each attempt."""
    if not checkpoint_dir:
        return None

    def latest() -> int | None:
        from supervisor import storage

        return storage.latest(checkpoint_dir)

    return latest


def _local_dir(url: str | None) -> str | None:
    """The local directory behind `url`, or None for object stores and unset values."""
    if not url:
        return None
    if url.startswith("file://"):
        return url[len("file://") :]
    return None if "://" in url else url


def register(app: typer.Typer) -> None:
    app.command("run", context_settings={"allow_interspersed_args": False}, epilog=EPILOG)(
        run_command
    )
