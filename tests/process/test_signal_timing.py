"""A stop signal is PREEMPTED (85) whenever it arrives: twice in a row, during start-up,
as PID 1 or not. The real `supervise` binary, real signals."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from tests.conftest import SUPERVISE

TRIALS = 20  # per signal, offsets spread over 0-50 ms
PREEMPTED = 85

needs_root_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="PID namespaces need root and util-linux unshare",
)
AS_PID_1 = ["unshare", "--pid", "--fork", "--mount-proc"]
WHERE = [pytest.param([], id="child"), pytest.param(AS_PID_1, id="pid1", marks=needs_root_unshare)]


def supervise_pid(proc: subprocess.Popen, prefix: list[str], timeout: float = 10) -> int:
    """The supervise process itself: `proc`, or unshare's child in a PID namespace."""
    if not prefix:
        return proc.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(proc.pid).children()
        if children:
            return children[0].pid
        time.sleep(0.01)  # unshare forks its child right away: poll, bounded
    raise AssertionError("unshare started no child")


def twice(tmp: Path, prefix: list[str], signum: int, offset: float) -> tuple[int, dict]:
    term = tmp / f"term-{signum}-{offset}"
    proc = subprocess.Popen(
        [
            *prefix,
            SUPERVISE,
            "--termination-log",
            str(term),
            "--event-log",
            os.devnull,
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 100",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    pid = supervise_pid(proc, prefix)
    os.kill(pid, signum)
    time.sleep(offset)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
    code = proc.wait(timeout=30)
    proc.stdout.close()
    return code, json.loads(term.read_text()) if term.exists() else {}


@pytest.mark.parametrize("prefix", WHERE)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_second_signal_at_any_moment_is_still_preempted(
    tmp_path: Path, prefix: list[str], signum: int
) -> None:
    offsets = [0.05 * i / (TRIALS - 1) for i in range(TRIALS)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda o: twice(tmp_path, prefix, signum, o), offsets))
    codes = [code for code, _ in results]
    assert codes == [PREEMPTED] * TRIALS, list(zip(offsets, codes, strict=True))
    assert all(message.get("name") == "PREEMPTED" for _, message in results)


class SilentEndpoint:
    """A TCP server that accepts connections and never answers: an S3 endpoint gone quiet."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with self.server:
            while True:
                try:
                    conn, _ = self.server.accept()
                except OSError:
                    return
                self._held.append(conn)
                self.accepted.set()

    def close(self) -> None:
        self.server.close()
        for conn in self._held:
            conn.close()


@pytest.mark.parametrize("prefix", WHERE)
def test_sigterm_while_start_up_waits_on_a_silent_endpoint_is_preempted_at_once(
    tmp_path: Path, prefix: list[str]
) -> None:
    endpoint = SilentEndpoint()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{endpoint.port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    term, events = tmp_path / "term", tmp_path / "events"
    proc = subprocess.Popen(
        [
            *prefix,
            SUPERVISE,
            "--termination-log",
            str(term),
            "--event-log",
            str(events),
            "--checkpoint-dir",
            "s3://bucket/run",
            "--",
            "sh",
            "-c",
            "echo the command must not start",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        # Start-up is now blocked in the look-up of the step to resume from.
        assert endpoint.accepted.wait(30), "supervise never reached the endpoint"
        os.kill(supervise_pid(proc, prefix), signal.SIGTERM)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
        endpoint.close()
    assert proc.returncode == PREEMPTED, err.decode()
    assert took < 5.0, f"took {took:.2f} s to leave"
    assert b"must not start" not in out
    message = json.loads(term.read_text())
    assert message["name"] == "PREEMPTED"
    assert message["evidence"][0]["signal"] == "SIGTERM"
    last = json.loads(events.read_text().splitlines()[-1])
    assert (last["event"], last["exitCode"]) == ("exit", PREEMPTED)
