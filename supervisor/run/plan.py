"""The run plan: everything one supervised run will do, decided once, before anything starts.

`build_plan` turns the parsed options into a frozen `Plan`: the exact argv to spawn (the
user's command, or torchrun wrapping it), the environment every attempt adds, the paths in
the private run directory, and the policy's configuration. Nothing changes it afterwards:
the session opens the plan's resources and the loop executes it.

`build_plan` is pure over its arguments (the environment comes in as a mapping) and raises
`ConfigError` for what cannot work: a torchrun topology that cannot be derived, bad values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from supervisor.child_contract import ENV_CHANNEL, ENV_CHECKPOINT_DIR, ENV_STACKS_DIR
from supervisor.core import policy
from supervisor.core.exitcodes import ExitCode
from supervisor.core.options import Options
from supervisor.gang.options import LEDGER_PREFIX, GangOptions, Identity
from supervisor.gpu.watchdog import GpuOptions
from supervisor.hang import stacks
from supervisor.hang.options import HangOptions
from supervisor.k8s.launch import LaunchOverrides, derive_topology, torchrun_command
from supervisor.watch import steptime

ENV_RUN_DIR = "SUPERVISE_RUN_DIR"
CALIBRATION_FILE = "supervise-hang-calibration.json"


@dataclass(frozen=True)
class Launch:
    """`--nproc-per-node` and the topology overrides, for a torchrun launch."""

    nproc_per_node: int
    overrides: LaunchOverrides = field(default_factory=LaunchOverrides)


@dataclass(frozen=True)
class Plan:
    """One run, decided. Paths live in `run_dir`, a private directory the caller made."""

    options: Options
    command: tuple[str, ...]  # what is spawned: `options.command`, or torchrun around it
    env: Mapping[str, str]  # added to the child's environment, for every attempt
    run_dir: str
    channel_path: str
    stacks_dir: str
    hang: HangOptions
    gpu: GpuOptions
    pace: steptime.Config
    policy: policy.Config
    checkpoint_dir: str | None = None  # the run's checkpoints (any fsspec URL)
    calibration_path: str | None = None  # where the hang calibration persists (local dirs)
    error_file: str | None = None  # torchrun's root-cause error file, when launching it
    ledger: str | None = None  # the run ledger's URL; None: peer attribution is off
    identity: Identity | None = None  # this pod, as the ledger names it
    gang: GangOptions = field(default_factory=GangOptions)


def build_plan(
    options: Options,
    hang: HangOptions,
    gpu: GpuOptions,
    *,
    run_dir: str,
    environ: Mapping[str, str],
    launch: Launch | None = None,
    checkpoint_dir: str | None = None,
    pace: steptime.Config | None = None,
    ledger: str | None = None,
    gang: GangOptions | None = None,
) -> Plan:
    """The plan for `options.command` in `run_dir`. Raises `ConfigError`."""
    channel_path = os.path.join(run_dir, "channel")
    stacks_dir = os.path.join(run_dir, "stacks")
    env: dict[str, str] = {
        ENV_CHANNEL: channel_path,
        ENV_STACKS_DIR: stacks_dir,
        ENV_RUN_DIR: run_dir,
        **stacks.child_env_defaults(run_dir, environ),
    }
    if checkpoint_dir:  # the trainer's CheckpointStore() finds it there
        env[ENV_CHECKPOINT_DIR] = checkpoint_dir
    if "PYTHONUNBUFFERED" not in environ:
        # A Python child writing to our pipe would block-buffer its output: nothing shows
        # for minutes, and --log-silence-timeout would call a healthy run hung.
        env["PYTHONUNBUFFERED"] = "1"
    command, error_file = options.command, None
    node_rank = nnodes = None
    if launch is not None:
        topology = derive_topology(environ, launch.overrides)
        node_rank, nnodes = topology.node_rank, topology.nnodes
        error_file = os.path.join(run_dir, "torchrun-error.json")
        argv, additions = torchrun_command(
            launch.nproc_per_node,
            options.command,
            environ,
            launch.overrides,
            error_file,
            grace_period=options.grace_period,
        )
        command = tuple(argv)
        env.update(additions)
    state_dir = local_dir(checkpoint_dir)
    return Plan(
        options=options,
        command=command,
        env=env,
        run_dir=run_dir,
        channel_path=channel_path,
        stacks_dir=stacks_dir,
        hang=hang,
        gpu=gpu,
        pace=pace or steptime.Config(),
        policy=policy_config(options),
        checkpoint_dir=checkpoint_dir or None,
        calibration_path=os.path.join(state_dir, CALIBRATION_FILE) if state_dir else None,
        error_file=error_file,
        ledger=ledger_url(ledger, checkpoint_dir),
        identity=Identity.from_env(environ, node_rank, nnodes),
        gang=gang or GangOptions(),
    )


def policy_config(options: Options) -> policy.Config:
    restart_on = {ExitCode.HANG, ExitCode.INFRA_FAILED}
    if options.restart_on_training_failure:
        restart_on.add(ExitCode.TRAINING_FAILED)
    return policy.Config(
        grace_period=options.grace_period,
        failure_grace=options.failure_grace,
        shutdown_timeout=options.shutdown_timeout,
        degraded_deadline=options.degraded_deadline,
        degrade_on_step_time=options.degrade_on_step_time,
        max_restarts=options.max_restarts,
        restart_on=frozenset(restart_on),
    )


def ledger_url(ledger: str | None, checkpoint_dir: str | None) -> str | None:
    """`--ledger-dir` when given, else the reserved prefix of the checkpoint URL."""
    if ledger:
        return ledger
    if not checkpoint_dir:
        return None
    return f"{checkpoint_dir.rstrip('/')}/{LEDGER_PREFIX}"


def local_dir(url: str | None) -> str | None:
    """The local directory behind `url`, or None for object stores and unset values."""
    if not url:
        return None
    if url.startswith("file://"):
        return url[len("file://") :]
    return None if "://" in url else url
