"""The motion store: per-frame motion maps of a whole dataset, compact, crash-safe, read by memory map.

A folder of the index (fixed-width columns and sorted names memory-mapped read-only, one
generation at a time: store_index.py; `index.json` is the header naming them), uint8 map shards
read by memory map (a kind of store may add streams of its own: store_kind.py), a journal while a
writer runs, and `errors.json`. Every video is fsynced before its journal line and checksummed; one
writer at a time, or one per rank under torchrun. Stores with the older JSON index (one entry
per video) still read and are converted by the next writer. The format and the crash-safety
rules are in docs/store.md.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._checksum import digest, matches
from .._io import FolderBusy, atomic_write_json, fsync_path, lock_folder
from ..video_io import target_size
from ..ranks import part_name
from .store_entries import WriterEntries
from .store_index import ColumnError, ColumnIndex, Names, checksum_value, generation_folder, \
    remove_other_generations
from .store_kind import MAPS_STREAM, PAPER, MapsKind, StoreError, Stream, a_store
from .store_kinds import KINDS, KindReaders, kind_named
from .video_maps import VideoMaps, dequantize, quantize_maps  # noqa: F401 (quantize_maps: imported from here)

log = logging.getLogger(__name__)

FORMAT = "mcl_fast.motion_store"
PAPER_VERSION = PAPER.version  # the newest version of a paper store: columnar index (store_index)
# each kind's index.json with one JSON entry per video: read, converted by writers
LEGACY_VERSIONS = {name: kind.legacy_version for name, kind in KINDS.items()}
INDEX = "index.json"
JOURNAL = "journal.jsonl"
PART_JOURNAL_GLOB = "journal-rank*.jsonl"  # one per torchrun rank (part_journal_name)
ERRORS = "errors.json"
LOCK = ".lock"
SHARD_BYTES = 1 << 30  # start a new shard once one would pass ~1 GiB
_SETTINGS = ("flow", "size", "map_downsample")
_ENTRY_KEYS = ("num_frames", "fps", "height", "width", "map_height", "map_width", "shard", "offset", "scale")


def repair_command(store) -> str:
    """The command that recomputes a store's damaged and stale videos (prepare --repair with no
    --videos: the store's own videos and settings)."""
    return f"mcl-fast prepare --out {store} --repair"


class DamagedVideo(StoreError):
    """A video's stored bytes fail their checksum: `.video` and `.file` (the shard) name it."""

    def __init__(self, message: str, video: str, file, what: str):
        super().__init__(message)
        self.video, self.file, self.what = video, str(file), what


def shard_name(index: int, prefix: str = "shard") -> str:
    return f"{prefix}-{index:05d}.bin"


def part_journal_name(rank: int) -> str:
    """The journal of torchrun rank `rank` (PartWriter): journal-rank00003.jsonl."""
    return part_name("journal", rank, ".jsonl")


def _part_journals(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(PART_JOURNAL_GLOB) if re.fullmatch(r"journal-rank\d{5,}\.jsonl", p.name))


def _entry_keys(kind: MapsKind) -> tuple[str, ...]:
    """The fields a journal's video entry must have in a store of `kind`."""
    return _ENTRY_KEYS + kind.int_fields


# ----------------------------------------------------------------------------- file helpers


def _pwrite_all(fd: int, offset: int, *buffers) -> None:
    """Write the buffers one after another from `offset`; on failure cut the file back to
    `offset` and re-raise."""
    at = offset
    try:
        for buf in buffers:
            view = memoryview(buf).cast("B")
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], at + done)
            at += len(view)
    except BaseException:
        try:
            os.ftruncate(fd, offset)
        except OSError:
            pass
        raise


# ------------------------------------------------------------------------------ block headers
#
# Every block (one video's bytes in one shard) written by this version starts with a 32-byte
# header: magic, the block's length, its xxh3_64, and a state. The state is PENDING when the
# block is written and becomes COMMITTED once the video's journal line is durable (the state write
# rides on the next fsync of that shard). So bytes past what the index accounts for are either
# a killed run's leftovers (a torn block, or a PENDING one: cut, as ever) or COMMITTED blocks of
# videos an index does not know (an older index.json restored over the shards): those are never
# cut; the writer refuses, and `prepare --repair` marks them ORPHANED (kept in place, skipped).
# Blocks written before headers existed have none; their entries have no checksum either.

BLOCK_MAGIC = b"MCLBLK01"
PENDING, COMMITTED, ORPHANED = b"pending\0", b"commitd\0", b"orphand\0"
_HEADER = struct.Struct("<8sQQ8s")  # magic, data bytes, xxh3_64 of the data, state
HEADER_BYTES = _HEADER.size
_STATE_AT = 24  # offset of the state field in the header


def _header(nbytes: int, checksum: str) -> bytes:
    return _HEADER.pack(BLOCK_MAGIC, nbytes, int(checksum.partition(":")[2], 16), PENDING)


@dataclass(frozen=True)
class _Block:
    """A complete block found past the accounted end of a shard."""

    start: int  # its header's offset
    end: int  # one past its data
    state: bytes


def _blocks_from(fd: int, start: int, size: int) -> list[_Block]:
    """The complete blocks with a valid header from `start` on, stopping at the first torn or
    headerless bytes (what a killed writer left, or a block written before headers existed)."""
    blocks, at = [], start
    while at + HEADER_BYTES <= size:
        magic, nbytes, _, state = _HEADER.unpack(os.pread(fd, HEADER_BYTES, at))
        end = at + HEADER_BYTES + nbytes
        if magic != BLOCK_MAGIC or end > size or state not in (PENDING, COMMITTED, ORPHANED):
            break
        blocks.append(_Block(at, end, state))
        at = end
    return blocks


def _set_state(fd: int, header_at: int, state: bytes) -> None:
    os.pwrite(fd, state, header_at + _STATE_AT)


@dataclass(frozen=True)
class ShardTail:
    """What lies past the last byte a store's index accounts for in one shard file.

    unknown: COMMITTED blocks (maps of videos the index does not know) and their bytes;
    orphaned: the end of the last ORPHANED block (bytes kept aside by `prepare --repair`);
    leftover: bytes after those a killed writer left (torn or PENDING blocks, or headerless bytes)."""

    path: Path
    accounted: int
    size: int
    unknown: list[_Block]
    keep_end: int  # end of the last block that must stay (COMMITTED or ORPHANED)

    @property
    def unknown_bytes(self) -> int:
        return sum(b.end - b.start for b in self.unknown)

    @property
    def leftover(self) -> int:
        return self.size - self.keep_end

    def describe(self) -> str:
        return (f"{self.path.name} holds {self.size - self.accounted} bytes past the {self.accounted} its index "
                f"accounts for, {self.unknown_bytes} of them in {len(self.unknown)} complete block(s) of videos "
                "the index does not know (an older index.json restored over newer shards?)")


def _shard_tail(path: Path, accounted: int) -> ShardTail:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        blocks = _blocks_from(fd, accounted, size)
    finally:
        os.close(fd)
    kept = [b for b in blocks if b.state != PENDING]
    return ShardTail(path, accounted, size, [b for b in blocks if b.state == COMMITTED],
                     kept[-1].end if kept else accounted)


def _raw(array: np.ndarray) -> np.ndarray:
    """The bytes of a C-contiguous array as a flat uint8 array (what a block stores and its checksum covers)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_header(folder: Path) -> tuple[dict, str]:
    """(index.json, the checksum of its bytes: the identity of the index generation), checked."""
    path = folder / INDEX
    if not path.is_file():
        if not folder.exists():
            raise StoreError(f"{folder}: no such motion store (the folder does not exist)")
        raise StoreError(f"{folder} is not a motion store: it has no {INDEX}")
    try:
        data = path.read_bytes()
        index = json.loads(data)
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: cannot read the store index: {e}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise StoreError(f"{path} is not a motion store index (format {found!r}, expected {FORMAT!r})")
    version = index.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreError(f"{path}: unknown store version {version!r}")
    name = maps_kind(index)
    if name not in KINDS:
        raise StoreError(f"{path}: unknown maps {name!r} (this mcl_fast reads {', '.join(KINDS)})")
    kind = kind_named(name)
    if version > kind.version:
        raise StoreError(f"{path}: store format version {version} is newer than this mcl_fast reads "
                         f"(version {kind.version} for {name} stores); upgrade mcl_fast to read it")
    missing = [k for k in kind.settings if k not in index]
    if kind.settings and (missing or version < kind.legacy_version):  # a kind newer than the paper's
        raise StoreError(f"{path}: {a_store(name)} index needs version {kind.legacy_version} and "
                         f"{', '.join(kind.settings)}; it has version {version}"
                         f"{', lacks ' + ', '.join(missing) if missing else ''}")
    if version not in (kind.legacy_version, kind.version):
        raise StoreError(f"{path}: version {version} is not a {name} store version this mcl_fast knows "
                         f"({kind.legacy_version} or {kind.version})")
    body = ("videos",) if version == kind.legacy_version else ("columns", "count", "files", "extents")
    missing = [k for k in ("root", *_SETTINGS, "map_dtype", *body) if k not in index]
    if missing:
        raise StoreError(f"{path}: store index lacks {', '.join(missing)}")
    if index["map_dtype"] != "uint8":
        raise StoreError(f"{path}: unsupported map_dtype {index['map_dtype']!r}")
    if not is_legacy(index) and (not isinstance(index["columns"], str) or "/" in index["columns"]
                                 or not isinstance(index["count"], int) or not isinstance(index["files"], dict)):
        raise StoreError(f"{path}: the index header's columns, count or files are damaged")
    return index, digest(data)


def _load_index(folder: Path) -> dict:
    return _read_header(folder)[0]


def is_legacy(index: dict) -> bool:
    """True for an index.json that holds one JSON entry per video (written before the columnar index)."""
    return index["version"] == kind_named(maps_kind(index)).legacy_version


_NOTIFIED: set[str] = set()  # the old stores this process has told about


def _notify_legacy(folder: Path) -> None:
    key = os.path.abspath(folder)
    if key not in _NOTIFIED:
        _NOTIFIED.add(key)
        log.warning("%s has the older JSON index (one entry per video, parsed into every process that opens it); "
                    "it reads as before. The next `mcl-fast prepare --videos ... --out %s` run into it (your prepare "
                    "command again: it finds nothing to compute) converts it to the memory-mapped index",
                    folder, folder)


def _open_columns(folder: Path, index: dict, verify: bool = True) -> ColumnIndex:
    try:
        return ColumnIndex.open(folder / index["columns"], maps_kind(index), index["count"],
                                index["files"] if verify else None, folder)
    except ColumnError as e:
        raise StoreError(f"{e}; the store is damaged (restore index.json with its {index['columns']} folder, or "
                         "rebuild the store)") from None


def maps_kind(index: dict) -> str:
    """The name of the maps a store index describes (store_kinds.KINDS; stores before other
    kinds than the paper's lack the key)."""
    return index.get("maps", PAPER.name)


def _load_errors(folder: Path) -> dict[str, str]:
    path = folder / ERRORS
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
        return {str(e["path"]): str(e["reason"]) for e in items}
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise StoreError(f"{path}: cannot read the error list: {e}") from None


def _read_journal(path: Path, entry_keys=_ENTRY_KEYS, limit: int | None = None) -> tuple[list[dict], int, int]:
    """(operations, bytes of complete valid lines, file size) of the journal file `path` (its first
    `limit` bytes when given). Reading stops at a last line that is not complete (no newline: a
    torn write) or not a valid operation (a video entry lacking one of `entry_keys`); an invalid
    line in the middle raises StoreError."""
    try:
        with open(path, "rb") as f:
            data = f.read() if limit is None else f.read(limit)
    except FileNotFoundError:
        return [], 0, 0
    ops: list[dict] = []
    pos = 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            break
        try:
            op = json.loads(data[pos:end])
            kind, path_ = op["op"], op["path"]
            if not isinstance(path_, str):
                raise TypeError(path_)
            if kind == "video":
                entry = op["entry"]
                if any(k not in entry for k in entry_keys):
                    raise KeyError(entry_keys)
            elif kind == "error":
                str(op["reason"])
            else:
                raise ValueError(kind)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            if data.find(b"\n", end + 1) >= 0:
                # Only the last line can be torn by a crash; a bad line with lines after it is
                # damage, and cutting there would silently drop the videos recorded after it.
                raise StoreError(f"{path}: journal line {len(ops) + 1} is corrupt and is followed by "
                                 "more lines; refusing to drop them (restore the store or remove the journal)")
            break
        ops.append(op)
        pos = end + 1
    return ops, pos, len(data)


def _apply(videos: dict, errors: dict, op: dict, *, tombstones: bool = False) -> None:
    """One journal operation: a video's entry set, or its error recorded and its entry dropped.
    tombstones=True (videos is an overlay on an index): a dropped entry becomes None instead."""
    path = op["path"]
    if op["op"] == "video":
        videos[path] = op["entry"]
        errors.pop(path, None)
    else:
        errors[path] = str(op["reason"])
        if tombstones:
            videos[path] = None
        else:
            videos.pop(path, None)


def _load_state(folder: Path) -> tuple[dict, WriterEntries, dict, list[dict], int, int]:
    """(index, videos, errors, the main journal's operations, its good bytes, its size): the index
    (its columns, memory-mapped) with the main journal applied, then every rank's journal (a
    torchrun job's, running or killed). Every entry's fields are checked (StoreError naming the
    video and the field)."""
    index = _load_index(folder)
    kind = kind_named(maps_kind(index))
    if is_legacy(index):
        if not isinstance(index["videos"], dict):
            raise StoreError(f"{folder / INDEX}: 'videos' must be an object of entries, "
                             f"got {type(index['videos']).__name__}")
        for video, entry in index["videos"].items():
            _check_entry(folder, video, entry, kind)
        try:
            videos = WriterEntries(ColumnIndex.from_entries(index["videos"], kind.name, folder))
        except ColumnError as e:
            raise StoreError(str(e)) from None
    else:  # the columns were checked when written and are verified by their checksums
        videos = WriterEntries(_open_columns(folder, index))
    errors = _load_errors(folder)
    keys = _entry_keys(kind)
    ops, good, size = _read_journal(folder / JOURNAL, keys)
    journaled = set()
    for op in ops:
        _apply(videos, errors, op)
        journaled.add(op["path"])
    for part in _part_journals(folder):
        for op in _read_journal(part, keys)[0]:
            _apply(videos, errors, op)
            journaled.add(op["path"])
    for video in journaled:
        if video in videos:
            _check_entry(folder, video, videos[video], kind)
    return index, videos, errors, ops, good, size


# field -> (lowest value, integer only) of every entry; a kind's own fields add theirs (MapsKind.ranges)
_FIELD_RANGES = {"num_frames": (1, True), "fps": (0, False), "height": (1, True), "width": (1, True),
                 "map_height": (1, True), "map_width": (1, True), "shard": (0, True), "offset": (0, True),
                 "scale": (None, False)}


def _check_entry(folder: Path, video: str, entry, kind: MapsKind, where: str | None = None) -> None:
    """StoreError unless `entry` has every field a reader uses, each of the right type and range
    (a damaged or hand-edited index must never read as negative or garbage maps). `where` starts
    the message (default: the index file and the video)."""
    where = where or f"{folder / INDEX}: video {video!r}"
    if not isinstance(entry, dict):
        raise StoreError(f"{where}: the entry is {type(entry).__name__}, not an object")
    for key, (low, integer) in {**_FIELD_RANGES, **kind.ranges}.items():
        value = entry.get(key)
        if value is None:
            raise StoreError(f"{where}: the field {key} is missing; the store is damaged (rebuild it or restore "
                             "its index)")
        number = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not number or not math.isfinite(value) or \
                (value <= 0 if low is None else value < low):
            want = "a positive finite number" if low is None else f"{'an integer' if integer else 'a number'} >= {low}"
            raise StoreError(f"{where}: the field {key} is {value!r}, expected {want}; the store is damaged "
                             "(rebuild it or restore its index)")
    kind.check_entry(entry, where)
    for key in ("fingerprint", *(stream.checksum_key for stream in kind.streams)):
        if key in entry and not isinstance(entry[key], str):
            raise StoreError(f"{where}: the field {key} is {entry[key]!r}, expected a string")


def _column_ends(columns: ColumnIndex, stream: Stream) -> dict[int, tuple[int, int]]:
    """{shard: (the end of its last recorded byte, the row that ends there)} of one stream."""
    entries = columns.entries
    if not len(entries):
        return {}
    shard = np.asarray(entries[stream.shard_key])
    end = np.asarray(entries[stream.offset_key]) + stream.column_nbytes(entries)
    order = np.lexsort((end, shard))  # by shard, then end: each shard's last row ends it
    last = order[np.r_[shard[order][1:] != shard[order][:-1], True]]
    return {int(shard[r]): (int(end[r]), int(r)) for r in last}


def _check_shard_ends(folder: Path, stream: Stream, ends: dict) -> None:
    """StoreError naming the video and field whose bytes lie past the end of (or in a missing) shard
    file, from one stream's {shard: (end of its last recorded byte, the video that ends there)}."""
    for shard, (end, video) in ends.items():
        path = folder / shard_name(shard, stream.prefix)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise StoreError(f"{path} is missing but video {video!r} has its {stream.what} there "
                             f"(field {stream.shard_key}); the store is damaged") from None
        if size < end:
            raise StoreError(f"{path} holds {size} bytes but video {video!r} ends at byte {end} (fields "
                             f"{stream.offset_key} and its sizes); the store is damaged")


def store_errors(folder) -> dict[str, str]:
    """{relpath: reason} of the store `folder` (errors.json, then every journal's complete lines),
    without reading its index."""
    folder = Path(folder)
    errors = _load_errors(folder)
    keys = _entry_keys(kind_named(maps_kind(_load_index(folder))))
    for journal in [folder / JOURNAL, *_part_journals(folder)]:
        for op in _read_journal(journal, keys)[0]:
            _apply({}, errors, op)
    return errors


def store_state(folder) -> tuple[WriterEntries, dict]:
    """(videos, errors) of the store `folder` as it stands (index.json, then every journal's
    complete lines): a mapping {relpath: entry} backed by the memory-mapped columns (no per-video
    objects until iterated), {relpath: reason}. Raises StoreError."""
    _, videos, errors, _, _, _ = _load_state(Path(folder))
    return videos, errors


# ----------------------------------------------------------------------------------- writer


class StoreWriter:
    """Creates a store or opens one to add to it (`prepare` uses it; one writer at a time).

    Opening an existing store applies its journal, cuts a torn last journal line and any shard
    bytes past the last recorded video (what a killed run left), and refuses (StoreError) when
    flow / size / map_downsample (or maps and the kind's settings) differ from the store's, or when
    `root` differs from that of a non-empty store. Each `add` / `add_error` costs one append and two
    fsyncs (two more per extra stream of the kind); index.json is rewritten only by `compact`.

    Bytes past what the index and journals account for that are complete committed blocks
    (videos an older index does not know) are never cut: StoreError naming the shard and the
    byte count, unless repair=True, which marks them orphaned (kept in place, skipped; listed in
    `orphaned`). Each added video's blocks carry its checksums (the entry's `checksum`, and one
    per extra stream).

    maps names the kind of store (store_kinds.KINDS); `kind_settings` are that kind's settings
    (MapsKind.writer_settings checks them and fills defaults), and every added VideoMaps must be
    of that kind (`VideoMaps.kind`).
    """

    def __init__(self, path, *, root, flow: str = "tvl1", size: int = 128, map_downsample: int | None = 4,
                 shard_bytes: int = SHARD_BYTES, maps: str = PAPER.name, repair: bool = False, **kind_settings):
        if maps not in KINDS:
            raise ValueError(f"maps must be one of {', '.join(KINDS)}, got {maps!r}")
        self.path = Path(path)
        self.root = os.path.abspath(root)
        self.maps, self.kind = maps, kind_named(maps)
        self.flow, self.size = str(flow), int(size)
        self.map_downsample, self.settings = self.kind.writer_settings(map_downsample, kind_settings)
        self.shard_bytes = int(shard_bytes)
        self.streams = self.kind.streams
        self._lock_fd = None
        self._fds: dict[str, int] = {}  # stream prefix -> the open fd of its current shard
        self._cur: dict[str, int] = {}  # stream prefix -> current shard index
        self._cur_size: dict[str, int] = {}  # stream prefix -> bytes in the current shard
        self._journal_fd = None
        self._index_stale = False  # entries changed outside the journal (drop): index.json must be rewritten
        self.journal_name = JOURNAL
        self.repair = bool(repair)  # mark unknown committed blocks ORPHANED instead of refusing
        self.orphaned: list[ShardTail] = []  # the shard tails this writer marked ORPHANED
        self._shard_step = 1  # a PartWriter's next shard is `world` numbers on
        self._refuse_foreign_folder()
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _settings(self) -> dict:
        """The header fields a store must share to be added to."""
        return {"flow": self.flow, "size": self.size, "map_downsample": self.map_downsample, "maps": self.maps,
                **self.settings}

    # -- opening
    def _lock(self) -> None:
        try:
            self._lock_fd = lock_folder(self.path, LOCK)
        except FolderBusy as busy:
            raise StoreError(f"{self.path} is being written by another process (pid {busy.holder}); "
                             "one prepare per store at a time") from None

    def _refuse_foreign_folder(self) -> None:
        """Never write a store into a folder that holds something else."""
        if not self.path.is_dir() or (self.path / INDEX).exists():
            return
        stray = sorted(p.name for p in self.path.iterdir() if p.name != LOCK and not p.name.endswith(".tmp"))
        if stray:
            raise StoreError(f"{self.path} exists and is not a motion store (no {INDEX}, but it holds "
                             f"{', '.join(stray[:3])}{', ...' if len(stray) > 3 else ''}); "
                             "choose an empty or new folder")

    def _check_settings(self, index: dict) -> None:
        """StoreError unless the store's header (and, when it holds anything, its root) is ours."""
        found = {**index, "maps": maps_kind(index)}
        differ = [f"{k} {found.get(k)!r} (asked for {v!r})" for k, v in self._settings().items()
                  if found.get(k) != v]
        if differ:
            raise StoreError(f"{self.path} was prepared with {', '.join(differ)}; use the store's "
                             "settings to add to it, or another output folder")
        if os.path.abspath(index["root"]) != self.root:
            if self.videos or self.errors:
                raise StoreError(f"{self.path} holds videos relative to {index['root']}, not {self.root}; "
                                 "use the same root (--root) or another output folder")

    def _open(self) -> None:
        if (self.path / INDEX).exists():
            index, self.videos, self.errors, _, good, size = _load_state(self.path)
            self._check_settings(index)
            self._generation = int(index.get("generation", 0))
            self._columns = None if is_legacy(index) else index["columns"]
            self._index_stale = is_legacy(index)  # compact converts an old JSON index to the columnar one
            if good < size:  # a torn or invalid tail: cut it so the next line starts clean
                fd = os.open(self.path / JOURNAL, os.O_RDWR)
                try:
                    os.ftruncate(fd, good)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._journal_size = good
        else:
            self._refuse_foreign_folder()  # again, now under the lock
            self.videos, self.errors = WriterEntries.empty(self.maps, self.path), {}
            self._journal_size = 0
            self._generation = 0
            self._write_index()
        self._repair_shards()  # may refuse: nothing is removed before it agrees
        if self._columns is not None:
            remove_other_generations(self.path, self._columns)  # what a killed compact left
        if _part_journals(self.path):
            # A torchrun job's rank journals (killed, or just finished): fold them before this
            # writer's own lines, which must come after them when the journals are replayed.
            self.compact()

    def _repair_shards(self) -> None:
        removed = False
        for stream in self.streams:
            removed |= self._repair_stream(stream)
        if removed:
            fsync_path(self.path)

    def _repair_stream(self, stream: Stream) -> bool:
        """Cut what a killed writer left past the recorded videos of one stream's shards, refuse
        (or, with repair, mark ORPHANED) complete blocks of videos the index does not know, and
        set where the next block goes. True when a file was removed."""
        columns = self.videos.merged()
        recorded = _column_ends(columns, stream)
        _check_shard_ends(self.path, stream,
                          {shard: (end, columns.names[row]) for shard, (end, row) in recorded.items()})
        ends = {shard: end for shard, (end, _) in recorded.items()}
        present = {int(m.group(1)): p for p in self.path.iterdir() if (m := stream.pattern.match(p.name))}
        tails = {shard: _shard_tail(p, ends.get(shard, 0)) for shard, p in sorted(present.items())}
        unknown = [t for t in tails.values() if t.unknown]
        if unknown and not self.repair:
            raise StoreError(f"{self.path}: refusing to cut shard bytes that hold maps: "
                             + "; ".join(t.describe() for t in unknown)
                             + ". Nothing was changed. Restore the index.json that goes with these shards, or run "
                               "`mcl-fast prepare ... --repair`, which keeps those bytes in place (marked orphaned, "
                               "never deleted) and recomputes the videos the index lacks")
        for tail in unknown:
            self._orphan(tail)
        removed = False
        for shard, tail in tails.items():
            if tail.keep_end == 0:
                tail.path.unlink()  # a shard a killed run started, with no recorded video
                removed = True
            elif tail.leftover:  # bytes of a video whose journal line never made it
                _truncate(tail.path, tail.keep_end)
            ends[shard] = tail.keep_end
        cur = max((shard for shard, end in ends.items() if end), default=0)
        self._cur[stream.prefix], self._cur_size[stream.prefix] = cur, ends.get(cur, 0)
        return removed

    def _orphan(self, tail: ShardTail) -> None:
        """Mark the unknown committed blocks of a shard tail ORPHANED: kept where they are (a
        newer index that knows them still reads them), skipped by every later writer."""
        fd = os.open(tail.path, os.O_RDWR)
        try:
            for block in tail.unknown:
                _set_state(fd, block.start, ORPHANED)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.orphaned.append(tail)

    # -- many writers (torchrun; see the module docstring)
    def fold_parts(self) -> None:
        """Fold every rank's journal (a job's, finished or killed) and the main journal into
        index.json and errors.json, cut what a killed rank left past its last recorded video, and
        remove the journals. Cost: the journals' lines and one stat per shard file. Call it only
        while no PartWriter writes (before a job's ranks start, after they all finished)."""
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        # index.json and the main journal are as this writer left them (it holds the lock): only the
        # rank journals written since it opened (or folded) are new, so the index is not read again
        keys = _entry_keys(self.kind)
        for part in _part_journals(self.path):
            for op in _read_journal(part, keys)[0]:
                _apply(self.videos, self.errors, op)
                if op["op"] == "video":
                    _check_entry(self.path, op["path"], op["entry"], self.kind)
        self._repair_shards()  # cut what a killed rank left past its last recorded video
        self.compact()  # writes nothing when nothing changed

    def next_free_shard(self) -> int:
        """1 + the highest shard number of any stream on disk (0 for none): where a torchrun job's
        ranks start numbering their shards."""
        numbers = [int(m.group(1)) for stream in self.streams for p in self.path.iterdir()
                   if (m := stream.pattern.match(p.name))]
        return max(numbers, default=-1) + 1

    # -- state
    def _write_index(self) -> None:
        """Write this writer's entries as a new index generation: the column files (a new
        columns-GGGGGG folder, each file fsynced), then index.json (the header naming them, with
        their checksums) atomically, then remove the older generations. A crash before the
        rename leaves the old index; after it, the new one (an unreferenced folder is removed
        by the next writer)."""
        index = {"format": FORMAT, "version": self.kind.version, "root": self.root, "flow": self.flow,
                 "size": self.size, "map_downsample": self.map_downsample, "map_dtype": "uint8",
                 **self.kind.header(self.settings)}
        self._generation += 1
        columns = self.videos.merged()  # the last generation's columns with this writer's edits merged in
        name = generation_folder(self._generation)
        files = columns.write(self.path / name)
        extents = {s.prefix: [[shard, end, columns.names[row]]
                              for shard, (end, row) in _column_ends(columns, s).items()] for s in self.streams}
        index.update(generation=self._generation, columns=name, count=len(columns), files=files, extents=extents)
        atomic_write_json(self.path / INDEX, index)
        self._columns = name
        # from now on the new generation's mapped pages, not the merged copy, back the entries
        self.videos = WriterEntries(ColumnIndex.open(self.path / name, self.maps, len(columns), None, self.path))
        remove_other_generations(self.path, name)

    def index_columns(self) -> ColumnIndex:
        """The entries as columns (the mapped generation with this writer's edits merged in)."""
        return self.videos.merged()

    def done(self, relpath: str) -> bool:
        """True when `relpath`'s maps are in the store."""
        return relpath in self.videos

    def failed(self, relpath: str) -> bool:
        """True when `relpath` is recorded as an error."""
        return relpath in self.errors

    def __contains__(self, relpath) -> bool:
        return relpath in self.videos

    def fingerprint(self, relpath: str) -> str | None:
        """The recorded fingerprint of `relpath`'s source file (None: not recorded)."""
        return self.videos[relpath].get("fingerprint")

    def check(self, relpath: str) -> None:
        """StoreError (DamagedVideo) unless every stored byte of `relpath` matches its checksums
        (MotionStore.check from this writer's entries: a rerun's check needs no second index read)."""
        self._check_bytes(relpath, self.videos[relpath])

    def _check_bytes(self, relpath: str, entry: dict) -> None:
        for stream in self.streams:
            expected, n = entry.get(stream.checksum_key), stream.nbytes(entry)
            if expected is None or not n:
                continue
            path = self.path / shard_name(int(entry[stream.shard_key]), stream.prefix)
            try:
                with open(path, "rb") as f:
                    f.seek(int(entry[stream.offset_key]))
                    data = f.read(n)
                good = len(data) == n and matches(data, expected)
            except (OSError, ValueError) as e:
                raise StoreError(f"{path}: cannot check the {stream.what} of video {relpath!r}: {e}") from None
            if not good:
                raise _damaged(self.path, path, relpath, stream, data, expected)

    # -- writing
    def _journal(self, op: dict) -> None:
        line = (json.dumps(op, separators=(",", ":")) + "\n").encode()
        if self._journal_fd is None:
            new = not (self.path / self.journal_name).exists()
            self._journal_fd = os.open(self.path / self.journal_name, os.O_RDWR | os.O_CREAT, 0o666)
            if new:
                fsync_path(self.path)
        _pwrite_all(self._journal_fd, self._journal_size, line)
        os.fsync(self._journal_fd)
        self._journal_size += len(line)

    def _append(self, stream: Stream, data: np.ndarray, checksum: str) -> tuple[int, int]:
        """Write a PENDING block (header, then `data`) at the end of the stream's current shard (a
        new shard once it would pass shard_bytes) and fsync it. Returns (shard, offset of the data)."""
        prefix = stream.prefix
        size = HEADER_BYTES + data.nbytes
        if self._cur_size[prefix] > 0 and self._cur_size[prefix] + size > self.shard_bytes:
            fd = self._fds.pop(prefix, None)
            if fd is not None:
                os.fsync(fd)  # the COMMITTED marks written since its last block
                os.close(fd)
            self._cur[prefix], self._cur_size[prefix] = self._cur[prefix] + self._shard_step, 0
        fd = self._fds.get(prefix)
        if fd is None:
            p = self.path / shard_name(self._cur[prefix], prefix)
            new = not p.exists()
            fd = self._fds[prefix] = os.open(p, os.O_RDWR | os.O_CREAT, 0o666)
            if new:
                fsync_path(self.path)
            if os.fstat(fd).st_size != self._cur_size[prefix]:  # never write over bytes another writer owns
                raise StoreError(f"{p} holds {os.fstat(fd).st_size} bytes, this writer expected "
                                 f"{self._cur_size[prefix]}; is another process writing the store?")
        start = self._cur_size[prefix]
        _pwrite_all(fd, start, _header(data.nbytes, checksum), data)
        os.fsync(fd)
        self._cur_size[prefix] = start + size
        return self._cur[prefix], start + HEADER_BYTES

    def _append_array(self, stream: Stream, array: np.ndarray) -> tuple[int, int, str]:
        """`_append` of an array's bytes: (shard, offset of the data, their checksum)."""
        data = _raw(array)
        checksum = digest(data)
        return (*self._append(stream, data, checksum), checksum)

    def _commit(self, entry: dict) -> None:
        """Mark the video's blocks COMMITTED (after its journal line is durable). No fsync of its
        own: the next block's fsync of the same shard, or compact/close, makes it durable; lost
        in a crash, the block reads as PENDING, which only matters to an index that lacks it."""
        for stream in self.streams:
            _set_state(self._fds[stream.prefix], int(entry[stream.offset_key]) - HEADER_BYTES, COMMITTED)

    def _sync_shards(self) -> None:
        for fd in self._fds.values():
            os.fsync(fd)

    def add(self, relpath: str, maps: VideoMaps) -> dict:
        """Append one video (its shard bytes fsynced, then its journal line). Returns its entry."""
        q = np.ascontiguousarray(maps.maps_u8)
        if q.dtype != np.uint8 or q.ndim != 3 or q.size == 0:
            raise ValueError(f"{relpath}: maps_u8 must be a non-empty (N, h, w) uint8 array, got {q.shape} {q.dtype}")
        if len(q) != int(maps.num_frames):
            raise ValueError(f"{relpath}: {len(q)} maps for {maps.num_frames} frames")
        if not (np.isfinite(maps.scale) and maps.scale > 0):
            raise ValueError(f"{relpath}: scale must be positive and finite, got {maps.scale}")
        if relpath in self.videos:
            raise StoreError(f"{relpath} is already in the store {self.path}")
        arrays = self.kind.check_maps(relpath, maps, self.settings, self.path)  # the kind's extra streams' data
        shard, offset, checksum = self._append_array(MAPS_STREAM, q)
        entry = {"num_frames": int(maps.num_frames), "fps": float(maps.fps), "height": int(maps.height),
                 "width": int(maps.width), "map_height": int(q.shape[1]), "map_width": int(q.shape[2]),
                 "shard": shard, "offset": offset, "scale": float(maps.scale), "checksum": checksum}
        if maps.fingerprint is not None:
            entry["fingerprint"] = str(maps.fingerprint)
        entry.update(self.kind.entry_fields(arrays, self._append_array))
        self._journal({"op": "video", "path": relpath, "entry": entry})
        self.videos[relpath] = entry  # recorded now: whatever happens next, compact keeps it
        self._commit(entry)
        self.errors.pop(relpath, None)
        return entry

    def add_entries(self, entries) -> int:
        """Record many videos whose blocks this store already holds, then write the index once
        (benchmarks and tests building large stores: `add` costs a journal line and two fsyncs per
        video). entries: (relpath, entry dict) pairs in the entry format of docs/store.md, e.g. many
        names sharing the entry `add` returned. Checked before anything is recorded (all or nothing:
        an error leaves the store as it was): each relpath new and given once; each distinct entry
        object has every field of the right type and range, its checksums, and blocks that lie in
        bytes the index already accounts for and match those checksums. Returns how many it added."""
        accounted = {s.prefix: {shard: end for shard, (end, _) in _column_ends(self.videos.merged(), s).items()}
                     for s in self.streams}
        checked: dict[int, dict] = {}  # id -> entry: each distinct entry object is checked once
        added: dict[str, dict] = {}
        for relpath, entry in entries:
            if not isinstance(relpath, str) or not relpath:
                raise ValueError(f"{self.path}: add_entries needs non-empty str relpaths, got {relpath!r}")
            if relpath in added or relpath in self.videos:
                raise StoreError(f"{relpath} is already in the store {self.path}" if relpath in self.videos else
                                 f"{relpath} is given twice to add_entries ({self.path})")
            if id(entry) not in checked:
                self._check_new_entry(relpath, entry, accounted)
                checked[id(entry)] = entry
            added[relpath] = entry
        self.videos.add_new(added)
        for relpath in set(self.errors).intersection(added):
            del self.errors[relpath]
        self._index_stale |= bool(added)
        self.compact()
        return len(added)

    def _check_new_entry(self, relpath: str, entry, accounted: dict) -> None:
        """StoreError (naming the video) unless `entry` could have come from `add` into this store."""
        where = f"{self.path}: add_entries: video {relpath!r}"
        _check_entry(self.path, relpath, entry, self.kind, where)
        for stream in self.streams:
            if stream.checksum_key not in entry:
                raise StoreError(f"{where}: the entry lacks {stream.checksum_key} (every added block has one)")
            try:
                checksum_value(entry[stream.checksum_key], where)
            except ColumnError as e:
                raise StoreError(str(e)) from None
            shard, offset, n = int(entry[stream.shard_key]), int(entry[stream.offset_key]), stream.nbytes(entry)
            end = accounted[stream.prefix].get(shard, 0)
            if offset < HEADER_BYTES or offset + n > end:
                raise StoreError(f"{where}: its {stream.what} (bytes {offset} to {offset + n} of "
                                 f"{shard_name(shard, stream.prefix)}) are not bytes the index accounts for (up to "
                                 f"{end}); add_entries records blocks already in the store (add the first copy "
                                 "with add)")
        self._check_bytes(relpath, entry)

    def add_error(self, relpath: str, reason: str) -> None:
        """Record that `relpath` was skipped and why."""
        self._journal({"op": "error", "path": relpath, "reason": str(reason)})
        self.errors[relpath] = str(reason)
        self.videos.pop(relpath, None)

    def drop(self, relpaths) -> None:
        """Take videos out of the store so that they are computed again (prepare --repair: damaged
        or stale maps). Their blocks are marked ORPHANED first (kept, skipped by later writers),
        then the index is rewritten without them (compact): a crash in between leaves them in the
        store as they were."""
        relpaths = [r for r in relpaths if r in self.videos]
        if not relpaths:
            return
        touched = set()
        for rel in relpaths:
            entry = self.videos[rel]
            for stream in self.streams:
                if stream.checksum_key not in entry:
                    continue  # a block written before headers: it has no state to set
                path = self.path / shard_name(int(entry[stream.shard_key]), stream.prefix)
                fd = os.open(path, os.O_RDWR)
                try:
                    _set_state(fd, int(entry[stream.offset_key]) - HEADER_BYTES, ORPHANED)
                finally:
                    os.close(fd)
                touched.add(path)
        for path in touched:
            fsync_path(path)
        for rel in relpaths:
            del self.videos[rel]
        self._index_stale = True
        self.compact()  # new blocks still go after the dropped ones, which stay where they are

    def compact(self) -> None:
        """Fold the journal into index.json and errors.json (each written atomically), then
        remove the journal."""
        self._sync_shards()  # the COMMITTED marks of the videos the index is about to hold
        if not self._behind():
            return  # a run with nothing to do writes nothing (a read-only or shared store stays untouched)
        atomic_write_json(self.path / ERRORS, [{"path": p, "reason": self.errors[p]} for p in sorted(self.errors)])
        self._write_index()
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        removed = False
        for journal in [self.path / JOURNAL, *_part_journals(self.path)]:
            if journal.exists():
                os.unlink(journal)
                removed = True
        if removed:
            fsync_path(self.path)
        self._journal_size = 0
        self._index_stale = False

    def _behind(self) -> bool:
        """Whether index.json or errors.json lag what this writer holds: journal lines (this run's or
        a killed run's), rank journals, entries dropped by repair, or no errors.json yet."""
        return (self._index_stale or self._journal_size > 0 or (self.path / JOURNAL).exists()
                or bool(_part_journals(self.path)) or not (self.path / ERRORS).exists())

    def close(self) -> None:
        fds = getattr(self, "_fds", {})
        while fds:
            fd = fds.popitem()[1]
            try:
                os.fsync(fd)  # the COMMITTED marks since the last fsync (best effort: they only guard restores)
            except OSError:
                pass
            os.close(fd)
        for name in ("_journal_fd", "_lock_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)  # closing the lock file releases the flock
                setattr(self, name, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class PartWriter(StoreWriter):
    """One torchrun rank's writer into a store that rank 0's StoreWriter holds open (and locked)
    for the job: journal-rankRRRRR.jsonl and shards numbered first_shard + rank + k * world
    (see `Many writers` in the module docstring). `add` and `add_error` work as StoreWriter's;
    `compact` only closes the journal: rank 0 folds it (StoreWriter.fold_parts).

    The store must exist (rank 0 created it) and have the given settings; the rank's journal must
    not hold anything (rank 0 folded every earlier one before handing out first_shard).
    """

    def __init__(self, path, *, rank: int, world: int, first_shard: int, known: tuple[dict, dict] | None = None,
                 **settings):
        """known: (videos, errors) as store_state read them after rank 0 opened the store with these
        settings (prepare passes them: the index is then read once per rank); None reads them."""
        if not (0 <= int(rank) < int(world)) or int(first_shard) < 0:
            raise ValueError(f"need 0 <= rank < world and first_shard >= 0, got rank {rank}, world {world}, "
                             f"first_shard {first_shard}")
        self.rank, self.world, self.first_shard = int(rank), int(world), int(first_shard)
        self._known = known
        super().__init__(path, **settings)

    def _lock(self) -> None:
        """Rank 0's StoreWriter holds the store's lock for the whole job; the ranks' files are disjoint."""

    def _open(self) -> None:
        if not (self.path / INDEX).exists():
            raise StoreError(f"{self.path} is not a motion store yet (rank 0 creates it before the ranks write)")
        if self._known is not None:
            self.videos, self.errors = self._known
        else:
            index, self.videos, self.errors, _, _, _ = _load_state(self.path)
            self._check_settings(index)
        self.journal_name = part_journal_name(self.rank)
        journal = self.path / self.journal_name
        if journal.exists() and journal.stat().st_size:
            raise StoreError(f"{journal} already holds lines: rank 0 folds every rank journal before a job starts; "
                             "is another job writing this store?")
        self._journal_size = 0
        self._shard_step = self.world
        for stream in self.streams:
            self._cur[stream.prefix], self._cur_size[stream.prefix] = self.first_shard + self.rank, 0

    def fold_parts(self) -> None:
        raise StoreError("only rank 0's StoreWriter folds the rank journals")

    def compact(self) -> None:
        self._sync_shards()
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None


# ----------------------------------------------------------------------------------- reader


def _mapped(cache: dict, key, path: Path, end: int) -> np.memmap:
    """The read-only uint8 memory map of the shard file `path`, from `cache` (mapped again when
    it is not there yet, or shorter than `end`: grown by a writer since)."""
    mm = cache.get(key)
    if mm is None or len(mm) < end:
        try:
            mm = np.memmap(path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise StoreError(f"{path}: cannot map the shard: {e}") from None
        if len(mm) < end:
            raise StoreError(f"{path} holds {len(mm)} bytes but the index needs {end}; the store is damaged")
        cache[key] = mm
    return mm


def _damaged(store: Path, shard: Path, video: str, stream: Stream, data, expected: str) -> DamagedVideo:
    return DamagedVideo(f"{shard}: the {stream.what} of video {video!r} are damaged (checksum {digest(data)}, the "
                        f"index recorded {expected}); recompute them with `{repair_command(store)}`",
                        video, shard, stream.what)


def _reopen(path: str, verify: bool, identity: tuple) -> "MotionStore":
    return MotionStore(path, verify=verify, _identity=identity)


class MotionStore(KindReaders):
    """A prepared motion store, read-only (see the module docstring for the layout). `maps` names
    its kind and `kind` describes it (store_kind.py); `settings` are the kind's header settings,
    and the kinds' own accessors (the release's flows and clip magnitudes) come with KindReaders.

    Opens index.json (a small header) and memory-maps its column files read-only (every process
    on a node shares the pages; no per-video Python objects), checking their checksums; then
    applies the complete lines of the journals, so a store that is being prepared, or whose
    `prepare` was killed, reads right (as of opening). Old stores with one JSON entry per video
    open as before (parsed; a one-time notice says how to convert them). Shards are
    memory-mapped on first use and cached: reading one video touches only its bytes.

    Videos are addressed by name (relative path) or by row (int, the position in `names`).
    Pickling carries the path and the index's identity, not the index: unpickling opens the
    store again and raises StoreError if its index changed in between.

    verify (default True): the first read of each video's bytes (in every stream of the kind) in
    this object checks them against the checksum the index records and
    raises StoreError naming the video and the shard file on a mismatch; entries written before
    checksums are read unchecked. Opening checks that every shard file holds the bytes the index
    places in it (StoreError naming the video and the field).
    """

    def __init__(self, path, *, verify: bool = True, _identity: tuple | None = None):
        self.path = Path(path)
        self.verify = bool(verify)
        index, header_sum = _read_header(self.path)
        if _identity is not None and _identity[0] != header_sum:
            raise StoreError(f"{self.path / INDEX} changed since this store was opened in the parent process (a "
                             "prepare compacted it?); open the store again and plan with the new index")
        self.version = int(index["version"])
        self.root = str(index["root"])
        self.flow = str(index["flow"])
        self.size = int(index["size"])
        self.maps = maps_kind(index)  # the kind's name (store_kinds.KINDS)
        self.kind = kind_named(self.maps)
        self.map_downsample = int(index["map_downsample"]) if self.kind.uses_map_downsample else None
        self.settings = {k: int(index[k]) for k in self.kind.settings}  # the kind's own header settings
        self._streams = self.kind.streams
        errors = _load_errors(self.path)
        overlay, self._journal_sizes = self._read_journals(errors, None if _identity is None else _identity[1])
        for video, entry in overlay.items():
            if entry is not None:
                _check_entry(self.path, video, entry, self.kind)
        if is_legacy(index):
            _notify_legacy(self.path)
            videos = index["videos"]
            if not isinstance(videos, dict):
                raise StoreError(f"{self.path / INDEX}: 'videos' must be an object of entries, "
                                 f"got {type(videos).__name__}")
            for video, entry in videos.items():
                _check_entry(self.path, video, entry, self.kind)
            videos = {**videos, **overlay}
            self._index = ColumnIndex.from_entries({k: v for k, v in videos.items() if v is not None}, self.maps,
                                                   self.path)
        else:
            # the header's checksums verify the columns when they are first opened; a pickled copy
            # re-opened by a worker has the same header checksum, which covers them
            self._index = _open_columns(self.path, index, verify=_identity is None).with_journal(overlay)
        self._header_sum = header_sum
        if is_legacy(index) or overlay:
            for stream in self._streams:
                ends = _column_ends(self._index, stream)
                _check_shard_ends(self.path, stream, {k: (e, self._index.names[r]) for k, (e, r) in ends.items()})
        else:  # recorded by the writer: one stat per shard file
            for stream in self._streams:
                _check_shard_ends(self.path, stream, {int(k): (int(e), str(v))
                                                      for k, e, v in index["extents"].get(stream.prefix, [])})
        self._errors = [{"path": p, "reason": errors[p]} for p in sorted(errors)]
        self._mapped: dict[tuple[str, int], np.memmap] = {}  # (stream prefix, shard) -> its memory map
        self._checked: set[tuple[int, str]] = set()  # (row, stream prefix) whose bytes matched their checksum

    def _read_journals(self, errors: dict, sizes: dict | None) -> tuple[dict, dict]:
        """(overlay {name: entry or None}, {journal name: bytes applied}) of the main journal, then
        every rank's; `sizes` (a pickled store's) limits each journal to what its parent applied."""
        keys = _entry_keys(self.kind)
        overlay: dict = {}
        applied = {}
        journals = [self.path / JOURNAL, *_part_journals(self.path)]
        if sizes is not None:
            journals = [self.path / name for name in sizes]
        for journal in journals:
            limit = None if sizes is None else sizes[journal.name]
            ops, good, size = _read_journal(journal, keys, limit)
            if limit is not None and good != limit:
                raise StoreError(f"{journal} changed since this store was opened in the parent process; open the "
                                 "store again and plan with the new index")
            for op in ops:
                _apply(overlay, errors, op, tombstones=True)
            if good:
                applied[journal.name] = good
        return overlay, applied

    # -- listing
    @property
    def names(self) -> Names:
        """The video paths (relative to `root`), sorted, read-only: len, [row] -> str, iteration,
        `in`, index(name) -> row (KeyError naming the store). Backed by the memory-mapped index."""
        return self._index.names

    @property
    def videos(self) -> list[str]:
        """The video paths (relative to `root`), sorted, as a new list: O(N) memory (a Python
        string per video) on every call; prefer `names`."""
        return list(self._index.names)

    @property
    def errors(self) -> list[dict]:
        """[{"path", "reason"}] of the inputs `prepare` skipped."""
        return [dict(e) for e in self._errors]

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, video) -> bool:
        return video in self._index.names

    def __iter__(self):
        return iter(self._index.names)

    def __repr__(self) -> str:
        return (f"MotionStore({str(self.path)!r}: {len(self)} videos, flow={self.flow}, size={self.size}"
                f"{self.kind.describe(self.settings)})")

    def row(self, video) -> int:
        """The row of `video` (a name, or a row int checked against the store's size); KeyError
        naming the store when it is not there."""
        if isinstance(video, (int, np.integer)) and not isinstance(video, bool):
            if not 0 <= int(video) < len(self._index):
                raise KeyError(f"row {int(video)} is not in the motion store {self.path} ({len(self._index)} videos)")
            return int(video)
        return self._index.names.index(video)

    def rows(self, videos, *, missing: int | None = None) -> np.ndarray:
        """(M,) int64 rows of `videos` (M names), in order, looked up in bulk (no Python step per
        name but one encode and one hash: 250k names of a 1M store in 0.32 s, a loop over `row`
        0.63 s, on a loaded 2-core VM): KeyError naming the store and the first missing names, or
        `missing` (e.g. -1) in their place when given."""
        return self._index.names.rows(videos, missing)

    def index_columns(self) -> ColumnIndex:
        """The index as columns (journals applied), read-only."""
        return self._index

    def column(self, field: str) -> np.ndarray:
        """(N,) read-only array of one per-video field by row: num_frames, fps, height, width,
        map_height, map_width, shard, offset, scale, and the kind's own (MapsKind.int_fields)."""
        entries = self._index.entries
        if field not in entries.dtype.names or field == "flags" or field.endswith("checksum"):
            raise KeyError(f"{field!r} is not a column of the motion store {self.path}")
        column = entries[field]
        if column.flags.writeable:  # the in-memory index of an old store or a journal: no writes through it
            column = column.view()
            column.flags.writeable = False
        return column

    def _entry(self, video) -> dict:
        return self._index.entry(self.row(video))

    def info(self, video) -> dict:
        """The index entry: num_frames, fps, height, width (source frames), map_height,
        map_width, shard, offset, scale, checksum(s), and fingerprint when the store recorded it."""
        return self._entry(video)

    def fingerprint(self, video) -> str | None:
        """The content fingerprint of the file the maps were made from (None in older stores)."""
        row = self.row(video)
        return self._index.fingerprints[row] if self._index.has(row, "fingerprint") else None

    def video_path(self, video) -> str:
        """Absolute path of the video file."""
        return os.path.join(self.root, self._index.names[self.row(video)])

    def scale(self, video) -> float:
        return float(self._index.entries["scale"][self.row(video)])

    def max_abs_error(self, video) -> float:
        """The most `read` can differ from the maps `prepare` computed: scale / 510 (a kind may
        differ: MapsKind.max_abs_error)."""
        return self.kind.max_abs_error(self.scale(video))

    def cells_per_pixel(self, video) -> tuple[float, float]:
        """(sy, sx): map cells per source-frame pixel along y and x.

        Map cell i covers flow rows [i*f, (i+1)*f), and the flow frame is the source resized to
        short side `size`; the rows/columns the block mean drops at the far edge are not covered,
        so this is not map_height / height.
        """
        e = self._index.entries[self.row(video)]
        height, width = int(e["height"]), int(e["width"])
        whole_frame = self.kind.cells_per_pixel(height, width, self.settings)
        if whole_frame is not None:  # maps of the whole frame, not block means of the flow
            return whole_frame
        th, tw = target_size(height, width, self.size)
        f = self.map_downsample
        return th / (f * height), tw / (f * width)

    # -- reading
    def _bytes(self, row: int, stream: Stream) -> np.ndarray:
        """Row `row`'s block of one stream: a read-only uint8 view of the shard's memory map,
        checked against its checksum on the first read when `verify`."""
        e = self._index.entries[row]
        shard, off, n = int(e[stream.shard_key]), int(e[stream.offset_key]), stream.nbytes(e)
        if n == 0:  # a one-frame video has no flows
            return np.empty(0, np.uint8)
        mm = _mapped(self._mapped, (stream.prefix, shard), self.path / shard_name(shard, stream.prefix), off + n)
        data = mm[off:off + n]
        if self.verify and (row, stream.prefix) not in self._checked:
            self._check_block(row, stream, data)
        return data

    def _check_block(self, row: int, stream: Stream, data: np.ndarray) -> None:
        if self._index.has(row, stream.checksum_key):
            expected = f"xxh3_64:{int(self._index.entries[stream.checksum_key][row]):016x}"
            if not matches(data, expected):
                path = self.path / shard_name(int(self._index.entries[stream.shard_key][row]), stream.prefix)
                raise _damaged(self.path, path, self._index.names[row], stream, data, expected)
        self._checked.add((row, stream.prefix))

    def check(self, video) -> None:
        """Check every stored byte of `video` against its checksums now (whatever `verify` says);
        StoreError naming the video and the shard file on a mismatch or a short/missing shard."""
        row = self.row(video)
        e = self._index.entries[row]
        for stream in self._streams:
            self._checked.discard((row, stream.prefix))
            shard, off, n = int(e[stream.shard_key]), int(e[stream.offset_key]), stream.nbytes(e)
            if n:
                mm = _mapped(self._mapped, (stream.prefix, shard), self.path / shard_name(shard, stream.prefix),
                             off + n)
                self._check_block(row, stream, mm[off:off + n])

    def has_checksums(self, video) -> bool:
        """False for a video written before checksums (its bytes cannot be checked)."""
        row = self.row(video)
        return all(self._index.has(row, s.checksum_key) for s in self._streams)

    def read_quantized(self, video) -> np.ndarray:
        """(N, h, w) uint8, a read-only view of the shard's memory map."""
        row = self.row(video)
        e = self._index.entries[row]
        return self._bytes(row, MAPS_STREAM).reshape(int(e["num_frames"]), int(e["map_height"]),
                                                     int(e["map_width"]))

    def read(self, video) -> np.ndarray:
        """(N, h, w) float32 dequantised motion maps, one per frame (within scale / 510)."""
        row = self.row(video)
        return dequantize(self.read_quantized(row), self.scale(row))

    def motion_t(self, video) -> np.ndarray:
        """(N,) float32: the T-motion of each frame, the spatial mean of its map (eq. 2)."""
        row = self.row(video)
        q = self.read_quantized(row)
        return (q.mean(axis=(1, 2), dtype=np.float64) * (self.scale(row) / 255.0)).astype(np.float32)

    def motion_s(self, video) -> np.ndarray:
        """(h, w) float32: the S-motion, the mean map over time (eq. 2)."""
        row = self.row(video)
        q = self.read_quantized(row)
        return (q.mean(axis=0, dtype=np.float64) * (self.scale(row) / 255.0)).astype(np.float32)

    def identity(self) -> tuple:
        """What a pickled copy checks on re-opening: the header's checksum and the journal bytes applied."""
        return self._header_sum, dict(self._journal_sizes)

    # a worker re-opens the store by path (a few hundred bytes), never receives the index
    def __reduce__(self):
        return _reopen, (str(self.path), self.verify, self.identity())


# ------------------------------------------------------------------------------ verification


@dataclass(frozen=True)
class Damage:
    """One problem `check_store` found: the video (None for the store as a whole), the file, why."""

    video: str | None
    file: str
    reason: str


@dataclass
class StoreCheck:
    """What check_store found: videos checked, damage, and notes (not damage: bytes a killed
    prepare left, which the next prepare cuts; videos written before checksums)."""

    path: str
    checked: int = 0
    damage: list[Damage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_store(path, progress: bool = False) -> StoreCheck:
    """Check a whole store: it opens (index and entries sound, every shard long enough), every
    video's bytes match their checksums, and no shard holds complete blocks past what the index
    accounts for (videos an older index does not know). Reads every stored byte once."""
    folder = Path(path)
    report = StoreCheck(str(folder))
    try:
        store = MotionStore(folder)
    except StoreError as e:
        report.damage.append(Damage(None, str(folder / INDEX), str(e)))
        return report
    names = store.names
    bar = None
    if progress and names:
        from tqdm import tqdm

        bar = tqdm(total=len(names), unit="video", desc=f"verify {folder.name}", dynamic_ncols=True)
    unchecked = 0
    for row, video in enumerate(names):  # by row: no name lookups
        try:
            store.check(row)
        except StoreError as e:  # a checksum mismatch (DamagedVideo), or its shard cannot be mapped
            report.damage.append(Damage(video, getattr(e, "file", str(folder)), str(e)))
        unchecked += not store.has_checksums(row)
        report.checked += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if unchecked:
        report.notes.append(f"{unchecked} of {len(names)} videos were written before checksums: only their "
                            "index fields and extents were checked")
    _check_tails(folder, store, report)
    return report


def _check_tails(folder: Path, store: MotionStore, report: StoreCheck) -> None:
    for stream in store._streams:
        ends = {shard: end for shard, (end, _) in _column_ends(store._index, stream).items()}
        for p in sorted(folder.iterdir()):
            m = stream.pattern.match(p.name)
            if not m:
                continue
            tail = _shard_tail(p, ends.get(int(m.group(1)), 0))
            if tail.unknown:
                report.damage.append(Damage(None, str(p), tail.describe() + "; `mcl-fast prepare` refuses to "
                                            "write this store until the matching index.json is restored or "
                                            "`--repair` keeps them aside"))
            elif tail.leftover:
                report.notes.append(f"{p.name}: {tail.leftover} bytes a killed prepare left (cut by the next prepare)")
