"""The loader's video list as store rows: 4 bytes per video instead of a Python string.

A loader holds its videos for the whole dataset in every process, and a DataLoader worker gets
them pickled: as (N,) int32 row numbers into the store's sorted names the list costs 4 bytes a
video in memory and in the pickle (a list of names: ~70 bytes a video and a pickle that grows
with N). Names are looked up in the store when a video is planned.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def store_names(store) -> Sequence[str]:
    """The store's sorted names as a sequence indexed by row: store.names (MotionStore), else
    store.videos (a duck-typed store, e.g. a test's; read once per call)."""
    names = getattr(store, "names", None)
    return names if names is not None else list(store.videos)


def store_rows(store, videos: Sequence[str]) -> np.ndarray:
    """(N,) int32 rows of `videos` in the store, -1 for a video the store does not hold: all at
    once (MotionStore.rows), else through a table of a duck-typed store's videos built once."""
    bulk = getattr(store, "rows", None)
    if bulk is not None:
        return bulk(list(videos), missing=-1).astype(np.int32)
    at = {name: i for i, name in enumerate(store_names(store))}
    return np.fromiter((at.get(v, -1) for v in videos), np.int32, len(videos))


class StoreVideos(Sequence):
    """A read-only list of store keys held as store rows (module docstring). Compares equal to a
    list of the same names; pickles as the store (by path, MotionStore.__reduce__) and the rows."""

    def __init__(self, store, rows: np.ndarray):
        self.store, self.rows = store, np.ascontiguousarray(rows, np.int32)
        self.rows.flags.writeable = False
        self._names = None  # store_names(store), fetched on first use in each process

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if self._names is None:
            self._names = store_names(self.store)
        return self._names[int(self.rows[i])]

    def __eq__(self, other) -> bool:
        if isinstance(other, StoreVideos):
            return np.array_equal(self.rows, other.rows) and list(self) == list(other)
        return isinstance(other, Sequence) and not isinstance(other, str) and list(self) == list(other)

    __hash__ = None  # mutable-looking like a list: not hashable

    def __repr__(self) -> str:
        shown = ", ".join(repr(self[i]) for i in range(min(3, len(self))))
        return f"StoreVideos([{shown}{', ...' if len(self) > 3 else ''}], {len(self)} videos)"

    def __getstate__(self) -> dict:
        return {"store": self.store, "rows": self.rows}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["store"], state["rows"])
