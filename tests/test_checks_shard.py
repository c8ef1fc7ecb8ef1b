"""Checks where they are needed, once (issue 24, item 2) and bounded per-video caches (item 3),
checked by counting operations, not by timing: each rank checks its own shard, a file no check
covered is checked when first planned and replaced with the construction check's message, paths
under video_root cost a listing per folder, and the caches stay under their caps."""
from __future__ import annotations

import os
import shutil
import warnings
from collections import Counter

import numpy as np
import pytest

from corpus import write_video
from mcl_fast.data import TorchVideoLoader
from test_loader_checks import dataset  # noqa: F401 (a fixture: three clips and their store, fresh per test)

CLIP = dict(clip_len=4, stride=2, size=16, num_workers=0)


@pytest.fixture()
def probes(monkeypatch):
    """A Counter of the files the construction checks probe and fingerprint."""
    from mcl_fast.data import checks

    seen = Counter()

    def counted(fn, what):
        def wrapper(path, *args, **kwargs):
            seen[(what, os.path.basename(path))] += 1
            return fn(path, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(checks, "probe", counted(checks.probe, "probe"))
    monkeypatch.setattr(checks, "file_fingerprint", counted(checks.file_fingerprint, "fingerprint"))
    return seen


@pytest.mark.parametrize("num_shards", [2, 3])
def test_the_eager_checks_of_a_multi_rank_job_cover_each_file_once(dataset, probes, num_shards):
    for rank in range(num_shards):  # 3 videos over 2 shards: the last shard is padded with the first's video
        TorchVideoLoader(dataset.names, dataset.store, 1, shard_id=rank, num_shards=num_shards, drop_last=False,
                         verify="eager", **CLIP)
    for what in ("probe", "fingerprint"):
        assert {name: probes[(what, name)] for name in dataset.names} == dict.fromkeys(dataset.names, 1), probes


@pytest.mark.parametrize("num_shards", [1, 2, 3])
def test_the_default_checks_of_a_multi_rank_job_cover_each_file_once_when_first_read(dataset, probes, num_shards):
    loaders = [TorchVideoLoader(dataset.names, dataset.store, 1, shard_id=rank, num_shards=num_shards, **CLIP)
               for rank in range(num_shards)]
    assert not probes, probes  # construction opens no file
    read = Counter()
    for ld in loaders:  # each rank's first epoch: its own shard, each file checked as it is first planned
        ld.set_epoch(0)
        for batch in ld:
            read.update(dataset.names[i] for i in batch["index"].tolist())
    assert sum(read.values()) == 3 // num_shards * num_shards and max(read.values()) == 1  # 2 ranks: one left out
    assert {name: probes[("fingerprint", name)] for name in dataset.names} == {n: read[n] for n in dataset.names}
    # the fingerprint matched the store's: the file the store's frame count and size came from, so
    # its header is not read (a file without a match or a fingerprint is probed: test_loader_checks)
    assert not any(probes[("probe", name)] for name in dataset.names), probes
    before = sum(probes.values())
    for ld in loaders:  # the same epoch again: verdicts kept, nothing checked again in this process
        ld.set_epoch(0)
        list(ld)
    assert sum(probes.values()) == before, probes


def test_construction_touches_no_video_file(dataset, monkeypatch):
    """The default loader's construction does no per-file I/O: no stat, open, probe or decode of a
    video (the store's fields give sizes and frame counts)."""
    import builtins

    from mcl_fast.data import base, checks

    folder = str(dataset.videos)
    touched = Counter()

    def counting(name, fn):
        def wrapper(path, *args, **kwargs):
            if str(os.fspath(path) if isinstance(path, (str, os.PathLike)) else "").startswith(folder):
                touched[name] += 1
            return fn(path, *args, **kwargs)
        return wrapper

    for module, name in ((os, "stat"), (os, "lstat"), (os.path, "isfile"), (os.path, "exists"), (builtins, "open"),
                         (checks, "probe"), (checks, "file_fingerprint"), (base, "probe"),
                         (base, "first_frame_problem")):
        monkeypatch.setattr(module, name, counting(name, getattr(module, name)))
    ld = TorchVideoLoader(dataset.names, dataset.store, 1, **CLIP)
    built = dict(touched)
    monkeypatch.undo()
    assert built == {}, built
    assert len(list(ld)) == 3 and not ld.failures


def _epoch_with(loader, video_index: int) -> int:
    """The first epoch whose shard (of `loader`) plans the video."""
    for epoch in range(1, 50):
        if video_index in loader.epoch_samples(epoch)[1]:
            return epoch
    raise AssertionError("the video never comes to this shard")


def test_a_file_outside_the_checked_shard_is_replaced_with_the_construction_message(dataset):
    ld = TorchVideoLoader(dataset.names, dataset.store, 1, shard_id=0, num_shards=2, **CLIP)
    other = next(i for i in range(3) if i not in set(ld.epoch_samples(0)[1].tolist()))
    changed = dataset.names[other]
    write_video(dataset.videos / changed, "mp4", "libx264", n=12, seed=7)  # other footage, same name and size
    # another rank's shard at construction: this rank checks the file when it first plans it
    ld = TorchVideoLoader(dataset.names, dataset.store, 1, shard_id=0, num_shards=2, **CLIP)
    epoch = _epoch_with(ld, other)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for e in (epoch, epoch):  # the same epoch twice: reported once
            ld.set_epoch(e)
            indices = [int(i) for batch in ld for i in batch["index"]]
            assert other not in indices
    skipped = [str(w.message) for w in caught if "skipping video" in str(w.message)]
    assert len(skipped) == 1, skipped
    assert skipped[0].startswith(f"skipping video {dataset.videos / changed}: the motion store does not match the "
                                 "videos: 1 files with other content than the maps were made from: ")
    assert "(not the file the maps were made from)" in skipped[0]
    assert ld.num_replaced == 2 and str(dataset.videos / changed) in ld.failures


def test_paths_under_video_root_cost_one_listing_per_folder_and_no_stat(tmp_path, monkeypatch):
    from mcl_fast.data.checks import VideoPaths

    root = tmp_path / "copies"
    keys = []
    for folder in ("a", "b", "c"):
        (root / folder).mkdir(parents=True)
        for i in range(20):
            ext = ".webm" if i % 2 else ".mp4"  # half of them transcoded to another extension
            (root / folder / f"{i}{ext}").write_bytes(b"x")
            keys.append(f"{folder}/{i}.mp4")
    counts = Counter()

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(os, "stat", counting("stat", os.stat))
    monkeypatch.setattr(os, "listdir", counting("listdir", os.listdir))
    monkeypatch.setattr(os, "scandir", counting("scandir", os.scandir))
    paths = VideoPaths(store=None, video_root=root)
    found = [paths(k) for k in keys]
    got = dict(counts)
    monkeypatch.undo()
    assert got.get("listdir", 0) + got.get("scandir", 0) == 3 and got.get("stat", 0) == 0, got
    assert all(os.path.isfile(f) for f in found)
    assert found[1] == str(root / "a" / "1.webm") and found[2] == str(root / "a" / "2.mp4")


def _batches(loader) -> list:
    return [(b["index"].tolist(), b["motion"].numpy(), [v.numpy() for v in b["views"]]) for b in loader]


def test_the_per_video_caches_stay_under_their_caps_and_change_no_batch(dataset, monkeypatch):
    from mcl_fast.data import base, planner

    full = TorchVideoLoader(dataset.names, dataset.store, 1, **CLIP)
    want = [_batches(full) for _ in range(2)]
    monkeypatch.setattr(planner, "VIDEO_CACHE_SIZE", 2)
    monkeypatch.setattr(base, "VERDICT_CACHE_SIZE", 2)
    small = TorchVideoLoader(dataset.names, dataset.store, 1, **CLIP)
    got = [_batches(small) for _ in range(2)]
    for w, g in zip(want, got):
        for (wi, wm, wv), (gi, gm, gv) in zip(w, g):
            assert wi == gi and np.array_equal(wm, gm) and all(np.array_equal(a, b) for a, b in zip(wv, gv))
    p, v = small.planner, small.verdicts
    assert len(p._info) <= 2 and len(p._hot) <= 2 * len(set(p.layout.clips))
    assert len(v.good) <= 2 and len(v.file_hw) <= 2 and len(v._video_of) <= 2
    assert small.num_replaced == 0 and not small.failures  # a dropped verdict is checked again, and passes


def test_frame_index_looks_in_its_cache_before_opening_the_file(synthetic_mp4, monkeypatch):
    from mcl_fast.video_io import random_access

    opened = []
    real = random_access.open_video
    monkeypatch.setattr(random_access, "open_video", lambda path: opened.append(path) or real(path))
    random_access._indexes.clear()
    first = random_access.frame_index(synthetic_mp4.path)
    second = random_access.frame_index(synthetic_mp4.path)
    assert second is first and len(opened) == 1, opened


def test_a_pickled_video_paths_lists_its_folders_again(tmp_path):
    import pickle

    from mcl_fast.data.checks import VideoPaths

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.webm").write_bytes(b"x")
    paths = VideoPaths(store=None, video_root=tmp_path)
    assert paths("a/x.mp4") == str(tmp_path / "a" / "x.webm")
    copy = pickle.loads(pickle.dumps(paths))
    assert copy._listings == {} and copy("a/x.mp4") == str(tmp_path / "a" / "x.webm")


def test_a_loader_over_video_root_lists_its_folder_once_and_stats_no_path(dataset, monkeypatch):
    from pathlib import Path

    root = dataset.root / "copies"
    shutil.copytree(dataset.videos, root)
    counts = Counter()
    listdir, exists = os.listdir, Path.exists

    def counted_listdir(path="."):
        counts["listdir", os.fspath(path)] += 1
        return listdir(path)

    def counted_exists(self, *args, **kwargs):
        counts["exists"] += 1
        return exists(self, *args, **kwargs)

    monkeypatch.setattr(os, "listdir", counted_listdir)
    monkeypatch.setattr(Path, "exists", counted_exists)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copies without transcode records: the fingerprint notice
        ld = TorchVideoLoader(dataset.names, dataset.store, 1, video_root=root, **CLIP)
        batches = list(ld)
    assert len(batches) == 3 and not ld.failures
    assert counts[("listdir", str(root))] == 1 and counts["exists"] == 0, counts
