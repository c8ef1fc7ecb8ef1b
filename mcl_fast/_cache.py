"""A bounded mapping for per-process caches (the loaders' and the video readers'): a long run sees
every video of a dataset, so nothing it keeps per video may grow without bound."""
from __future__ import annotations

from collections import OrderedDict


class LRU:
    """A mapping that keeps the `cap` most recently used keys (get/put/in/len/discard)."""

    def __init__(self, cap: int):
        if cap < 1:
            raise ValueError(f"an LRU cache needs cap >= 1, got {cap}")
        self.cap, self._items = int(cap), OrderedDict()

    def get(self, key, default=None):
        try:
            value = self._items[key]
        except KeyError:
            return default
        self._items.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.cap:
            self._items.popitem(last=False)

    def discard(self, key) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    def __contains__(self, key) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
