"""A cheap content fingerprint of a file: enough to tell other footage under the same name.

Reading a whole dataset to hash it costs as much as decoding it, so the fingerprint hashes the
file size and three fixed 64 KiB ranges (start, middle, end): a re-encode, a different clip or
a truncated copy changes them; an edit that keeps the size and touches none of those ranges
does not (a limit worth knowing, not a practical risk for video files).
"""
from __future__ import annotations

import hashlib
import os

BLOCK = 64 * 1024
PREFIX = "s3b64k"  # names the scheme, so a future one can be told apart


def file_fingerprint(path) -> str:
    """'s3b64k:<size>:<blake2b-128 hex>' of `path`; raises OSError when it cannot be read."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    h = hashlib.blake2b(digest_size=16)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, (size - BLOCK) // 2), max(0, size - BLOCK)}):
            f.seek(offset)
            h.update(f.read(BLOCK))
    return f"{PREFIX}:{size}:{h.hexdigest()}"
