"""Tensor files in the safetensors layout, written and read with their checksum computed inline.

Layout (huggingface/safetensors README): 8-byte little-endian header length, a JSON header
`{key: {"dtype", "shape", "data_offsets": [begin, end]}}` padded with spaces to a multiple
of 8, then one hole-free byte buffer. Tensors are ordered by element size, largest first,
so every tensor starts at an offset that is a multiple of its own element size without any
padding; a `safetensors` reader can open our files as they are.

Threads: `write_file` and `read_file` run on the caller's thread plus one short-lived helper
that hashes chunks in order (XXH3 releases the GIL), so hashing chunk i overlaps the copy of
chunk i+1 instead of adding to it. Memory handed to `write_file` must stay unchanged until
it returns (the sync save writes straight from the caller's tensors; the async save from its
own snapshot).

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

CHUNK = 16 << 20  # large enough that per-chunk overhead vanishes, small enough to pipeline

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
    checksum. Closes the sink on success (which makes the file durable, see the sinks). On
    error the sink is left for the caller to discard."""
    digest = _Digest()
    try:
        head = memoryview(plan.header)
        digest.update(head)
        sink.write(head)
        for body in bodies:
            for piece in chunks(body):
                digest.update(piece)
                sink.write(piece)
        sink.close()
        return digest.hexdigest()
    finally:
        digest.close()


def read_header(stream: BinaryIO, where: str) -> tuple[int, dict[str, Any], bytes]:
    raw_len = stream.read(8)
    if len(raw_len) != 8:
        raise CheckpointError(f"{where}: truncated tensor file header")
    (length,) = struct.unpack("<Q", raw_len)
    if length > 100 << 20:  # the safetensors cap; a torn length must not allocate gigabytes
        raise CheckpointError(f"{where}: tensor file header claims {length} bytes")
    raw = stream.read(length)
    if len(raw) != length:
        raise CheckpointError(f"{where}: truncated tensor file header")
    try:
        header = json.loads(raw)
    except ValueError as err:
        raise CheckpointError(f"{where}: tensor file header is not JSON ({err})") from err
    return length, header, raw_len + raw


def read_file(
    stream: BinaryIO, where: str, progress: Callable[[int], None] | None = None
) -> tuple[dict[int, Any], str, int]:
    """Read every tensor of one file into its own CPU storage; return (tensors, checksum,
    size). The caller compares both with the manifest before using the tensors."""
    import torch

    _, header, head_bytes = read_header(stream, where)
    digest = _Digest()
    try:
        digest.update(head_bytes)
        entries = sorted(
            ((k, v) for k, v in header.items() if k != "__metadata__"),
            key=lambda kv: kv[1]["data_offsets"][0],
        )
        out: dict[int, Any] = {}
        position = 0
        for key, info in entries:
            begin, end = info["data_offsets"]
            if begin != position or end < begin or info["dtype"] not in TORCH_DTYPES:
                raise CheckpointError(f"{where}: tensor {key} has a bad layout")
            tensor = torch.empty(info["shape"], dtype=getattr(torch, TORCH_DTYPES[info["dtype"]]))
            view = tensor_memory(tensor)
            if len(view) != end - begin:
                raise CheckpointError(f"{where}: tensor {key} size does not match its shape")
            for piece in chunks(view):
                got = stream.readinto(piece)
                while got and got < len(piece):  # short reads happen on some filesystems
                    more = stream.readinto(piece[got:])
                    if not more:
                        break
                    got += more
                if got != len(piece):
                    raise CheckpointError(f"{where}: truncated in tensor {key}")
                digest.update(piece)
                if progress:
                    progress(len(piece))
            out[int(key)] = tensor
            position = end
        return out, digest.hexdigest(), len(head_bytes) + position
    finally:
        digest.close()


def map_file(path: str, where: str) -> tuple[dict[int, Any], str, int]:
    """Local files: map the file copy-on-write and view every tensor in place.

    No copy at all: hashing the mapping (which the caller checks against the manifest) is
    the only pass over the bytes, so loading runs at hashing speed from the page cache.
    Each tensor has its own storage over the shared mapping (MAP_PRIVATE: writing to a
    tensor never reaches the file); the mapping goes when the last of them is freed. Safe
    because committed files are never modified in place: retention unlinks them, which
    leaves an existing mapping valid.
    Returns (tensors, checksum, file size)."""
    import mmap
    import os

    import torch

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise CheckpointError(f"{where}: truncated tensor file header")
        mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    mapped.madvise(mmap.MADV_SEQUENTIAL)
    view = memoryview(mapped)
    try:
        (length,) = struct.unpack_from("<Q", view, 0)
        if 8 + length > size:
            raise CheckpointError(f"{where}: truncated tensor file header")
        try:
            header = json.loads(bytes(view[8 : 8 + length]))
        except ValueError as err:
            raise CheckpointError(f"{where}: tensor file header is not JSON ({err})") from err
        digest = checksum.new()
        for piece in chunks(view):
            digest.update(piece)
    finally:
        view.release()
    base = 8 + length
    out: dict[int, Any] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= size - base or info["dtype"] not in TORCH_DTYPES:
            raise CheckpointError(f"{where}: tensor {key} has a bad layout")
        dtype = getattr(torch, TORCH_DTYPES[info["dtype"]])
        shape = info["shape"]
        if begin == end:
            out[int(key)] = torch.empty(shape, dtype=dtype)
            continue
        count, rest = divmod(end - begin, dtype.itemsize)
        if rest or count != math.prod(shape):
            raise CheckpointError(f"{where}: tensor {key} size does not match its shape")
        # A storage of its own that starts at the tensor: some torch APIs (set_rng_state)
        # read from the storage's base pointer and ignore a view's offset.
        flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=base + begin)
        out[int(key)] = flat.view(shape)
    return out, digest.hexdigest(), size
