"""The torchrun topology from pods other platforms made: Kubeflow PyTorchJob and TrainJob, and
Volcano. Each environment below is what that platform's controller writes into a pod (the
source file is named beside it); the pure tests derive the topology from it, and the CLI
tests run the real `supervise` in it and read the torchrun command it launched from the
`started` event."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from supervisor.core.errors import ConfigError
from supervisor.k8s.launch import LaunchOverrides, Topology, derive_topology
from tests.conftest import SUPERVISE
from tests.k8s.test_k8s_launch import job_env, jobset_env
from tests.process.runs import free_port, wait_for_event

NONE = LaunchOverrides()


# kubeflow/training-operator pkg/controller.v1/pytorch/{envvar,master}.go (v1.7+): a
# PyTorchJob with a Master and 3 Workers, nprocPerNode "auto" (the default); this is worker 1,
# pod rank 2. WORLD_SIZE counts pods because nprocPerNode is not an integer.
def pytorchjob(rank: int = 2, nproc: str = "auto", replicas: int = 4) -> dict[str, str]:
    world = replicas * int(nproc) if nproc.isdigit() else replicas
    return {
        "PYTHONUNBUFFERED": "1",
        "MASTER_PORT": "23456",
        "MASTER_ADDR": "pt-master-0",
        "WORLD_SIZE": str(world),
        "RANK": str(rank),
        "PET_NPROC_PER_NODE": nproc,
        "PET_NODE_RANK": str(rank),
        "PET_MASTER_ADDR": "pt-master-0",
        "PET_MASTER_PORT": "23456",
        "PET_NNODES": str(replicas),
        "HOSTNAME": f"pt-worker-{rank - 1}" if rank else "pt-master-0",
    }


# The same operator before v1.7 (PR #1840): no PET_* at all, WORLD_SIZE = replicas.
def pytorchjob_v16(rank: int = 2) -> dict[str, str]:
    return {k: v for k, v in pytorchjob(rank).items() if not k.startswith("PET_")}


# elastic.go: elasticPolicy {minReplicas 1, maxReplicas 4}, Workers only.
ELASTIC = {
    "PET_RDZV_ENDPOINT": "pt-worker-0:23456",
    "PET_RDZV_BACKEND": "c10d",
    "PET_NNODES": "1:4",
    "PET_MAX_RESTARTS": "3",
    "HOSTNAME": "pt-worker-1",
}


# kubeflow/trainer pkg/runtime/framework/plugins/torch/torch.go: TrainJob "tj", 4 nodes; the
# nodes are an Indexed Job of a JobSet, so the Job controller adds JOB_COMPLETION_INDEX.
def trainjob(rank: int = 2, nnodes: int = 4) -> dict[str, str]:
    return {
        "PET_NNODES": str(nnodes),
        "PET_NPROC_PER_NODE": "auto",
        "PET_NODE_RANK": str(rank),
        "PET_MASTER_ADDR": "tj-node-0-0.tj",
        "PET_MASTER_PORT": "29500",
        "JOB_COMPLETION_INDEX": str(rank),
        "HOSTNAME": f"tj-node-0-{rank}",
    }


# volcano-sh/volcano pkg/controllers/job/plugins/distributed-framework/pytorch/pytorch.go:
# Job "vj" with task master (1) and worker (2); this is worker 0, pod rank 1.
def volcano(rank: int = 1, pods: int = 3) -> dict[str, str]:
    return {
        "MASTER_ADDR": "vj-master-0.vj",
        "MASTER_PORT": "23456",
        "WORLD_SIZE": str(pods),
        "RANK": str(rank),
        "HOSTNAME": f"vj-worker-{rank - 1}" if rank else "vj-master-0",
    }


@pytest.mark.parametrize(
    ("env", "want"),
    [
        (pytorchjob(0), Topology(4, 0, "pt-master-0", 23456, "pet")),
        (pytorchjob(2), Topology(4, 2, "pt-master-0", 23456, "pet")),
        # Integer nprocPerNode: WORLD_SIZE = 32 processes; PET_NNODES still says 4 nodes.
        (pytorchjob(3, nproc="8"), Topology(4, 3, "pt-master-0", 23456, "pet")),
        (pytorchjob_v16(2), Topology(4, 2, "pt-master-0", 23456, "master-env")),
        (trainjob(0), Topology(4, 0, "tj-node-0-0.tj", 29500, "pet")),
        (trainjob(3), Topology(4, 3, "tj-node-0-0.tj", 29500, "pet")),
        (volcano(0), Topology(3, 0, "vj-master-0.vj", 23456, "master-env")),
        (volcano(2), Topology(3, 2, "vj-master-0.vj", 23456, "master-env")),
        # kubeflow/pytorch-operator: PET_NNODES and PET_MASTER_* but the rank only as RANK.
        (
            {
                "PET_NNODES": "2",
                "PET_MASTER_ADDR": "op-master-0",
                "PET_MASTER_PORT": "23456",
                "MASTER_ADDR": "op-master-0",
                "MASTER_PORT": "23456",
                "WORLD_SIZE": "2",
                "RANK": "1",
            },
            Topology(2, 1, "op-master-0", 23456, "pet+master-env"),
        ),
        # One node alone: loopback, whatever the platform calls rank 0.
        (trainjob(0, nnodes=1), Topology(1, 0, "127.0.0.1", 29500, "pet")),
        (volcano(0, pods=1), Topology(1, 0, "127.0.0.1", 23456, "master-env")),
        (pytorchjob(0, nproc="8", replicas=1), Topology(1, 0, "127.0.0.1", 23456, "pet")),
        # A fixed range is a count; a static backend is what supervise launches anyway.
        ({**trainjob(1, 2), "PET_NNODES": "2:2"}, Topology(2, 1, "tj-node-0-0.tj", 29500, "pet")),
        (
            {**volcano(1), "PET_RDZV_BACKEND": "static", "PET_STANDALONE": "0"},
            Topology(3, 1, "vj-master-0.vj", 23456, "master-env"),
        ),
    ],
)
def test_each_platform_env_gives_its_topology(env: dict, want: Topology) -> None:
    assert derive_topology(env, NONE) == want


def test_world_size_counts_processes_only_with_an_integer_nproc_per_node() -> None:
    # PyTorchJob with nprocPerNode "8" sets WORLD_SIZE = replicas x 8; without PET_NNODES
    # the node count is the quotient. Any other PET_NPROC_PER_NODE leaves WORLD_SIZE as pods.
    env = {"WORLD_SIZE": "16", "RANK": "1", "MASTER_ADDR": "m", "PET_NPROC_PER_NODE": "8"}
    assert derive_topology(env, NONE).nnodes == 2
    for nproc in ("auto", "gpu", "cpu", ""):
        assert derive_topology({**env, "PET_NPROC_PER_NODE": nproc}, NONE).nnodes == 16


# --- precedence -------------------------------------------------------------------------------


def test_flags_win_over_every_platform_field_by_field() -> None:
    for env, rank in ((pytorchjob(2), 2), (trainjob(3), 3), (volcano(1), 1)):
        topo = derive_topology(env, LaunchOverrides(master_addr="10.0.0.9"))
        assert (topo.node_rank, topo.master_addr) == (rank, "10.0.0.9")
        topo = derive_topology(env, LaunchOverrides(nnodes=8, node_rank=7, master_port=1234))
        assert (topo.nnodes, topo.node_rank, topo.master_port) == (8, 7, 1234)
        assert topo.master_addr == (env.get("PET_MASTER_ADDR") or env["MASTER_ADDR"])
    # SUPERVISE_MASTER_PORT is --master-port's twin: it beats the platform's port too.
    topo = derive_topology({**volcano(1), "SUPERVISE_MASTER_PORT": "4444"}, NONE)
    assert topo.master_port == 4444


def test_flags_alone_make_the_topology_local_and_ignore_a_stray_port() -> None:
    # No platform shape: MASTER_PORT alone is some other program's, not a gang's.
    topo = derive_topology({"MASTER_PORT": "1111", "MASTER_ADDR": "elsewhere"}, NONE)
    assert topo == Topology(1, 0, "127.0.0.1", 29500, "local")
    # An address only completes a gang the flags already declared.
    topo = derive_topology({"MASTER_ADDR": "m0"}, LaunchOverrides(nnodes=2, node_rank=1))
    assert (topo.master_addr, topo.source) == ("m0", "master-env")


def test_our_rendered_env_wins_over_pet_and_master_env() -> None:
    stray = {**trainjob(3), **volcano(2), "PET_MASTER_PORT": "1"}
    for ours, source, master in (
        (job_env(1), "indexed-job", "train-0.train"),
        (jobset_env(1), "jobset", "train-node-0-0.train"),
    ):
        topo = derive_topology({**stray, **ours}, NONE)
        assert (topo.nnodes, topo.node_rank, topo.source) == (4, 1, source)
        assert (topo.master_addr, topo.master_port) == (master, 29511)


def test_a_platforms_indexed_job_is_read_as_the_platform() -> None:
    # TrainJob nodes carry JOB_COMPLETION_INDEX too; without our SUPERVISE_SUBDOMAIN the
    # index alone must not send them down the Indexed Job path (which would ask for nnodes).
    assert derive_topology(trainjob(2), NONE).source == "pet"
    assert derive_topology({"JOB_COMPLETION_INDEX": "0"}, LaunchOverrides(nnodes=1)).source == (
        "indexed-job"
    )


def test_pet_wins_over_master_env() -> None:
    env = {
        **volcano(1, pods=6),
        "PET_NNODES": "3",
        "PET_NODE_RANK": "2",
        "PET_MASTER_ADDR": "pet-master",
        "PET_MASTER_PORT": "29999",
    }
    assert derive_topology(env, NONE) == Topology(3, 2, "pet-master", 29999, "pet")


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "overrides", "fixes"),
    [
        # Elastic PyTorchJob: torchrun would take the endpoint over supervise's master.
        ({**ELASTIC}, NONE, ["PET_RDZV_BACKEND='c10d'", "elasticPolicy", "supervise -- torchrun"]),
        ({"PET_RDZV_ENDPOINT": "h:1", **trainjob()}, NONE, ["PET_RDZV_ENDPOINT='h:1'"]),
        ({"PET_STANDALONE": "", **trainjob()}, NONE, ["PET_STANDALONE=''"]),
        # ... whatever the flags say, and even beside our own manifests' env.
        (
            ELASTIC,
            LaunchOverrides(nnodes=2, node_rank=1, master_addr="m"),
            ["PET_RDZV_ENDPOINT"],
        ),
        ({**job_env(1), "PET_RDZV_ENDPOINT": "h:1"}, NONE, ["PET_RDZV_ENDPOINT"]),
        # A node range without the rendezvous variables.
        ({**trainjob(), "PET_NNODES": "1:4"}, NONE, ["PET_NNODES='1:4'", "--nnodes"]),
        # Multi-node shapes with a field missing.
        ({"WORLD_SIZE": "4", "MASTER_ADDR": "m"}, NONE, ["WORLD_SIZE='4'", "--node-rank"]),
        ({"WORLD_SIZE": "4", "RANK": "1"}, NONE, ["MASTER_ADDR", "--master-addr"]),
        ({"WORLD_SIZE": "4", "RANK": "1", "MASTER_ADDR": "  "}, NONE, ["--master-addr"]),
        ({"PET_NNODES": "2", "PET_NODE_RANK": "1"}, NONE, ["PET_MASTER_ADDR", "--master-addr"]),
        # A worker-only PyTorchJob without elasticPolicy sets PET_NNODES and nothing else.
        (
            {"PET_NNODES": "3", "PET_NPROC_PER_NODE": "auto"},
            NONE,
            ["PET_NNODES='3'", "--node-rank and --master-addr"],
        ),
        ({"RANK": "1"}, NONE, ["RANK='1'", "--nnodes"]),
        ({"PET_NODE_RANK": "0", "MASTER_ADDR": "m"}, NONE, ["PET_NODE_RANK='0'", "--nnodes"]),
        # Values that are not what the platforms write.
        ({**volcano(), "WORLD_SIZE": "four"}, NONE, ["WORLD_SIZE='four'", "not an integer"]),
        ({**volcano(), "RANK": "-1"}, NONE, ["RANK='-1'", ">= 0"]),
        ({**volcano(), "WORLD_SIZE": "0"}, NONE, ["WORLD_SIZE='0'", ">= 1"]),
        ({**trainjob(), "PET_NNODES": "two"}, NONE, ["PET_NNODES='two'"]),
        ({**trainjob(), "PET_NNODES": "a:b"}, NONE, ["PET_NNODES='a:b'", "MIN:MAX"]),
        ({**trainjob(0), "PET_NNODES": "0"}, NONE, ["PET_NNODES='0'", ">= 1"]),
        ({**trainjob(), "PET_NODE_RANK": "x"}, NONE, ["PET_NODE_RANK='x'"]),
        ({**trainjob(), "PET_MASTER_PORT": "http"}, NONE, ["PET_MASTER_PORT='http'"]),
        ({**volcano(), "MASTER_PORT": "70000"}, NONE, ["70000", "1..65535"]),
        ({**volcano(3, pods=3)}, NONE, ["node rank 3 is outside 0..2"]),
        (
            {"WORLD_SIZE": "6", "RANK": "1", "MASTER_ADDR": "m", "PET_NPROC_PER_NODE": "4"},
            NONE,
            ["not a multiple of PET_NPROC_PER_NODE=4", "--nnodes"],
        ),
    ],
)
def test_unresolvable_platform_env_is_refused_with_the_fix(
    env: dict, overrides: LaunchOverrides, fixes: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        derive_topology(env, overrides)
    message = str(err.value)
    assert "\n" not in message
    for fix in fixes:
        assert fix in message, message


# --- through the real CLI --------------------------------------------------------------------

# Everything a platform could have put in this test's own environment, so the outer
# environment (a CI pod of one of these platforms) cannot change what is tested.
PLATFORM_NAMES = {
    *(k for k in os.environ if k.startswith(("PET_", "SUPERVISE_"))),
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "JOB_COMPLETION_INDEX",
    "JOBSET_NAME",
}

SHOW = textwrap.dedent("""
    import os
    print("worker", *(os.environ[k] for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR")), flush=True)
""")


def _supervise(tmp_path: Path, env: dict[str, str], *flags: str) -> subprocess.Popen:
    script = tmp_path / "show.py"
    script.write_text(SHOW)
    base = {k: v for k, v in os.environ.items() if k not in PLATFORM_NAMES}
    return subprocess.Popen(
        [
            SUPERVISE,
            "--termination-log",
            str(tmp_path / "run.term"),
            "--event-log",
            str(tmp_path / "run.events"),
            "--nproc-per-node",
            "1",
            *flags,
            "--",
            str(script),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**base, **env},
        cwd=tmp_path,
    )


def _torchrun_flags(command: list[str]) -> dict[str, str]:
    assert command[1:3] == ["-m", "torch.distributed.run"], command
    return dict(zip(command[3:-1:2], command[4:-1:2], strict=True))


def test_a_single_node_trainjob_runs_through_torchrun(tmp_path: Path) -> None:
    port = str(free_port())
    env = {**trainjob(0, nnodes=1), "PET_MASTER_PORT": port}
    proc = _supervise(tmp_path, env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    flags = _torchrun_flags(wait_for_event(tmp_path, "run", "started")["command"])
    assert (flags["--nnodes"], flags["--node-rank"]) == ("1", "0")
    assert (flags["--master-addr"], flags["--master-port"]) == ("127.0.0.1", port)
    assert "worker 1 0 127.0.0.1" in out.decode()


@pytest.mark.parametrize(
    ("env", "rank"),
    [(pytorchjob(2), "2"), (trainjob(3), "3"), (volcano(1, pods=2), "1")],
    ids=["pytorchjob", "trainjob", "volcano"],
)
def test_a_multi_node_platform_pod_launches_its_rank_of_the_gang(
    tmp_path: Path, env: dict[str, str], rank: str
) -> None:
    # Rank 0 never comes, so torchrun would wait for it: the `started` event (written when
    # torchrun is spawned) is read, then the pod is preempted.
    port = str(free_port())
    env = {**env, "PET_MASTER_PORT": port, "MASTER_PORT": port}
    want_master = env.get("PET_MASTER_ADDR") or env["MASTER_ADDR"]
    want_nodes = env.get("PET_NNODES") or env["WORLD_SIZE"]
    proc = _supervise(tmp_path, env, "--grace-period", "2")
    try:
        started = wait_for_event(tmp_path, "run", "started", timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    flags = _torchrun_flags(started["command"])
    assert flags["--nnodes"] == want_nodes != "1"
    assert (flags["--node-rank"], flags["--master-addr"]) == (rank, want_master)
    assert (flags["--master-port"], flags["--rdzv-backend"]) == (port, "static")
    assert proc.returncode == 85, err.decode()  # PREEMPTED: never a success


@pytest.mark.parametrize(
    ("env", "fix"),
    [
        ({**ELASTIC}, "elasticPolicy"),
        ({"WORLD_SIZE": "4", "MASTER_ADDR": "m"}, "pass --node-rank"),
    ],
    ids=["elastic-pytorchjob", "world-size-without-rank"],
)
def test_a_refused_platform_env_exits_81_with_one_line(
    tmp_path: Path, env: dict[str, str], fix: str
) -> None:
    proc = _supervise(tmp_path, env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 81, err.decode()
    lines = err.decode().splitlines()
    assert len(lines) == 1 and fix in lines[0], lines
    assert (
        not (tmp_path / "run.events").exists()
        or '"started"' not in (tmp_path / "run.events").read_text()
    )
