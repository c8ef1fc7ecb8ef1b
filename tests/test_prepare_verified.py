"""A prepare rerun re-reads only what changed since its last check (mcl_fast/motion/store_verified.py):
unchanged shards and sources are not read again, a changed shard or source is, and --verify-all
reads everything."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

import mcl_fast.motion.prepare as prepare_module
import mcl_fast.motion.store_verified as verified
from mcl_fast.data.synthetic import make_video
from mcl_fast.motion.prepare import prepare
from mcl_fast.motion.store import MotionStore, StoreWriter, shard_name

KW = dict(flow="farneback", size=32, workers=0, progress=False)
NAMES = ["a.mp4", "b.mp4", "c.mp4"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for i, name in enumerate(NAMES):
        make_video(folder / name, num_frames=10 + 2 * i, height=48, width=64, object_size=12, speed=2.0, gop=8,
                   seed=60 + i)
    return folder


@pytest.fixture
def counted(monkeypatch):
    """{"bytes": videos whose stored bytes were read, "sources": sources fingerprinted} of each prepare."""
    seen = {"bytes": 0, "sources": 0}
    check, changed = StoreWriter.check, prepare_module._source_changed

    def counting_check(self, relpath):
        seen["bytes"] += 1
        return check(self, relpath)

    def counting_changed(path, recorded):
        seen["sources"] += 1
        return changed(path, recorded)

    monkeypatch.setattr(StoreWriter, "check", counting_check)
    monkeypatch.setattr(prepare_module, "_source_changed", counting_changed)
    return seen


def rerun(videos, store, seen, **kw):
    seen.update(bytes=0, sources=0)
    report = prepare(videos, store, **KW, **kw)
    return report, dict(seen)


def flip(store, video):
    info = MotionStore(store, verify=False).info(video)
    path = store / shard_name(info["shard"])
    with open(path, "r+b") as f:
        f.seek(info["offset"] + 2)
        byte = f.read(1)
        f.seek(info["offset"] + 2)
        f.write(bytes([byte[0] ^ 0x40]))


def test_a_rerun_reads_only_what_changed_since_the_last_check(clips, tmp_path, monkeypatch, counted):
    monkeypatch.setattr(verified, "RACY_NS", 0)  # the files were written just now: record them anyway
    videos, store = Path(shutil.copytree(clips, tmp_path / "videos")), tmp_path / "store"
    prepare(videos, store, **KW)
    report, seen = rerun(videos, store, counted)
    assert seen == {"bytes": 3, "sources": 3} and report.skipped_existing == 3  # the first check: everything
    assert (store / verified.RECORD).is_file()
    report, seen = rerun(videos, store, counted)
    assert seen == {"bytes": 0, "sources": 0} and report.skipped_existing == 3  # nothing changed: nothing read
    assert not report.needs_repair

    time.sleep(0.05)  # past the file system's timestamp tick
    flip(store, "b.mp4")
    report, seen = rerun(videos, store, counted)
    assert report.damaged == ["b.mp4"] and seen == {"bytes": 3, "sources": 0}  # the changed shard, whole

    shutil.copy(clips / "a.mp4", videos / "c.mp4")  # another file under c's name
    report, seen = rerun(videos, store, counted)
    assert report.damaged == ["b.mp4"] and report.stale == ["c.mp4"]
    assert seen == {"bytes": 3, "sources": 1}  # the damaged shard is never recorded; one source changed

    report, seen = rerun(videos, store, counted, verify_all=True)
    assert seen["bytes"] == 3 and seen["sources"] == 2  # b is damaged: its source is not looked at
    report, seen = rerun(videos, store, counted, repair=True)
    assert sorted(report.damaged + report.stale) == ["b.mp4", "c.mp4"] and report.done == 2
    report, seen = rerun(videos, store, counted)
    assert not report.needs_repair and seen["bytes"] == 3  # the repaired videos' blocks changed the shard


def test_files_changed_just_before_a_check_are_not_recorded(clips, tmp_path, monkeypatch, counted):
    monkeypatch.setattr(verified, "RACY_NS", 10 ** 15)  # every file counts as written just before the check
    videos, store = Path(shutil.copytree(clips, tmp_path / "videos")), tmp_path / "store"
    prepare(videos, store, **KW)
    for _ in range(2):
        report, seen = rerun(videos, store, counted)
        assert seen == {"bytes": 3, "sources": 3}  # written < RACY_NS ago: checked every time
    assert not (store / verified.RECORD).exists()  # and nothing written: a no-op rerun writes nothing


def test_an_unreadable_record_means_a_full_check(clips, tmp_path, monkeypatch, counted):
    monkeypatch.setattr(verified, "RACY_NS", 0)
    videos, store = Path(shutil.copytree(clips, tmp_path / "videos")), tmp_path / "store"
    prepare(videos, store, **KW)
    rerun(videos, store, counted)
    (store / verified.RECORD).write_text("{not json")
    report, seen = rerun(videos, store, counted)
    assert seen == {"bytes": 3, "sources": 3}
    assert rerun(videos, store, counted)[1] == {"bytes": 0, "sources": 0}  # rewritten by that check


def test_the_record_follows_the_index_not_only_the_file(clips, tmp_path, monkeypatch, counted):
    """A shard file unchanged under index entries that changed (an older index.json restored) is
    read again: the record keeps a digest of the (offset, checksum) pairs the index places there."""
    monkeypatch.setattr(verified, "RACY_NS", 0)
    videos, store = Path(shutil.copytree(clips, tmp_path / "videos")), tmp_path / "store"
    prepare(videos, store, **KW)
    rerun(videos, store, counted)
    record = verified.VerifiedRecord.load(store)
    with StoreWriter(store, root=videos, flow="farneback", size=32) as w:
        assert record.sound_shards(verified.shard_digests(w.index_columns())) == {"shard-00000.bin"}
        w.videos["a.mp4"] = dict(w.videos["a.mp4"], checksum="xxh3_64:" + "0" * 16)  # in memory: no file changes
        assert record.sound_shards(verified.shard_digests(w.index_columns())) == set()
