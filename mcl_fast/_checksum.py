"""Checksums of stored bytes: one algorithm and one text form for the store and the checkpoints.

xxHash's XXH3-64 (the `xxhash` package) runs at several GB/s on one core, so checking a
video's maps (~0.3 MB) on every read costs well under a millisecond. A digest is text,
``"xxh3_64:<16 hex digits>"``, so an index or a checkpoint records it as a plain string and a
later algorithm can sit beside it under another prefix.
"""
from __future__ import annotations

import xxhash

ALGORITHM = "xxh3_64"


def digest(data) -> str:
    """The checksum of a bytes-like object (bytes, memoryview, a C-contiguous NumPy array)."""
    return f"{ALGORITHM}:{xxhash.xxh3_64_hexdigest(memoryview(data).cast('B'))}"


def matches(data, expected: str) -> bool:
    """True if `data` has checksum `expected` (a digest of an algorithm this module knows)."""
    algorithm, _, _ = expected.partition(":")
    if algorithm != ALGORITHM:
        raise ValueError(f"unknown checksum algorithm {algorithm!r} (this version knows {ALGORITHM})")
    return digest(data) == expected
