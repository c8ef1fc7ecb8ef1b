"""The store at scale without per-video Python objects: the writer's bulk path (add_entries), its
entries backed by the mapped columns (WriterEntries), and name lookups in bulk (rows)."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from mcl_fast.motion.store import INDEX, JOURNAL, MotionStore, PartWriter, StoreError, StoreWriter, VideoMaps
from mcl_fast.motion.store_entries import WriterEntries
from mcl_fast.motion.store_index import Names, StringTable, name_hash


def writer(folder, root, **kw) -> StoreWriter:
    return StoreWriter(folder, root=root, flow="farneback", size=32, **kw)


def maps(i: int) -> VideoMaps:
    return VideoMaps.from_maps(np.full((2 + i % 3, 3, 4), 1.0 + i, np.float32), fps=25, height=48, width=64,
                               fingerprint=f"s3b64k:{i}:{i:032x}")


def copies(folder, root, n: int) -> list[str]:
    """A store of n names sharing one block (add, then add_entries); its names."""
    names = [f"c/v{i:05d}.mp4" for i in range(n)]
    with writer(folder, root) as w:
        entry = w.add(names[0], maps(1))
        assert w.add_entries((name, entry) for name in names[1:]) == n - 1
    return names


def test_add_entries_records_many_names_in_one_index_write(tmp_path):
    names = copies(tmp_path / "s", tmp_path, 50)
    assert not (tmp_path / "s" / JOURNAL).exists()  # folded: the index holds them, no journal line each
    store = MotionStore(tmp_path / "s")
    assert list(store.names) == names
    first = store.read_quantized(names[0])
    for name in names:
        np.testing.assert_array_equal(store.read_quantized(name), first)
        store.check(name)
    with writer(tmp_path / "s", tmp_path) as w:  # a later writer sees them and adds after them
        assert len(w.videos) == 50 and names[7] in w.videos
        w.add("z.mp4", maps(2))
    assert len(MotionStore(tmp_path / "s")) == 51


@pytest.mark.parametrize("problem, match", [
    ("twice", "given twice"),
    ("present", "already in the store"),
    ("field", "the field num_frames is -3"),
    ("checksum_text", "not an xxh3_64 digest"),
    ("no_checksum", "lacks checksum"),
    ("past_end", "not bytes the index accounts for"),
    ("other_bytes", "damaged"),
])
def test_add_entries_checks_everything_before_recording_anything(tmp_path, problem, match):
    folder = tmp_path / "s"
    with writer(folder, tmp_path) as w:
        entry = w.add("a.mp4", maps(1))
        w.add("b.mp4", maps(2))
        w.compact()
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
    bad = dict(entry)
    pairs = [("new1.mp4", entry)]
    if problem == "twice":
        pairs += [("new2.mp4", entry), ("new1.mp4", entry)]
    elif problem == "present":
        pairs += [("b.mp4", entry)]
    else:
        if problem == "field":
            bad["num_frames"] = -3
        elif problem == "checksum_text":
            bad["checksum"] = "md5:1234"
        elif problem == "no_checksum":
            del bad["checksum"]
        elif problem == "past_end":
            bad["offset"] = entry["offset"] + 10 ** 6
        elif problem == "other_bytes":
            bad["num_frames"] -= 1  # a shorter block at the same place: its bytes fail the checksum
        pairs += [("new2.mp4", bad)]
    with writer(folder, tmp_path) as w:
        with pytest.raises(StoreError, match=match):
            w.add_entries(pairs)
        assert "new1.mp4" not in w.videos and len(w.videos) == 2
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name in before} == before
    assert list(MotionStore(folder).names) == ["a.mp4", "b.mp4"]


def test_a_writer_holds_the_mapped_columns_and_only_its_edits(tmp_path):
    folder = tmp_path / "s"
    copies(folder, tmp_path, 30)
    with writer(folder, tmp_path) as w:
        assert isinstance(w.videos, WriterEntries) and w.videos.edits == 0
        assert isinstance(w.videos.base.entries, np.memmap)  # the index's pages, not a copy
        entry = w.add("new.mp4", maps(3))
        w.add_error("c/v00003.mp4", "gone")
        assert w.videos.edits == 2 and len(w.videos) == 30 and w.videos["new.mp4"] == entry
        assert "c/v00003.mp4" not in w.videos and list(w.videos) == sorted(w.videos)
        w.compact()
        assert w.videos.edits == 0 and isinstance(w.videos.base.entries, np.memmap)
    index = json.loads((folder / INDEX).read_text())
    assert index["count"] == 30


def _writer_peak(folder, root) -> int:
    tracemalloc.start()
    try:
        w = writer(folder, root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    w.close()
    return peak


def test_opening_a_writer_and_folding_cost_no_memory_per_video(tmp_path):
    """A writer used to parse every entry into a dict (~3 KB a video); now it maps the columns:
    what opening allocates does not grow with the store, nor does a fold's."""
    small, big = tmp_path / "small", tmp_path / "big"
    copies(small, tmp_path, 200)
    copies(big, tmp_path, 4000)
    grew = _writer_peak(big, tmp_path) - _writer_peak(small, tmp_path)
    assert grew < 300 * 3800, f"opening a writer allocated {grew / 3800:.0f} B more per video"

    with writer(big, tmp_path) as main:
        first = main.next_free_shard()
        with PartWriter(big, rank=1, world=2, first_shard=first, root=tmp_path, flow="farneback", size=32) as part:
            part.add("fold/x.mp4", maps(4))
            part.compact()
        tracemalloc.start()
        try:
            main.fold_parts()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # the next generation is array copies of the columns (~200 B a video), never a dict per video
    assert peak < 1000 * 4000, f"the fold allocated {peak / 4000:.0f} B per video"
    assert "fold/x.mp4" in MotionStore(big)


def test_rows_looks_names_up_in_bulk(tmp_path):
    names = ["b.mp4", "a/x.mp4", "ü.mp4", "a.mp4", "é/ß.mp4"]
    with writer(tmp_path / "s", tmp_path) as w:
        for i, name in enumerate(names):
            w.add(name, maps(i))
    store = MotionStore(tmp_path / "s")
    asked = ["ü.mp4", "a.mp4", "ü.mp4", "é/ß.mp4", "b.mp4"]
    rows = store.rows(asked)
    assert rows.dtype == np.int64 and rows.tolist() == [store.row(n) for n in asked]
    assert store.rows([]).tolist() == []
    with pytest.raises(KeyError, match=r"2 of the 4 videos are not in the motion store .*'nope.mp4', 'a.mp"):
        store.rows(["a.mp4", "nope.mp4", "a.mp", "b.mp4"])
    assert store.rows(["a.mp4", "nope.mp4", 3], missing=-1).tolist() == [store.row("a.mp4"), -1, -1]
    assert store.rows(["b.mp4", "a\0.mp4", "ü.mp4"], missing=-1).tolist() == [  # NUL: encoded name by name
        store.row("b.mp4"), -1, store.row("ü.mp4")]


def test_rows_finds_a_name_whose_hash_another_name_shares():
    # two names filed under the same hash (a collision): the first candidate is the other name
    table = StringTable.build(["a", "b"])
    h = name_hash("b")
    names = Names(table, "test", np.array([h, h], np.uint64), np.array([0, 1], np.int64))
    assert names.rows(["b"]).tolist() == [1] == [names.find("b")]
    assert names.rows(["a"], missing=-1).tolist() == [-1]  # "a" is filed under another hash: not found

