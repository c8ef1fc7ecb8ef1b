"""The motion store's columnar index: per-video fixed-width fields and sorted names, memory-mapped.

One generation of the index is a folder `columns-GGGGGG/` of .npy files (docs/store.md):
`entries.npy` (one structured row per video: the entry's numbers, XXH3-64 checksums as uint64,
presence flags), `names.npy` + `name_offsets.npy` (the video paths as UTF-8, sorted),
`name_hashes.npy` + `name_hash_rows.npy` (the names' XXH3-64 sorted, with their rows: a lookup
is one hash and a bisection) and `fingerprints.npy` + `fingerprint_offsets.npy` (the source
fingerprints, same layout as the names, in row order). Opened read-only with np.load(mmap_mode="r"): every
process on a node shares the pages, and opening costs no per-video Python objects.
"""
from __future__ import annotations

import bisect
import shutil
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path

import numpy as np
import xxhash

from .._checksum import ALGORITHM
from .._io import atomic_write, fsync_path
from .store_kind import MapsKind
from .store_kinds import kind_named

INT_FIELDS = ("num_frames", "height", "width", "map_height", "map_width", "shard", "offset")
FLOAT_FIELDS = ("fps", "scale")
_HAS_FINGERPRINT = 1 << 3  # flags bit; bits 0-2: the checksums of the kind's streams present, in stream order
FILES = ("entries.npy", "names.npy", "name_offsets.npy", "name_hashes.npy", "name_hash_rows.npy", "fingerprints.npy",
         "fingerprint_offsets.npy")
GENERATION_PREFIX = "columns-"


def generation_folder(generation: int) -> str:
    return f"{GENERATION_PREFIX}{generation:06d}"


def checksum_fields(kind: MapsKind) -> tuple[str, ...]:
    """The entry's checksum fields: one per stream of the kind, in stream order (their flags bits)."""
    return tuple(stream.checksum_key for stream in kind.streams)


def entry_dtype(kind: str) -> np.dtype:
    """The structured row of one video (little-endian, packed: 81 B paper; another kind's extra
    int fields and checksums make it longer: 161 B the release's)."""
    k = kind_named(kind)
    return np.dtype([(f, "<i8") for f in INT_FIELDS + k.int_fields] + [(f, "<f8") for f in FLOAT_FIELDS]
                    + [(f, "<u8") for f in checksum_fields(k)] + [("flags", "u1")])


class ColumnError(ValueError):
    """A column file that cannot be used (missing, wrong shape or checksum): the message names it."""


class StringTable:
    """N strings as one UTF-8 byte array and (N + 1,) int64 offsets; string i is bytes[off[i]:off[i+1]]."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data, self.offsets = data, offsets
        # memoryviews index to Python ints and bytes without NumPy scalars: a lookup's ~20 steps stay cheap
        self._bytes = memoryview(np.ascontiguousarray(data)).cast("B")
        self._offsets = memoryview(np.ascontiguousarray(offsets)).cast("B").cast("q")

    @classmethod
    def build(cls, strings) -> "StringTable":
        return cls.build_encoded([s.encode("utf-8") for s in strings])

    @classmethod
    def build_encoded(cls, encoded: list[bytes]) -> "StringTable":
        offsets = np.zeros(len(encoded) + 1, np.int64)
        if encoded:
            np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), np.uint8).copy(), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, i: int) -> bytes:
        return bytes(self._bytes[self._offsets[i]:self._offsets[i + 1]])

    def __getitem__(self, i: int) -> str:
        return self.raw(i).decode("utf-8")

    def take(self, rows: np.ndarray) -> "StringTable":
        """The strings of `rows` (an int array), in that order, as a new in-memory table."""
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        runs = np.flatnonzero(np.diff(rows) != 1) + 1  # where consecutive rows stop being consecutive
        if len(runs) < 64:  # a journal's edits: copy a few long runs of bytes
            data = np.empty(int(offsets[-1]), np.uint8)
            for a, b in zip([0, *runs.tolist()], [*runs.tolist(), len(rows)]):
                if b > a:
                    data[offsets[a]:offsets[b]] = self.data[starts[a]:starts[a] + offsets[b] - offsets[a]]
            return StringTable(data, offsets)
        # gather the variable-length pieces: position p of piece k reads starts[k] + (p - offsets[k])
        at = np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]), dtype=np.int64)
        return StringTable(np.asarray(self.data)[at], offsets)

    @staticmethod
    def concat(a: "StringTable", b: "StringTable") -> "StringTable":
        return StringTable(np.concatenate([np.asarray(a.data), np.asarray(b.data)]),
                           np.concatenate([a.offsets[:-1], b.offsets + a.offsets[-1]]))


def name_hash(name: str) -> int:
    """XXH3-64 of a name's UTF-8 bytes: the key of the names' hash table."""
    return xxhash.xxh3_64_intdigest(name.encode("utf-8", "surrogatepass"))


def hash_table(hash_by_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hashes sorted (N,) uint64, the row of each (N,) int64) from each row's name hash."""
    order = np.argsort(hash_by_row, kind="stable")
    return np.ascontiguousarray(hash_by_row[order], np.uint64), order.astype(np.int64)


class Names(Sequence):
    """The sorted video names of a store, read-only: len, [i] -> str, iteration, `in`, index(name).

    A lookup hashes the name and bisects the sorted hashes (C bisect over a memoryview: ~1 us at
    any size) instead of comparing names along a binary search."""

    def __init__(self, table: StringTable, where, hashes: np.ndarray, hash_rows: np.ndarray):
        self._table, self._where = table, where
        self.hashes, self.hash_rows = hashes, hash_rows
        self._hashes = memoryview(np.ascontiguousarray(hashes)).cast("B").cast("Q")
        self._hash_rows = memoryview(np.ascontiguousarray(hash_rows)).cast("B").cast("q")

    def __len__(self) -> int:
        return len(self._table)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._table[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"row {i} is out of range: the motion store {self._where} holds {n} videos")
        return self._table[j]

    def __iter__(self):
        table = self._table
        return (table[i] for i in range(len(table)))

    def find(self, name) -> int:
        """The row of `name`, or -1."""
        if not isinstance(name, str):
            return -1
        key, h = name.encode("utf-8", "surrogatepass"), name_hash(name)
        hashes = self._hashes
        i = bisect.bisect_left(hashes, h)
        while i < len(hashes) and hashes[i] == h:  # equal hashes (a collision): compare the names
            row = self._hash_rows[i]
            if self._table.raw(row) == key:
                return row
            i += 1
        return -1

    def rows(self, names, missing: int | None = None) -> np.ndarray:
        """(M,) int64 rows of `names` (M strs), in their order: the M hashes bisected in one
        np.searchsorted and the names compared in one array comparison. A name not here:
        KeyError naming the first few, or the value `missing` in its place when given."""
        names = names if isinstance(names, list) else list(names)
        is_str = np.fromiter(map(isinstance, names, repeat(str)), bool, len(names))
        keys = _encode_all(names, is_str)
        hashes = np.fromiter(map(xxhash.xxh3_64_intdigest, keys), np.uint64, len(keys))
        out = np.full(len(keys), -1, np.int64)
        if len(self) and len(keys):
            # in hash order, then in row order: the mapped columns are read in one sweep, not at
            # random (10x faster at 1M videos)
            order = np.argsort(hashes, kind="stable")
            at = np.minimum(np.searchsorted(self.hashes, hashes[order]), len(self) - 1)
            candidate, found = np.empty(len(keys), np.int64), np.empty(len(keys), np.uint64)
            candidate[order], found[order] = np.asarray(self.hash_rows)[at], np.asarray(self.hashes)[at]
            asked = StringTable.build_encoded(keys)
            offsets = self._table.offsets
            same = (found == hashes) & (offsets[candidate + 1] - offsets[candidate] == np.diff(asked.offsets))
            picked = np.flatnonzero(same & is_str)
            picked = picked[np.argsort(candidate[picked], kind="stable")]
            # the candidates' bytes against the asked names' bytes, position by position
            theirs, ours = self._table.take(candidate[picked]), asked.take(picked)
            differ = np.concatenate([[0], np.cumsum(np.asarray(theirs.data) != np.asarray(ours.data))])
            equal = differ[theirs.offsets[1:]] == differ[theirs.offsets[:-1]]
            out[picked[equal]] = candidate[picked[equal]]
        for i in np.flatnonzero(out < 0).tolist():  # another name with the same hash comes first: bisect
            out[i] = self.find(names[i])
        lost = np.flatnonzero(out < 0)
        if len(lost) and missing is None:
            shown = ", ".join(repr(names[i]) for i in lost[:5].tolist())
            raise KeyError(f"{len(lost)} of the {len(names)} videos are not in the motion store {self._where}: "
                           f"{shown}{', ...' if len(lost) > 5 else ''}")
        out[lost] = -1 if missing is None else missing
        return out

    def insertion_point(self, name: str) -> int:
        """The first row whose name is not below `name` (a binary search over the UTF-8 bytes:
        their order is the str order)."""
        key, table = name.encode("utf-8", "surrogatepass"), self._table
        lo, hi = 0, len(table)
        while lo < hi:
            mid = (lo + hi) // 2
            if table.raw(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def __contains__(self, name) -> bool:
        return self.find(name) >= 0

    def index(self, name, *_) -> int:
        row = self.find(name)
        if row < 0:
            raise KeyError(f"{name!r} is not in the motion store {self._where}")
        return row


def _checksum_text(value) -> str:
    return f"{ALGORITHM}:{int(value):016x}"


def checksum_value(text: str, where: str) -> int:
    algorithm, _, hexdigest = text.partition(":")
    if algorithm != ALGORITHM or len(hexdigest) != 16:
        raise ColumnError(f"{where}: checksum {text!r} is not an {ALGORITHM} digest this version can store")
    return int(hexdigest, 16)


class ColumnIndex:
    """One store's per-video fields by row (rows in name order): `entries` (structured, see
    entry_dtype), `names` (Names), `fingerprints` (StringTable, '' when flags lack the bit)."""

    def __init__(self, kind: str, entries: np.ndarray, names: StringTable, fingerprints: StringTable, where,
                 hashes: tuple[np.ndarray, np.ndarray]):
        self.kind, self.entries, self.fingerprints, self.where = kind, entries, fingerprints, where
        self._int_fields = kind_named(kind).int_fields
        self._sums = checksum_fields(kind_named(kind))
        self.names = Names(names, where, *hashes)
        self._fields = entries.dtype.names

    def __len__(self) -> int:
        return len(self.entries)

    # -- building (writers, old JSON stores, journals)
    @classmethod
    def from_entries(cls, videos: dict, kind: str, where) -> "ColumnIndex":
        """From {name: entry dict} (the JSON entry format of docs/store.md); rows sorted by name."""
        names = sorted(videos)
        dtype = entry_dtype(kind)
        entries = np.zeros(len(names), dtype)
        rows = [videos[n] for n in names]
        sums = checksum_fields(kind_named(kind))
        for f in dtype.names:
            if f in sums:
                entries[f] = [checksum_value(e[f], f"{where}: video {n!r}") if f in e else 0
                              for n, e in zip(names, rows)]
            elif f != "flags":
                entries[f] = [e[f] for e in rows]
        flags = np.zeros(len(names), np.uint8)
        for bit, f in enumerate(sums):
            flags |= np.array([f in e for e in rows], bool).astype(np.uint8) << bit
        flags |= np.array([e.get("fingerprint") is not None for e in rows], bool).astype(np.uint8) * _HAS_FINGERPRINT
        entries["flags"] = flags
        fingerprints = StringTable.build([e.get("fingerprint") or "" for e in rows])
        hashes = np.fromiter((name_hash(n) for n in names), np.uint64, len(names))
        return cls(kind, entries, StringTable.build(names), fingerprints, where, hash_table(hashes))

    def hash_by_row(self) -> np.ndarray:
        """(N,) uint64: each row's name hash (the inverse of the hash table)."""
        out = np.empty(len(self), np.uint64)
        out[np.asarray(self.names.hash_rows)] = np.asarray(self.names.hashes)
        return out

    def entry(self, row: int) -> dict:
        """Row `row` as the JSON entry format: ints, floats, checksum text, fingerprint when recorded."""
        values = dict(zip(self._fields, self.entries[row].item()))  # Python ints and floats in one call
        flags = values.pop("flags")
        out = {f: values[f] for f in INT_FIELDS}
        out.update(fps=values["fps"], scale=values["scale"])
        out.update({f: values[f] for f in self._int_fields})
        for bit, f in enumerate(self._sums):
            if flags >> bit & 1:
                out[f] = _checksum_text(values[f])
        if flags & _HAS_FINGERPRINT:
            out["fingerprint"] = self.fingerprints[row]
        return out

    def has(self, row: int, field: str) -> bool:
        if field == "fingerprint":
            return bool(int(self.entries["flags"][row]) & _HAS_FINGERPRINT)
        bit = self._sums.index(field)
        return bool(int(self.entries["flags"][row]) >> bit & 1)

    def with_journal(self, overlay: dict) -> "ColumnIndex":
        """This index with journal operations applied: {name: entry dict (added or replaced) or
        None (removed)}. A new in-memory index (O(N) copies, only while journals exist)."""
        if not overlay:
            return self
        found = self.names.rows(list(overlay), missing=-1)
        keep = np.ones(len(self), bool)
        keep[found[found >= 0]] = False
        kept = np.flatnonzero(keep)
        added = ColumnIndex.from_entries({n: e for n, e in overlay.items() if e is not None}, self.kind, self.where)
        # where each added name goes among the kept rows: after the kept rows before its place in this index
        places = np.array([self.names.insertion_point(n) for n in added.names], np.int64)
        slots = np.searchsorted(kept, places) + np.arange(len(added), dtype=np.int64)
        is_added = np.zeros(len(kept) + len(added), bool)
        is_added[slots] = True
        entries = np.empty(len(is_added), self.entries.dtype)
        entries[~is_added], entries[is_added] = self.entries[kept], added.entries
        order = np.empty(len(is_added), np.int64)  # merged row -> row of the concatenation (kept rows, then added)
        order[~is_added], order[is_added] = np.arange(len(kept)), len(kept) + np.arange(len(added))
        base_names, base_fps = _in_memory(self.names._table).take(kept), _in_memory(self.fingerprints).take(kept)
        names = StringTable.concat(base_names, added.names._table).take(order)
        fingerprints = StringTable.concat(base_fps, added.fingerprints).take(order)
        hashes = np.concatenate([self.hash_by_row()[kept], added.hash_by_row()])[order]
        return ColumnIndex(self.kind, entries, names, fingerprints, self.where, hash_table(hashes))

    # -- files
    def arrays(self) -> dict[str, np.ndarray]:
        return {"entries.npy": np.ascontiguousarray(self.entries), "names.npy": np.asarray(self.names._table.data),
                "name_offsets.npy": self.names._table.offsets, "name_hashes.npy": np.asarray(self.names.hashes),
                "name_hash_rows.npy": np.asarray(self.names.hash_rows),
                "fingerprints.npy": np.asarray(self.fingerprints.data),
                "fingerprint_offsets.npy": self.fingerprints.offsets}

    def write(self, folder: Path) -> dict[str, str]:
        """Write the column files into the new folder `folder` (each atomically, fsynced) and return
        {file name: checksum of its bytes}."""
        if folder.exists():
            shutil.rmtree(folder)  # a generation a killed writer left half-written: never referenced
        folder.mkdir()
        sums = {}
        for name, array in self.arrays().items():
            atomic_write(folder / name, lambda f, a=array: np.lib.format.write_array(f, a, allow_pickle=False))
            sums[name] = file_checksum(folder / name)
        fsync_path(folder.parent)
        return sums

    @classmethod
    def open(cls, folder: Path, kind: str, count: int, sums: dict | None, where) -> "ColumnIndex":
        """Map a generation's column files read-only; ColumnError naming the file when one is
        missing, not what the header says, or (when `sums`) fails its checksum."""
        arrays = {}
        for name in FILES:
            path = folder / name
            if sums is not None:
                try:
                    got = file_checksum(path)
                except OSError as e:
                    raise ColumnError(f"{path}: cannot read the index column: {e}") from None
                if got != sums.get(name):
                    raise ColumnError(f"{path}: the index column is damaged (checksum {got}, the header recorded "
                                      f"{sums.get(name)})")
            try:
                arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ColumnError(f"{path}: cannot map the index column: {e}") from None
        entries = arrays["entries.npy"]
        if entries.dtype != entry_dtype(kind) or entries.shape != (count,):
            raise ColumnError(f"{folder / 'entries.npy'}: expected {count} rows of {kind} entries, found "
                              f"{entries.shape} {entries.dtype}")
        for data, offsets in (("names.npy", "name_offsets.npy"), ("fingerprints.npy", "fingerprint_offsets.npy")):
            d, o = arrays[data], arrays[offsets]
            if d.dtype != np.uint8 or o.dtype != np.int64 or o.shape != (count + 1,) or \
                    int(o[0]) != 0 or int(o[-1]) != len(d):
                raise ColumnError(f"{folder / offsets}: does not describe {folder / data} for {count} videos")
        hashes, rows = arrays["name_hashes.npy"], arrays["name_hash_rows.npy"]
        if hashes.dtype != np.uint64 or rows.dtype != np.int64 or hashes.shape != (count,) or rows.shape != (count,):
            raise ColumnError(f"{folder / 'name_hashes.npy'}: expected {count} uint64 hashes and int64 rows")
        return cls(kind, entries, StringTable(arrays["names.npy"], arrays["name_offsets.npy"]),
                   StringTable(arrays["fingerprints.npy"], arrays["fingerprint_offsets.npy"]), where, (hashes, rows))


def _encode_all(names: list, is_str: np.ndarray) -> list[bytes]:
    """The UTF-8 bytes of each name (b"" for one that is not a str). One encode of the names
    joined by NUL, split again (a path never holds NUL; when one does, name by name)."""
    if len(names) and is_str.all():
        keys = "\0".join(names).encode("utf-8", "surrogatepass").split(b"\0")
        if len(keys) == len(names):
            return keys
    return [n.encode("utf-8", "surrogatepass") if ok else b"" for n, ok in zip(names, is_str.tolist())]


def _in_memory(table: StringTable) -> StringTable:
    return StringTable(np.asarray(table.data), np.asarray(table.offsets))


def file_checksum(path) -> str:
    """XXH3-64 of a file's bytes, read in 1 MiB pieces (not through a memory map: checking the
    columns must not map their pages into this process)."""
    h = xxhash.xxh3_64()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return f"{ALGORITHM}:{h.hexdigest()}"


def remove_other_generations(store: Path, keep: str) -> None:
    """Remove every columns-* folder but `keep` (older generations, or one a killed writer left)."""
    removed = False
    for p in store.iterdir():
        if p.name.startswith(GENERATION_PREFIX) and p.name != keep and p.is_dir():
            shutil.rmtree(p)
            removed = True
    if removed:
        fsync_path(store)
