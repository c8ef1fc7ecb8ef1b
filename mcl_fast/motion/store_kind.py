"""What a kind of motion store is: its header settings, extra entry fields, shard streams and the
checks of its entries and maps. The store modules read a kind's description and name none.

MapsKind is the paper's kind (eq. 1 maps, block-averaged by map_downsample, one stream of uint8
map shards) and the base of every other: the release's kind, in its own module, adds settings,
fields and two streams. store_kinds.py lists them by the name index.json records.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


class StoreError(ValueError):
    """A store that cannot be opened as asked: not a store, a newer format, other settings, damaged."""


def a_store(kind: str) -> str:
    """'a paper store': a kind's store in a message (with "an" before a vowel)."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind} store"


@dataclass(frozen=True)
class Stream:
    """One kind of shard file: its name prefix, the entry keys of a video's shard, offset and
    checksum, and how many bytes a video takes in it (item_bytes times its size_keys' values)."""

    prefix: str
    shard_key: str
    offset_key: str
    checksum_key: str
    what: str  # what a damaged block holds, for messages
    size_keys: tuple[str, ...]
    item_bytes: int

    def nbytes(self, entry) -> int:
        """A video's bytes in this stream, from its entry (a dict or an index row)."""
        n = self.item_bytes
        for key in self.size_keys:
            n *= int(entry[key])
        return n

    def column_nbytes(self, entries: np.ndarray) -> np.ndarray:
        """(N,) int64: `nbytes` of every row of the index's entries."""
        n = np.full(len(entries), self.item_bytes, np.int64)
        for key in self.size_keys:
            n = n * entries[key]
        return n

    @property
    def pattern(self) -> re.Pattern:
        return re.compile(rf"^{self.prefix}-(\d{{5,}})\.bin$")


MAPS_STREAM = Stream("shard", "shard", "offset", "checksum", "motion maps", ("num_frames", "map_height", "map_width"),
                     1)


class MapsKind:
    """The paper's kind of store; other kinds subclass it and override what differs."""

    name = "paper"  # index.json's "maps" (a paper index may lack the key: stores before other kinds)
    version = 3  # the newest version of its index.json: the columnar index (store_index)
    legacy_version = 1  # its index.json with one JSON entry per video: read, converted by writers
    settings: tuple[str, ...] = ()  # header settings beyond flow, size and map_downsample
    ranges: dict[str, tuple] = {}  # entry int fields beyond the paper's -> (lowest value, integer only)
    streams: tuple[Stream, ...] = (MAPS_STREAM,)
    uses_map_downsample = True  # False: map_downsample is recorded as null
    option_choices: dict[str, tuple] = {}  # prepare option -> its choices, for the settings prepare sets
    summary = "eq. (1) maps"  # for `prepare --maps`'s help
    compute = None  # prepare(path, *, flow, size, window) -> VideoMaps; None: prepare's compute_video_maps

    @property
    def int_fields(self) -> tuple[str, ...]:
        """The extra int columns of the index, in column order."""
        return tuple(self.ranges)

    def header(self, settings: dict) -> dict:
        """index.json's fields beyond the common ones (the paper's: none, not even "maps")."""
        return {}

    def writer_settings(self, map_downsample, settings: dict) -> tuple[int | None, dict]:
        """(map_downsample, the kind's settings) a writer records; ValueError for a setting of
        another kind (given as anything but None)."""
        given = sorted(k for k, v in settings.items() if v is not None)
        if given:
            raise ValueError(f"{', '.join(given)} {'is not a setting' if len(given) == 1 else 'are not settings'} "
                             f"of {a_store(self.name)}")
        return int(map_downsample), {}

    def prepare_settings(self, settings: dict, device: str) -> dict:
        """prepare's options for this kind's settings, checked, with their defaults (ValueError
        naming the option); `settings` holds only names this kind has."""
        return settings

    def check_entry(self, entry: dict, where: str) -> None:
        """StoreError starting with `where` when the fields relate wrongly (each is checked alone elsewhere)."""

    def check_maps(self, relpath: str, maps, settings: dict, where) -> tuple:
        """ValueError unless `maps` (a VideoMaps) go into this kind of store with `settings`;
        the arrays of its extra streams, in `streams` order after the maps."""
        if maps.kind != self.name:
            raise ValueError(f"{relpath}: {maps.kind} maps go into {a_store(maps.kind)} (prepare --maps "
                             f"{maps.kind}), not the {self.name} store {where}")
        return ()

    def entry_fields(self, arrays: tuple, append) -> dict:
        """The entry fields of the extra streams' blocks: `append(stream, array)` writes one and
        returns (shard, offset, checksum)."""
        return {}

    def max_abs_error(self, scale: float) -> float:
        """The most `read` differs from the maps prepare computed: half a quantisation step."""
        return scale / 510.0

    def cells_per_pixel(self, height: int, width: int, settings: dict) -> tuple[float, float] | None:
        """(sy, sx) when the maps cover the whole frame; None: the block means of the flow (MotionStore)."""
        return None

    def describe(self, settings: dict) -> str:
        """What a store's repr adds for this kind."""
        return ""


PAPER = MapsKind()
