"""`mcl-fast transcode`: short closed GOPs, frame count and rate kept, resumable, atomic, errors listed."""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest

from mcl_fast.data.synthetic import make_video
from mcl_fast.data.transcode import add_args, output_size, run, transcode


def keyframes_and_rate(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keys = [i for i, p in enumerate(p for p in container.demux(stream) if p.size > 0) if p.is_keyframe]
        rate, codec = stream.average_rate, stream.codec_context.name
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    return keys, rate, codec, frames


def psnr(a, b) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255.0 ** 2 / mse) if mse else float("inf")


@pytest.mark.parametrize("codec,ext,name", [("vp9", ".webm", "vp9"), ("h264", ".mp4", "h264")])
def test_real_clip_gets_closed_gops_and_keeps_frames(carphone_path, tmp_path, codec, ext, name):
    out = tmp_path / f"carphone{ext}"
    info = transcode(carphone_path, out, codec=codec, gop=16)
    keys, rate, got_codec, frames = keyframes_and_rate(out)
    src_keys, src_rate, _, src = keyframes_and_rate(carphone_path)
    assert info["num_frames"] == len(frames) == len(src) == 120
    assert rate == src_rate and abs(info["fps"] - float(src_rate)) < 1e-6
    assert got_codec == name
    assert keys == list(range(0, 120, 16))  # a keyframe every 16 frames and nowhere else
    assert min(psnr(a, b) for a, b in zip(frames, src)) > 30  # the same pictures
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_short_side_and_even_sizes(tmp_path):
    src = make_video(tmp_path / "in.mp4", num_frames=12, height=64, width=80, object_size=10, seed=0).path
    info = transcode(src, tmp_path / "out.webm", codec="vp9", gop=4, short_side=45)
    assert (info["height"], info["width"]) == (44, 56)  # 45 x 56.25, rounded, then even
    assert output_size(31, 47, None) == (30, 46)
    keys, _, _, frames = keyframes_and_rate(tmp_path / "out.webm")
    assert frames.shape == (12, 44, 56, 3) and keys == [0, 4, 8]
    with pytest.raises(ValueError, match="codec"):
        transcode(src, tmp_path / "x.avi", codec="mpeg2")


def _cli(*argv) -> int:
    parser = argparse.ArgumentParser()
    add_args(parser)
    return run(parser.parse_args(list(argv)))


def test_dataset_run_is_parallel_resumable_and_lists_failures(tmp_path, capsys):
    src = tmp_path / "src"
    make_video(src / "a.mp4", num_frames=20, height=48, width=64, object_size=10, seed=1)
    make_video(src / "sub" / "b.mp4", num_frames=17, height=48, width=64, object_size=10, seed=2)
    (src / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 64)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / ".b.tmp999.webm").write_bytes(b"left by a killed run")
    rc = _cli("--videos", str(src), "--out", str(out), "--codec", "vp9", "--gop", "8", "--workers", "2",
              "--no-progress")
    assert rc == 1  # one input failed
    assert "2 written, 0 already there, 1 failed" in capsys.readouterr().out
    errors = json.loads((out / "transcode_errors.json").read_text())
    assert [e["path"] for e in errors] == ["broken.mp4"] and errors[0]["reason"]
    assert not (out / "sub" / ".b.tmp999.webm").exists()
    for rel, n in (("a.webm", 20), ("sub/b.webm", 17)):
        keys, rate, codec, frames = keyframes_and_rate(out / rel)
        assert len(frames) == n and float(rate) == 25 and codec == "vp9" and keys == list(range(0, n, 8))
    stamp = os.stat(out / "a.webm").st_mtime_ns
    (src / "broken.mp4").unlink()
    rc = _cli("--videos", str(src), "--out", str(out), "--codec", "vp9", "--gop", "8", "--workers", "1",
              "--no-progress")
    assert rc == 0 and "0 written, 2 already there, 0 failed" in capsys.readouterr().out
    assert os.stat(out / "a.webm").st_mtime_ns == stamp  # not re-encoded
    assert json.loads((out / "transcode_errors.json").read_text()) == []
    (out / "a.webm").write_bytes(b"a damaged output")  # not a video any more: redone
    assert _cli("--videos", str(src), "--out", str(out), "--gop", "8", "--workers", "1", "--no-progress") == 0
    assert "1 written, 1 already there" in capsys.readouterr().out
    assert _cli("--videos", str(tmp_path / "nowhere"), "--out", str(out), "--no-progress") == 2


def _dies_on_crash_files(task):
    """A task function whose worker process dies (as on a decoder segfault) on files named crash*."""
    from mcl_fast.data.transcode import _task

    if os.path.basename(task.rel).startswith("crash"):
        os._exit(11)
    return _task(task)


def test_a_crashing_worker_is_recorded_and_the_run_goes_on(tmp_path):
    from mcl_fast.data.transcode import Task, TranscodeReport, check_settings, run_tasks

    src = make_video(tmp_path / "a.mp4", num_frames=8, height=32, width=48, object_size=8, seed=3).path
    settings = check_settings("vp9", 4, None, None)
    out = tmp_path / "out"
    tasks = [Task(str(src), "crash.mp4", str(out / "crash.webm"), str(out), "crash.webm", settings),
             Task(str(src), "a.mp4", str(out / "a.webm"), str(out), "a.webm", settings)]
    report = TranscodeReport(out=str(tmp_path / "out"))

    class Bar:
        def write(self, msg):
            pass

        def update(self, n):
            pass

    run_tasks(tasks, 2, report, Bar(), fn=_dies_on_crash_files)
    assert report.done == ["a.mp4"] and list(report.errors) == ["crash.mp4"]
    assert "worker process died" in report.errors["crash.mp4"]
    assert keyframes_and_rate(tmp_path / "out" / "a.webm")[3].shape == (8, 32, 48, 3)
