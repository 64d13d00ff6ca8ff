"""The log pump on real pipes: every byte arrives once and in order whatever the sink (one
splice takes, one it refuses, one that is gone), and the matcher sees every line."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.core.events import Finding
from supervisor.core.matchers import DEFAULT_MATCHER
from supervisor.process import logpump
from supervisor.process.logpump import Activity, LogPump, SharedStream

KEYWORD_LINE = b"[Rank 3] NCCL error: ncclRemoteError: remote process exited\n"


def _output(lines: int) -> bytes:
    """Lines of varied length, every 97th one a line the matcher knows, and a last line
    without its newline (still matched, at EOF)."""
    body = b"".join(
        KEYWORD_LINE if i % 97 == 0 else b"step %d loss %s\n" % (i, b"x" * (i % 300))
        for i in range(lines)
    )
    return body + KEYWORD_LINE.rstrip(b"\n")


def _feed(data: bytes, fd: int) -> threading.Thread:
    """Write `data` into `fd` in uneven pieces (so lines straddle reads), then close it."""

    def write() -> None:
        view, i = memoryview(data), 0
        while view:
            step = 1 + (i * 7919) % 200_000
            i += 1
            view = view[os.write(fd, view[:step]) :]
        os.close(fd)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _pump(
    sink: int, findings: list[Finding], lost: list[str], stream: SharedStream | None = None
) -> tuple[LogPump, int]:
    read_end, write_end = os.pipe()
    pump = LogPump(
        "stdout",
        read_end,
        sink,
        stream=stream or SharedStream(),
        activity=Activity(0.0),
        monotonic=time.monotonic,
        matcher=DEFAULT_MATCHER,
        on_finding=findings.append,
        on_sink_lost=lambda name, err: lost.append(f"{name}: {err.strerror}"),
    )
    return pump, write_end


def _file_sink(path: Path, flags: int) -> Callable[[], tuple[int, Callable[[], bytes]]]:
    def make() -> tuple[int, Callable[[], bytes]]:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
        return fd, path.read_bytes

    return make


def _pipe_sink() -> tuple[int, Callable[[], bytes]]:
    read_end, write_end = os.pipe()
    got: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(read_end, 1 << 20):
            got.append(chunk)
        os.close(read_end)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()

    def result() -> bytes:
        reader.join(30)
        return b"".join(got)

    return write_end, result


@pytest.mark.parametrize("kind", ["pipe", "file", "append-only file", "pipe, copying"])
def test_every_byte_arrives_once_in_order_and_every_line_is_matched(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipe and a file take splice; a file opened for appending refuses it, and the pump
    goes on reading and writing from that very chunk; without tee it copies throughout."""
    if kind == "pipe, copying":
        monkeypatch.setattr(logpump, "_tee", None)
    make = {
        "pipe": _pipe_sink,
        "pipe, copying": _pipe_sink,
        "file": _file_sink(tmp_path / "out", os.O_TRUNC),
        "append-only file": _file_sink(tmp_path / "out", os.O_APPEND),
    }[kind]
    sink, result = make()
    data = _output(60_000)  # about 10 MB
    findings: list[Finding] = []
    lost: list[str] = []
    pump, write_end = _pump(sink, findings, lost)
    pump.start()
    writer = _feed(data, write_end)
    assert pump.join(60)
    writer.join(10)
    os.close(sink)
    assert result() == data
    assert lost == []
    assert len(findings) == data.count(b"ncclRemoteError")
    assert {f.kind for f in findings} == {"nccl_remote_error"}


def test_a_sink_that_is_gone_is_said_once_and_the_child_is_still_drained() -> None:
    read_end, sink = os.pipe()
    os.close(read_end)  # our reader went away: EPIPE (Python ignores SIGPIPE)
    data = _output(30_000)
    findings: list[Finding] = []
    lost: list[str] = []
    pump, write_end = _pump(sink, findings, lost)
    pump.start()
    writer = _feed(data, write_end)
    assert pump.join(60), "the pump stopped reading: the child would block on a full pipe"
    writer.join(10)
    os.close(sink)
    assert len(lost) == 1 and "Broken pipe" in lost[0]
    assert len(findings) == data.count(b"ncclRemoteError")


@pytest.mark.parametrize("splice", [True, False])
def test_the_stream_knows_whether_the_child_left_a_line_open(
    splice: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not splice:
        monkeypatch.setattr(logpump, "_tee", None)
    sink, result = _pipe_sink()
    stream = SharedStream()
    pump, write_end = _pump(sink, [], [], stream)
    pump.start()
    os.write(write_end, b"epoch 1\n 10%|##   |\r")
    deadline = time.monotonic() + 10
    while not stream.line_open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.line_open
    os.write(write_end, b" 20%|####|\n")
    deadline = time.monotonic() + 10
    while stream.line_open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not stream.line_open
    os.close(write_end)
    assert pump.join(10)
    os.close(sink)
    assert result() == b"epoch 1\n 10%|##   |\r 20%|####|\n"
