"""The motion store: quantisation error bound, round trip, shards and memory maps, crash safety."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mcl_fast._checksum import digest
from mcl_fast.motion.store import (ERRORS, HEADER_BYTES, INDEX, JOURNAL, PAPER_VERSION, MotionStore, StoreError,
                                   StoreWriter, dequantize, quantize_maps, shard_name)
from mcl_fast.motion.store_official import OFFICIAL_VERSION, OfficialVideoMaps as VideoMaps  # paper maps too


def random_maps(rng, n=None, h=None, w=None, peak=None) -> np.ndarray:
    """Non-negative float32 maps shaped like motion maps, with a random peak value."""
    n = n or int(rng.integers(2, 12))
    h = h or int(rng.integers(3, 9))
    w = w or int(rng.integers(3, 11))
    peak = float(rng.uniform(0.1, 40.0)) if peak is None else peak
    return (rng.random((n, h, w)) ** 2 * peak).astype(np.float32)


def video_maps(maps, fps=25.0, height=240, width=320) -> VideoMaps:
    return VideoMaps.from_maps(maps, fps=fps, height=height, width=width)


def new_writer(path, root, **kw) -> StoreWriter:
    kw = {"flow": "farneback", "size": 64, "map_downsample": 4, **kw}
    return StoreWriter(path, root=root, **kw)


# ------------------------------------------------------------------------------ quantisation


def test_quantisation_error_is_within_the_documented_bound():
    rng = np.random.default_rng(0)
    for _ in range(20):
        maps = random_maps(rng)
        q, scale = quantize_maps(maps)
        assert q.dtype == np.uint8 and q.shape == maps.shape
        assert scale == pytest.approx(float(maps.max()))
        assert q.max() == 255  # the peak uses the full range
        err = np.abs(dequantize(q, scale) - maps).max()
        bound = scale / 510
        assert err <= bound * (1 + 1e-5)
        assert err > 0.5 * bound  # the bound is tight on dense data: nothing is lost elsewhere
        assert video_maps(maps).max_abs_error == pytest.approx(bound)


def test_quantisation_of_a_static_video_and_bad_maps():
    q, scale = quantize_maps(np.zeros((3, 4, 5), np.float32))
    assert scale == 1.0 and not q.any()
    with pytest.raises(ValueError, match="non-finite"):
        quantize_maps(np.full((2, 2, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        quantize_maps(-np.ones((2, 2, 2), np.float32))


# -------------------------------------------------------------------------------- round trip


def test_round_trip_many_videos_over_several_shards(tmp_path):
    rng = np.random.default_rng(1)
    originals = {}
    with new_writer(tmp_path / "store", tmp_path, shard_bytes=2000) as w:
        for i in range(40):
            rel = f"class{i % 3}/v_{i:03d}.avi"
            maps = random_maps(rng)
            originals[rel] = (maps, w.add(rel, video_maps(maps, fps=10.0 + i, height=100 + i, width=200 + i)))
        w.compact()
    files = sorted(os.listdir(tmp_path / "store"))
    shards = [f for f in files if f.startswith("shard-")]
    assert len(shards) >= 5, files  # rolled past shard_bytes
    columns = json.loads((tmp_path / "store" / INDEX).read_text())["columns"]  # the index's column files
    assert set(files) == {INDEX, ERRORS, ".lock", columns, *shards}  # no journal after compaction, nothing per video

    store = MotionStore(tmp_path / "store")
    assert store.videos == sorted(originals) and len(store) == 40
    assert (store.flow, store.size, store.map_downsample) == ("farneback", 64, 4)
    assert store.root == str(tmp_path)
    for i, (rel, (maps, entry)) in enumerate(sorted(originals.items(), key=lambda kv: kv[0][-7:])):
        info = store.info(rel)
        assert info == entry
        assert (info["num_frames"], info["map_height"], info["map_width"]) == maps.shape
        assert (info["fps"], info["height"], info["width"]) == (10.0 + i, 100 + i, 200 + i)
        out = store.read(rel)
        assert out.dtype == np.float32 and out.shape == maps.shape
        assert np.abs(out - maps).max() <= store.max_abs_error(rel) * (1 + 1e-5)
        assert store.max_abs_error(rel) == pytest.approx(maps.max() / 510)
        np.testing.assert_allclose(store.motion_t(rel), out.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(store.motion_s(rel), out.mean(axis=0), rtol=1e-5, atol=1e-6)
        assert store.video_path(rel) == os.path.join(str(tmp_path), rel)
        assert rel in store
    assert "missing.avi" not in store


def test_reads_are_memory_mapped_views_of_one_shard(tmp_path):
    rng = np.random.default_rng(2)
    with new_writer(tmp_path / "s", tmp_path, shard_bytes=3000) as w:
        for i in range(12):
            w.add(f"v{i}.mp4", video_maps(random_maps(rng, n=8, h=6, w=10)))  # 480 B + header each: 5 per shard
        w.compact()
    store = MotionStore(tmp_path / "s")
    q = store.read_quantized("v7.mp4")
    assert store.info("v7.mp4")["shard"] == 1
    assert list(store._mapped) == [("shard", 1)]  # one shard mapped: reading a video touches only its own shard
    mm = store._mapped["shard", 1]
    assert isinstance(mm, np.memmap) and np.shares_memory(q, mm)  # a view, not a copy
    assert not q.flags.writeable
    store.read("v1.mp4")
    assert sorted(store._mapped) == [("shard", 0), ("shard", 1)]
    # the same bytes as the shard file at the recorded offset
    entry = store.info("v7.mp4")
    raw = (tmp_path / "s" / shard_name(1)).read_bytes()[entry["offset"]:entry["offset"] + q.nbytes]
    assert raw == q.tobytes()


def test_unknown_video_raises_a_keyerror_naming_it(tmp_path):
    with new_writer(tmp_path / "s", tmp_path) as w:
        w.add("a.mp4", video_maps(np.ones((2, 3, 3), np.float32)))
    store = MotionStore(tmp_path / "s")
    for call in (store.read, store.info, store.read_quantized, store.motion_t, store.video_path):
        with pytest.raises(KeyError, match="nope.mp4"):
            call("nope.mp4")


def test_index_is_versioned_json_with_the_documented_fields(tmp_path):
    with new_writer(tmp_path / "s", tmp_path) as w:
        w.add("a/b.webm", video_maps(np.ones((3, 4, 5), np.float32) * 2, fps=29.97, height=144, width=176))
        w.add_error("bad.mp4", "empty file (0 bytes)")
        w.compact()
    index = json.loads((tmp_path / "s" / INDEX).read_text())
    assert {k: index[k] for k in ("format", "version", "flow", "size", "map_downsample", "map_dtype")} == {
        "format": "mcl_fast.motion_store", "version": PAPER_VERSION, "flow": "farneback", "size": 64,
        "map_downsample": 4, "map_dtype": "uint8"}
    assert index["root"] == str(tmp_path) and index["count"] == 1
    assert sorted(index["files"]) == sorted(os.listdir(tmp_path / "s" / index["columns"]))
    q = np.full((3, 4, 5), 255, np.uint8)  # the maps quantised on their own scale (2.0)
    assert MotionStore(tmp_path / "s").info("a/b.webm") == {"num_frames": 3, "fps": 29.97, "height": 144, "width": 176,
                                           "map_height": 4, "map_width": 5, "shard": 0, "offset": HEADER_BYTES,
                                           "scale": 2.0, "checksum": digest(q)}
    assert json.loads((tmp_path / "s" / ERRORS).read_text()) == [{"path": "bad.mp4", "reason": "empty file (0 bytes)"}]
    assert MotionStore(tmp_path / "s").errors == [{"path": "bad.mp4", "reason": "empty file (0 bytes)"}]


# ------------------------------------------------------------------------------ crash safety


def test_journal_is_read_before_compaction(tmp_path):
    """A store whose prepare is running, or was killed, reads right: index.json + journal."""
    rng = np.random.default_rng(3)
    w = new_writer(tmp_path / "s", tmp_path)
    maps = {f"v{i}.mp4": random_maps(rng) for i in range(3)}
    for rel, m in maps.items():
        w.add(rel, video_maps(m))
    w.add_error("x.mp4", "file not found")
    assert json.loads((tmp_path / "s" / INDEX).read_text())["count"] == 0  # O(1) writes: index untouched
    store = MotionStore(tmp_path / "s")
    assert store.videos == sorted(maps)
    assert store.errors == [{"path": "x.mp4", "reason": "file not found"}]
    for rel, m in maps.items():
        assert np.abs(store.read(rel) - m).max() <= store.max_abs_error(rel) * (1 + 1e-5)
    w.close()


def test_a_corrupt_journal_line_in_the_middle_is_an_error_not_a_silent_loss(tmp_path):
    rng = np.random.default_rng(4)
    w = new_writer(tmp_path / "s", tmp_path)
    for i in range(3):
        w.add(f"v{i}.mp4", video_maps(random_maps(rng)))
    w.close()
    journal = tmp_path / "s" / JOURNAL
    lines = journal.read_bytes().split(b"\n")
    lines[1] = b'{"op": "vid' + b"x" * 10  # damaged, with a complete line after it
    journal.write_bytes(b"\n".join(lines))
    with pytest.raises(StoreError, match="journal line 2 is corrupt"):
        MotionStore(tmp_path / "s")
    with pytest.raises(StoreError, match="journal line 2"):
        new_writer(tmp_path / "s", tmp_path)


def test_killed_writer_leftovers_are_ignored_then_cut(tmp_path):
    """Shard bytes without a journal line, a torn journal line and a shard a killed run started
    read as absent; the next writer cuts them off and continues."""
    rng = np.random.default_rng(4)
    folder = tmp_path / "s"
    maps = {f"v{i}.mp4": random_maps(rng, n=5, h=4, w=6) for i in range(4)}
    w = new_writer(folder, tmp_path)
    for rel in ("v0.mp4", "v1.mp4"):
        w.add(rel, video_maps(maps[rel]))
    w.close()  # "killed": no compaction
    shard0 = folder / shard_name(0)
    good_size = shard0.stat().st_size
    assert good_size == 2 * (HEADER_BYTES + 5 * 4 * 6)
    journal_size = (folder / JOURNAL).stat().st_size
    with open(shard0, "ab") as f:
        f.write(b"\x07" * 77)  # a video's bytes written, its journal line never
    with open(folder / JOURNAL, "ab") as f:
        f.write(b'{"op":"video","path":"v9.mp4","entry":{"num_fr')  # torn mid-line
    (folder / shard_name(1)).write_bytes(b"\x01" * 50)  # a new shard with no recorded video

    store = MotionStore(folder)
    assert store.videos == ["v0.mp4", "v1.mp4"]
    for rel in store.videos:
        assert np.abs(store.read(rel) - maps[rel]).max() <= store.max_abs_error(rel) * (1 + 1e-5)

    w = new_writer(folder, tmp_path)
    assert shard0.stat().st_size == good_size  # cut back to the last recorded video
    assert (folder / JOURNAL).stat().st_size == journal_size  # torn line gone
    assert not (folder / shard_name(1)).exists()
    assert w.done("v0.mp4") and not w.done("v9.mp4")
    for rel in ("v2.mp4", "v3.mp4"):
        w.add(rel, video_maps(maps[rel]))
    assert w.videos["v2.mp4"]["offset"] == good_size + HEADER_BYTES  # appended where the good data ends
    w.close()
    store = MotionStore(folder)  # journal only (still not compacted): the new lines parse
    assert store.videos == sorted(maps)
    w = new_writer(folder, tmp_path)
    w.compact()
    w.close()
    store = MotionStore(folder)
    assert store.videos == sorted(maps)
    for rel, m in maps.items():
        assert np.abs(store.read(rel) - m).max() <= store.max_abs_error(rel) * (1 + 1e-5)
    assert shard0.stat().st_size == 4 * (HEADER_BYTES + 5 * 4 * 6)


def test_a_journal_left_by_a_crash_during_compaction_replays_harmlessly(tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "s"
    w = new_writer(folder, tmp_path)
    maps = {f"v{i}.mp4": random_maps(rng) for i in range(3)}
    for rel, m in maps.items():
        w.add(rel, video_maps(m))
    w.add_error("bad.mp4", "no video stream")
    journal = (folder / JOURNAL).read_bytes()
    w.compact()
    w.close()
    (folder / JOURNAL).write_bytes(journal)  # index.json replaced, journal not yet removed
    store = MotionStore(folder)
    assert store.videos == sorted(maps)
    assert store.errors == [{"path": "bad.mp4", "reason": "no video stream"}]
    with new_writer(folder, tmp_path) as w:
        assert sorted(w.videos) == sorted(maps)
        w.add("v9.mp4", video_maps(random_maps(rng)))
        w.compact()
    assert len(MotionStore(folder)) == 4


def test_a_later_success_clears_an_error(tmp_path):
    with new_writer(tmp_path / "s", tmp_path) as w:
        w.add_error("a.mp4", "file not found")
        assert w.failed("a.mp4")
        w.add("a.mp4", video_maps(np.ones((2, 3, 3), np.float32)))
        assert not w.failed("a.mp4") and w.done("a.mp4")
        w.compact()
    store = MotionStore(tmp_path / "s")
    assert store.videos == ["a.mp4"] and store.errors == []


# ----------------------------------------------------------------------------------- refusals


def test_writer_refuses_other_settings_root_and_a_second_writer(tmp_path):
    folder = tmp_path / "s"
    with new_writer(folder, tmp_path) as w:
        w.add("a.mp4", video_maps(np.ones((2, 3, 3), np.float32)))
        with pytest.raises(StoreError, match="another process"):
            new_writer(folder, tmp_path)
        with pytest.raises(StoreError, match="already in the store"):
            w.add("a.mp4", video_maps(np.ones((2, 3, 3), np.float32)))
    for kw, word in (({"flow": "tvl1"}, "flow"), ({"size": 128}, "size"), ({"map_downsample": 2}, "map_downsample")):
        with pytest.raises(StoreError, match=word):
            new_writer(folder, tmp_path, **kw)
    with pytest.raises(StoreError, match="relative to"):
        new_writer(folder, tmp_path / "elsewhere")
    with new_writer(folder, tmp_path) as w:  # the same settings still open it
        assert w.done("a.mp4")


def test_writer_refuses_a_folder_that_is_not_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a motion store"):
        new_writer(tmp_path, tmp_path)
    assert os.listdir(tmp_path) == ["notes.txt"]  # nothing written into it


def test_reader_refuses_newer_versions_and_foreign_files(tmp_path):
    folder = tmp_path / "s"
    with new_writer(folder, tmp_path) as w:
        w.add("a.mp4", video_maps(np.ones((2, 3, 3), np.float32)))
        w.compact()
    index = json.loads((folder / INDEX).read_text())
    (folder / INDEX).write_text(json.dumps({**index, "version": PAPER_VERSION + 1}))
    with pytest.raises(StoreError, match="newer"):
        MotionStore(folder)
    with pytest.raises(StoreError, match="newer"):
        new_writer(folder, tmp_path)
    (folder / INDEX).write_text(json.dumps({**index, "format": "something.else"}))
    with pytest.raises(StoreError, match="not a motion store"):
        MotionStore(folder)
    with pytest.raises(StoreError, match="not a motion store"):
        MotionStore(tmp_path)
    with pytest.raises(StoreError, match="does not exist"):
        MotionStore(tmp_path / "absent")


def test_no_pickle_in_the_store_modules():
    import mcl_fast.motion.prepare as prepare
    import mcl_fast.motion.store as store
    import mcl_fast.video_io.random_access as random_access
    import mcl_fast.video_io.reader as reader

    for module in (store, prepare, reader, random_access):
        source = open(module.__file__, encoding="utf-8").read()
        assert "import pickle" not in source and "np.save" not in source and "allow_pickle" not in source


def test_cells_per_pixel_accounts_for_the_resize_and_the_dropped_block_edge(tmp_path):
    w = new_writer(tmp_path / "s", tmp_path, size=128)
    w.add("v.mp4", video_maps(np.ones((3, 32, 42), np.float32), height=240, width=320))
    w.close()
    sy, sx = MotionStore(tmp_path / "s").cells_per_pixel("v.mp4")
    assert sy == pytest.approx(128 / (4 * 240)) and sx == pytest.approx(171 / (4 * 320))


# ------------------------------------------------------------------------------ official stores


def official_maps(rng, n=None, fh=6, fw=8, fps=25.0, height=48, width=64) -> VideoMaps:
    """Random official maps (N, 7, 7) uint8, N - 1 encoded flows and max(1, N - 32) magnitudes."""
    n = n or int(rng.integers(1, 40))
    return VideoMaps.official(rng.integers(0, 256, (n, 7, 7), dtype=np.uint8), rng.random(max(1, n - 32)) * 50,
                              rng.integers(0, 256, (n - 1, fh, fw, 2), dtype=np.uint8), fps=fps, height=height,
                              width=width, fingerprint=f"s3b64k:{n}:0")


def official_writer(path, root, **kw) -> StoreWriter:
    return new_writer(path, root, maps="official", window=8, **kw)


def assert_same_official(store: MotionStore, rel: str, vm: VideoMaps) -> None:
    np.testing.assert_array_equal(store.read_quantized(rel), vm.maps_u8)
    np.testing.assert_array_equal(store.read(rel), vm.maps_u8.astype(np.float32))  # the stored values, exactly
    np.testing.assert_array_equal(store.read_flows(rel), vm.flows)
    np.testing.assert_array_equal(store.clip_magnitudes(rel), vm.magnitudes)  # float64, bit for bit


def test_official_round_trip_over_several_shards_of_each_kind(tmp_path):
    rng = np.random.default_rng(10)
    videos = {f"c{i % 2}/v{i:02d}.webm": official_maps(rng, n=[1, 33, 40][i % 3] if i < 3 else None)
              for i in range(24)}
    with official_writer(tmp_path / "s", tmp_path, shard_bytes=4000) as w:
        for rel, vm in videos.items():
            w.add(rel, vm)
        w.compact()
    files = sorted(os.listdir(tmp_path / "s"))
    kinds = {prefix: [f for f in files if f.startswith(prefix + "-")] for prefix in ("shard", "flows", "mags")}
    assert len(kinds["flows"]) >= 4 and len(kinds["shard"]) >= 2 and kinds["mags"], files
    columns = json.loads((tmp_path / "s" / INDEX).read_text())["columns"]
    assert set(files) == {INDEX, ERRORS, ".lock", columns, *kinds["shard"], *kinds["flows"], *kinds["mags"]}
    index = json.loads((tmp_path / "s" / INDEX).read_text())
    assert {k: index[k] for k in ("version", "maps", "window", "map_grid", "clip_flows", "map_downsample")} == {
        "version": OFFICIAL_VERSION, "maps": "official", "window": 8, "map_grid": 7, "clip_flows": 32,
        "map_downsample": None}
    store = MotionStore(tmp_path / "s")
    assert store.official and (store.window, store.map_grid, store.clip_flows, store.map_downsample) == (8, 7, 32, None)
    assert store.videos == sorted(videos)
    for rel, vm in videos.items():
        info = store.info(rel)
        assert (info["num_frames"], info["num_flows"], info["num_starts"]) == (vm.num_frames, vm.num_frames - 1,
                                                                              len(vm.magnitudes))
        assert (info["flow_height"], info["flow_width"], info["scale"]) == (6, 8, 255.0)
        assert_same_official(store, rel, vm)
        assert store.cells_per_pixel(rel) == (7 / 48, 7 / 64)  # 7 cells over the whole frame
    flows = store.read_flows("c0/v00.webm")
    assert flows.shape == (0, 6, 8, 2)  # a one-frame video has no flow
    q = store.read_flows("c1/v01.webm")
    assert q.shape == (32, 6, 8, 2)
    mm = store._mapped[("flows", store.info("c1/v01.webm")["flow_shard"])]
    assert np.shares_memory(q, mm) and not q.flags.writeable  # memory-mapped views, not copies


def test_official_leftovers_of_a_killed_writer_are_ignored_then_cut(tmp_path):
    """Bytes written to any of the three kinds of shard without a journal line, and new shards of
    each kind with no recorded video, read as absent and are cut by the next writer."""
    rng = np.random.default_rng(11)
    folder = tmp_path / "s"
    videos = {f"v{i}.mp4": official_maps(rng, n=35) for i in range(4)}
    w = official_writer(folder, tmp_path)
    for rel in ("v0.mp4", "v1.mp4"):
        w.add(rel, videos[rel])
    w.close()  # "killed": no compaction
    sizes = {p: (folder / p).stat().st_size for p in (shard_name(0), shard_name(0, "flows"), shard_name(0, "mags"))}
    h = HEADER_BYTES
    assert sizes == {shard_name(0): 2 * (h + 35 * 49), shard_name(0, "flows"): 2 * (h + 34 * 6 * 8 * 2),
                     shard_name(0, "mags"): 2 * (h + 3 * 8)}
    for name in sizes:
        with open(folder / name, "ab") as f:
            f.write(b"\x05" * 40)  # a video's bytes written, its journal line never
    for prefix in ("shard", "flows", "mags"):
        (folder / shard_name(1, prefix)).write_bytes(b"\x01" * 16)
    with open(folder / JOURNAL, "ab") as f:
        f.write(b'{"op":"video","path":"v9.mp4","entry":{"num_fr')
    store = MotionStore(folder)
    assert store.videos == ["v0.mp4", "v1.mp4"]
    for rel in store.videos:
        assert_same_official(store, rel, videos[rel])

    w = official_writer(folder, tmp_path)
    assert {name: (folder / name).stat().st_size for name in sizes} == sizes  # cut back
    assert not any((folder / shard_name(1, prefix)).exists() for prefix in ("shard", "flows", "mags"))
    for rel in ("v2.mp4", "v3.mp4"):
        entry = w.add(rel, videos[rel])
    # appended where the data ends
    assert entry["flow_offset"] == 3 * (h + 34 * 6 * 8 * 2) + h and entry["mag_offset"] == 3 * (h + 3 * 8) + h
    w.compact()
    w.close()
    store = MotionStore(folder)
    assert store.videos == sorted(videos)
    for rel, vm in videos.items():
        assert_same_official(store, rel, vm)


def test_a_journal_line_lacking_official_fields_reads_as_torn(tmp_path):
    rng = np.random.default_rng(12)
    folder = tmp_path / "s"
    with official_writer(folder, tmp_path) as w:
        w.add("a.mp4", official_maps(rng, n=3))
    entry = MotionStore(folder).info("a.mp4")
    partial = {k: v for k, v in entry.items() if k != "flow_offset"}
    with open(folder / JOURNAL, "a") as f:
        f.write(json.dumps({"op": "video", "path": "b.mp4", "entry": partial}) + "\n")
    assert MotionStore(folder).videos == ["a.mp4"]


def test_paper_and_official_stores_do_not_mix(tmp_path):
    rng = np.random.default_rng(13)
    paper, official = tmp_path / "paper", tmp_path / "official"
    with new_writer(paper, tmp_path) as w:
        w.add("a.mp4", video_maps(np.ones((2, 3, 3), np.float32)))
        with pytest.raises(ValueError, match="official store"):
            w.add("b.mp4", official_maps(rng, n=3))
    with official_writer(official, tmp_path) as w:
        with pytest.raises(ValueError, match="flows and clip magnitudes"):
            w.add("a.mp4", video_maps(np.ones((2, 7, 7), np.float32)))
        bad = official_maps(rng, n=4)
        with pytest.raises(ValueError, match=r"flows must be \(3, h, w, 2\)"):
            w.add("a.mp4", VideoMaps.official(bad.maps_u8, bad.magnitudes, bad.flows[:2], fps=25, height=48, width=64))
        with pytest.raises(ValueError, match="must be \\(N, 7, 7\\)"):
            w.add("a.mp4", VideoMaps.official(np.zeros((4, 6, 6), np.uint8), bad.magnitudes, bad.flows, fps=25,
                                              height=48, width=64))
        w.add("a.mp4", bad)
    with pytest.raises(StoreError, match="maps 'paper' \\(asked for 'official'\\)"):
        official_writer(paper, tmp_path)
    with pytest.raises(StoreError, match="maps 'official' \\(asked for 'paper'\\)"):
        new_writer(official, tmp_path)
    with pytest.raises(StoreError, match="window 8 \\(asked for 4\\)"):
        new_writer(official, tmp_path, maps="official", window=4)
    store = MotionStore(paper)
    assert not store.official and store.window is None
    for call in (store.read_flows, store.clip_magnitudes):
        with pytest.raises(StoreError, match="mcl-fast prepare .*--maps official --window 8"):
            call("a.mp4")


def test_reader_checks_official_versions(tmp_path):
    rng = np.random.default_rng(14)
    folder = tmp_path / "s"
    with official_writer(folder, tmp_path) as w:
        w.add("a.mp4", official_maps(rng, n=3))
        w.compact()
    index = json.loads((folder / INDEX).read_text())
    (folder / INDEX).write_text(json.dumps({**index, "version": 5}))
    with pytest.raises(StoreError, match="version 5 is newer.*version 4 for official"):
        MotionStore(folder)
    (folder / INDEX).write_text(json.dumps({**index, "version": 1}))
    with pytest.raises(StoreError, match="needs version 2"):
        MotionStore(folder)
    (folder / INDEX).write_text(json.dumps({k: v for k, v in index.items() if k != "window"}))
    with pytest.raises(StoreError, match="lacks window"):
        MotionStore(folder)
    (folder / INDEX).write_text(json.dumps({**index, "maps": "other"}))
    with pytest.raises(StoreError, match="unknown maps 'other'"):
        MotionStore(folder)
