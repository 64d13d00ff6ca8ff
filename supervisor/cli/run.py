"""`supervise [OPTIONS] -- CMD...`: the run command, its flags, and the run itself.

Each flag is declared once, in `FLAGS`; `--help`, its `SUPERVISE_*` environment twin and
the README's flag table all come from that declaration. The flags only build frozen option
objects (validated by raising `ConfigError`); `supervise()` is the run, step by step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from supervisor import __version__
from supervisor.cli.flags import DAY, GPU, PORT, SECONDS, TIMEOUT, Arg, Flag, Range, command
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
from supervisor.gang.options import DEFAULT_FREE_EXITS, DEFAULT_PEER_WAIT, GangOptions
from supervisor.gang.options import DEFAULT_POLL_INTERVAL as DEFAULT_GANG_POLL_INTERVAL
from supervisor.gpu.watchdog import DEFAULT_POLL_INTERVAL as DEFAULT_GPU_POLL_INTERVAL
from supervisor.gpu.watchdog import GpuOptions
from supervisor.hang.options import DEFAULT_INIT_TIMEOUT, HangOptions, parse_phase_timeouts
from supervisor.watch import steptime

if TYPE_CHECKING:
    import typer

EPILOG = (
    "Other commands: `supervise exit-codes` (the exit-code contract), "
    "`supervise doctor` (GPU health), `supervise ckpt` (checkpoints), "
    "`supervise k8s` (manifests), `supervise explain CODE`. "
    "Each has its own --help."
)


def _version(value: bool) -> None:
    if value:
        import typer

        print(f"supervise {__version__}")
        raise typer.Exit()


CMD = Arg(
    "command",
    list[str] | None,
    "The training command and its arguments, after `--`.",
    default=None,
    metavar="CMD",
)

# The run's flags, in the order `--help` and the README's table list them.
FLAGS = (
    # How a run stops, and where it says why.
    Flag(
        "grace-period",
        float,
        DEFAULT_GRACE_PERIOD,
        "Seconds from an outside SIGTERM to SIGKILL of the whole tree: the checkpoint and the "
        "shutdown both fit in it. Keep it below the pod's terminationGracePeriodSeconds "
        "(30 s by default).",
        range=SECONDS,
    ),
    Flag(
        "shutdown-timeout",
        float,
        DEFAULT_SHUTDOWN_TIMEOUT,
        "Of the grace period, seconds kept for the trainer to exit after its checkpoint is "
        "committed; the checkpoint gets the rest.",
        range=SECONDS,
    ),
    Flag(
        "failure-grace-period",
        float,
        DEFAULT_FAILURE_GRACE,
        "Seconds from SIGTERM to SIGKILL when supervise stops a run itself (a hang, a failed "
        "GPU): such processes rarely act on SIGTERM, and waiting idles every GPU in the job.",
        range=Range(0, 3600),
    ),
    Flag(
        "degraded-deadline",
        float,
        DEFAULT_DEGRADED_DEADLINE,
        "Seconds a trainer gets to commit the checkpoint a degraded GPU asks for.",
        range=SECONDS,
    ),
    Flag(
        "termination-log",
        str,
        DEFAULT_TERMINATION_LOG,
        "Where the JSON termination message (≤ 4096 bytes) is written at exit. The default "
        "is written only where the kubelet made it, so not on a developer's machine.",
    ),
    Flag("event-log", str, "-", "File to append JSON-lines events to; `-` means stderr."),
    Flag(
        "metrics-port",
        int | None,
        None,
        "Serve Prometheus metrics at http://0.0.0.0:PORT/metrics (every interface: a pod is "
        "scraped from outside its container). A port that cannot be bound is CONFIG_ERROR.",
        shown="off",
        range=PORT,
    ),
    # Checkpoints and restarts.
    Flag(
        "checkpoint-dir",
        str | None,
        None,
        "The run's checkpoints (a path or any fsspec URL). The latest committed step is "
        "passed to CMD as SUPERVISE_RESUME_STEP, and supervise keeps its hang calibration "
        "there (local paths), so a resumed run does not start blind.",
        shown="none",
    ),
    Flag(
        "max-restarts",
        int,
        0,
        "Restart CMD in place after HANG or INFRA_FAILED, up to this many times, with "
        "backoff (1 s, doubling, at most 60 s); each attempt resumes from the latest "
        "checkpoint.",
        range=Range(0, 1000),
    ),
    Flag(
        "restart-on-training-failure",
        bool,
        False,
        "Let --max-restarts restart after TRAINING_FAILED too.",
    ),
    # Hangs.
    Flag(
        "hang-timeout",
        float | None,
        None,
        "Seconds without a heartbeat (sup.step) after the first step before a rank is hung.",
        shown="auto: calibrated from observed step times",
        range=TIMEOUT,
    ),
    Flag(
        "init-timeout",
        float,
        DEFAULT_INIT_TIMEOUT,
        "Seconds a rank that attached may take to its first step.",
        range=TIMEOUT,
    ),
    Flag(
        "phase-timeouts",
        str,
        "",
        "Timeouts for named phases (`with sup.phase(NAME)`), e.g. checkpoint=1800,eval=600.",
    ),
    Flag(
        "log-silence-timeout",
        float | None,
        None,
        "For programs without heartbeats: seconds without any output before the run is "
        "called hung.",
        shown="off",
        range=TIMEOUT,
    ),
    # Step time.
    Flag(
        "step-time-ratio",
        float,
        steptime.DEFAULT_RATIO,
        "A rank is slow when its recent seconds per step exceed this multiple of its own baseline.",
        range=Range(1, 1000, above=True),
    ),
    Flag(
        "step-time-sustain",
        float,
        steptime.DEFAULT_SUSTAIN,
        "Seconds a slowdown must last to count. With a GPU signal it is DEVICE_DEGRADED; "
        "alone, a warning event.",
        range=Range(0, DAY, above=True),
    ),
    Flag(
        "degrade-on-step-time",
        bool,
        False,
        "Treat a sustained slowdown as DEVICE_DEGRADED even without a GPU signal.",
    ),
    # A torchrun launch.
    Flag(
        "nproc-per-node",
        int | None,
        None,
        "Launch CMD (a script) through torch.distributed.run with this many ranks; nodes, "
        "node rank and master come from the pod's environment: an Indexed Job, a JobSet, "
        "Kubeflow's PET_*, or MASTER_ADDR/WORLD_SIZE/RANK.",
        shown="off: run CMD as given",
        range=Range(1, 1024),
    ),
    Flag(
        "nnodes",
        int | None,
        None,
        "Nodes in the job (with --nproc-per-node).",
        shown="derived",
        range=Range(1, 65_536),
    ),
    Flag(
        "node-rank",
        int | None,
        None,
        "This node's rank (with --nproc-per-node).",
        shown="derived",
        range=Range(0, 65_535),
    ),
    Flag(
        "master-addr",
        str | None,
        None,
        "Rendezvous host (with --nproc-per-node).",
        shown="derived",
    ),
    Flag(
        "master-port",
        int | None,
        None,
        "Rendezvous port (with --nproc-per-node).",
        shown="derived, else 29500",
        range=PORT,
    ),
    # The gang: other pods of the same run, through the run ledger.
    Flag(
        "ledger-dir",
        str | None,
        None,
        "The run ledger: every pod's attempts and verdicts, which peers read to count one "
        "incident once across the gang (any fsspec URL every pod shares).",
        shown="<checkpoint-dir>/_ledger",
    ),
    Flag(
        "peer-wait",
        float,
        DEFAULT_PEER_WAIT,
        "Seconds a pod that saw only a symptom (a lost peer, a hung collective) looks in the "
        "ledger for the peer's verdict that explains it, before it keeps its own class.",
        range=Range(0, 3600),
    ),
    Flag(
        "gang-poll-interval",
        float,
        DEFAULT_GANG_POLL_INTERVAL,
        "Seconds between two reads of the peers' verdicts while training runs; a peer's "
        "cause stops this pod with PEER_LEFT (87) without waiting for NCCL or gloo.",
        range=Range(0.1, 3600),
    ),
    Flag(
        "node-free-exits",
        int,
        DEFAULT_FREE_EXITS,
        "Device verdicts (82, 83) one node may have in a run; the next one on that node "
        "exits INFRA_FAILED (counted), so a Job cannot loop forever on a bad node.",
        range=Range(1, 1000),
    ),
    # GPUs.
    Flag(
        "preflight",
        bool,
        False,
        "Check the GPUs once (as `supervise doctor`) before starting CMD; a failed or "
        "degraded GPU exits 82/83 and starts nothing.",
    ),
    Flag(
        "gpu-poll-interval",
        float,
        DEFAULT_GPU_POLL_INTERVAL,
        "Seconds between polls of GPU state (ECC, remaps, clocks, NVLink, PCIe); Xids "
        "arrive as events at once.",
        range=Range(0.1, 600),
    ),
    *GPU,
)

VERSION = Flag("version", bool, False, "Print the version and exit.", twin=False, callback=_version)


def run_command(**given: Any) -> None:
    """Run CMD under supervision and exit with one code per failure class."""
    import typer

    raise typer.Exit(start(given).code)


def start(given: Mapping[str, Any]) -> ExitCode:
    """The run, from the values the parser gave each declaration (by `dest`, and `command`
    for CMD): typer's through `run_command`, or `supervisor.cli.fast`'s. Returns the class
    to exit with; raises `SuperviseError` (a `ConfigError` for a bad value) before anything
    starts."""
    args = SimpleNamespace(**given)
    options = Options(
        command=tuple(args.command or ()),
        grace_period=args.grace_period,
        termination_log=args.termination_log,
        event_log=None if args.event_log == "-" else args.event_log,
        failure_grace=args.failure_grace_period,
        shutdown_timeout=args.shutdown_timeout,
        degraded_deadline=args.degraded_deadline,
        max_restarts=args.max_restarts,
        restart_on_training_failure=args.restart_on_training_failure,
        degrade_on_step_time=args.degrade_on_step_time,
        metrics_port=args.metrics_port,
    )
    hang = HangOptions(
        hang_timeout=args.hang_timeout,
        init_timeout=args.init_timeout,
        log_silence_timeout=args.log_silence_timeout,
        phase_timeouts=parse_phase_timeouts(args.phase_timeouts),
    )
    gpu = GpuOptions(
        poll_interval=args.gpu_poll_interval,
        fake_gpus=args.fake_gpus,
        config=args.gpu_config,
        require_gpus=args.require_gpus,
        call_timeout=args.nvml_timeout,
    )
    launch = None
    if args.nproc_per_node is not None:
        from supervisor.k8s.launch import LaunchOverrides
        from supervisor.run.plan import Launch

        overrides = LaunchOverrides(args.nnodes, args.node_rank, args.master_addr, args.master_port)
        launch = Launch(args.nproc_per_node, overrides)
    pace = _pace(args.step_time_ratio, args.step_time_sustain)
    return supervise(
        options,
        hang,
        gpu,
        preflight=args.preflight,
        launch=launch,
        checkpoint_dir=args.checkpoint_dir,
        pace=pace,
        ledger=args.ledger_dir,
        gang=GangOptions(
            peer_wait=args.peer_wait,
            poll_interval=args.gang_poll_interval,
            free_exits=args.node_free_exits,
        ),
    )


def _pace(ratio: float, sustain: float) -> steptime.Config:
    if not (math.isfinite(ratio) and ratio > 1):
        raise ConfigError(f"--step-time-ratio must be a number > 1, got {ratio}")
    if not (math.isfinite(sustain) and sustain > 0):
        raise ConfigError(f"--step-time-sustain must be a number of seconds > 0, got {sustain}")
    return steptime.Config(ratio=ratio, sustain=sustain)


def supervise(*args: Any, **kwargs: Any) -> ExitCode:
    """The run itself (`supervisor.run.supervise`), imported only when a run starts."""
    from supervisor.run.supervise import supervise as run

    return run(*args, **kwargs)


def register(app: typer.Typer) -> None:
    """Add `run` to `app`. typer and click are imported here, not with the module, so that
    the fast parser can read `FLAGS` without them."""
    import click
    from typer.core import TyperCommand

    class _RunCommand(TyperCommand):
        """`run` is named implicitly: its usage reads as people type it."""

        def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            formatter.write_usage("supervise", "[OPTIONS] -- CMD...")

    app.command(
        "run",
        cls=_RunCommand,
        context_settings={"allow_interspersed_args": False},
        epilog=EPILOG,
    )(command(CMD, *FLAGS, VERSION)(run_command))
