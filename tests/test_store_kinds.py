"""The store modules know a kind of store only by its description (store_kind.MapsKind, listed
in store_kinds.KINDS): a toy kind with a setting, extra entry fields and an extra shard stream is
written, reopened, checked and refused like the built-in kinds, with no store code naming it."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from mcl_fast.motion import store_kinds
from mcl_fast.motion.store import INDEX, DamagedVideo, MotionStore, StoreError, StoreWriter, check_store, shard_name
from mcl_fast.motion.store_kind import MAPS_STREAM, MapsKind, Stream
from mcl_fast.motion.video_maps import VideoMaps

EXTRA = Stream("extra", "extra_shard", "extra_offset", "extra_checksum", "extra values", ("num_extra",), 4)


@dataclass
class ToyMaps(VideoMaps):
    extra: np.ndarray | None = None  # (E,) int32

    @property
    def kind(self) -> str:
        return "toy" if self.extra is not None else super().kind


class ToyKind(MapsKind):
    name, version, legacy_version = "toy", 7, 6
    settings = ("depth",)
    ranges = {"num_extra": (1, True), "extra_shard": (0, True), "extra_offset": (0, True)}
    streams = (MAPS_STREAM, EXTRA)

    def header(self, settings):
        return {"maps": self.name, "depth": settings["depth"]}

    def writer_settings(self, map_downsample, settings):
        return int(map_downsample), {"depth": int(settings["depth"])}

    def check_maps(self, relpath, maps, settings, where):
        if getattr(maps, "extra", None) is None:
            raise ValueError(f"{relpath}: toy maps need their extra values")
        return (np.ascontiguousarray(maps.extra, "<i4"),)

    def entry_fields(self, arrays, append):
        (extra,) = arrays
        shard, offset, checksum = append(EXTRA, extra)
        return {"num_extra": len(extra), "extra_shard": shard, "extra_offset": offset, "extra_checksum": checksum}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(store_kinds.KINDS, "toy", ToyKind())


def toy_maps(n: int, extra: int) -> ToyMaps:
    maps = ToyMaps.from_maps(np.full((n, 2, 3), 0.5, np.float32), fps=25, height=8, width=12)
    maps.extra = np.arange(extra, dtype=np.int32) * 7
    return maps


def test_a_kind_is_written_read_and_checked_from_its_description(tmp_path, toy):
    folder = tmp_path / "s"
    with StoreWriter(folder, root=tmp_path, flow="farneback", size=32, maps="toy", depth=2) as w:
        w.add("a.mp4", toy_maps(3, 5))
        w.add("b.mp4", toy_maps(2, 1))
        with pytest.raises(ValueError, match="toy maps need their extra values"):
            w.add("c.mp4", VideoMaps.from_maps(np.ones((2, 2, 3), np.float32), fps=25, height=8, width=12))
        w.compact()
    index = json.loads((folder / INDEX).read_text())
    assert (index["version"], index["maps"], index["depth"]) == (7, "toy", 2)
    store = MotionStore(folder)
    assert store.maps == "toy" and store.settings == {"depth": 2} and store.videos == ["a.mp4", "b.mp4"]
    info = store.info("a.mp4")
    assert info["num_extra"] == 5 and info["extra_checksum"].startswith("xxh3_64:")
    np.testing.assert_array_equal(store.column("num_extra"), [5, 1])
    extra = folder / shard_name(0, "extra")
    assert extra.stat().st_size == 2 * 32 + 6 * 4  # two blocks: 32-byte headers, 4 bytes a value
    assert not check_store(folder).damage
    data = bytearray(extra.read_bytes())
    data[info["extra_offset"]] ^= 1
    extra.write_bytes(bytes(data))
    with pytest.raises(DamagedVideo, match=r"extra-00000\.bin: the extra values of video 'a\.mp4' are damaged"):
        MotionStore(folder).check("a.mp4")
    with pytest.raises(StoreError, match=r"maps 'toy' \(asked for 'paper'\)"):
        StoreWriter(folder, root=tmp_path, flow="farneback", size=32)


def test_a_paper_store_refuses_another_kinds_maps_by_its_name(tmp_path, toy):
    with StoreWriter(tmp_path / "s", root=tmp_path) as w:
        with pytest.raises(ValueError, match="toy maps go into a toy store"):
            w.add("a.mp4", toy_maps(2, 3))
