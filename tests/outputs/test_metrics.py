"""`--metrics-port`: a real supervised run, scraped over HTTP while it trains.

The trainer is a real process using the client API (no torch, so the run is short); the GPU
fault is a shipped `--fake-gpus` scenario (the hardware boundary). The scrape is parsed with
`prometheus_client`'s own parser, and checked with `promtool` where one is on PATH.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.outputs import metrics

ROOT = Path(__file__).resolve().parents[2]
SUPERVISE = str(Path(sys.executable).with_name("supervise"))

# Steps every 50 ms with an `eval` phase and one commit of its own; answers a checkpoint
# request by committing, and once asked to leave waits for the test's go (a file).
TRAINER = textwrap.dedent(
    """
    import os, sys, time
    import supervisor

    go = sys.argv[1]
    sup = supervisor.attach()
    step = 0
    while not sup.stop_requested and step < 600:
        sup.step(step)
        if step == 5:
            with sup.phase("eval"):
                time.sleep(0.3)
        if step == 10:
            sup.committed(step)  # a save nobody asked for
        if sup.checkpoint_requested:
            sup.committed(step)
        time.sleep(0.05)
        step += 1
    print("trainer loaded prometheus_client:", "prometheus_client" in sys.modules, flush=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.05)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISE_")}
    return {**clean, "PYTHONPATH": str(ROOT)}


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        return reply.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _until(port: int, ok: Callable[[dict], bool], what: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    seen: dict = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # not listening yet
            seen = _samples(_scrape(port))
        if seen and ok(seen):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"no scrape showed {what}; last: {seen}")


def test_a_run_is_scraped_live_from_start_to_a_degraded_gpu(tmp_path: Path) -> None:
    port = _free_port()
    trainer, go = tmp_path / "trainer.py", tmp_path / "go"
    trainer.write_text(TRAINER)
    command = [
        *(SUPERVISE, "--termination-log", "/dev/null", "--metrics-port", str(port)),
        *("--fake-gpus", "thermal_slowdown", "--gpu-poll-interval", "0.2"),
        *("--", sys.executable, str(trainer), str(go)),
    ]
    child = subprocess.Popen(
        command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        step = ("supervise_rank_step", (("rank", "0"),))
        first = _until(port, lambda s: s.get(step, -1) >= 2, "rank 0 stepping")
        later = _until(port, lambda s: s.get(step, -1) > first[step], "rank 0's step advancing")
        assert ("supervise_rank_heartbeat_age_seconds", (("rank", "0"),)) in later
        assert later[("supervise_attempt", ())] == 1
        uuid = "GPU-fake0000-0000-0000-0000-000000000000"  # the scenario's first GPU
        gpu = ("supervise_gpu_healthy", (("gpu", "0"), ("uuid", uuid)))
        degraded = ("supervise_findings_total", (("class", "DEVICE_DEGRADED"),))
        done = _until(
            port,
            lambda s: (
                s.get(degraded, 0) >= 1
                and s.get(gpu) == 0
                # the save of its own, then the one the degraded GPU asked for
                and s.get(("supervise_checkpoint_commits_total", ()), 0) >= 2
            ),
            "the degraded GPU's finding and both checkpoint commits",
        )
        age = done[("supervise_rank_heartbeat_age_seconds", (("rank", "0"),))]
        assert 0 <= age < 5
        assert done[("supervise_rank_step_time_seconds", (("rank", "0"),))] == pytest.approx(
            0.05, abs=0.04
        )
        assert done[("supervise_checkpoint_requests_total", (("reason", "degraded"),))] == 1
        assert done[("supervise_checkpoint_last_step", ())] > 10
        assert 0 <= done[("supervise_checkpoint_request_to_commit_seconds", ())] < 5
        phase = {k[1][0][1]: v for k, v in done.items() if k[0] == "supervise_phase_seconds_total"}
        assert phase["eval"] >= 0.2 and phase["steps"] > 0 and phase["init"] >= 0, phase
        bucket = {k[1][0][1]: v for k, v in done.items() if k[0] == "supervise_attempt_seconds"}
        assert set(bucket) == {"init", "eval", "committed", "uncommitted", "stalled"}, bucket
        assert bucket["eval"] == phase["eval"] and bucket["committed"] > 0, bucket
        steps = bucket["committed"] + bucket["uncommitted"] + bucket["stalled"]
        assert steps == pytest.approx(phase["steps"], abs=0.2)  # two looks, 0.1 s apart
        ratio = done[("supervise_attempt_goodput_ratio", ())]
        assert 0 < ratio < 1
        # committed over the ratio is the attempt's elapsed time: at least what was charged
        assert bucket["committed"] / ratio >= sum(bucket.values()) - 0.01
        text = _scrape(port)
        promtool = shutil.which("promtool")
        if promtool:
            check = subprocess.run([promtool, "check", "metrics"], input=text, text=True)
            assert check.returncode == 0
    finally:
        go.touch()
        out, err = child.communicate(timeout=30)
    assert child.returncode == 83, err  # DEVICE_DEGRADED
    assert "trainer loaded prometheus_client: False" in out
    with pytest.raises(OSError):  # the endpoint is gone with the run
        _scrape(port)


def test_a_port_in_use_is_config_error_before_the_command_starts(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *(SUPERVISE, "--termination-log", "/dev/null", "--metrics-port", str(port)),
                *("--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"),
            ],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 81, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("supervise: error")]
    assert errors == [
        f"supervise: error: --metrics-port {port}: cannot listen on 0.0.0.0:{port}: "
        "Address already in use"
    ]
    assert not marker.exists()


def test_the_environment_twin_turns_it_on_and_a_bad_port_is_refused() -> None:
    env = {**_env(), "SUPERVISE_METRICS_PORT": "70000"}
    result = subprocess.run(
        [SUPERVISE, "--termination-log", "/dev/null", "--", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 81
    assert "SUPERVISE_METRICS_PORT (the twin of --metrics-port)" in result.stderr


def test_the_training_api_never_loads_prometheus_client() -> None:
    code = "import sys, supervisor, supervisor.client; print('prometheus_client' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env()
    )
    assert loaded.stdout.strip() == "False", loaded.stderr


def test_readme_metric_table_is_generated_from_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- metrics:begin -->\n(.*?)\n<!-- metrics:end -->", readme, re.S)
    assert found, "README lost its metrics markers"
    assert found.group(1) == metrics.markdown_table(), (
        "regenerate with supervisor.outputs.metrics.markdown_table()"
    )


def test_metric_names_follow_prometheus_conventions() -> None:
    for metric in metrics.METRICS:
        assert re.fullmatch(r"supervise_[a-z_]+", metric.name), metric.name
        assert metric.name.endswith("_total") == (metric.type == "counter"), metric.name
        assert not metric.name.endswith(("_ms", "_milliseconds", "_minutes")), metric.name
    assert len({m.name for m in metrics.METRICS}) == len(metrics.METRICS)


def test_the_counts_follow_the_typed_outputs_across_a_restart() -> None:
    from supervisor.core import outputs as out
    from supervisor.core.events import Finding
    from supervisor.core.exitcodes import ExitCode
    from supervisor.watch.live import LiveView

    def gpu_finding(index: int, code: ExitCode | None) -> out.FindingReported:
        detail = {"gpu_index": index, "gpu_uuid": f"GPU-{index}"}
        return out.FindingReported(Finding("gpu", "xid", "s", code, detail=detail))

    live = LiveView()
    live.gpus = ((0, "GPU-0"), (1, "GPU-1"), (2, "GPU-2"))
    counts = metrics.Counts()
    for mono, output in enumerate(
        [
            out.Started(command=("t",), attempt=1),
            gpu_finding(1, ExitCode.TRAINING_FAILED),  # an Xid the code caused: GPU still fine
            gpu_finding(2, ExitCode.DEVICE_FAILED),
            out.FindingReported(Finding("child", "exit", "s")),
            out.CheckpointRequested(reason="hang", why="w", generation=3, deadline_in_s=5.0),
            out.RestartScheduled(
                klass="HANG", reason="r", attempt=1, restart_in_s=1.0, restarts_left=1
            ),
            out.Started(command=("t",), attempt=2, resume_step=7),
            out.CheckpointCommitted(step=9, generation=3),
        ]
    ):
        counts.record(output, float(mono))
    got = {m.name: samples for m, samples in metrics.families(counts, live, 0)}
    assert got["supervise_attempt"] == [((), 2)]
    assert got["supervise_restarts_total"] == [((), 1)]
    assert got["supervise_findings_total"] == [
        (("DEVICE_FAILED",), 1),
        (("TRAINING_FAILED",), 1),
        (("none",), 1),
    ]
    assert got["supervise_gpu_healthy"] == [
        (("0", "GPU-0"), 1),
        (("1", "GPU-1"), 1),
        (("2", "GPU-2"), 0),
    ]
    assert got["supervise_checkpoint_requests_total"] == [(("hang",), 1)]
    assert got["supervise_checkpoint_last_step"] == [((), 9)]
    assert got["supervise_checkpoint_request_to_commit_seconds"] == [((), 3.0)]
    assert got["supervise_rank_step"] == [] and got["supervise_phase_seconds_total"] == []
    assert got["supervise_attempt_seconds"] == [] and got["supervise_attempt_goodput_ratio"] == []
    assert list(got) == [m.name for m in metrics.METRICS]  # every metric, in the table's order


def test_the_attempt_s_time_is_split_by_what_its_commits_keep() -> None:
    from supervisor.channel import Slot, SlotState
    from supervisor.watch.live import LiveView
    from supervisor.watch.phases import PhaseClock
    from supervisor.watch.sample import Sample

    def sample(now: float, step: int, ckpt: int = -1, phase: str = "") -> Sample:
        beat = round(now * 1e9)
        return Sample((Slot(0, 7, SlotState.RUNNING, step, beat, ckpt, 0, phase),), now)

    live, clock = LiveView(), PhaseClock(since=100.0)
    live.begin(clock)
    for seen in (
        sample(102.0, -1, phase="restore"),
        sample(103.0, 1),
        sample(107.0, 40, ckpt=40),
        sample(108.0, 50),
        sample(110.0, 50),
    ):
        clock.observe(seen)
        live.observe(seen)
    got = {m.name: samples for m, samples in metrics.families(metrics.Counts(), live, 0)}
    assert sorted(got["supervise_attempt_seconds"]) == [
        (("committed",), 4.0),
        (("init",), 1.0),
        (("restore",), 2.0),
        (("stalled",), 2.0),
        (("uncommitted",), 1.0),
    ]
    assert got["supervise_attempt_goodput_ratio"] == [((), 0.4)]
    assert got["supervise_rank_step"] == [(("0",), 50)]
    # A restart in place: the new attempt's clock does not show the old rank's slot.
    live.begin(PhaseClock(since=200.0))
    live.observe(sample(110.0, 50))
    assert live.ranks() == ()
