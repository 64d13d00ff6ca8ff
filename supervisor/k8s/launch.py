"""`supervise --nproc-per-node N -- script.py ARGS`: the torchrun argv and env, derived.

supervise never reimplements rendezvous: it execs `python -m torch.distributed.run` (the
supervisor process never imports torch) with a static rendezvous whose node count, node
rank and master address come from where the pod runs. Each field is taken from the first
of these that has it:

1. **Flags**: --nnodes, --node-rank, --master-addr, --master-port (or their SUPERVISE_*
   twins), field by field.
2. **Our rendered manifests**, one of:
   - **JobSet** (env JOBSET_NAME present; the rendered pod template passes it, with
     REPLICATED_JOB_NAME and JOB_INDEX, from the pod's labels): node rank =
     JOB_INDEX * SUPERVISE_PODS_PER_JOB + JOB_COMPLETION_INDEX; master =
     <jobset>-<replicatedJob>-0-0.<subdomain>, the pod hostname scheme of JobSet with DNS
     hostnames on (jobset_types.go `Network`); subdomain = SUPERVISE_SUBDOMAIN, else the
     JobSet name (JobSet's default).
   - **Indexed Job** (JOB_COMPLETION_INDEX present, and SUPERVISE_SUBDOMAIN set or no
     platform variables below: the Job controller sets the index in a platform's Indexed
     Jobs too): node rank = the index; the pod's hostname (HOSTNAME) is <job>-<index>, so
     the master is <job>-0.<subdomain>, where subdomain = SUPERVISE_SUBDOMAIN (the rendered
     Job sets it to its headless Service, which is also the pod's `subdomain`).
   nnodes comes from --nnodes or SUPERVISE_NNODES (the rendered manifests set it).
3. **PET_***, torchrun's own names (Kubeflow Trainer's TrainJob, PyTorchJob since v1.7):
   PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT.
4. **MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK** with RANK the pod's rank (Volcano's
   `pytorch` plugin, PyTorchJob with a Master replica).
5. **Nothing**: one node on loopback.

`supervisor.k8s.platforms` reads 3 and 4 and says why: WORLD_SIZE's meaning, what is
refused (an elastic or c10d rendezvous, a node range, a multi-node shape with a field
missing). The port: --master-port, SUPERVISE_MASTER_PORT, the platform's, else torchrun's
29500. `Topology.source` names the step that answered ("jobset", "indexed-job", "pet",
"master-env", "pet+master-env", "local").

torchrun is started with `--max-restarts 0`: Kubernetes, told by the exit code, decides
about restarts (torchrun's own restarts are counted per node and can be bypassed,
pytorch#147064). The env additions: TORCHELASTIC_ERROR_FILE (torchrun copies the first
failed worker's error.json there, with its exit code; see `supervisor.process.torchrun_errorfile`),
TORCH_NCCL_ASYNC_ERROR_HANDLING=3 unless set (torchrun would inject 1, and Flight Recorder
dumps need 3), and TORCH_ELASTIC_SHUTDOWN_TIMEOUT below the grace period, so torchrun
SIGKILLs its workers (which run in their own sessions) before supervise's deadline.

Pure: reads only the mapping it is given; raises `ConfigError` with a one-line fix.
"""

from __future__ import annotations

import math
import os.path
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from supervisor.core.errors import ConfigError
from supervisor.k8s import platforms
from supervisor.k8s.spec import (
    DEFAULT_MASTER_PORT,
    ENV_COMPLETION_INDEX,
    ENV_JOB_INDEX,
    ENV_JOBSET_NAME,
    ENV_MASTER_PORT,
    ENV_NNODES,
    ENV_PODS_PER_JOB,
    ENV_REPLICATED_JOB_NAME,
    ENV_SUBDOMAIN,
)

LOOPBACK = "127.0.0.1"
# Seconds torchrun keeps for itself between its workers' SIGKILL and supervise's deadline.
_TORCHRUN_RESERVE = 3
# torchrun options a script may legitimately start with: run a module, or a non-Python binary.
_TORCHRUN_SCRIPT_FLAGS = {"-m", "--module", "--no-python", "--no_python"}


@dataclass(frozen=True)
class LaunchOverrides:
    """Explicit --nnodes / --node-rank / --master-addr / --master-port; None means derive."""

    nnodes: int | None = None
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None


@dataclass(frozen=True)
class Topology:
    """Where this node sits. `source` says what it was derived from, for the event log."""

    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    source: str  # "jobset", "indexed-job", "pet", "master-env", "pet+master-env" or "local"


def _nnodes(env: Mapping[str, str], overrides: LaunchOverrides) -> int | None:
    if overrides.nnodes is not None:
        return overrides.nnodes
    return platforms.int_env(env, ENV_NNODES, minimum=1)


def _need_nnodes(nnodes: int | None, where: str) -> int:
    if nnodes is None:
        raise ConfigError(
            f"running in {where} but the node count is unknown: pass --nnodes or set "
            f"{ENV_NNODES} (rendered manifests set it)"
        )
    return nnodes


def _jobset(env: Mapping[str, str], overrides: LaunchOverrides) -> tuple[int, int, str | None]:
    nnodes = _need_nnodes(_nnodes(env, overrides), "a JobSet")
    rank = overrides.node_rank
    if rank is None:
        index = platforms.int_env(env, ENV_COMPLETION_INDEX) or 0
        job_index = platforms.int_env(env, ENV_JOB_INDEX) or 0
        per_job = platforms.int_env(env, ENV_PODS_PER_JOB, minimum=1)
        if job_index and per_job is None:
            raise ConfigError(
                f"{ENV_JOB_INDEX}={job_index} but {ENV_PODS_PER_JOB} is unset: set it to the "
                "Job's completions, or pass --node-rank"
            )
        rank = job_index * (per_job or 1) + index
    master = overrides.master_addr
    if master is None and nnodes > 1:
        name = env[ENV_JOBSET_NAME]
        rjob = env.get(ENV_REPLICATED_JOB_NAME)
        if not rjob:
            raise ConfigError(
                f"{ENV_JOBSET_NAME} is set but {ENV_REPLICATED_JOB_NAME} is not: pass it from "
                "the pod label jobset.sigs.k8s.io/replicatedjob-name, or pass --master-addr"
            )
        subdomain = env.get(ENV_SUBDOMAIN) or name
        master = f"{name}-{rjob}-0-0.{subdomain}"
    return nnodes, rank, master


def _indexed_job(env: Mapping[str, str], overrides: LaunchOverrides) -> tuple[int, int, str | None]:
    nnodes = _need_nnodes(_nnodes(env, overrides), "an Indexed Job")
    index = platforms.int_env(env, ENV_COMPLETION_INDEX)
    assert index is not None  # the caller checked it is present
    rank = overrides.node_rank if overrides.node_rank is not None else index
    master = overrides.master_addr
    if master is None and nnodes > 1:
        hostname = env.get("HOSTNAME", "")
        suffix = f"-{index}"
        if not hostname.endswith(suffix) or len(hostname) == len(suffix):
            raise ConfigError(
                f"HOSTNAME {hostname!r} is not <job>-{index}, so rank 0's address is "
                "unknown: pass --master-addr"
            )
        subdomain = env.get(ENV_SUBDOMAIN)
        if not subdomain:
            raise ConfigError(
                f"{ENV_SUBDOMAIN} is unset: set it to the Job's headless Service name "
                "(the pod's subdomain; rendered manifests do), or pass --master-addr"
            )
        master = f"{hostname[: -len(suffix)]}-0.{subdomain}"
    return nnodes, rank, master


def _own_indexed_job(env: Mapping[str, str]) -> bool:
    """An Indexed Job's pod that the platform variables do not describe better.

    The Job controller sets JOB_COMPLETION_INDEX in every Indexed Job, ours or a platform's
    (Kubeflow Trainer runs its nodes as one), so the index alone decides only where no
    platform declares a shape; SUPERVISE_SUBDOMAIN, which only our manifests set, always does.
    """
    if env.get(ENV_COMPLETION_INDEX, "") == "":
        return False
    return bool(env.get(ENV_SUBDOMAIN)) or not platforms.declares_shape(env)


def derive_topology(env: Mapping[str, str], overrides: LaunchOverrides) -> Topology:
    """nnodes, node rank, master address and port for this pod; raises ConfigError."""
    if overrides.nnodes is not None and overrides.nnodes < 1:
        raise ConfigError(f"--nnodes must be >= 1, got {overrides.nnodes}")
    platforms.check_rendezvous(env)
    port = overrides.master_port
    if port is None:
        port = platforms.int_env(env, ENV_MASTER_PORT, minimum=1)
    if env.get(ENV_JOBSET_NAME):
        source = "jobset"
        nnodes, rank, master = _jobset(env, overrides)
    elif _own_indexed_job(env):
        source = "indexed-job"
        nnodes, rank, master = _indexed_job(env, overrides)
    else:
        given = platforms.Given(
            nnodes=_nnodes(env, overrides),
            node_rank=overrides.node_rank,
            master_addr=overrides.master_addr,
            master_port=port,
            nnodes_from="--nnodes" if overrides.nnodes is not None else ENV_NNODES,
        )
        resolved = platforms.resolve(env, given)
        nnodes, rank, master = resolved.nnodes, resolved.node_rank, resolved.master_addr
        port, source = resolved.master_port, resolved.source or "local"
    if not 0 <= rank < nnodes:
        raise ConfigError(f"node rank {rank} is outside 0..{nnodes - 1}: check --node-rank")
    if master is not None and not master.strip():
        raise ConfigError("--master-addr is empty: give a host name or IP address")
    port = DEFAULT_MASTER_PORT if port is None else port
    if not 1 <= port <= 65535:
        raise ConfigError(f"master port {port} is outside 1..65535: check --master-port")
    return Topology(nnodes, rank, master or LOOPBACK, port, source)


def _check_script(argv: Sequence[str]) -> None:
    if not argv or not argv[0]:
        raise ConfigError(
            "no training script: `supervise --nproc-per-node N -- train.py ARGS` (torchrun "
            "runs the script with its own Python)"
        )
    first = argv[0]
    if first.startswith("-") and first not in _TORCHRUN_SCRIPT_FLAGS:
        raise ConfigError(
            f"the command starts with {first!r}: after `--` give the script (or `-m module`)"
        )
    if os.path.basename(first).startswith("python") and not first.endswith(".py"):
        raise ConfigError(
            f"with --nproc-per-node the command is the script, not {first!r}: write "
            "`supervise --nproc-per-node N -- train.py`, or `-- -m package.module`"
        )


def torchrun_command(
    nproc_per_node: int,
    argv: Sequence[str],
    env: Mapping[str, str],
    overrides: LaunchOverrides,
    error_file: str,
    *,
    grace_period: float | None = None,
    python: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv to exec and the env entries to add for a torchrun launch.

    `error_file` is the path torchrun's root-cause error.json should land at (inside a
    private directory the caller owns). `grace_period` is supervise's --grace-period.
    """
    if isinstance(nproc_per_node, bool) or nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node must be an integer >= 1, got {nproc_per_node!r}")
    _check_script(argv)
    if not error_file:
        raise ConfigError("the torchrun error file path is empty")
    topo = derive_topology(env, overrides)
    command = [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(topo.nnodes),
        "--nproc-per-node",
        str(nproc_per_node),
        "--node-rank",
        str(topo.node_rank),
        "--master-addr",
        topo.master_addr,
        "--master-port",
        str(topo.master_port),
        "--rdzv-backend",
        "static",
        "--max-restarts",
        "0",
        *argv,
    ]
    additions = {"TORCHELASTIC_ERROR_FILE": error_file}
    if "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in env:
        additions["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "3"
    if grace_period is not None and "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" not in env:
        seconds = max(1, math.floor(grace_period) - _TORCHRUN_RESERVE)
        additions["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] = str(seconds)
    return command, additions
