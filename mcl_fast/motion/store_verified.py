"""What a `prepare` rerun last verified in a store, so that the next one re-reads only what changed.

A rerun checks every held video's bytes against their checksums and its source file against its
fingerprint (docs/store.md, "A rerun checks the store first"). At 240k videos that reads the
whole store and fingerprints every source. `verified.json` records, after such a check:
- per shard file that passed whole (every video with bytes in it matched its checksums): its
  stat (size, mtime, ctime, inode) and a digest of the (offset, checksum) pairs the index places
  in it;
- per source file whose fingerprint matched (`verified-sources.npy`): its name's hash, its stat
  and the hash of the fingerprint it matched.
A later rerun re-reads a video's bytes unless every shard it lies in still has the recorded stat
and digest, and fingerprints its source unless the stat and fingerprint are the recorded ones.
Files changed within RACY_NS of the check are never recorded (timestamps are coarse: a write in
the same tick would leave the stat as it was). `prepare --verify-all` ignores the record.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import xxhash

from .._io import atomic_write, atomic_write_json
from .store import shard_name
from .store_index import ColumnIndex
from .store_kinds import kind_named

RECORD, SOURCES = "verified.json", "verified-sources.npy"
FORMAT = "mcl_fast.store_verified"
RACY_NS = 2_000_000_000  # files changed less than this before a check started are checked again next time
_SOURCE = np.dtype([("name", "<u8"), ("size", "<i8"), ("mtime_ns", "<i8"), ("ctime_ns", "<i8"), ("ino", "<u8"),
                    ("fingerprint", "<u8")])
_MIX = np.uint64(0x9E3779B97F4A7C15)  # a large odd constant: offsets spread over all 64 bits


def file_stat(path) -> list[int] | None:
    """[size, mtime_ns, ctime_ns, inode] of a file, None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def text_hash(text: str | None) -> int:
    return 0 if text is None else xxhash.xxh3_64_intdigest(text.encode("utf-8", "surrogatepass"))


def shard_digests(columns: ColumnIndex) -> dict[str, list[int]]:
    """{shard file name: [videos with bytes in it, digest of their (offset, checksum) pairs]}: what
    the index places in each shard (the digest changes when any entry there changes)."""
    entries, out = columns.entries, {}
    for stream in kind_named(columns.kind).streams:
        if not len(entries):
            continue
        shard = np.asarray(entries[stream.shard_key])
        mixed = np.asarray(entries[stream.checksum_key]) ^ (np.asarray(entries[stream.offset_key]).astype(np.uint64)
                                                              * _MIX)
        order = np.argsort(shard, kind="stable")
        starts = np.flatnonzero(np.r_[True, shard[order][1:] != shard[order][:-1]])
        sums = np.add.reduceat(mixed[order], starts)  # uint64: wraps, order-independent
        counts = np.diff(np.r_[starts, len(order)])
        for s, n, d in zip(shard[order][starts].tolist(), counts.tolist(), sums.tolist()):
            out[shard_name(s, stream.prefix)] = [n, d]
    return out


class VerifiedRecord:
    """The record of one store (empty when absent, unreadable or of another format)."""

    def __init__(self, folder, shards: dict | None = None, sources: np.ndarray | None = None):
        self.folder = Path(folder)
        self.shards = shards or {}  # file name -> [size, mtime_ns, ctime_ns, inode, videos, digest]
        self.sources = np.zeros(0, _SOURCE) if sources is None else sources  # sorted by name

    @classmethod
    def load(cls, folder) -> "VerifiedRecord":
        """The record, or an empty one when there is none or it cannot be used (it only saves
        work: a damaged record means checking everything, never trusting it)."""
        folder = Path(folder)
        try:
            doc = json.loads((folder / RECORD).read_text())
            sources = np.load(folder / SOURCES, allow_pickle=False)
            if doc.get("format") != FORMAT or doc.get("version") != 1 or sources.dtype != _SOURCE:
                raise ValueError("another format")
            shards = {str(k): [int(x) for x in v] for k, v in doc["shards"].items() if len(v) == 6}
            if not np.all(sources["name"][1:] > sources["name"][:-1]):
                raise ValueError("sources not sorted")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls(folder)
        return cls(folder, shards, sources)

    def sound_shards(self, digests: dict[str, list[int]]) -> set[str]:
        """The shard files whose stat and index digest are the recorded ones."""
        out = set()
        for name, digest in digests.items():
            rec = self.shards.get(name)
            if rec is not None and rec[4:] == digest and rec[:4] == file_stat(self.folder / name):
                out.add(name)
        return out

    def sound_sources(self, names: list[str], paths: list[str], fingerprints: list[str | None]) -> np.ndarray:
        """(M,) bool: which sources still have the recorded stat and fingerprint."""
        keys = np.fromiter((text_hash(n) for n in names), np.uint64, len(names))
        at = np.minimum(np.searchsorted(self.sources["name"], keys), max(len(self.sources) - 1, 0))
        out = np.zeros(len(names), bool)
        if not len(self.sources):
            return out
        hit = self.sources["name"][at] == keys
        for i in np.flatnonzero(hit).tolist():
            rec = self.sources[at[i]]
            stat = file_stat(paths[i])
            out[i] = stat is not None and [int(rec["size"]), int(rec["mtime_ns"]), int(rec["ctime_ns"]),
                                           int(rec["ino"])] == stat and int(rec["fingerprint"]) == \
                text_hash(fingerprints[i])
        return out

    def updated(self, started_ns: int, digests: dict, passed_shards, names, paths, fingerprints) -> "VerifiedRecord":
        """A new record: `passed_shards` (every video in them matched) and the sources of `names`
        whose fingerprint matched, each unless changed within RACY_NS before `started_ns`; the
        other sources' records kept."""
        limit = started_ns - RACY_NS
        shards = {}
        for name in sorted(passed_shards):
            stat = file_stat(self.folder / name)
            if stat is not None and max(stat[1], stat[2]) < limit:
                shards[name] = stat + digests[name]
        rows = []
        for name, path, fingerprint in zip(names, paths, fingerprints):
            stat = file_stat(path)
            if stat is not None and max(stat[1], stat[2]) < limit:
                rows.append((text_hash(name), *stat, text_hash(fingerprint)))
        new = np.array(rows, _SOURCE)
        keep = ~np.isin(self.sources["name"], np.fromiter((text_hash(n) for n in names), np.uint64, len(names)))
        sources = np.concatenate([self.sources[keep], new])
        sources = sources[np.argsort(sources["name"], kind="stable")]
        sources = sources[np.r_[True, sources["name"][1:] != sources["name"][:-1]]] if len(sources) else sources
        return VerifiedRecord(self.folder, shards, sources)

    def same_as(self, other: "VerifiedRecord") -> bool:
        return self.shards == other.shards and np.array_equal(self.sources, other.sources)

    def write(self) -> None:
        """The sources, then the record naming the format (each atomically): a crash between leaves
        an older record that still describes files as they were checked."""
        atomic_write(self.folder / SOURCES, lambda f: np.lib.format.write_array(f, self.sources, allow_pickle=False))
        atomic_write_json(self.folder / RECORD, {"format": FORMAT, "version": 1, "shards": self.shards})


def shard_files(columns: ColumnIndex, rows: np.ndarray) -> list[tuple[str, ...]]:
    """The shard file names each of `rows` has bytes in (one per stream)."""
    per_stream = [[shard_name(s, stream.prefix) for s in np.asarray(columns.entries[stream.shard_key])[rows].tolist()]
                  for stream in kind_named(columns.kind).streams]
    return list(zip(*per_stream))
