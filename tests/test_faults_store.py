"""Faults of the motion store (issue 18, findings 3, 4, 10, 12, 13): nothing stored is lost or
silently wrong. Each test reproduces a finding as it stood and shows the new behaviour, through
the real CLI in a subprocess where the user would meet it."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from mcl_fast.data.synthetic import make_video
from mcl_fast.motion.prepare import prepare
from mcl_fast.motion.store import (HEADER_BYTES, INDEX, DamagedVideo, MotionStore, StoreError, StoreWriter,
                                   check_store, repair_command, shard_name)
from mcl_fast.motion.store_official import OfficialVideoMaps as VideoMaps  # paper maps too
from store_legacy import to_legacy_index

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["--flow", "farneback", "--size", "32", "--workers", "0"]
KW = dict(flow="farneback", size=32, workers=0, progress=False)
NAMES = ["a.mp4", "b.mp4", "c.mp4"]


def write_clip(path, num_frames, seed):
    return make_video(path, num_frames=num_frames, height=48, width=64, object_size=12, speed=2.0, gop=8, seed=seed)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for i, name in enumerate(NAMES):
        write_clip(folder / name, 12 + 2 * i, seed=40 + i)
    return folder


@pytest.fixture
def videos(clips, tmp_path) -> Path:
    """A private copy of the clips (tests replace files in it)."""
    return Path(shutil.copytree(clips, tmp_path / "videos"))


def cli(*args, prelude: str = "", umask: int | None = None) -> subprocess.CompletedProcess:
    """`mcl-fast ARGS` in a subprocess; `prelude` runs first (a fault to inject)."""
    code = f"{prelude}\nimport sys\nfrom mcl_fast.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300, preexec_fn=preexec)


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def assert_like_a_fresh_prepare(store_path, videos: Path, tmp_path, names=NAMES) -> None:
    """The store's maps and entries (but where the bytes lie) equal a fresh prepare's of the same files."""
    fresh_path = tmp_path / "fresh"
    shutil.rmtree(fresh_path, ignore_errors=True)
    prepare([str(videos / n) for n in names], fresh_path, root=videos, **KW)
    got, fresh = MotionStore(store_path), MotionStore(fresh_path)
    assert got.videos == fresh.videos == sorted(names)
    for v in names:
        a, b = got.info(v), fresh.info(v)
        for key in ("shard", "offset"):
            a.pop(key), b.pop(key)
        assert a == b, v
        np.testing.assert_array_equal(got.read_quantized(v), fresh.read_quantized(v))


def flip_bytes(store_path, video: str, count: int = 20) -> None:
    """Flip `count` bytes inside the stored maps of `video` (as a failing disk would)."""
    info = MotionStore(store_path, verify=False).info(video)
    path = Path(store_path) / shard_name(info["shard"])
    data = bytearray(path.read_bytes())
    n = info["num_frames"] * info["map_height"] * info["map_width"]
    for k in np.random.default_rng(0).choice(n, size=min(count, n), replace=False):
        data[info["offset"] + int(k)] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------ finding 3: an older index restored


def test_an_older_index_restored_is_refused_not_cut_and_repair_keeps_the_bytes(videos, tmp_path):
    store = tmp_path / "store"
    assert cli("prepare", "--videos", videos / "a.mp4", "--root", videos, "--out", store, *SETTINGS).returncode == 0
    older = backup_index(store, tmp_path / "older")  # the backup: a.mp4 only
    assert cli("prepare", "--videos", videos, "--out", store, *SETTINGS).returncode == 0
    newer = backup_index(store, tmp_path / "newer")
    shard = store / shard_name(0)
    before_md5, before_size = md5(shard), shard.stat().st_size
    restore_index(older, store)  # restored from the backup

    refused = cli("prepare", "--videos", videos, "--out", store, *SETTINGS)
    assert refused.returncode == 2, refused.stderr
    accounted = MotionStore(store).info("a.mp4")["offset"] + _maps_bytes(store, "a.mp4")
    assert f"shard-00000.bin holds {before_size - accounted} bytes past the {accounted} its index accounts for" \
        in refused.stderr, refused.stderr
    assert "2 complete block(s)" in refused.stderr and "--repair" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert md5(shard) == before_md5  # not one byte cut (the old code truncated the shard to a.mp4's bytes)
    assert (store / INDEX).read_bytes() == (older / INDEX).read_bytes()  # nothing else changed either
    columns = {json.loads((b / INDEX).read_text())["columns"] for b in (older, newer)}
    assert {p.name for p in store.glob("columns-*")} == columns and len(columns) == 2  # the newer index's kept

    repaired = cli("prepare", "--videos", videos, "--out", store, *SETTINGS, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert "orphaned" in repaired.stdout and "prepared 2" in repaired.stdout
    assert shard.stat().st_size > before_size  # b and c appended after their kept (orphaned) blocks
    assert_like_a_fresh_prepare(store, videos, tmp_path)
    assert cli("prepare", "--videos", videos, "--out", store, *SETTINGS).returncode == 0  # settled: no refusal again
    # the kept bytes are the newer index's videos, intact: restoring that index reads them again
    restore_index(newer, store)
    newer_store = MotionStore(store)
    for v in NAMES:
        newer_store.check(v)


def backup_index(store: Path, backup: Path) -> Path:
    """Copy the store's index (index.json and the column folder it names) into `backup`."""
    backup.mkdir()
    shutil.copy2(store / INDEX, backup / INDEX)
    columns = json.loads((store / INDEX).read_text())["columns"]
    shutil.copytree(store / columns, backup / columns)
    return backup


def restore_index(backup: Path, store: Path) -> None:
    for p in backup.iterdir():
        if p.is_dir():
            shutil.rmtree(store / p.name, ignore_errors=True)
            shutil.copytree(p, store / p.name)
    shutil.copy2(backup / INDEX, store / INDEX)


def _maps_bytes(store, video) -> int:
    info = MotionStore(store).info(video)
    return info["num_frames"] * info["map_height"] * info["map_width"]


def test_a_killed_writers_leftovers_are_still_cut_silently(tmp_path):
    """Bytes past the last recorded video without a journal line (a torn block, a complete but
    uncommitted one, headerless bytes) are what a crash leaves: cut as ever, no refusal."""
    rng = np.random.default_rng(1)
    maps = [VideoMaps.from_maps(rng.random((4, 3, 5)).astype(np.float32), fps=25, height=48, width=64)
            for _ in range(3)]
    folder = tmp_path / "s"
    with StoreWriter(folder, root=tmp_path, flow="farneback", size=32) as w:
        w.add("a.mp4", maps[0])
        w.compact()
    good = (folder / shard_name(0)).stat().st_size
    for leftover in ("pending", "torn", "headerless"):
        w = StoreWriter(folder, root=tmp_path, flow="farneback", size=32)
        if leftover == "headerless":
            with open(folder / shard_name(0), "ab") as f:
                f.write(b"\x07" * 33)
        else:
            from mcl_fast._checksum import digest

            w._append(w.streams[0], maps[1].maps_u8, digest(maps[1].maps_u8))  # data fsynced, no journal line
            if leftover == "torn":
                os.truncate(folder / shard_name(0), good + HEADER_BYTES + 7)
        w.close()  # killed before the journal line
        assert (folder / shard_name(0)).stat().st_size > good
        with StoreWriter(folder, root=tmp_path, flow="farneback", size=32) as w:
            assert (folder / shard_name(0)).stat().st_size == good, leftover  # cut back
            assert w.orphaned == []
    assert MotionStore(folder).videos == ["a.mp4"]


# --------------------------------------------------------- finding 4: flipped bytes in a shard


def test_flipped_bytes_are_named_on_read_listed_by_verify_and_repaired_exactly(videos, tmp_path):
    store = tmp_path / "store"
    prepare(videos, store, **KW)
    untouched = {v: MotionStore(store).info(v) for v in ("a.mp4", "c.mp4")}
    flip_bytes(store, "b.mp4")

    reader = MotionStore(store)
    np.testing.assert_array_equal(reader.read_quantized("a.mp4"), MotionStore(store).read_quantized("a.mp4"))
    with pytest.raises(DamagedVideo, match=r"shard-00000\.bin: the motion maps of video 'b\.mp4' are damaged") as e:
        reader.read("b.mp4")  # the old code returned the garbage maps
    assert e.value.video == "b.mp4" and e.value.file == str(store / shard_name(0))
    assert repair_command(store) in str(e.value)
    for read in (reader.read_quantized, reader.motion_t, reader.motion_s):
        with pytest.raises(StoreError, match="b.mp4"):
            read("b.mp4")
    assert MotionStore(store, verify=False).read("b.mp4").shape[0] == 14  # opting out reads the bytes as they are

    listed = cli("verify", store)
    assert listed.returncode == 1
    damaged = [line for line in listed.stdout.splitlines() if "DAMAGED" in line]
    assert len(damaged) == 1 and "'b.mp4'" in damaged[0] and "shard-00000.bin" in damaged[0], listed.stdout
    assert "1 of 3 videos damaged" in listed.stdout

    rerun = cli("prepare", "--videos", videos, "--out", store, *SETTINGS)
    assert rerun.returncode == 1  # the old code: "skipped 3 already done", exit 0
    assert "skipped 2 already done" in rerun.stdout and "1 damaged" in rerun.stdout and "--repair" in rerun.stdout

    repaired = cli("prepare", "--out", store, "--repair")  # no --videos: the store's own videos and settings
    assert repaired.returncode == 0, repaired.stderr
    assert "prepared 1, skipped 2 already done" in repaired.stdout and "repaired 1 damaged" in repaired.stdout
    after = MotionStore(store)
    assert {v: after.info(v) for v in untouched} == untouched  # exactly b.mp4 was recomputed
    assert_like_a_fresh_prepare(store, videos, tmp_path)
    assert cli("verify", store).returncode == 0


def test_flipped_flows_and_magnitudes_of_an_official_store_are_detected(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "s"
    with StoreWriter(folder, root=tmp_path, flow="farneback", size=32, maps="official", window=8) as w:
        for name in ("a.mp4", "b.mp4"):
            n = 34
            w.add(name, VideoMaps.official(rng.integers(0, 255, (n, 7, 7), np.uint8), rng.random(2),
                                           rng.integers(0, 255, (n - 1, 4, 6, 2), np.uint8), fps=25, height=48,
                                           width=64))
        w.compact()
    store = MotionStore(folder)
    for prefix, key, read in (("flows", "flow", store.read_flows), ("mags", "mag", store.clip_magnitudes)):
        info = store.info("b.mp4")
        path = folder / shard_name(info[f"{key}_shard"], prefix)
        data = bytearray(path.read_bytes())
        data[info[f"{key}_offset"] + 3] ^= 0x10
        path.write_bytes(bytes(data))
        with pytest.raises(DamagedVideo, match=rf"{prefix}-00000\.bin.*'b\.mp4'"):
            read("b.mp4")
        read("a.mp4")
    assert [(d.video, Path(d.file).name) for d in check_store(folder).damage] == [
        ("b.mp4", "flows-00000.bin")]  # check() stops at the first damaged stream of a video


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loaders_report_a_damaged_video_once_and_replace_it(videos, tmp_path, num_workers):
    from mcl_fast.data import TorchVideoLoader

    store_path = tmp_path / "store"
    prepare(videos, store_path, **KW)
    flip_bytes(store_path, "b.mp4")
    store = MotionStore(store_path)
    ld = TorchVideoLoader(store.videos, store, 1, num_workers=num_workers, clip_len=4, stride=2, size=32,
                          drop_last=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(2):
            ld.set_epoch(epoch)
            got = [int(i) for batch in ld for i in batch["index"]]
            assert len(got) == 3 and store.videos.index("b.mp4") not in got  # replaced, the run goes on
    bad = str(videos / "b.mp4")
    assert list(ld.failures) == [bad] and "fail their checksum" in ld.failures[bad]
    messages = [str(w.message) for w in caught if bad in str(w.message)]
    assert len(messages) == 1 and "skipping video" in messages[0] and "shard-00000.bin" in messages[0]
    assert ld.num_replaced >= 2


def test_dalis_cpu_loader_reports_a_damaged_video_once_and_replaces_it(tmp_path):
    pytest.importorskip("nvidia.dali")
    from mcl_fast.data import MotionFocusedLoader

    videos = tmp_path / "vp9"
    for i, name in enumerate(("a.webm", "b.webm", "c.webm")):
        make_video(videos / name, num_frames=16, height=64, width=80, object_size=14, speed=2.0, gop=8, seed=60 + i)
    prepare(videos, tmp_path / "store", **KW)
    flip_bytes(tmp_path / "store", "b.webm")
    store = MotionStore(tmp_path / "store")
    ld = MotionFocusedLoader(store.videos, store, 1, device="cpu", num_threads=1, clip_len=4, stride=2, size=32,
                             drop_last=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [int(i) for batch in ld for i in batch["index"]]
    assert len(got) == 3 and store.videos.index("b.webm") not in got
    bad = str(videos / "b.webm")
    assert list(ld.failures) == [bad] and "fail their checksum" in ld.failures[bad]
    assert len([w for w in caught if bad in str(w.message)]) == 1


# ---------------------------------------------------------------- finding 10: a replaced source


def test_a_replaced_source_is_stale_and_the_loaders_advice_repairs_it(videos, tmp_path):
    from mcl_fast.data import TorchVideoLoader

    store_path = tmp_path / "store"
    prepare(videos, store_path, **KW)
    write_clip(videos / "b.mp4", 14, seed=99)  # other footage, same length and size
    with pytest.raises(ValueError, match="other content") as e:
        TorchVideoLoader(NAMES, MotionStore(store_path), 1, num_workers=0, clip_len=4, stride=2, size=32,
                         verify=True)
    advice = repair_command(store_path)
    assert f"`{advice}`" in str(e.value) and "rebuild the store" not in str(e.value)

    kept = cli("prepare", "--videos", videos, "--out", store_path, *SETTINGS)
    assert kept.returncode == 1 and "1 stale" in kept.stdout and "--repair" in kept.stdout  # old: "skipped 3"
    done = cli(*advice.split()[1:])  # the advice, word for word
    assert done.returncode == 0, done.stderr
    assert "repaired 0 damaged (checksum mismatch) and 1 stale" in done.stdout and "prepared 1" in done.stdout
    assert_like_a_fresh_prepare(store_path, videos, tmp_path)
    TorchVideoLoader(NAMES, MotionStore(store_path), 1, num_workers=0, clip_len=4, stride=2, size=32, verify=True)


# --------------------------------------------------------------------- finding 12: file modes


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_store_files_take_the_umasks_mode(videos, tmp_path, umask, mode):
    (videos / "bad.mp4").write_bytes(b"not a video")  # errors.json gets an entry
    store = tmp_path / "store"
    result = cli("prepare", "--videos", videos, "--out", store, *SETTINGS, umask=umask)
    assert result.returncode == 0, result.stderr
    columns = json.loads((store / INDEX).read_text())["columns"]
    modes = {str(p.relative_to(store)): stat.S_IMODE(p.stat().st_mode) for p in store.rglob("*") if p.is_file()}
    assert {"index.json", "errors.json", "shard-00000.bin", ".lock", f"{columns}/entries.npy"} <= set(modes)
    assert modes == dict.fromkeys(modes, mode), modes  # the old code: index.json and errors.json 0600
    assert stat.S_IMODE((store / columns).stat().st_mode) == 0o777 & ~umask


# ------------------------------------------------------------------- finding 13: clean failure


READ_ONLY = """
import errno, os
_open = os.open
def _read_only(path, flags, *args, **kw):
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    return _open(path, flags, *args, **kw)
os.open = _read_only
"""


def test_prepare_on_a_read_only_store(videos, tmp_path):
    store = tmp_path / "store"
    prepare(videos, store, **KW)
    done = cli("prepare", "--videos", videos, "--out", store, *SETTINGS, prelude=READ_ONLY)
    assert done.returncode == 0, done.stderr  # the old code: OSError traceback about .lock
    assert "skipped 3 already done" in done.stdout and done.stderr == ""
    write_clip(videos / "d.mp4", 12, seed=7)
    left = cli("prepare", "--videos", videos, "--out", store, *SETTINGS, prelude=READ_ONLY)
    assert left.returncode == 2 and "Traceback" not in left.stderr
    assert len(left.stderr.strip().splitlines()) == 1 and "1 videos are left" in left.stderr, left.stderr


DISK_FULL = """
import errno, os
_pwrite, _calls = os.pwrite, [0]
def _full(fd, data, offset):
    name = os.readlink(f"/proc/self/fd/{fd}")
    if name.endswith(".bin") and offset + len(data) > os.fstat(fd).st_size:  # a write that needs new space
        _calls[0] += 1
        if _calls[0] > 2:  # the first video's header and maps fit, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
    return _pwrite(fd, data, offset)
os.pwrite = _full
"""


def test_disk_full_during_prepare_is_one_line_and_the_store_stays_consistent(videos, tmp_path):
    store = tmp_path / "store"
    full = cli("prepare", "--videos", videos, "--out", store, *SETTINGS, prelude=DISK_FULL)
    assert full.returncode == 1, full.stderr
    said = [line for line in full.stderr.splitlines() if line.strip() and not line.startswith("prepare:")]  # no bar
    assert len(said) == 1 and "No space left on device" in said[0] and "shard-00000.bin" in said[0], full.stderr
    assert said[0].startswith("mcl-fast prepare: ") and "Traceback" not in full.stderr
    assert MotionStore(store).videos == ["a.mp4"] and check_store(store).damage == []
    assert cli("prepare", "--videos", videos, "--out", store, *SETTINGS).returncode == 0
    assert_like_a_fresh_prepare(store, videos, tmp_path)


@pytest.mark.parametrize("field, value, expected", [
    ("scale", -1, "positive"), ("num_frames", -4, ">= 1"), ("map_width", 2.5, "an integer"),
    ("offset", "0", "an integer"), ("num_frames", None, "missing"), ("offset", 10**6, "ends at byte"),
    ("shard", 3, "shard-00003.bin is missing")])
def test_an_entry_out_of_range_is_refused_at_open_naming_video_and_field(tmp_path, field, value, expected):
    folder = tmp_path / "s"
    with StoreWriter(folder, root=tmp_path, flow="farneback", size=32) as w:
        for name in ("a.mp4", "b.mp4"):
            w.add(name, VideoMaps.from_maps(np.ones((3, 4, 5), np.float32), fps=25, height=48, width=64))
        w.compact()
    index = to_legacy_index(folder)  # a hand-edited or damaged JSON index (the columns are checksummed)
    if value is None:
        del index["videos"]["b.mp4"][field]
    else:
        index["videos"]["b.mp4"][field] = value
    (folder / INDEX).write_text(json.dumps(index))
    for open_store in (MotionStore, lambda f: StoreWriter(f, root=tmp_path, flow="farneback", size=32)):
        with pytest.raises(StoreError, match=expected) as e:
            open_store(folder)  # the old code: negative maps (scale=-1), a KeyError, a reshape error
        assert "'b.mp4'" in str(e.value)
        if field in ("scale", "num_frames", "map_width"):
            assert f"field {field}" in str(e.value)


def test_a_store_written_before_checksums_still_reads_and_takes_new_videos(tmp_path):
    """A version-1 store as the earlier code wrote it: no block headers, no checksum fields."""
    folder = tmp_path / "s"
    folder.mkdir()
    q = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (folder / shard_name(0)).write_bytes(q.tobytes() * 2)
    entry = {"num_frames": 2, "fps": 25.0, "height": 48, "width": 64, "map_height": 3, "map_width": 4, "shard": 0,
             "scale": 2.0}
    index = {"format": "mcl_fast.motion_store", "version": 1, "root": str(tmp_path), "flow": "farneback", "size": 32,
             "map_downsample": 4, "map_dtype": "uint8",
             "videos": {"a.mp4": {**entry, "offset": 0}, "b.mp4": {**entry, "offset": q.nbytes}}}
    (folder / INDEX).write_text(json.dumps(index))
    store = MotionStore(folder)
    np.testing.assert_array_equal(store.read_quantized("b.mp4"), q)
    report = check_store(folder)
    assert report.damage == [] and report.checked == 2 and "before checksums" in report.notes[0]
    with StoreWriter(folder, root=tmp_path, flow="farneback", size=32) as w:
        w.add("c.mp4", VideoMaps.from_maps(np.ones((2, 3, 4), np.float32), fps=25, height=48, width=64))
        w.compact()
    store = MotionStore(folder)
    assert store.info("c.mp4")["offset"] == 2 * q.nbytes + HEADER_BYTES
    np.testing.assert_array_equal(store.read_quantized("a.mp4"), q)
    assert check_store(folder).damage == []


def test_verify_names_what_it_cannot_check(tmp_path):
    result = cli("verify", tmp_path / "nowhere")
    assert result.returncode == 1 and "no such file or folder" in result.stderr
    (tmp_path / "empty").mkdir()
    result = cli("verify", tmp_path / "empty")
    assert result.returncode == 1 and "not a motion store" in result.stdout
