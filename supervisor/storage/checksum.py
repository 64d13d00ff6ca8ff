"""The checksum of every checkpoint file: XXH3-128, streamed.

XXH3 runs at memory speed (about 14 GB/s on one core here, against 1-3 GB/s for zlib's
CRC32 and 1 GB/s for SHA-256), so checking every byte on load and on save costs almost
nothing next to the I/O itself. It detects torn writes, truncation and bit flips; it is
not a defence against someone who can write the bucket (the commit marker pins the
manifest with SHA-256, and nothing we read is ever unpickled by default).
"""

from __future__ import annotations

import xxhash

ALGORITHM = "xxh3_128"


def new() -> xxhash.xxh3_128:
    return xxhash.xxh3_128()


def of(data: bytes | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)
