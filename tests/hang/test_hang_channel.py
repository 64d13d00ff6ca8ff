"""The channel layout: round trips, file safety, and the seqlock under a real writer process."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervisor.channel import (
    HEADER_SIZE,
    SLOT_SIZE,
    Channel,
    Header,
    SlotState,
    SlotWriter,
    encode_phase,
)
from supervisor.core.errors import ConfigError


def test_header_round_trips_between_two_mappings(tmp_path: Path) -> None:
    sup = Channel.create(str(tmp_path / "d" / "chan"), slots=4)
    rank = Channel.open(sup.path)
    header = Header(
        ckpt_generation=7,
        ckpt_reason=2,
        stop_requested=True,
        ckpt_deadline_ns=123_456_789,
        resume_step=4000,
        restart_count=3,
    )
    sup.write_header(header)
    assert rank.read_header() == header
    assert rank.slot_count == 4
    assert os.path.getsize(sup.path) == HEADER_SIZE + 4 * SLOT_SIZE


def test_slot_written_by_one_mapping_reads_back_in_the_other(tmp_path: Path) -> None:
    sup = Channel.create(str(tmp_path / "chan"), slots=4)
    writer = SlotWriter(Channel.open(sup.path), 2)
    before = time.monotonic_ns()
    writer.claim(pid=4321)
    assert [s.rank for s in sup.read_slots()] == [2]
    slot = sup.read_slot(2)
    assert slot is not None
    assert (slot.pid, slot.state, slot.step, slot.phase) == (4321, SlotState.RUNNING, -1, "")
    writer.beat(41)
    writer.set_phase("checkpoint")
    writer.set_checkpoint(40, 5)
    slot = sup.read_slot(2)
    assert slot is not None
    assert (slot.step, slot.phase, slot.ckpt_step, slot.ckpt_ack) == (41, "checkpoint", 40, 5)
    assert before <= slot.beat_ns <= time.monotonic_ns()
    writer.finish()
    slot = sup.read_slot(2)
    assert slot is not None and slot.state is SlotState.FINISHED
    assert sup.read_slot(0) is not None and sup.read_slot(0).state is SlotState.UNUSED  # type: ignore[union-attr]


def test_create_is_private_and_never_reuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "private" / "chan"
    Channel.create(str(path), slots=1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(ConfigError, match="cannot create the heartbeat channel"):
        Channel.create(str(path), slots=1)


def test_open_refuses_what_is_not_a_channel(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SUPERVISE_CHANNEL"):
        Channel.open(str(tmp_path / "missing"))
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 4096)
    with pytest.raises(ConfigError, match="not a supervise channel"):
        Channel.open(str(junk))
    chan = Channel.create(str(tmp_path / "chan"), slots=1)
    chan.mm[8] = 99  # a future layout version
    with pytest.raises(ConfigError, match="layout version 99"):
        Channel.open(chan.path)


def test_a_slot_left_mid_write_reads_as_none_not_torn(tmp_path: Path) -> None:
    chan = Channel.create(str(tmp_path / "chan"), slots=2)
    writer = SlotWriter(chan, 1)
    writer.claim(pid=1)
    writer._begin()  # a rank that died between the two sequence bumps
    assert chan.read_slot(1) is None
    writer._end()
    assert chan.read_slot(1) is not None


def test_slot_index_out_of_range_is_refused(tmp_path: Path) -> None:
    chan = Channel.create(str(tmp_path / "chan"), slots=2)
    with pytest.raises(IndexError, match="rank 2 has no slot"):
        SlotWriter(chan, 2)
    with pytest.raises(ConfigError, match="between 1 and 65535"):
        Channel.create(str(tmp_path / "c2"), slots=0)


def test_phase_names_are_cut_on_a_character_edge() -> None:
    assert encode_phase("checkpoint") == b"checkpoint"
    assert encode_phase("x" * 40) == b"x" * 16
    cut = encode_phase("ab" + "é" * 10)  # 2 + 20 bytes; byte 16 is inside an "é"
    assert cut == ("ab" + "é" * 7).encode()


WRITER = """
import sys
from supervisor.channel import Channel, SlotWriter
w = SlotWriter(Channel.open(sys.argv[1]), 0)
w.claim(pid=1)
for i in range(int(sys.argv[2])):
    w.set_checkpoint(i, i)  # two fields that must always be read together
w.finish()
"""


def test_seqlock_reader_never_sees_a_torn_slot_from_a_live_writer(tmp_path: Path) -> None:
    chan = Channel.create(str(tmp_path / "chan"), slots=1)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, chan.path, "300000"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    reads = 0
    try:
        while proc.poll() is None:
            slot = chan.read_slot(0)
            if slot is not None and slot.state is not SlotState.UNUSED:
                assert slot.ckpt_step == slot.ckpt_ack or slot.ckpt_step == -1
                reads += 1
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert reads > 100  # the reader really raced the writer
    final = chan.read_slot(0)
    assert final is not None and final.state is SlotState.FINISHED
    assert final.ckpt_step == final.ckpt_ack == 299_999


REWRITER = """
import sys
from supervisor.channel import Channel, Header, SlotWriter
chan = Channel.open(sys.argv[1])
w = SlotWriter(chan, 0)
w.claim(pid=1, phase="train")
print("claimed", flush=True)
for i in range(int(sys.argv[2])):
    w.set_phase("train" if i % 2 else "eval")  # stores a new beat timestamp each time
    chan.write_header(Header(ckpt_generation=i + 1, ckpt_reason=1, ckpt_deadline_ns=10**12 + i))
w.finish()
"""


def test_a_live_field_never_reads_as_zero_even_outside_the_seqlock(tmp_path: Path) -> None:
    # struct.pack_into zero-fills before it writes. Behind the seqlock on x86 nobody sees
    # that, but a weakly ordered CPU can show a reader the zero: read the raw words here,
    # with no seqlock at all, and no field may ever be caught at 0.
    chan = Channel.create(str(tmp_path / "chan"), slots=1)
    proc = subprocess.Popen(
        [sys.executable, "-c", REWRITER, chan.path, "100000"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "claimed\n"
    words = chan.words
    beat, phase = (HEADER_SIZE + 24) // 8, (HEADER_SIZE + 48) // 8
    deadline = 40 // 8
    zeros, reads = 0, 0
    try:
        while proc.poll() is None:
            reads += 1
            zeros += words[beat] == 0
            zeros += words[phase] == 0
            zeros += words[deadline] == 0 and words[3] != 0  # once the first header is out
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert reads > 1000  # the reader really raced the writer
    assert zeros == 0
