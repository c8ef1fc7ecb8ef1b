"""The store's switch: every kind of motion store by the name its index.json records ("maps"),
and the reader accessors each kind adds to MotionStore. The paper's kind is the base
(store_kind.py); the release's lives in its own module."""
from __future__ import annotations

from .store_kind import PAPER, MapsKind, StoreError
from .store_official import KIND as RELEASE, OfficialReading

KINDS: dict[str, MapsKind] = {kind.name: kind for kind in (PAPER, RELEASE)}
MAPS_KINDS = tuple(KINDS)


def kind_named(name: str) -> MapsKind:
    """The kind called `name`; StoreError listing the kinds this mcl_fast knows."""
    try:
        return KINDS[name]
    except KeyError:
        raise StoreError(f"unknown maps {name!r} (this mcl_fast reads {', '.join(KINDS)})") from None


class KindReaders(OfficialReading):
    """Every kind's reader accessors: MotionStore's base. Each answers for stores of any kind."""
