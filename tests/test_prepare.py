"""`prepare` and `mcl-fast prepare`: maps, inputs, bad files, resuming after SIGKILL, worker crashes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mcl_fast.motion import compute_flow, motion_map
from mcl_fast.motion.maps import downsample_mean
from mcl_fast.motion.prepare import PrepareError, PrepareFailed, compute_video_maps, prepare
from mcl_fast.video_io import (CRASH_REASON, VideoListError, collect_videos, crash_tolerant_map, iter_frames, probe,
                               read_video_list)
from mcl_fast.data.synthetic import make_video
from mcl_fast.motion.store import HEADER_BYTES, JOURNAL, MotionStore

REPO = Path(__file__).resolve().parents[1]


def write_clip(path, num_frames=16, height=64, width=80, seed=0) -> Path:
    """A small clip of a textured square moving over a textured background (.mp4 H.264, .webm VP9)."""
    return Path(make_video(path, num_frames=num_frames, height=height, width=width, object_size=14,
                           speed=2.0, seed=seed).path)


@pytest.fixture(scope="module")
def good_videos(tmp_path_factory) -> tuple[Path, list[str]]:
    """Six good clips (H.264 and VP9, 16-24 frames) in a folder with a subfolder."""
    folder = tmp_path_factory.mktemp("videos")
    rels = ["a.mp4", "b.webm", "c.mp4", "sub/d.mp4", "sub/e.webm", "sub/f.mp4"]
    for i, rel in enumerate(rels):
        (folder / rel).parent.mkdir(exist_ok=True)
        write_clip(folder / rel, num_frames=16 + 2 * i, seed=i)
    return folder, rels


# ------------------------------------------------------------------------------ one video


def test_compute_video_maps_matches_the_reference_pipeline(good_videos):
    folder, _ = good_videos
    path = folder / "b.webm"
    vm = compute_video_maps(path, flow="farneback", size=64, map_downsample=4)
    gray = np.stack(list(iter_frames(path, size=64, gray=True)))
    assert gray.shape == (18, 64, 80)
    # the public API, all frames at once: flow -> eq. (1) -> block means
    expected = downsample_mean(motion_map(compute_flow(gray, method="farneback")), 4)
    assert (vm.num_frames, vm.height, vm.width) == (18, 64, 80)
    assert vm.fps == pytest.approx(25.0)
    assert vm.maps_u8.shape == (18, 16, 20) and vm.maps_u8.dtype == np.uint8
    np.testing.assert_array_equal(vm.maps_u8[-1], vm.maps_u8[-2])  # paper 3.1: last = the one before
    assert vm.scale == pytest.approx(float(expected.max()), rel=1e-6)
    assert np.abs(vm.dequantized() - expected).max() <= vm.max_abs_error * (1 + 1e-5)
    # the moving square's motion boundaries stand out of the static textured background
    assert vm.scale > 5 * float(np.median(expected))


def test_resizing_keeps_the_aspect_ratio(good_videos):
    folder, _ = good_videos
    frames = list(iter_frames(folder / "a.mp4", size=128, gray=False))
    assert frames[0].shape == (128, 160, 3) and len(frames) == 16
    info = probe(folder / "a.mp4")
    assert (info["num_frames"], info["height"], info["width"], info["codec"]) == (16, 64, 80, "h264")
    vm = compute_video_maps(folder / "a.mp4", flow="farneback", size=128, map_downsample=4)
    assert vm.maps_u8.shape == (16, 32, 40) and (vm.height, vm.width) == (64, 80)


# -------------------------------------------------------------------------------- inputs


def test_list_files_folders_and_python_lists(tmp_path, good_videos):
    folder, rels = good_videos
    listing = tmp_path / "trainlist01.txt"
    listing.write_text("# UCF101 style\n"
                       "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                       "\n"
                       "   Archery/v_Archery_g01_c01.avi    3   \n"
                       "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                       "#Archery/commented_out.avi 3\n"
                       "Basketball/v_Basketball_g01_c01.avi\n")
    assert read_video_list(listing) == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Archery/v_Archery_g01_c01.avi",
                                        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
                                        "Basketball/v_Basketball_g01_c01.avi"]
    root, found = collect_videos(listing)
    assert root == str(tmp_path)  # relative to the list file's folder
    assert found == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Archery/v_Archery_g01_c01.avi",
                     "Basketball/v_Basketball_g01_c01.avi"]  # duplicates dropped, order kept
    root, _ = collect_videos(listing, root=tmp_path / "UCF-101")
    assert root == str(tmp_path / "UCF-101")

    (folder / "notes.txt").write_text("not a video")
    (folder / ".hidden.mp4").write_bytes(b"")
    (folder / "UPPER.MKV").write_bytes(b"")
    try:
        root, found = collect_videos(folder)
        assert root == str(folder) and found == sorted(rels + ["UPPER.MKV"])
    finally:
        for name in ("notes.txt", ".hidden.mp4", "UPPER.MKV"):
            (folder / name).unlink()

    root, found = collect_videos([str(folder / "a.mp4"), "sub/d.mp4"], root=folder)
    assert root == str(folder) and found == ["a.mp4", "sub/d.mp4"]
    with pytest.raises(VideoListError, match="no such folder or list file"):
        collect_videos(tmp_path / "absent")
    with pytest.raises(PrepareError, match="no such folder or list file"):  # prepare says it as an InputError
        prepare(tmp_path / "absent", tmp_path / "store", progress=False)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(VideoListError, match="no videos found"):
        collect_videos(tmp_path / "empty.txt")


# ---------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, good_videos) -> tuple[Path, dict[str, str]]:
    """A folder of every kind of bad input, and the word its reason must contain."""
    folder = tmp_path_factory.mktemp("bad")
    good = (good_videos[0] / "c.mp4").read_bytes()
    rng = np.random.default_rng(0)
    corrupt = bytearray(good)
    k, start = len(good) // 10, len(good) // 2 - len(good) // 20
    corrupt[start:start + k] = rng.integers(0, 256, k, dtype=np.uint8).tobytes()  # random bytes mid-file
    (folder / "corrupt.mp4").write_bytes(bytes(corrupt))
    (folder / "truncated.mp4").write_bytes(good[: len(good) // 2])  # the first half
    webm = (good_videos[0] / "b.webm").read_bytes()
    (folder / "truncated.webm").write_bytes(webm[: len(webm) // 2])
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n" * 20)
    expected = {"corrupt.mp4": "corrupt", "truncated.mp4": "truncated", "truncated.webm": "truncated",
                "zero.mp4": "empty file", "text.mp4": "not a video",
                "missing/gone.mp4": "not found"}
    return folder, expected


def test_every_bad_input_is_reported_not_raised(tmp_path, good_videos, bad_inputs, capsys):
    good_folder, good_rels = good_videos
    bad_folder, expected = bad_inputs
    root = tmp_path / "data"
    root.mkdir()
    (root / "good").symlink_to(good_folder)
    (root / "bad").symlink_to(bad_folder)
    listing = root / "list.txt"
    entries = [f"good/{r}" for r in good_rels[:3]] + [f"bad/{r}" for r in expected]
    listing.write_text("\n".join(f"{e} 1" for e in entries) + "\n")

    report = prepare(listing, tmp_path / "store", flow="farneback", size=64, workers=0, progress=True)
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary == f"prepared 3, skipped 0 already done, 6 errors (see {tmp_path / 'store' / 'errors.json'})"
    assert report.done == 3 and report.skipped_existing == 0
    reasons = {e["path"]: e["reason"] for e in report.errors}
    assert sorted(reasons) == sorted(f"bad/{r}" for r in expected)
    for rel, word in expected.items():
        assert word in reasons[f"bad/{rel}"], (rel, reasons[f"bad/{rel}"])
    on_disk = json.loads((tmp_path / "store" / "errors.json").read_text())
    assert {e["path"]: e["reason"] for e in on_disk} == reasons
    store = MotionStore(tmp_path / "store")
    assert store.videos == [f"good/{r}" for r in good_rels[:3]]  # the good ones are all there
    assert store.read("good/a.mp4").shape == (16, 16, 20)

    # --strict: the same run through the CLI exits 1; errors are skipped, not retried, by default
    from mcl_fast.cli import main

    args = ["prepare", "--videos", str(listing), "--out", str(tmp_path / "store"), "--flow", "farneback",
            "--size", "64", "--workers", "0"]
    assert main(args + ["--strict"]) == 1
    assert "prepared 0, skipped 3 already done, 6 errors" in capsys.readouterr().out
    assert main(args) == 0
    # --retry-errors tries them again (and they fail again)
    (bad_folder / "text.mp4").rename(bad_folder / "text.mp4.bak")
    write_clip(bad_folder / "text.mp4", num_frames=6)  # fixed meanwhile
    try:
        assert main(args + ["--retry-errors", "--strict"]) == 1
        assert "prepared 1, skipped 3 already done, 5 errors" in capsys.readouterr().out
    finally:
        (bad_folder / "text.mp4.bak").replace(bad_folder / "text.mp4")
    assert "bad/text.mp4" in MotionStore(tmp_path / "store")
    with pytest.raises(PrepareFailed) as info:
        prepare(listing, tmp_path / "store", flow="farneback", size=64, workers=0, strict=True, progress=False)
    # text.mp4's maps were made from the fixed file, which is gone again: stale, not silently "done"
    assert len(info.value.report.errors) == 5 and info.value.report.skipped_existing == 3
    assert info.value.report.stale == ["bad/text.mp4"] and info.value.report.needs_repair


def test_cli_setting_errors_exit_2_without_a_traceback(tmp_path, good_videos, capsys):
    from mcl_fast.cli import main

    folder, _ = good_videos
    out = str(tmp_path / "store")
    assert main(["prepare", "--videos", str(folder / "a.mp4"), "--out", out, "--flow", "farneback",
                 "--size", "32", "--workers", "0"]) == 0
    assert MotionStore(out).videos == ["a.mp4"]
    assert main(["prepare", "--videos", str(folder / "a.mp4"), "--out", out, "--flow", "tvl1", "--size", "32"]) == 2
    assert "prepared with flow 'farneback'" in capsys.readouterr().err
    assert main(["prepare", "--videos", str(tmp_path / "absent"), "--out", out]) == 2
    assert "no such folder" in capsys.readouterr().err
    from mcl_fast._backend import has_gpu

    if not has_gpu():  # --device cuda fails once, up front, before touching the store
        assert main(["prepare", "--videos", str(folder), "--out", str(tmp_path / "gpu"), "--device", "cuda"]) == 2
        assert "--device cuda cannot run here" in capsys.readouterr().err
        assert not (tmp_path / "gpu").exists()
    # Farneback has no GPU twin: refused before the store exists, on any machine.
    assert main(["prepare", "--videos", str(folder), "--out", str(tmp_path / "fb"), "--device", "cuda",
                 "--flow", "farneback"]) == 2
    assert "TV-L1 flow only" in capsys.readouterr().err
    assert not (tmp_path / "fb").exists()


def test_official_maps_match_the_release_transcription(tmp_path):
    """compute_official_video_maps = the public pieces of motion.official on an independent decode
    and flow: encode_flow of each pair's flow, official_frame_maps cast to uint8, the clip
    magnitudes, and the encoded flows themselves."""
    from mcl_fast.motion.official import (encode_flow, frame_maps_to_uint8, official_clip_magnitudes,
                                          official_frame_maps)
    from mcl_fast.motion.store_official import compute_official_video_maps

    path = write_clip(tmp_path / "long.webm", num_frames=40, height=48, width=64, seed=7)
    gray = np.stack(list(iter_frames(path, size=48, gray=True)))
    encoded = encode_flow(compute_flow(gray, method="farneback")[:-1])  # the N - 1 real flows
    vm = compute_official_video_maps(path, flow="farneback", size=48, window=4)
    assert (vm.num_frames, vm.height, vm.width, vm.scale) == (40, 48, 64, 255.0)
    np.testing.assert_array_equal(vm.flows, encoded)
    np.testing.assert_array_equal(vm.maps_u8, frame_maps_to_uint8(official_frame_maps(encoded, 4)))
    starts, magnitudes = official_clip_magnitudes(encoded)
    assert len(starts) == 40 - 32
    np.testing.assert_array_equal(vm.magnitudes, magnitudes)
    assert vm.maps_u8.max() > 0 and magnitudes.min() > 0  # the moving square shows
    assert not np.array_equal(vm.maps_u8, frame_maps_to_uint8(official_frame_maps(encoded, 8)))  # the window counts
    one = compute_official_video_maps(write_clip(tmp_path / "one.webm", num_frames=1, height=48, width=64),
                                      flow="farneback", size=24, window=4)
    assert one.maps_u8.shape == (1, 7, 7) and not one.maps_u8.any()
    assert one.flows.shape == (0, 24, 32, 2) and one.magnitudes.tolist() == [0.0]


def test_cli_official_store_resumes_and_refuses_what_it_cannot_do(tmp_path, good_videos, capsys):
    from mcl_fast.cli import main

    folder, rels = good_videos
    out = str(tmp_path / "store")
    args = ["prepare", "--videos", str(folder), "--out", out, "--flow", "farneback", "--size", "32", "--workers", "0",
            "--maps", "official", "--window", "4"]
    assert main(args) == 0
    store = MotionStore(out)
    assert store.official and store.window == 4 and store.videos == sorted(rels)
    for v in rels:
        assert store.read_flows(v).shape[:3] == (store.info(v)["num_frames"] - 1, 32, 40)
    capsys.readouterr()
    assert main(args) == 0
    assert f"prepared 0, skipped {len(rels)} already done" in capsys.readouterr().out
    assert main(args[:-1] + ["8"]) == 2
    assert "window 4 (asked for 8)" in capsys.readouterr().err
    assert main(args[:-4]) == 2  # a paper run on the official store
    assert "maps 'official' (asked for 'paper')" in capsys.readouterr().err
    assert main(args[:-4] + ["--window", "4", "--out", str(tmp_path / "w")]) == 2
    assert "it needs --maps official" in capsys.readouterr().err
    assert main(args + ["--device", "cuda", "--flow", "tvl1", "--out", str(tmp_path / "gpu")]) == 2
    assert "--maps official runs on the CPU only" in capsys.readouterr().err
    assert not (tmp_path / "w").exists() and not (tmp_path / "gpu").exists()


def test_cli_commands_not_built_yet_say_so(capsys, monkeypatch):
    from mcl_fast import cli

    monkeypatch.setitem(cli.COMMANDS, "transcode", ("mcl_fast.data.no_such_module_yet", "x"))
    assert cli.main(["transcode", "--help"]) == 2
    err = capsys.readouterr().err
    assert "not available" in err and "Traceback" not in err
    assert cli.main([]) == 2
    assert "prepare" in capsys.readouterr().err


# ------------------------------------------------------------------------------ resuming


def _journal_lines(store: Path) -> int:
    try:
        return (store / JOURNAL).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("maps", ["paper", "official"])
def test_prepare_survives_sigkill_and_resumes_without_recomputing(tmp_path, good_videos, maps):
    folder, rels = good_videos
    store = tmp_path / "store"
    official = dict(maps="official", window=4) if maps == "official" else {}
    cmd = [sys.executable, "-m", "mcl_fast.cli", "prepare", "--videos", str(folder), "--out", str(store),
           "--flow", "farneback", "--size", "128", "--workers", "1"] + (
        ["--maps", "official", "--window", "4"] if official else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while _journal_lines(store) < 1:
            assert proc.poll() is None, f"prepare ended before the kill: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no video finished within 120 s"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job: the main process and its worker
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    killed = MotionStore(store)  # valid as it stands: index.json + the journal's complete lines
    finished = killed.videos
    assert 1 <= len(finished) < len(rels), finished
    before = {v: (killed.info(v), killed.read_quantized(v).copy()) for v in finished}
    flows_before = {v: killed.read_flows(v).copy() for v in finished} if official else {}
    for v in finished:
        assert killed.read(v).shape[0] == killed.info(v)["num_frames"]

    report = prepare(folder, store, flow="farneback", size=128, workers=0, progress=False, **official)
    assert report.skipped_existing == len(finished)  # finished videos were not recomputed
    assert report.done == len(rels) - len(finished) and report.errors == []
    after = MotionStore(store)
    assert after.videos == sorted(rels)
    for v, (info, q) in before.items():
        assert after.info(v) == info  # same shard, same offset, same scale
        np.testing.assert_array_equal(after.read_quantized(v), q)
    ends = sorted((after.info(v)["offset"], after.info(v)["offset"] + after.read_quantized(v).nbytes) for v in rels)
    # no gap but each block's header: the killed run's partial bytes were cut
    assert all(a[1] + HEADER_BYTES == b[0] for a, b in zip(ends, ends[1:]))
    assert (store / "shard-00000.bin").stat().st_size == ends[-1][1]
    assert not (store / JOURNAL).exists()
    if official:
        for v, flows in flows_before.items():
            np.testing.assert_array_equal(after.read_flows(v), flows)
        assert (store / "flows-00000.bin").stat().st_size == sum(HEADER_BYTES + after.read_flows(v).nbytes
                                                                 for v in rels)
        assert (store / "mags-00000.bin").stat().st_size == sum(HEADER_BYTES + after.clip_magnitudes(v).nbytes
                                                                for v in rels)


def _die_on_b(task):
    """Stands in for the per-video work: the worker process dies on b.webm (a decoder crash)."""
    path, rel = task
    if rel == "b.webm":
        os._exit(11)
    return rel, compute_video_maps(path, flow="farneback", size=32), None


def test_a_worker_that_dies_costs_only_its_video(good_videos):
    folder, rels = good_videos
    tasks = [(str(folder / r), r) for r in rels[:3]]
    results = {rel: (maps, reason) for rel, maps, reason in
               crash_tolerant_map(_die_on_b, tasks, 2, on_crash=lambda task: (task[1], None, CRASH_REASON))}
    assert sorted(results) == sorted(rels[:3])
    assert results["b.webm"] == (None, CRASH_REASON)
    for rel in ("a.mp4", "c.mp4"):
        maps, reason = results[rel]
        assert reason is None and maps.maps_u8.shape[1:] == (8, 10)


def test_a_prepare_rerun_converts_a_store_with_the_older_json_index(tmp_path, good_videos):
    from store_legacy import to_legacy_index

    folder, rels = good_videos
    store = tmp_path / "store"
    kw = dict(flow="farneback", size=32, map_downsample=4, workers=0, progress=False)
    prepare([folder / r for r in rels[:2]], store, root=folder, **kw)
    before = MotionStore(store)
    maps = {r: before.read_quantized(r).copy() for r in before.names}
    to_legacy_index(store)
    assert "videos" in json.loads((store / "index.json").read_text())
    report = prepare([folder / r for r in rels[:2]], store, root=folder, **kw)
    assert report.done == 0 and report.skipped_existing == 2
    assert "videos" not in json.loads((store / "index.json").read_text())  # converted
    after = MotionStore(store)
    for r, q in maps.items():
        np.testing.assert_array_equal(after.read_quantized(r), q)
