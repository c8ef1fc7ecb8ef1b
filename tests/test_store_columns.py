"""The store's columnar index: the reader API (names, rows, columns), pickling by path, journals on
top of the columns, damaged columns, and stores written before it (tests/fixtures/old_stores)."""
from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from mcl_fast.motion.store import (INDEX, JOURNAL, PAPER_VERSION, MotionStore, StoreError, StoreWriter, VideoMaps,
                                   check_store, quantize_maps, store_state)
from mcl_fast.motion.store_official import OFFICIAL_VERSION

# Written by the store code before the columnar index (index.json version 1 / 2, one JSON entry
# per video) with the maps below, and checked in as it wrote them.
OLD = Path(__file__).parent / "fixtures" / "old_stores"
OLD_NAMES = ["a/v1.mp4", "b/v2.mp4", "c/é.mp4"]  # added as b, a, c: i = 1, 0, 2


def old_maps(i: int) -> np.ndarray:
    n = 3 + i
    return (np.arange(n * 4 * 5, dtype=np.float32).reshape(n, 4, 5) * (i + 1)) % 17


def old_official(i: int):
    n = 3 + i
    maps = (np.arange(n * 49).reshape(n, 7, 7) * (i + 3) % 251).astype(np.uint8)
    flows = (np.arange((n - 1) * 6 * 8 * 2).reshape(n - 1, 6, 8, 2) * (i + 1) % 256).astype(np.uint8)
    return maps, np.linspace(0.5, 2.0, 1 + i), flows


def writer(folder, root, **kw) -> StoreWriter:
    return StoreWriter(folder, root=root, flow="farneback", size=32, **kw)


def maps(i: int) -> VideoMaps:
    return VideoMaps.from_maps(np.full((2 + i % 3, 3, 4), 1.0 + i, np.float32), fps=25, height=48, width=64,
                               fingerprint=f"s3b64k:{i}:{i:032x}" if i % 2 else None)


def small_store(folder, root, names) -> None:
    with writer(folder, root) as w:
        for i, name in enumerate(names):
            w.add(name, maps(i))
        w.compact()


def copy_old(tmp_path, name) -> Path:
    shutil.copytree(OLD / name, tmp_path / name)
    return tmp_path / name


def test_the_reader_api_by_name_and_by_row(tmp_path):
    names = ["b.mp4", "a/x.mp4", "ü.mp4", "a.mp4"]
    small_store(tmp_path / "s", tmp_path, names)
    store = MotionStore(tmp_path / "s")
    assert len(store) == 4 and list(store.names) == sorted(names) == store.videos
    assert store.names[1] == "a/x.mp4" and store.names[-1] == "ü.mp4" and "ü.mp4" in store.names
    assert "c.mp4" not in store and 3 not in store.names
    assert [store.names.index(n) for n in sorted(names)] == [0, 1, 2, 3]
    with pytest.raises(KeyError, match=r"'c.mp4' is not in the motion store .*/s"):
        store.names.index("c.mp4")
    with pytest.raises(KeyError, match="row 4 is not in the motion store"):
        store.row(4)
    assert store.row("b.mp4") == 2 and store.row(np.int64(2)) == 2
    frames = store.column("num_frames")
    assert frames.tolist() == [store.info(n)["num_frames"] for n in store.names] == [2 + names.index(n) % 3
                                                                                    for n in store.names]
    assert not frames.flags.writeable
    with pytest.raises(ValueError):
        frames[0] = 9
    for field in ("fps", "height", "width", "map_height", "map_width"):
        assert store.column(field).tolist() == [store.info(n)[field] for n in store.names]
    with pytest.raises(KeyError, match="'flags' is not a column"):
        store.column("flags")
    for row, name in enumerate(store.names):
        assert store.info(row) == store.info(name)
        assert store.fingerprint(row) == store.fingerprint(name) == maps(names.index(name)).fingerprint
        assert store.video_path(row) == str(tmp_path / name)
        np.testing.assert_array_equal(store.read(row), store.read(name))
        np.testing.assert_array_equal(store.read_quantized(row), store.read_quantized(name))
        store.check(row)
        assert store.has_checksums(row) and store.scale(row) == store.scale(name)
        assert store.cells_per_pixel(row) == store.cells_per_pixel(name)


def test_an_empty_store_opens(tmp_path):
    writer(tmp_path / "s", tmp_path).close()
    store = MotionStore(tmp_path / "s")
    assert len(store) == 0 and list(store.names) == [] and store.column("num_frames").shape == (0,)


def test_pickling_carries_the_path_not_the_index_and_refuses_a_changed_index(tmp_path):
    names = [f"v{i:04d}.mp4" for i in range(300)]
    small_store(tmp_path / "s", tmp_path, names)
    store = MotionStore(tmp_path / "s")
    data = pickle.dumps(store)
    assert len(data) < 600  # a few hundred bytes whatever the store's size
    copy = pickle.loads(data)
    assert list(copy.names) == names and copy.verify is True
    np.testing.assert_array_equal(copy.read("v0007.mp4"), store.read("v0007.mp4"))
    with writer(tmp_path / "s", tmp_path) as w:  # a writer adds to the journal: the copy still sees the parent's view
        w.add("new.mp4", maps(1))
        assert len(pickle.loads(data)) == 300
        w.compact()  # a new index generation
    with pytest.raises(StoreError, match=r"s/index.json changed since this store was opened"):
        pickle.loads(data)


def test_a_pickled_store_reads_the_journal_its_parent_read_and_no_more(tmp_path):
    small_store(tmp_path / "s", tmp_path, ["a.mp4"])
    w = writer(tmp_path / "s", tmp_path)
    w.add("b.mp4", maps(1))
    store = MotionStore(tmp_path / "s")
    w.add("c.mp4", maps(2))
    assert list(pickle.loads(pickle.dumps(store)).names) == ["a.mp4", "b.mp4"]
    w.close()
    (tmp_path / "s" / JOURNAL).write_bytes(b"")  # the journal the parent read is gone
    with pytest.raises(StoreError, match="journal.jsonl changed since"):
        pickle.loads(pickle.dumps(store))


def test_journal_lines_apply_on_top_of_the_columns(tmp_path):
    base = [f"v{i:02d}.mp4" for i in range(0, 20, 2)]
    small_store(tmp_path / "s", tmp_path, base)
    w = writer(tmp_path / "s", tmp_path)
    for i, name in enumerate(["v03.mp4", "a.mp4", "z.mp4", "v10.mp4x"]):
        w.add(name, maps(i + 5))
    w.add_error("v04.mp4", "gone")  # a committed video recorded as an error: out of the index
    w.drop(["v06.mp4"])  # (rewrites the index: the lines before it are folded)
    w.add("v08.mp4b", maps(7))
    w.add_error("v12.mp4", "gone")
    store = MotionStore(tmp_path / "s")
    videos, errors = store_state(tmp_path / "s")
    assert list(store.names) == sorted(videos)
    assert {n: store.info(n) for n in store.names} == videos
    assert [e["path"] for e in store.errors] == sorted(errors) == ["v04.mp4", "v12.mp4"]
    for name in store.names:
        assert store.row(name) == store.names.index(name)
        store.check(name)
    w.close()


def test_a_damaged_column_file_is_refused_naming_it(tmp_path):
    small_store(tmp_path / "s", tmp_path, ["a.mp4", "b.mp4"])
    columns = tmp_path / "s" / json.loads((tmp_path / "s" / INDEX).read_text())["columns"]
    names = columns / "names.npy"
    data = bytearray(names.read_bytes())
    data[-1] ^= 1
    names.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"names.npy: the index column is damaged"):
        MotionStore(tmp_path / "s")
    assert check_store(tmp_path / "s").damage[0].reason.count("names.npy") == 1
    shutil.rmtree(columns)
    with pytest.raises(StoreError, match=r"entries.npy: cannot read the index column"):
        MotionStore(tmp_path / "s")


def test_a_newer_columnar_version_is_refused(tmp_path):
    small_store(tmp_path / "s", tmp_path, ["a.mp4"])
    index = json.loads((tmp_path / "s" / INDEX).read_text())
    assert index["version"] == PAPER_VERSION and index["count"] == 1 and "videos" not in index
    (tmp_path / "s" / INDEX).write_text(json.dumps({**index, "version": PAPER_VERSION + 1}))
    with pytest.raises(StoreError, match=f"version {PAPER_VERSION + 1} is newer"):
        MotionStore(tmp_path / "s")


def test_a_store_written_before_the_columnar_index_opens_and_reads_the_same_maps(tmp_path, caplog):
    folder = copy_old(tmp_path, "store_v1")
    with caplog.at_level(logging.WARNING, logger="mcl_fast.motion.store"):
        store = MotionStore(folder)
        MotionStore(folder)
    notices = [r.getMessage() for r in caplog.records if "older JSON index" in r.getMessage()]
    assert len(notices) == 1 and "mcl-fast prepare --videos ... --out" in notices[0]  # once per store and process
    entries = json.loads((folder / INDEX).read_text())["videos"]
    assert list(store.names) == OLD_NAMES and store.version == 1
    assert store.errors == [{"path": "bad.mp4", "reason": "empty file (0 bytes)"}]
    for name, i in zip(OLD_NAMES, (1, 0, 2)):
        assert store.info(name) == entries[name]
        q, scale = quantize_maps(old_maps(i))
        np.testing.assert_array_equal(store.read_quantized(name), q)
        assert store.scale(name) == scale
    assert store.fingerprint("c/é.mp4") is None and store.fingerprint("a/v1.mp4").startswith("s3b64k:2001:")
    assert check_store(folder).damage == []
    before = {n: store.read_quantized(n).copy() for n in OLD_NAMES}
    with StoreWriter(folder, root="/videos", flow="farneback", size=32) as w:  # the next writer converts it
        w.compact()
    index = json.loads((folder / INDEX).read_text())
    assert index["version"] == PAPER_VERSION and "videos" not in index
    new = MotionStore(folder)
    assert {n: new.info(n) for n in new.names} == entries
    with StoreWriter(folder, root="/videos", flow="farneback", size=32) as w:
        assert w.videos == entries  # the writer's entries from the columns
    for name in OLD_NAMES:
        np.testing.assert_array_equal(new.read_quantized(name), before[name])
    assert check_store(folder).damage == []


def test_an_official_store_written_before_the_columnar_index_opens_and_converts(tmp_path):
    folder = copy_old(tmp_path, "store_v2_official")
    entries = json.loads((folder / INDEX).read_text())["videos"]
    for store in (MotionStore(folder), None):
        if store is None:
            with StoreWriter(folder, root="/videos", flow="tvl1", size=32, maps="official", window=8) as w:
                w.compact()
            store = MotionStore(folder)
            assert store.version == OFFICIAL_VERSION
            with StoreWriter(folder, root="/videos", flow="tvl1", size=32, maps="official", window=8) as w:
                assert w.videos == entries  # the writer's entries from the columns
        assert list(store.names) == ["x.mp4", "y.mp4"] and store.official
        for i, name in enumerate(store.names):
            assert store.info(i) == entries[name]
            m, mags, flows = old_official(i)
            np.testing.assert_array_equal(store.read_quantized(name), m)
            np.testing.assert_array_equal(store.clip_magnitudes(i), mags)
            np.testing.assert_array_equal(store.read_flows(name), flows)
            store.check(name)


def test_names_that_share_a_hash_are_told_apart(tmp_path, monkeypatch):
    from mcl_fast.motion import store_index

    monkeypatch.setattr(store_index, "name_hash", lambda name: len(name) % 2)  # every other name collides
    names = [f"{'x' * (i % 3)}v{i}.mp4" for i in range(12)]
    small_store(tmp_path / "s", tmp_path, names)
    store = MotionStore(tmp_path / "s")
    assert [store.row(n) for n in store.names] == list(range(12))
    assert "v1.mp4x" not in store.names and store.names.find("zz") == -1


@pytest.mark.parametrize("rows", [[0, 1, 2, 5, 6, 9], list(range(200))[::-3], []])
def test_a_string_table_takes_rows_in_runs_or_scattered(rows):
    from mcl_fast.motion.store_index import StringTable

    strings = [f"{'é' * (i % 4)}name{i}" for i in range(200)]
    taken = StringTable.build(strings).take(np.array(rows, np.int64))
    assert [taken[i] for i in range(len(taken))] == [strings[r] for r in rows]


def test_a_compact_killed_before_the_header_leaves_the_old_index_and_its_folder_is_removed(tmp_path, monkeypatch):
    from mcl_fast.motion import store as store_module

    small_store(tmp_path / "s", tmp_path, ["a.mp4"])
    old_columns = json.loads((tmp_path / "s" / INDEX).read_text())["columns"]
    w = writer(tmp_path / "s", tmp_path)
    w.add("b.mp4", maps(1))
    real = store_module.atomic_write_json

    def killed(path, obj, **kw):
        if Path(path).name == INDEX:
            raise KeyboardInterrupt  # the process dies between the column files and the header
        return real(path, obj, **kw)

    monkeypatch.setattr(store_module, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        w.compact()
    w.close()
    monkeypatch.undo()
    folders = sorted(p.name for p in (tmp_path / "s").glob("columns-*"))
    assert len(folders) == 2 and old_columns in folders  # the new generation is there, unreferenced
    assert list(MotionStore(tmp_path / "s").names) == ["a.mp4", "b.mp4"]  # the old index + the journal
    with writer(tmp_path / "s", tmp_path) as w:
        w.compact()
    assert [p.name for p in (tmp_path / "s").glob("columns-*")] == [json.loads((tmp_path / "s" / INDEX).read_text())
                                                                    ["columns"]]
    assert list(MotionStore(tmp_path / "s").names) == ["a.mp4", "b.mp4"] and not (tmp_path / "s" / JOURNAL).exists()
