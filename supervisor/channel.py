"""The shared-memory channel between supervise and the training ranks it watches.

One small file, mmapped `MAP_SHARED` by both sides. No sockets, no pickle, no syscalls on
the hot path: a heartbeat is four 8-byte stores into the mapping plus one
`time.monotonic_ns()` (a vDSO read of CLOCK_MONOTONIC, which is system-wide on Linux, so
the supervisor's `time.monotonic()` and a rank's timestamps are on one clock).

Layout (native byte order, since both sides share one machine; every integer naturally
aligned):

    header, HEADER_SIZE = 256 bytes, written by the supervisor only
      0  8s  magic            b"SUPVCHN\\0"
      8  H   version          LAYOUT_VERSION
     10  H   slot_count
     12  I   slot_size        SLOT_SIZE
     16  Q   seq              seqlock over bytes 24..255 (odd while being written)
     24  Q   ckpt_generation  bumped for every checkpoint request
     32  I   ckpt_reason      index into child_contract.CHECKPOINT_REASONS plus one; 0: none
     36  I   stop_requested   1 when training should stop at its next step boundary
     40  q   ckpt_deadline_ns CLOCK_MONOTONIC nanoseconds; 0 means no deadline
     48  q   resume_step      -1 when not resuming
     56  I   restart_count
     60  ..  reserved, zero   room for later fields

    slots, SLOT_SIZE = 64 bytes each, slot i written only by local rank i
      0  Q   seq              seqlock: odd while the rank is writing this slot
      8  i   pid
     12  B   state            UNUSED 0, RUNNING 1, FINISHED 2
     13  B   flags            bit 0: the last commit answered another rank's request;
                              bit 1: the rank died of a checkpoint storage failure
     14  H   reserved
     16  q   step             -1 until the first `step()`
     24  q   beat_ns          CLOCK_MONOTONIC ns of the last beat (step or phase change)
     32  q   ckpt_step        last committed checkpoint step; -1 when none
     40  Q   ckpt_ack         last checkpoint request generation acknowledged
     48  16s phase            the current phase name, UTF-8, NUL-padded; empty = none

Guarantees:
* Once the file is shared, every store into it is either one aligned 8-byte word, through
  a `memoryview` cast to "q" (the value is assembled in Python first), or one byte (a
  slot's state and flags). Never `struct.pack_into` over a live field: it zero-fills its
  target before writing, so a reader could catch a 0 there. A sequence counter read as 0
  is even and lets a torn slot through (tests/hang caught exactly that); a beat timestamp
  read as 0 looks like a rank silent since boot. Only the identity block (magic, version,
  sizes) is written with `pack_into`, in `create`, before anyone can open the file.
* Each slot has exactly one writer (its rank), so writers never contend. The seqlock lets
  the reader, in another process, retry instead of seeing a torn slot. On x86-64 the stores
  become visible in program order (TSO), which is what a seqlock needs. On weakly ordered
  CPUs (arm64) Python has no store barrier to offer: every field a reader sees is a value
  its writer stored (never a zero-filled or half-written one), but a reader may rarely
  pair fields from before and after one write (a new step or phase with the previous
  timestamp).
* `Channel.create` makes the file with O_EXCL and mode 0600 inside a directory it creates
  with mode 0700 if missing; it never reuses or truncates an existing file. It raises
  `ConfigError` when the file exists or cannot be made.
* `Channel.open` raises `ConfigError` for a missing file or a wrong magic, version or size.
* Nothing here blocks or starts threads. If a rank crashes mid-write its slot stays odd;
  `read_slot` then returns `None`, never a torn read. If the supervisor dies mid-write the
  header stays odd and `read_header` raises `TimeoutError`.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.core.errors import ConfigError

MAGIC = b"SUPVCHN\0"
LAYOUT_VERSION = 1
HEADER_SIZE = 256
SLOT_SIZE = 64
DEFAULT_SLOTS = 256  # local ranks per node; a node has at most a few dozen GPUs
PHASE_BYTES = 16
FLAG_CKPT_FOR_PEER = 1  # slot flags byte (offset 13), bit 0
FLAG_STORAGE_FAILED = 2  # bit 1

_IDENT = struct.Struct("=8sHHI")  # magic, version, slot_count, slot_size
_HEADER_BODY = struct.Struct("=QIIqqI4x")  # generation, reason, stop, deadline, resume, restarts
_HEADER_BODY_AT = 24
_HEADER_SEQ_WORD = 2  # byte offset 16
_SLOT = struct.Struct(f"=QiBBHqqqQ{PHASE_BYTES}s")

# Words (8-byte units from a slot's start) that writers store whole.
_PID_WORD, _STEP_WORD, _BEAT_WORD, _CKPT_STEP_WORD, _CKPT_ACK_WORD, _PHASE_WORD = 1, 2, 3, 4, 5, 6
_STATE_BYTE, _FLAGS_BYTE = 12, 13
_PID_STATE = struct.Struct("=iBBH")  # pid, state, flags, reserved: the word at offset 8
_PHASE_WORDS = struct.Struct(f"={PHASE_BYTES // 8}q")
_WORD = struct.Struct("=q")

assert _SLOT.size == SLOT_SIZE
assert _HEADER_BODY.size % 8 == 0 and _HEADER_BODY_AT + _HEADER_BODY.size <= HEADER_SIZE
_HEADER_WORDS = struct.Struct(f"={_HEADER_BODY.size // 8}q")

_READ_RETRIES = 64


class SlotState(enum.IntEnum):
    UNUSED = 0  # no rank has attached: not started, so never a hang
    RUNNING = 1
    FINISHED = 2  # the rank called finish() or exited cleanly: silence is expected


@dataclass(frozen=True)
class Slot:
    """One consistent read of a rank's slot."""

    rank: int
    pid: int
    state: SlotState
    step: int
    beat_ns: int
    ckpt_step: int
    ckpt_ack: int
    phase: str
    ckpt_for_peer: bool = False  # the last commit answered another rank's request
    storage_failed: bool = False  # the rank died of a checkpoint storage failure


@dataclass(frozen=True)
class Header:
    """One consistent read of the supervisor's header."""

    ckpt_generation: int = 0
    ckpt_reason: int = 0
    stop_requested: bool = False
    ckpt_deadline_ns: int = 0
    resume_step: int = -1
    restart_count: int = 0


def encode_phase(name: str) -> bytes:
    """The fixed-width form of a phase name: UTF-8, cut to PHASE_BYTES on a character edge."""
    raw = name.encode("utf-8")[:PHASE_BYTES]
    return raw.decode("utf-8", "ignore").encode("utf-8")


class Channel:
    """A mapped channel file. Build it with `create` (supervisor) or `open` (a rank)."""

    def __init__(self, mm: mmap.mmap, slot_count: int, path: str) -> None:
        self.mm = mm
        self.words = memoryview(mm).cast("q")  # 8-byte words: one store per field
        self.slot_count = slot_count
        self.path = path

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, path: str, slots: int = DEFAULT_SLOTS) -> Channel:
        """Make a fresh channel file (supervisor side). Raises ConfigError if it exists."""
        if not 1 <= slots <= 65535:
            raise ConfigError(f"channel slots must be between 1 and 65535, got {slots}")
        parent = os.path.dirname(os.path.abspath(path))
        size = HEADER_SIZE + slots * SLOT_SIZE
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise ConfigError(
                f"cannot create the heartbeat channel {path}: {err.strerror}; "
                "point the run directory at a writable place that is not in use"
            ) from err
        try:
            os.ftruncate(fd, size)  # zero-filled: every slot starts UNUSED
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        _IDENT.pack_into(mm, 0, MAGIC, LAYOUT_VERSION, slots, SLOT_SIZE)
        channel = cls(mm, slots, path)
        channel.write_header(Header())
        return channel

    @classmethod
    def open(cls, path: str) -> Channel:
        """Map an existing channel file (rank side). Raises ConfigError if it is not one."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            raise ConfigError(
                f"cannot open the heartbeat channel {path} ({err.strerror}); "
                "SUPERVISE_CHANNEL must name the file supervise created"
            ) from err
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise ConfigError(f"{path} is not a supervise channel (only {size} bytes)")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        magic, version, slots, slot_size = _IDENT.unpack_from(mm, 0)
        if magic != MAGIC or slot_size != SLOT_SIZE or size < HEADER_SIZE + slots * SLOT_SIZE:
            mm.close()
            raise ConfigError(f"{path} is not a supervise channel (bad magic or size)")
        if version != LAYOUT_VERSION:
            mm.close()
            raise ConfigError(
                f"{path} has channel layout version {version}, this client speaks "
                f"{LAYOUT_VERSION}: install the same supervise version in the image and the "
                "training environment"
            )
        return cls(mm, slots, path)

    def close(self) -> None:
        """Unmap. Writers made from this channel must not be used afterwards."""
        self.words.release()
        self.mm.close()

    def slot_offset(self, rank: int) -> int:
        if not 0 <= rank < self.slot_count:
            raise IndexError(f"rank {rank} has no slot (the channel has {self.slot_count})")
        return HEADER_SIZE + rank * SLOT_SIZE

    # ------------------------------------------------------------ supervisor writes

    def write_header(self, header: Header) -> None:
        """Publish a new header. Supervisor only; one writer thread at a time."""
        body = _HEADER_BODY.pack(
            header.ckpt_generation,
            header.ckpt_reason,
            1 if header.stop_requested else 0,
            header.ckpt_deadline_ns,
            header.resume_step,
            header.restart_count,
        )
        words, at = self.words, _HEADER_BODY_AT // 8
        seq = words[_HEADER_SEQ_WORD]
        words[_HEADER_SEQ_WORD] = seq + 1
        for i, word in enumerate(_HEADER_WORDS.unpack(body)):
            words[at + i] = word
        words[_HEADER_SEQ_WORD] = seq + 2

    # ------------------------------------------------------------------------ reads

    def read_header(self) -> Header:
        """A consistent header; retries while the supervisor is mid-write."""
        for _ in range(_READ_RETRIES):
            before = self.words[_HEADER_SEQ_WORD]
            if before & 1:
                continue
            body = _HEADER_BODY.unpack_from(self.mm, _HEADER_BODY_AT)
            if self.words[_HEADER_SEQ_WORD] == before:
                gen, reason, stop, deadline, resume, restarts = body
                return Header(gen, reason, bool(stop), deadline, resume, restarts)
        raise TimeoutError("the channel header stayed mid-write; the supervisor is stuck")

    def read_slot(self, rank: int) -> Slot | None:
        """A consistent read of one slot, or None if the writer stayed mid-write.

        A rank that died mid-write leaves its slot odd forever; None then tells the caller
        to keep its previous reading rather than trust a torn one.
        """
        offset = self.slot_offset(rank)
        mm, words, at_seq = self.mm, self.words, offset // 8
        for _ in range(_READ_RETRIES):
            before = words[at_seq]  # one 8-byte load, never a mix of two values
            if before & 1:
                continue
            fields = _SLOT.unpack_from(mm, offset)
            if words[at_seq] == before:
                _, pid, state, flags, _, step, beat, ckpt_step, ckpt_ack, phase = fields
                return Slot(
                    rank,
                    pid,
                    SlotState(state) if state <= 2 else SlotState.UNUSED,
                    step,
                    beat,
                    ckpt_step,
                    ckpt_ack,
                    phase.rstrip(b"\0").decode("utf-8", "replace"),
                    bool(flags & FLAG_CKPT_FOR_PEER),
                    bool(flags & FLAG_STORAGE_FAILED),
                )
        return None

    def read_slots(self) -> list[Slot]:
        """Every slot that a rank has used (RUNNING or FINISHED) and that read cleanly."""
        out = []
        mm = self.mm
        for rank in range(self.slot_count):
            # Cheap skip: an UNUSED slot's state byte is 0 and nobody is writing it.
            if (
                mm[HEADER_SIZE + rank * SLOT_SIZE + 12] == 0
                and not mm[HEADER_SIZE + rank * SLOT_SIZE]
            ):
                continue
            slot = self.read_slot(rank)
            if slot is not None and slot.state is not SlotState.UNUSED:
                out.append(slot)
        return out


class SlotWriter:
    """The writing side of one slot: the rank that owns it, in one thread.

    `beat` is the hot path. Methods are not thread-safe against each other: call them from
    the training thread only (a second writer would break the seqlock).
    """

    beat: Callable[[int], None]
    """Record progress: `step` and the time now. A few hundred nanoseconds."""

    def __init__(self, channel: Channel, rank: int) -> None:
        self._mm = channel.mm
        self._words = channel.words
        self._off = channel.slot_offset(rank)
        self._at = self._off // 8  # the slot's first word
        self._begin, self._end, self.beat = _slot_writers(channel.words, self._off)

    def claim(self, pid: int, phase: str = "") -> None:
        """Mark the slot RUNNING for `pid`, with no step yet."""
        words, at = self._words, self._at
        pid_state = _as_word(_PID_STATE.pack(pid, SlotState.RUNNING, 0, 0))
        self._begin()
        words[at + _PID_WORD] = pid_state
        words[at + _STEP_WORD] = -1
        words[at + _BEAT_WORD] = time.monotonic_ns()
        words[at + _CKPT_STEP_WORD] = -1
        words[at + _CKPT_ACK_WORD] = 0
        self._store_phase(phase)
        self._end()

    def set_phase(self, phase: str) -> None:
        """Enter `phase` ("" for none); entering a phase counts as a beat."""
        self._begin()
        self._store_phase(phase)
        self._words[self._at + _BEAT_WORD] = time.monotonic_ns()
        self._end()

    def set_checkpoint(self, ckpt_step: int, ack_generation: int, for_peer: bool = False) -> None:
        """Record the last committed checkpoint step and the request generation it answers.

        `for_peer`: the save answered another rank's request (its pod is leaving), which
        tells this node's supervisor that the trainer will leave too.
        """
        words, at = self._words, self._at
        flags = self._mm[self._off + _FLAGS_BYTE] & ~FLAG_CKPT_FOR_PEER
        self._begin()
        words[at + _CKPT_STEP_WORD] = ckpt_step
        words[at + _CKPT_ACK_WORD] = ack_generation
        self._mm[self._off + _FLAGS_BYTE] = flags | (FLAG_CKPT_FOR_PEER if for_peer else 0)
        self._end()

    def mark_storage_failed(self) -> None:
        """Record that the rank is dying of a checkpoint storage failure (`StorageError`),
        so supervise classifies the exit as infrastructure, not training."""
        flags = self._mm[self._off + _FLAGS_BYTE]
        self._begin()
        self._mm[self._off + _FLAGS_BYTE] = flags | FLAG_STORAGE_FAILED
        self._end()

    def finish(self) -> None:
        """Mark the slot FINISHED: the rank's silence from now on is not a hang."""
        self._begin()
        self._mm[self._off + _STATE_BYTE] = SlotState.FINISHED
        self._words[self._at + _BEAT_WORD] = time.monotonic_ns()
        self._end()

    def _store_phase(self, phase: str) -> None:
        """The phase field as whole words (between `_begin` and `_end`)."""
        padded = encode_phase(phase).ljust(PHASE_BYTES, b"\0")
        for i, word in enumerate(_PHASE_WORDS.unpack(padded)):
            self._words[self._at + _PHASE_WORD + i] = word


def _as_word(raw: bytes) -> int:
    """8 bytes of the layout as the signed integer one word store writes."""
    (word,) = _WORD.unpack(raw)
    return word


def _slot_writers(
    words: memoryview, off: int
) -> tuple[Callable[[], None], Callable[[], None], Callable[[int], None]]:
    """(begin, end, beat) for the slot at byte offset `off`, sharing one sequence counter.

    Closures over locals rather than methods: a heartbeat then does no attribute lookups,
    which measurably matters at a few hundred nanoseconds a call (bench_heartbeat.py).
    Every store is one aligned 8-byte word (the module docstring says why).
    """
    at_seq = off // 8
    at_step, at_beat = at_seq + _STEP_WORD, at_seq + _BEAT_WORD
    seq = words[at_seq] & ~1
    now_ns = time.monotonic_ns

    def begin() -> None:
        nonlocal seq
        seq += 1
        words[at_seq] = seq

    def end() -> None:
        nonlocal seq
        seq += 1
        words[at_seq] = seq

    def beat(step: int) -> None:
        nonlocal seq
        seq += 1
        words[at_seq] = seq  # odd: readers retry
        words[at_step] = step
        words[at_beat] = now_ns()
        seq += 1
        words[at_seq] = seq  # even: consistent again

    return begin, end, beat
