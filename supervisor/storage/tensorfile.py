"""Tensor files in the safetensors layout, written and read with their checksum computed inline.

Layout (huggingface/safetensors README): 8-byte little-endian header length, a JSON header
`{key: {"dtype", "shape", "data_offsets": [begin, end]}}` padded with spaces to a multiple
of 8, then one hole-free byte buffer. Tensors are ordered by element size, largest first,
so every tensor starts at an offset that is a multiple of its own element size without any
padding; a `safetensors` reader can open our files as they are.

Threads: `write_file` runs on the caller's thread alone: it hashes each `WRITE_CHUNK` piece
and writes it straight after, while the piece is still in the CPU cache, so the bytes come
from memory once (several files are written at once on several threads, and XXH3 releases
the GIL). `read_file` runs on the caller's thread plus one short-lived helper that hashes
chunks in order, so hashing chunk i overlaps the read of chunk i+1. Memory handed to
`write_file` must stay unchanged until it returns (the sync save writes straight from the
caller's tensors; the async save from its own snapshot).

torch is imported inside the functions that make or read tensors, never at import time.
"""

from __future__ import annotations

import ctypes
import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from supervisor.core.errors import CheckpointError
from supervisor.storage import checksum
from supervisor.storage.layout import DamagedError

CHUNK = 16 << 20  # large enough that per-chunk overhead vanishes, small enough to pipeline
# Pieces that `write_file` hashes and writes: small enough to stay in the CPU cache between
# the hash and the write, large enough that the per-call cost vanishes. Measured on ext4
# (Linux 6.18, virtio disk): 1 MiB writes ran 0.86 s per GiB with fsync where 16 MiB writes
# of the same bytes ran 3.0 s; on tmpfs both sizes ran alike.
WRITE_CHUNK = 1 << 20

# torch dtype name -> safetensors dtype code.
DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "complex64": "C64",
}
TORCH_DTYPES = {code: name for name, code in DTYPES.items()}
# safetensors dtype code -> bytes per element, so a header is checked without torch.
ITEMSIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "C64": 8,
}
HEADER_LIMIT = 100 << 20  # the safetensors cap on the JSON header
MAX_DIMS = 64


class Sink(Protocol):
    def write(self, data: memoryview) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Entry:
    index: int  # position in the encoded tensor list
    dtype: str  # safetensors code
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Plan:
    """One tensor file: its name, its header bytes and where each tensor goes."""

    name: str
    header: bytes
    entries: tuple[Entry, ...]

    @property
    def body_size(self) -> int:
        return self.entries[-1].end if self.entries else 0

    @property
    def size(self) -> int:
        return len(self.header) + self.body_size


def plan_files(tensors: list[Any], shard_bytes: int) -> list[Plan]:
    """Split tensors into files of about `shard_bytes`, each naturally aligned."""
    order = sorted(range(len(tensors)), key=lambda i: (-tensors[i].element_size(), i))
    plans: list[Plan] = []
    batch: list[Entry] = []
    offset = 0
    for i in order:
        t = tensors[i]
        name = str(t.dtype).removeprefix("torch.")
        if name not in DTYPES:
            raise CheckpointError(
                f"tensor dtype {name} is not supported by the tensor file; convert it or open "
                "the store with allow_pickle=True"
            )
        nbytes = t.numel() * t.element_size()
        if batch and offset + nbytes > shard_bytes:
            plans.append(_plan(len(plans), batch))
            batch, offset = [], 0
        batch.append(Entry(i, DTYPES[name], tuple(t.shape), offset, offset + nbytes))
        offset += nbytes
    if batch or not plans:
        plans.append(_plan(len(plans), batch))
    return plans


def _plan(number: int, entries: list[Entry]) -> Plan:
    header: dict[str, Any] = {"__metadata__": {"format": "pt", "producer": "supervise"}}
    for e in entries:
        header[str(e.index)] = {
            "dtype": e.dtype,
            "shape": list(e.shape),
            "data_offsets": [e.begin, e.end],
        }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    return Plan(
        f"tensors-{number:05d}.safetensors", struct.pack("<Q", len(raw)) + raw, tuple(entries)
    )


def tensor_memory(t: Any) -> memoryview:
    """The bytes of a contiguous CPU tensor, without copying. Keep `t` alive while used."""
    nbytes = t.numel() * t.element_size()
    if nbytes == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_char * nbytes).from_address(t.data_ptr())).cast("B")


def chunks(view: memoryview, size: int = CHUNK) -> Iterator[memoryview]:
    for start in range(0, len(view), size):
        yield view[start : start + size]


class _Digest:
    """A checksum fed chunk by chunk, hashed in order on one helper thread."""

    def __init__(self) -> None:
        self._digest = checksum.new()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="supervise-hash")
        self._last: Future[None] | None = None

    def update(self, data: memoryview | bytes) -> None:
        self._last = self._pool.submit(self._digest.update, data)

    def hexdigest(self) -> str:
        self.close()
        if self._last is not None:
            self._last.result()
        return self._digest.hexdigest()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def write_file(sink: Sink, plan: Plan, bodies: Iterable[memoryview]) -> str:
    """Stream the header and each tensor's bytes (in plan order) into `sink`; return the
    checksum of exactly the bytes handed to the sink. Closes the sink on success (which
    makes the file durable, see the sinks). On error the sink is left for the caller to
    discard. Runs on the calling thread only."""
    digest = checksum.new()
    head = memoryview(plan.header)
    digest.update(head)
    sink.write(head)
    for body in bodies:
        for piece in chunks(body, WRITE_CHUNK):
            digest.update(piece)  # hashed first: the write then reads it from the cache
            sink.write(piece)
    sink.close()
    return digest.hexdigest()


def parse_header(header: object, where: str, body_size: int) -> tuple[Entry, ...]:
    """Check a parsed tensor file header against the size of the body that follows it, the
    body size coming from the manifest, never from the header. Returns the entries in
    offset order. `DamagedError` unless: it is a JSON object; every key but
    `__metadata__` is a tensor index (decimal); every entry has a known dtype, a shape of
    non-negative ints and integer offsets; each tensor's byte count is exactly its shape
    times its element size; and the tensors tile the body exactly, without holes, overlaps
    or trailing bytes. Nothing is allocated from a header before this passes. Torch-free."""
    if not isinstance(header, dict):
        raise DamagedError(f"{where}: tensor file header is not a JSON object")
    entries = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            index = int(key) if key.isdigit() and len(key) < 12 else -1
            if index < 0 or key != str(index):
                raise ValueError(f"key {key!r} is not a tensor index")
            if not isinstance(info, dict):
                raise ValueError("entry is not an object")
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            if dtype not in ITEMSIZES:
                raise ValueError(f"unknown dtype {dtype!r}")
            if not isinstance(shape, list) or len(shape) > MAX_DIMS:
                raise ValueError(f"bad shape {shape!r}")
            if not isinstance(offsets, list) or len(offsets) != 2:
                raise ValueError(f"bad data_offsets {offsets!r}")
            for value in (*shape, *offsets):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"bad shape or offset {value!r}")
            begin, end = offsets
            if not begin <= end <= body_size:
                raise ValueError(f"data_offsets {offsets} outside a body of {body_size} bytes")
            if math.prod(shape) * ITEMSIZES[dtype] != end - begin:
                raise ValueError(f"shape {shape} of {dtype} is not {end - begin} bytes")
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise DamagedError(f"{where}: tensor {key!r} has a bad layout ({err})") from err
        entries.append(Entry(index, dtype, tuple(shape), begin, end))
    entries.sort(key=lambda e: (e.begin, e.end))
    position = 0
    for e in entries:
        if e.begin != position:
            raise DamagedError(f"{where}: tensor {e.index} does not follow the one before it")
        position = e.end
    if position != body_size:
        raise DamagedError(f"{where}: tensors end at byte {position} of a {body_size}-byte body")
    return tuple(entries)


def header_length(raw_len: bytes, where: str, size: int) -> int:
    """The JSON header's length from the first 8 bytes of a file of `size` bytes (the
    manifest's size); `DamagedError` if it cannot fit."""
    if len(raw_len) != 8:
        raise DamagedError(f"{where}: truncated tensor file header")
    (length,) = struct.unpack("<Q", raw_len)
    if length > min(HEADER_LIMIT, size - 8):  # a torn length must not allocate gigabytes
        raise DamagedError(f"{where}: tensor file header claims {length} bytes of {size}")
    return length


def load_header(raw: bytes, where: str) -> object:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise DamagedError(f"{where}: tensor file header is not JSON ({err})") from err


def read_header(stream: BinaryIO, where: str, size: int) -> tuple[tuple[Entry, ...], bytes]:
    """Read and check the header of a tensor file of `size` bytes (the manifest's size):
    its entries and the raw header bytes (length prefix included), for the checksum."""
    raw_len = _read_exactly(stream, 8)
    length = header_length(raw_len, where, size)
    raw = _read_exactly(stream, length)
    if len(raw) != length:
        raise DamagedError(f"{where}: truncated tensor file header")
    entries = parse_header(load_header(raw, where), where, size - 8 - length)
    return entries, raw_len + raw


def _read_exactly(stream: BinaryIO, count: int) -> bytes:
    parts, left = [], count
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_file(
    stream: BinaryIO, where: str, size: int, progress: Callable[[int], None] | None = None
) -> tuple[dict[int, Any], str, int]:
    """Read every tensor of one file of `size` bytes (the manifest's size) into its own CPU
    storage; return (tensors, checksum, size). The header is checked against `size` before
    anything is allocated, and nothing past `size` is read but one byte to detect a longer
    file. The caller compares checksum and size with the manifest before using the tensors."""
    import torch

    entries, head_bytes = read_header(stream, where, size)
    digest = _Digest()
    try:
        digest.update(head_bytes)
        out: dict[int, Any] = {}
        position = 0
        for e in entries:
            key = e.index
            tensor = torch.empty(e.shape, dtype=getattr(torch, TORCH_DTYPES[e.dtype]))
            view = tensor_memory(tensor)
            for piece in chunks(view):
                got = stream.readinto(piece)
                while got and got < len(piece):  # short reads happen on some filesystems
                    more = stream.readinto(piece[got:])
                    if not more:
                        break
                    got += more
                if got != len(piece):
                    raise DamagedError(f"{where}: truncated in tensor {key}")
                digest.update(piece)
                if progress:
                    progress(len(piece))
            out[key] = tensor
            position = e.end
        extra = len(stream.read(1))  # a longer file than the manifest says fails the size
        return out, digest.hexdigest(), len(head_bytes) + position + extra
    finally:
        digest.close()


def map_file(path: str, where: str, size: int) -> tuple[dict[int, Any], str, int]:
    """Local files: map the file copy-on-write and view every tensor in place.

    No copy at all: hashing the mapping (which the caller checks against the manifest) is
    the only pass over the bytes, so loading runs at hashing speed from the page cache.
    Each tensor has its own storage over the shared mapping (MAP_PRIVATE: writing to a
    tensor never reaches the file); the mapping goes when the last of them is freed. Safe
    because committed files are never modified in place: retention unlinks them, which
    leaves an existing mapping valid.
    Only a regular file of exactly `size` bytes (the manifest's size) is mapped
    (`localfile.open_regular`), and its header is checked against that size before any
    tensor is made. Returns (tensors, checksum, file size)."""
    import mmap
    import os

    import torch

    from supervisor.storage.localfile import open_regular

    with open_regular(path) as f:
        actual = os.fstat(f.fileno()).st_size
        if actual != size:
            raise DamagedError(f"{where}: {actual} bytes, the manifest says {size}")
        if size < 8:
            raise DamagedError(f"{where}: truncated tensor file header")
        mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    mapped.madvise(mmap.MADV_SEQUENTIAL)
    view = memoryview(mapped)
    try:
        length = header_length(bytes(view[:8]), where, size)
        header = load_header(bytes(view[8 : 8 + length]), where)
        entries = parse_header(header, where, size - 8 - length)
        digest = checksum.new()
        for piece in chunks(view):
            digest.update(piece)
    finally:
        view.release()
    base = 8 + length
    out: dict[int, Any] = {}
    for e in entries:
        dtype = getattr(torch, TORCH_DTYPES[e.dtype])
        if e.begin == e.end:
            out[e.index] = torch.empty(e.shape, dtype=dtype)  # checked: it holds no elements
            continue
        # A storage of its own that starts at the tensor: some torch APIs (set_rng_state)
        # read from the storage's base pointer and ignore a view's offset.
        count = (e.end - e.begin) // ITEMSIZES[e.dtype]
        flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=base + e.begin)
        out[e.index] = flat.view(e.shape)
    return out, digest.hexdigest(), size
