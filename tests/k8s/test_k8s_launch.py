"""torchrun launch derivation from Indexed Job and JobSet environments, and error.json reading.

The pure tests feed the environment the rendered manifests produce (read back from
`render_job` / `render_jobset`, so the two sides cannot drift). The slow tests exec the
derived command for real: torchrun with gloo on CPU, on loopback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from supervisor.core.errors import ConfigError
from supervisor.k8s.launch import LaunchOverrides, derive_topology, torchrun_command
from supervisor.k8s.render import render_job, render_jobset
from supervisor.k8s.spec import RenderOptions
from supervisor.process.torchrun_errorfile import read_error_file

OPTS = RenderOptions(
    name="train", image="registry.example/t:1", command=("train.py",), nnodes=4, master_port=29511
)
NONE = LaunchOverrides()


def _literal_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def job_env(index: int) -> dict[str, str]:
    """What a pod of the rendered Indexed Job sees: manifest env + controller/kubelet env."""
    container = render_job(OPTS)[1]["spec"]["template"]["spec"]["containers"][0]
    return {
        **_literal_env(container),
        "JOB_COMPLETION_INDEX": str(index),
        "HOSTNAME": f"train-{index}",
    }


def jobset_env(index: int) -> dict[str, str]:
    (jobset,) = render_jobset(OPTS)
    pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    env = _literal_env(pod["containers"][0])
    # The downward-API entries, resolved as the kubelet would from JobSet's pod labels.
    labels = {
        "jobset.sigs.k8s.io/jobset-name": "train",
        "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "jobset.sigs.k8s.io/job-index": "0",
        "jobset.sigs.k8s.io/restart-attempt": "0",
    }
    for entry in pod["containers"][0]["env"]:
        path = entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
        if path.startswith("metadata.labels['"):
            env[entry["name"]] = labels[path[len("metadata.labels['") : -2]]
    env.update({"JOB_COMPLETION_INDEX": str(index), "HOSTNAME": f"train-node-0-{index}"})
    return env


def test_indexed_job_env_gives_rank_master_and_port() -> None:
    for index in range(4):
        topo = derive_topology(job_env(index), NONE)
        assert (topo.nnodes, topo.node_rank, topo.source) == (4, index, "indexed-job")
        assert (topo.master_addr, topo.master_port) == ("train-0.train", 29511)


def test_jobset_env_gives_rank_and_jobset_hostname_of_rank_zero() -> None:
    for index in range(4):
        topo = derive_topology(jobset_env(index), NONE)
        assert (topo.nnodes, topo.node_rank, topo.source) == (4, index, "jobset")
        assert topo.master_addr == "train-node-0-0.train"


def test_jobset_rank_spans_several_jobs() -> None:
    env = {
        **jobset_env(1),
        "JOB_INDEX": "2",
        "SUPERVISE_PODS_PER_JOB": "2",
        "SUPERVISE_NNODES": "6",
    }
    assert derive_topology(env, NONE).node_rank == 5
    del env["SUPERVISE_PODS_PER_JOB"]
    with pytest.raises(ConfigError, match="SUPERVISE_PODS_PER_JOB"):
        derive_topology(env, NONE)


def test_jobset_subdomain_defaults_to_the_jobset_name() -> None:
    env = jobset_env(2)
    del env["SUPERVISE_SUBDOMAIN"]
    assert derive_topology(env, NONE).master_addr == "train-node-0-0.train"


def test_explicit_flags_win_field_by_field() -> None:
    env = job_env(3)
    topo = derive_topology(env, LaunchOverrides(master_addr="127.0.0.1"))
    assert (topo.master_addr, topo.node_rank, topo.nnodes) == ("127.0.0.1", 3, 4)
    topo = derive_topology(env, LaunchOverrides(nnodes=8, node_rank=7, master_port=1234))
    assert (topo.nnodes, topo.node_rank, topo.master_port) == (8, 7, 1234)
    assert topo.master_addr == "train-0.train"
    # Explicit flags also beat a JobSet.
    topo = derive_topology(jobset_env(1), LaunchOverrides(master_addr="10.0.0.9", node_rank=0))
    assert (topo.master_addr, topo.node_rank) == ("10.0.0.9", 0)


def test_outside_kubernetes_one_node_on_loopback() -> None:
    topo = derive_topology({}, NONE)
    assert (topo.nnodes, topo.node_rank, topo.master_addr, topo.master_port, topo.source) == (
        1,
        0,
        "127.0.0.1",
        29500,
        "local",
    )
    topo = derive_topology({}, LaunchOverrides(nnodes=2, node_rank=1, master_addr="h"))
    assert (topo.nnodes, topo.node_rank, topo.master_addr) == (2, 1, "h")


@pytest.mark.parametrize(
    ("env", "overrides", "fix"),
    [
        ({"JOB_COMPLETION_INDEX": "x", "SUPERVISE_NNODES": "2"}, NONE, "JOB_COMPLETION_INDEX"),
        ({"JOB_COMPLETION_INDEX": "-1", "SUPERVISE_NNODES": "2"}, NONE, "JOB_COMPLETION_INDEX"),
        ({"JOB_COMPLETION_INDEX": "0"}, NONE, "--nnodes"),
        ({"JOB_COMPLETION_INDEX": "0", "SUPERVISE_NNODES": "zero"}, NONE, "SUPERVISE_NNODES"),
        ({"JOB_COMPLETION_INDEX": "0", "SUPERVISE_NNODES": "0"}, NONE, "SUPERVISE_NNODES"),
        (
            {
                "JOB_COMPLETION_INDEX": "2",
                "SUPERVISE_NNODES": "2",
                "HOSTNAME": "a-2",
                "SUPERVISE_SUBDOMAIN": "s",
            },
            NONE,
            "node rank 2",
        ),
        (
            {
                "JOB_COMPLETION_INDEX": "1",
                "SUPERVISE_NNODES": "2",
                "HOSTNAME": "laptop",
                "SUPERVISE_SUBDOMAIN": "s",
            },
            NONE,
            "--master-addr",
        ),
        (
            {"JOB_COMPLETION_INDEX": "1", "SUPERVISE_NNODES": "2", "HOSTNAME": "t-1"},
            NONE,
            "SUPERVISE_SUBDOMAIN",
        ),
        (
            {"JOBSET_NAME": "js", "SUPERVISE_NNODES": "2", "JOB_COMPLETION_INDEX": "0"},
            NONE,
            "REPLICATED_JOB_NAME",
        ),
        ({"SUPERVISE_MASTER_PORT": "http"}, NONE, "SUPERVISE_MASTER_PORT"),
        ({}, LaunchOverrides(master_port=70000), "--master-port"),
        ({}, LaunchOverrides(nnodes=0), "--nnodes"),
        ({}, LaunchOverrides(nnodes=2), "--node-rank"),
        ({}, LaunchOverrides(node_rank=1), "--node-rank"),
        ({}, LaunchOverrides(master_addr=" "), "--master-addr"),
    ],
)
def test_bad_values_say_what_to_fix(env: dict, overrides: LaunchOverrides, fix: str) -> None:
    with pytest.raises(ConfigError) as err:
        derive_topology(env, overrides)
    assert fix in str(err.value)
    assert "\n" not in str(err.value)


def test_command_execs_torchrun_module_with_static_rendezvous() -> None:
    argv, extra = torchrun_command(
        8, ["train.py", "--lr", "1"], job_env(2), NONE, "/e/err.json", grace_period=25, python="/py"
    )
    assert argv[:3] == ["/py", "-m", "torch.distributed.run"]
    flags = dict(zip(argv[3:-3:2], argv[4:-3:2], strict=True))
    assert flags == {
        "--nnodes": "4",
        "--nproc-per-node": "8",
        "--node-rank": "2",
        "--master-addr": "train-0.train",
        "--master-port": "29511",
        "--rdzv-backend": "static",
        "--max-restarts": "0",
    }
    assert argv[-3:] == ["train.py", "--lr", "1"]
    assert extra == {
        "TORCHELASTIC_ERROR_FILE": "/e/err.json",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3",
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "22",
    }


def test_command_respects_what_the_user_already_set() -> None:
    env = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "9"}
    _, extra = torchrun_command(1, ["-m", "pkg.train"], env, NONE, "/e", grace_period=25)
    assert extra == {"TORCHELASTIC_ERROR_FILE": "/e"}
    _, extra = torchrun_command(1, ["t.py"], {}, NONE, "/e", grace_period=2)
    assert extra["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "1"


@pytest.mark.parametrize(
    ("nproc", "argv", "fix"),
    [
        (0, ["t.py"], "--nproc-per-node"),
        (1, [], "no training script"),
        (1, ["python", "t.py"], "not 'python'"),
        (1, ["/usr/bin/python3.11", "t.py"], "the script"),
        (1, ["--lr", "3"], "give the script"),
    ],
)
def test_bad_launch_input_is_a_config_error(nproc: int, argv: list[str], fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        torchrun_command(nproc, argv, {}, NONE, "/e")


# --- error.json ------------------------------------------------------------------------------


def test_error_file_from_torchrun_parent_copy() -> None:
    text = json.dumps(
        {
            "message": {
                "message": "RuntimeError: Connection closed by peer [127.0.0.1]:1234",
                "extraInfo": {
                    "py_callstack": "Traceback (most recent call last):\n"
                    + "  x\n" * 20
                    + "RuntimeError: Connection closed by peer",
                    "timestamp": "1700000000",
                },
                "errorCode": -6,
            }
        }
    )
    error = read_error_file(text)
    assert error is not None
    assert error.exception_type == "RuntimeError"
    assert (error.error_code, error.signal_name, error.timestamp) == (-6, "SIGABRT", 1700000000)
    assert error.traceback_tail.endswith("RuntimeError: Connection closed by peer")
    assert len(error.traceback_tail.splitlines()) == 8
    evidence = error.as_evidence()
    assert evidence["worker_exit_code"] == -6 and evidence["worker_signal"] == "SIGABRT"
    json.dumps(evidence)


@pytest.mark.parametrize(
    "text", ["", "  ", "{not json", "[]", '{"message": {}}', '{"message": 3}', '{"other": 1}']
)
def test_error_file_garbage_yields_nothing(text: str) -> None:
    assert read_error_file(text) is None


def test_error_file_plain_string_message() -> None:
    error = read_error_file('{"message": "worker died", "errorCode": 1}')
    assert error is not None
    assert (error.message, error.exception_type, error.error_code) == ("worker died", None, 1)


# --- real torchrun ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], extra: dict[str, str], cwd: Path, env: dict[str, str] | None = None):
    full = {**os.environ, **(env or {}), **extra}
    return subprocess.Popen(
        argv, cwd=cwd, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_real_torchrun_failure_reaches_the_error_file(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text(
        textwrap.dedent("""
        from torch.distributed.elastic.multiprocessing.errors import record

        @record
        def main():
            raise ValueError("bad shard 7")

        main()
    """)
    )
    error_file = tmp_path / "errors" / "error.json"
    error_file.parent.mkdir()
    overrides = LaunchOverrides(master_port=_free_port())
    argv, extra = torchrun_command(1, [str(script)], {}, overrides, str(error_file))
    proc = _run(argv, extra, tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out  # torchrun's "exit 1 for everything"
    error = read_error_file(error_file.read_text())
    assert error is not None, out
    assert error.exception_type == "ValueError" and "bad shard 7" in error.message
    assert error.error_code == 1


@pytest.mark.slow
def test_real_two_node_gloo_from_indexed_job_env(tmp_path: Path) -> None:
    """Two torchrun "nodes" on loopback, configured only by the Indexed Job's environment."""
    script = tmp_path / "ddp.py"
    script.write_text(
        textwrap.dedent("""
        import os, torch, torch.distributed as dist
        dist.init_process_group("gloo")
        t = torch.tensor([float(dist.get_rank() + 1)])
        dist.all_reduce(t)
        print(f"rank={dist.get_rank()} world={dist.get_world_size()} sum={t.item()}", flush=True)
        dist.destroy_process_group()
    """)
    )
    port = _free_port()
    procs = []
    for index in range(2):
        env = {
            "JOB_COMPLETION_INDEX": str(index),
            "HOSTNAME": f"train-{index}",
            "SUPERVISE_NNODES": "2",
            "SUPERVISE_SUBDOMAIN": "train",
            "SUPERVISE_MASTER_PORT": str(port),
        }
        # The master's DNS name does not resolve here: override it to loopback, as a flag would.
        argv, extra = torchrun_command(
            1,
            [str(script)],
            env,
            LaunchOverrides(master_addr="127.0.0.1"),
            str(tmp_path / f"err{index}.json"),
        )
        procs.append(_run(argv, extra, tmp_path, env))
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        outputs.append(out)
        assert proc.returncode == 0, out
    joined = "\n".join(outputs)
    assert "rank=0 world=2 sum=3.0" in joined and "rank=1 world=2 sum=3.0" in joined


@pytest.mark.slow
def test_real_torchrun_stops_a_stubborn_worker_within_the_derived_shutdown_timeout(
    tmp_path: Path,
) -> None:
    """Signal torchrun alone: it forwards SIGTERM to workers in their own sessions, then
    SIGKILLs them after TORCH_ELASTIC_SHUTDOWN_TIMEOUT (here 1 s, derived from a 4 s grace;
    torchrun's default would be 30 s)."""
    import signal
    import time

    pid_file = tmp_path / "worker.pid"
    script = tmp_path / "stubborn.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        while True:
            time.sleep(0.1)
    """)
    )
    overrides = LaunchOverrides(master_port=_free_port())
    argv, extra = torchrun_command(
        1, [str(script)], {}, overrides, str(tmp_path / "e.json"), grace_period=4
    )
    assert extra["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "1"
    proc = _run(argv, extra, tmp_path)
    try:
        deadline = time.monotonic() + 90
        while not (pid_file.exists() and pid_file.read_text()):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert os.getsid(worker) != os.getsid(proc.pid)  # a new session: killpg(torchrun) misses it
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)  # generous; the default timeout would need 30 s
        assert proc.returncode != 0, out  # a signalled torchrun never reports success
        assert not Path(f"/proc/{worker}").exists(), "torchrun left its worker running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_error_file_written_by_a_signalled_torchrun_is_marked() -> None:
    text = json.dumps(
        {
            "message": {
                "message": "SignalException: Process 14376 got signal: 15",
                "extraInfo": {"py_callstack": "...", "timestamp": "1"},
            }
        }
    )
    error = read_error_file(text)
    assert error is not None and error.torchrun_signalled and error.error_code is None
    assert error.as_evidence()["torchrun_signalled"] is True
    worker = read_error_file('{"message": {"message": "ValueError: x"}}')
    assert worker is not None and not worker.torchrun_signalled


@pytest.mark.slow
def test_real_peer_loss_reaches_node_zero_as_a_gloo_connection_error(tmp_path: Path) -> None:
    """What node 0 sees when node 1 is stopped mid-training (as a DEVICE_FAILED stop does):
    its worker's collective fails within seconds with gloo's "Connection closed by peer",
    torchrun exits 1, and the error file carries the RuntimeError; node 1's own file holds
    only torchrun's SignalException."""
    import signal
    import time

    script = tmp_path / "loop.py"
    script.write_text(
        textwrap.dedent("""
        import time, torch, torch.distributed as dist
        from torch.distributed.elastic.multiprocessing.errors import record

        @record
        def main():
            dist.init_process_group("gloo")
            open(f"ready{dist.get_rank()}", "w").write("1")
            t = torch.ones(1000)
            while True:
                dist.all_reduce(t)
                time.sleep(0.01)

        main()
    """)
    )
    port = _free_port()
    procs = []
    for index in range(2):
        env = {
            "JOB_COMPLETION_INDEX": str(index),
            "HOSTNAME": f"train-{index}",
            "SUPERVISE_NNODES": "2",
            "SUPERVISE_SUBDOMAIN": "train",
            "SUPERVISE_MASTER_PORT": str(port),
        }
        argv, extra = torchrun_command(
            1,
            [str(script)],
            env,
            LaunchOverrides(master_addr="127.0.0.1"),
            str(tmp_path / f"err{index}.json"),
            grace_period=10,
        )
        procs.append(_run(argv, extra, tmp_path, env))
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs]
            assert time.monotonic() < deadline, "the two nodes never rendezvoused"
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGTERM)
        procs[1].communicate(timeout=30)
        out, _ = procs[0].communicate(timeout=60)  # a bound, not a benchmark
        assert procs[0].returncode == 1, out
        node0 = read_error_file((tmp_path / "err0.json").read_text())
        assert node0 is not None and node0.exception_type == "RuntimeError", out
        assert "Connection closed by peer" in node0.message or "Connection reset" in node0.message
        node1 = read_error_file((tmp_path / "err1.json").read_text())
        assert node1 is not None and node1.torchrun_signalled
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
