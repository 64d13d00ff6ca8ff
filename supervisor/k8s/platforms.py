"""The topology other training platforms put in a pod's environment, read for a torchrun launch.

Pods that supervise did not render carry their node count, node rank and rank 0's address in
one of two conventions, and `supervise --nproc-per-node` must honour them: ignoring them
would start one independent single-node training per pod.

- **pet**, torchrun's own names (`torch/distributed/argparse_util.py`: every `--x-y` option
  defaults to env `PET_X_Y`): PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT.
  Kubeflow Trainer v2 sets only these (`pkg/runtime/framework/plugins/torch/torch.go`: node
  rank from the Job completion index, master `<trainjob>-node-0-0.<trainjob>`, port 29500);
  the Kubeflow Training Operator's PyTorchJob sets them too, since v1.7
  (`pkg/controller.v1/pytorch/envvar.go`).
- **master-env**, the pod-rank convention: MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK,
  where RANK is the *pod's* rank (master 0, worker i -> i+1). The Volcano `pytorch` job
  plugin sets only these, with WORLD_SIZE the pod count
  (`pkg/controllers/job/plugins/distributed-framework/pytorch/pytorch.go`); PyTorchJob sets
  them beside PET_* when it has a Master replica.

The two are read field by field, PET_* first: PyTorchJob gives the same facts in both, and a
pod that has only part of one (kubeflow/pytorch-operator set PET_NNODES and PET_MASTER_ADDR
but no PET_NODE_RANK) is completed from the other. The node count is PET_NNODES, else
WORLD_SIZE; WORLD_SIZE counts pods, except under a PyTorchJob whose nprocPerNode is an
integer, where it counts processes (replicas x nprocPerNode; `getNprocPerNodeInt`) and
PET_NPROC_PER_NODE holds that integer: then nodes = WORLD_SIZE / PET_NPROC_PER_NODE. A real
PyTorchJob of that shape sets PET_NNODES too, which wins. PET_NPROC_PER_NODE never chooses
the ranks per node: `--nproc-per-node` does, and without it supervise runs the command as
given (`supervise -- torchrun ...` reads every PET_* itself).

More than one node needs a node rank and rank 0's address; one node runs on loopback. A
platform's port is used only when the platform supplied some of the topology.

Refused with `ConfigError`, never guessed: an elastic or c10d rendezvous (PET_RDZV_ENDPOINT,
PET_RDZV_BACKEND other than static, PET_STANDALONE other than "0", a PET_NNODES range
`min:max` with min != max; PyTorchJob's elasticPolicy sets them), because torchrun would
take the endpoint and standalone mode from the environment over supervise's static
rendezvous; and a multi-node shape with a field missing or not an integer.

Pure: reads only the mapping it is given; no I/O, safe on any thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.core.errors import ConfigError

PET_NNODES = "PET_NNODES"
PET_NODE_RANK = "PET_NODE_RANK"
PET_MASTER_ADDR = "PET_MASTER_ADDR"
PET_MASTER_PORT = "PET_MASTER_PORT"
PET_NPROC_PER_NODE = "PET_NPROC_PER_NODE"
PET_RDZV_BACKEND = "PET_RDZV_BACKEND"
PET_RDZV_ENDPOINT = "PET_RDZV_ENDPOINT"
PET_STANDALONE = "PET_STANDALONE"
MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"
WORLD_SIZE = "WORLD_SIZE"
RANK = "RANK"

PET = "pet"
MASTER_ENV = "master-env"
# Variables that say how many nodes there are or which one this is: any of them makes the
# pod part of a platform's gang. Addresses and ports alone do not.
SHAPE = (PET_NNODES, PET_NODE_RANK, WORLD_SIZE, RANK)
_FAMILY = {PET_NNODES: PET, PET_NODE_RANK: PET, PET_MASTER_ADDR: PET, PET_MASTER_PORT: PET}
_ESCAPE = "or run `supervise -- torchrun ...`, which reads PET_* itself"


@dataclass(frozen=True)
class Given:
    """What is already known before the platform is read: flags, or their SUPERVISE_* twins.

    `nnodes_from` names where `nnodes` came from, for messages ("--nnodes").
    """

    nnodes: int | None = None
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    nnodes_from: str = "--nnodes"


@dataclass(frozen=True)
class Resolved:
    """The platform's answer. `master_addr` is None when one node runs alone (loopback);
    `master_port` is None when nothing set it; `source` names the conventions used, "+"
    joined ("pet", "master-env", "pet+master-env"), or is empty when none was."""

    nnodes: int
    node_rank: int
    master_addr: str | None
    master_port: int | None
    source: str


def _set(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "") != ""


def declares_shape(env: Mapping[str, str]) -> bool:
    """Whether a platform put a node count or a node rank in this environment."""
    return any(_set(env, name) for name in SHAPE)


def check_rendezvous(env: Mapping[str, str]) -> None:
    """Refuse an environment that asks torchrun for a rendezvous other than static.

    torchrun takes PET_RDZV_ENDPOINT over --master-addr/--master-port and PET_STANDALONE
    over any rendezvous flag (torch/distributed/run.py `get_rdzv_endpoint`, `run`), so a
    static launch in such a pod would not be the one supervise derived.
    """
    offending = [
        f"{name}={env[name]!r}"
        for name, harmless in ((PET_RDZV_BACKEND, ("", "static")), (PET_RDZV_ENDPOINT, ("",)))
        if env.get(name, "") not in harmless
    ]
    # torchrun reads PET_STANDALONE as int(): "0" is off; PyTorchJob writes "" (crashes it).
    if env.get(PET_STANDALONE, "0") != "0":
        offending.append(f"{PET_STANDALONE}={env[PET_STANDALONE]!r}")
    if offending:
        raise ConfigError(
            f"{', '.join(offending)}: the pod asks torchrun for an elastic rendezvous (a "
            "PyTorchJob's elasticPolicy sets these), but `supervise --nproc-per-node` launches "
            f"a static one: remove the elasticPolicy, {_ESCAPE}"
        )


def int_env(env: Mapping[str, str], name: str, minimum: int = 0) -> int | None:
    """`env[name]` as an integer >= `minimum`; None when unset or empty; else ConfigError."""
    raw = env.get(name, "")
    if raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer: fix or unset it") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be >= {minimum}: fix or unset it")
    return value


def _pet_nnodes(env: Mapping[str, str]) -> int | None:
    """PET_NNODES as torchrun reads it: `N` or `MIN:MAX`; only a fixed count is accepted."""
    raw = env.get(PET_NNODES, "")
    if ":" not in raw:
        return int_env(env, PET_NNODES, minimum=1)
    low, _, high = raw.partition(":")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        raise ConfigError(f"{PET_NNODES}={raw!r} is not N or MIN:MAX: fix or unset it") from None
    if lo != hi:
        raise ConfigError(
            f"{PET_NNODES}={raw!r} is an elastic node range, but `supervise --nproc-per-node` "
            f"launches a fixed node count: pass --nnodes N, {_ESCAPE}"
        )
    if lo < 1:
        raise ConfigError(f"{PET_NNODES}={raw!r} must be >= 1: fix or unset it")
    return lo


def _world_nodes(env: Mapping[str, str]) -> int | None:
    world = int_env(env, WORLD_SIZE, minimum=1)
    if world is None:
        return None
    per_node = env.get(PET_NPROC_PER_NODE, "")
    if not per_node.isdigit() or int(per_node) < 1:
        return world  # pods: Volcano, PyTorchJob with nprocPerNode "auto" or before v1.7
    if world % int(per_node):
        raise ConfigError(
            f"{WORLD_SIZE}={world} is not a multiple of {PET_NPROC_PER_NODE}={per_node} "
            "(PyTorchJob counts processes there), so the node count is unknown: pass --nnodes"
        )
    return world // int(per_node)


def _first(env: Mapping[str, str], names: tuple[str, ...], minimum: int) -> tuple[int, str] | None:
    for name in names:
        value = int_env(env, name, minimum)
        if value is not None:
            return value, name
    return None


def resolve(env: Mapping[str, str], given: Given) -> Resolved:
    """Complete `given` from the platform's variables, field by field; raises ConfigError.

    Whatever `given` has wins. A node count, once known, decides what else is required: more
    than one node needs a node rank and rank 0's address; one node runs on loopback.
    """
    used: set[str] = set()
    nnodes, nnodes_from = given.nnodes, given.nnodes_from
    if nnodes is None:
        nnodes = _pet_nnodes(env)
        nnodes_from = f"{PET_NNODES}={env.get(PET_NNODES)!r}"
        if nnodes is None:
            nnodes = _world_nodes(env)
            nnodes_from = f"{WORLD_SIZE}={env.get(WORLD_SIZE)!r}"
        if nnodes is not None:
            used.add(PET if _set(env, PET_NNODES) else MASTER_ENV)
    rank = given.node_rank
    if rank is None:
        found = _first(env, (PET_NODE_RANK, RANK), minimum=0)
        if found is not None:
            rank, name = found
            used.add(_FAMILY.get(name, MASTER_ENV))
    if nnodes is None:
        named = next((name for name in (PET_NODE_RANK, RANK) if _set(env, name)), None)
        if named is not None:  # a rank without a count: part of a gang of unknown size
            raise ConfigError(
                f"{named}={env[named]!r} is set but neither {PET_NNODES} nor {WORLD_SIZE} is, "
                "so the node count is unknown: pass --nnodes"
            )
        nnodes = 1
    master = given.master_addr
    if nnodes > 1 and master is None:
        name = next((n for n in (PET_MASTER_ADDR, MASTER_ADDR) if env.get(n, "").strip()), None)
        if name is not None:
            master = env[name]
            used.add(_FAMILY.get(name, MASTER_ENV))
    if nnodes > 1 and (rank is None or master is None):
        unknown, flags = [], []
        if rank is None:
            unknown.append(f"this pod's node rank (no {PET_NODE_RANK} or {RANK})")
            flags.append("--node-rank")
        if master is None:
            unknown.append(f"rank 0's address (no {PET_MASTER_ADDR} or {MASTER_ADDR})")
            flags.append("--master-addr")
        raise ConfigError(
            f"{nnodes} nodes ({nnodes_from}) but {' and '.join(unknown)} "
            f"{'is' if len(unknown) == 1 else 'are'} unknown: pass {' and '.join(flags)}"
        )
    port = given.master_port
    if port is None and used:  # a platform's port only goes with that platform's gang
        found = _first(env, (PET_MASTER_PORT, MASTER_PORT), minimum=1)
        if found is not None:
            port, name = found
            used.add(_FAMILY.get(name, MASTER_ENV))
    source = "+".join(family for family in (PET, MASTER_ENV) if family in used)
    return Resolved(nnodes, rank or 0, master, port, source)
