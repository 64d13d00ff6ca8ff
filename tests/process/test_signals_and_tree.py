"""Black-box: signals, grace, reaping, and the tree's fate, with the real binary."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import SUPERVISE

READY = "import sys; print('ready', flush=True)\n"


def start(tmp_path: Path, *command: str, grace: float = 2.0, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [
            SUPERVISE,
            "--grace-period",
            str(grace),
            "--termination-log",
            str(tmp_path / "term"),
            "--event-log",
            str(tmp_path / "events"),
            "--",
            *command,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def wait_ready(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"


def termination(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "term").read_text())


def events(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "events").read_text().splitlines()]


def child_evidence(tmp_path: Path) -> dict:
    return next(e for e in termination(tmp_path)["evidence"] if e["source"] == "child")


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_trainer_exiting_zero_after_sigterm_is_preempted(tmp_path: Path) -> None:
    script = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    print('saving', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n" + READY + "time.sleep(60)\n"
    )
    proc = start(tmp_path, sys.executable, "-c", script)
    wait_ready(proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 85
    assert out.strip() == b"saving"  # the child got SIGTERM and its output still arrived
    assert child_evidence(tmp_path)["exitStatus"] == 0
    assert termination(tmp_path)["name"] == "PREEMPTED"


def test_child_ignoring_sigterm_is_killed_when_the_grace_period_ends(tmp_path: Path) -> None:
    grace = 1.5
    script = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + READY
    script += "time.sleep(60)\n"
    proc = start(tmp_path, sys.executable, "-c", script, grace=grace)
    wait_ready(proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == 85
    assert grace <= took < grace + 3.0, took
    assert child_evidence(tmp_path)["signal"] == "SIGKILL"
    assert "grace_expired" in [e["event"] for e in events(tmp_path)]


def test_sigint_is_preempted_too(tmp_path: Path) -> None:
    proc = start(tmp_path, sys.executable, "-c", READY + "import time; time.sleep(60)")
    wait_ready(proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 85
    assert child_evidence(tmp_path)["signal"] == "SIGINT"


def _hostile_parent() -> None:
    """Give supervise the worst inheritance: signals blocked, and ignored up to SIGRTMAX."""
    watched = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2}
    for signum in (*watched, signal.SIGQUIT, signal.SIGRTMIN + 2, signal.SIGRTMAX):
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, watched | {signal.SIGRTMIN + 3})


def test_child_starts_with_default_dispositions_and_an_empty_mask(tmp_path: Path) -> None:
    proc = start(
        tmp_path, "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status", preexec_fn=_hostile_parent
    )
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    masks = dict(line.split(":") for line in out.decode().splitlines())
    # Bits 31 and 32 are signals 32 and 33, which glibc reserves and will not let anyone
    # change; a parent that ignored them leaves them ignored, harmlessly.
    glibc_reserved = (1 << 31) | (1 << 32)
    assert int(masks["SigBlk"], 16) == 0
    assert int(masks["SigIgn"], 16) & ~glibc_reserved == 0


def test_trainer_really_dies_on_sigterm_despite_a_hostile_parent(tmp_path: Path) -> None:
    proc = start(tmp_path, "sh", "-c", "echo ready; exec sleep 60", preexec_fn=_hostile_parent)
    wait_ready(proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 85
    assert child_evidence(tmp_path)["signal"] == "SIGTERM"
    assert time.monotonic() - sent < 1.5  # the child died of SIGTERM, not the grace SIGKILL


def test_hup_usr1_usr2_are_forwarded_and_do_not_stop_the_run(tmp_path: Path) -> None:
    script = (
        "import signal, sys\n"
        "got = []\n"
        "def note(signum, _):\n"
        "    got.append(signum); print(signal.Signals(signum).name, flush=True)\n"
        "for s in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):\n"
        "    signal.signal(s, note)\n" + READY + "while len(got) < 3:\n    signal.pause()\n"
    )
    proc = start(tmp_path, sys.executable, "-c", script)
    wait_ready(proc)
    assert proc.stdout is not None
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        proc.send_signal(signum)
        assert proc.stdout.readline().strip() == signal.Signals(signum).name.encode()
    proc.communicate(timeout=30)
    assert proc.returncode == 0


ZOMBIE_SCRIPT = (
    # Five orphans: each subshell exits at once, leaving its `sleep` to be reparented.
    "for i in 1 2 3 4 5; do (sleep 0.2 &) ; done; sleep 1.5; "
    "n=0; for s in /proc/[0-9]*/status; do "
    "  grep -q '^State:.*Z' $s 2>/dev/null && grep -q \"^PPid:.*\\b$PPID$\" $s && n=$((n+1)); "
    "done; echo zombies=$n"
)


def test_orphans_are_reaped_when_not_pid_1(tmp_path: Path) -> None:
    proc = start(tmp_path, "sh", "-c", ZOMBIE_SCRIPT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out.strip() == b"zombies=0"
    assert events(tmp_path)[-1]["orphansReaped"] >= 5


needs_root_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="PID namespaces need root and util-linux unshare",
)


@needs_root_unshare
def test_orphans_are_reaped_as_pid_1_in_a_pid_namespace(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            SUPERVISE,
            "--termination-log",
            str(tmp_path / "term"),
            "--event-log",
            str(tmp_path / "events"),
            "--",
            "sh",
            "-c",
            "echo pid1=$(cat /proc/1/comm); " + ZOMBIE_SCRIPT.replace("$PPID", "1"),
        ],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().split()
    assert lines[0].startswith("pid1=supervise") or lines[0].startswith("pid1=python")
    assert lines[1] == "zombies=0"
    assert events(tmp_path)[-1]["orphansReaped"] >= 5


def test_no_descendant_survives_supervise(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (
        f"setsid sleep 1000 & echo $! > {pids}; "
        f"nohup sleep 1000 >/dev/null 2>&1 & echo $! >> {pids}; "
        f"(sleep 1000 &) ; exit 0"
    )
    proc = start(tmp_path, "sh", "-c", script)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    for pid in map(int, pids.read_text().split()):
        assert gone(pid, within=2.0), f"descendant {pid} survived supervise"
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "1000"]
    ]


def test_sigkilled_supervise_takes_its_child_with_it(tmp_path: Path) -> None:
    proc = start(tmp_path, "sh", "-c", "echo ready; exec sleep 1000")
    wait_ready(proc)
    child = next(e["pid"] for e in events(tmp_path) if e["event"] == "child_started")
    proc.kill()
    proc.wait(timeout=10)
    assert gone(child), "the child outlived a SIGKILLed supervise"


@needs_root_unshare
def test_sigkilled_supervise_as_pid_1_takes_the_whole_tree(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            SUPERVISE,
            "--termination-log",
            os.devnull,
            "--event-log",
            os.devnull,
            "--",
            "sh",
            "-c",
            "setsid sleep 1000 & sleep 1000 & echo ready; wait",
        ],
        stdout=subprocess.PIPE,
    )
    wait_ready(proc)
    unshare = psutil.Process(proc.pid)
    supervise_proc = unshare.children()[0]
    tree = supervise_proc.children(recursive=True)
    assert len(tree) >= 3  # sh and two sleeps, one in its own session
    supervise_proc.kill()
    proc.wait(timeout=10)
    for p in tree:
        assert gone(p.pid), f"{p.pid} survived its PID namespace's init"


def test_100_mb_of_output_arrives_intact(tmp_path: Path) -> None:
    # Deterministic, incompressible-looking output in uneven chunks, on both streams.
    script = (
        "import hashlib, os, sys\n"
        "block = b''.join(hashlib.sha256(str(i).encode()).digest() for i in range(4096))\n"
        "left = 100 * 1024 * 1024; i = 0\n"
        "while left:\n"
        "    n = min(left, 1 + (i * 7919) % len(block)); i += 1\n"
        "    sys.stdout.buffer.write(block[:n]); left -= n\n"
        "    if i % 1000 == 0: sys.stderr.buffer.write(b'progress %d\\n' % i)\n"
    )
    expected = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    out_file = tmp_path / "out"
    with open(out_file, "wb") as out:
        proc = subprocess.run(
            [
                SUPERVISE,
                "--termination-log",
                os.devnull,
                "--event-log",
                str(tmp_path / "ev"),
                "--",
                sys.executable,
                "-c",
                script,
            ],
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    assert proc.returncode == 0
    got = out_file.read_bytes()
    assert len(got) == 100 * 1024 * 1024
    assert hashlib.sha256(got).digest() == hashlib.sha256(expected.stdout).digest()
    assert proc.stderr == expected.stderr
