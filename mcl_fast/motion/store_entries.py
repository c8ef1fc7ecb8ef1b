"""A store writer's entries: the index's columns (memory-mapped) plus the writer's edits.

A writer used to hold every entry as a Python dict (~3 KB per video: 2.9 GiB for a 1M-video
fold). `WriterEntries` keeps the last written generation as its ColumnIndex (shared pages, no
per-video objects) and only the videos added, replaced or removed since as dicts; the next
generation is the columns with the edits merged in (ColumnIndex.with_journal: array copies).
"""
from __future__ import annotations

from collections.abc import MutableMapping

from .store_index import ColumnIndex


class WriterEntries(MutableMapping):
    """{relpath: entry dict} of a store as a writer sees it (docs/store.md's entry format).

    Lookups hash the name (store_index.Names); iteration is in name order and builds the merged
    index (O(N) arrays once per change): writers look names up, they do not iterate."""

    def __init__(self, base: ColumnIndex):
        self.base = base
        self._edits: dict[str, dict | None] = {}  # name -> entry (added or replaced), None (removed)
        self._len = len(base)
        self._merged: ColumnIndex | None = base

    @classmethod
    def empty(cls, kind: str, where) -> "WriterEntries":
        return cls(ColumnIndex.from_entries({}, kind, where))

    def copy(self) -> "WriterEntries":
        """Another view of the same columns with a copy of the edits (a rank's writer)."""
        out = WriterEntries(self.base)
        out._edits, out._len, out._merged = dict(self._edits), self._len, self._merged
        return out

    @property
    def edits(self) -> int:
        """How many names differ from the base columns (0: the columns are current)."""
        return len(self._edits)

    def __contains__(self, name) -> bool:
        if name in self._edits:
            return self._edits[name] is not None
        return self.base.names.find(name) >= 0

    def __getitem__(self, name) -> dict:
        if name in self._edits:
            entry = self._edits[name]
        else:
            row = self.base.names.find(name)
            entry = self.base.entry(row) if row >= 0 else None
        if entry is None:
            raise KeyError(name)
        return entry

    def __setitem__(self, name, entry: dict) -> None:
        self._len += name not in self
        self._edits[name] = entry
        self._merged = None

    def add_new(self, entries: dict) -> None:
        """Record {name: entry} of names known not to be here (a caller that checked them): no
        lookup per name."""
        self._edits.update(entries)
        self._len += len(entries)
        self._merged = None

    def __delitem__(self, name) -> None:
        if name not in self:
            raise KeyError(name)
        self._len -= 1
        self._edits[name] = None
        self._merged = None

    def __len__(self) -> int:
        return self._len

    def __iter__(self):
        return iter(self.merged().names)

    def merged(self) -> ColumnIndex:
        """The columns with the edits applied (sorted by name), built once per change."""
        if self._merged is None:
            self._merged = self.base.with_journal(self._edits)
        return self._merged
