"""Issue 18, transcode's and video_io's findings, as a careless or hostile user meets them: writes
confined under --out (1), option values checked at the door and outputs of other settings not
kept (5), a symlink loop in --videos (8), a video whose size changes mid-stream (9), two runs into
one --out and a killed run (11), a full disk and a read-only --out (13). Subprocesses run the real
CLI where a process boundary matters (a kill, the one-line error of cli.main)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcl_fast.data.synthetic import make_video

REPO = Path(__file__).resolve().parents[1]
TINY = dict(num_frames=8, height=32, width=48, object_size=8)


def tiny_video(path, seed=0, **kw):
    return make_video(path, **{**TINY, **kw}, seed=seed).path


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def snapshot(folder: Path, skip: Path | None = None) -> dict:
    """{relpath: (size, mtime_ns, md5)} of every file under folder, leaving out `skip`'s tree."""
    found = {}
    for dirpath, _, names in os.walk(folder):
        if skip is not None and Path(dirpath).is_relative_to(skip):
            continue
        for name in names:
            p = Path(dirpath) / name
            st = p.stat()
            found[p.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns, md5(p))
    return found


def cli(*argv, timeout=120) -> subprocess.CompletedProcess:
    """`mcl-fast ARGV` in a fresh process (PYTHONPATH: this checkout)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "mcl_fast.cli", *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def run_cli(*argv) -> int:
    """`mcl-fast ARGV` in this process (argparse errors exit 2 through SystemExit)."""
    from mcl_fast.cli import main

    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code)


def transcode_args(videos, out, *extra):
    return ["transcode", "--videos", videos, "--out", out, "--codec", "vp9", "--gop", "4", "--workers", "1",
            "--no-progress", *extra]


# ------------------------------------------------------------------ 1: writes confined under --out


def test_list_entries_above_the_list_and_absolute_paths_never_leave_out(tmp_path):
    """Finding 1: a split file listing `../videos/clip.mp4` with --codec h264 replaced the source by
    its re-encode; an absolute entry was written outside --out too."""
    clip = tiny_video(tmp_path / "videos" / "clip.mp4", seed=1)
    elsewhere = tiny_video(tmp_path / "other" / "abs.mp4", seed=2)
    split = tmp_path / "lists" / "split.txt"
    split.parent.mkdir()
    split.write_text(f"../videos/clip.mp4 1\n{elsewhere} 2\n")
    out = tmp_path / "h264"
    before = snapshot(tmp_path)
    sums = {clip: md5(clip), elsewhere: md5(elsewhere)}

    done = cli("transcode", "--videos", split, "--out", out, "--codec", "h264", "--gop", "4", "--workers", "1",
               "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "2 written" in done.stdout
    assert {p: md5(p) for p in sums} == sums  # the sources untouched
    assert snapshot(tmp_path, skip=out) == before  # nothing written outside --out
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert outputs == ["__up__/other/abs.mp4", "__up__/videos/clip.mp4"]
    from mcl_fast.data.transcode import read_sources
    from mcl_fast.video_io import file_fingerprint

    sources = read_sources(out)
    assert sources["__up__/videos/clip.mp4"]["source"] == "../videos/clip.mp4"
    assert sources["__up__/videos/clip.mp4"]["source_fingerprint"] == file_fingerprint(clip)


def test_an_output_onto_a_source_or_through_a_link_out_of_out_is_refused(tmp_path):
    from mcl_fast.data.transcode import output_relpath, plan_outputs

    a = tiny_video(tmp_path / "a.mp4", seed=1)
    x_a = tiny_video(tmp_path / "x" / "a.mp4", seed=2)
    listing = tmp_path / "list.txt"
    listing.write_text("x/a.mp4\na.mp4\n")
    sums = (md5(a), md5(x_a))
    # --out x (inside the list's folder, which is not scanned): a.mp4's output would be x/a.mp4, a source
    with pytest.raises(ValueError, match=r"a\.mp4: its output .* would replace the source video"):
        plan_outputs(listing, tmp_path / "x", "h264")
    assert run_cli(*transcode_args(listing, tmp_path / "x", "--codec", "h264")) == 2

    # a folder under --out that is a link to the videos: the outputs would land beside the sources
    videos = tmp_path / "videos"
    tiny_video(videos / "sub" / "b.mp4", seed=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(videos / "sub")
    with pytest.raises(ValueError, match=r"sub/b\.mp4: its output .* outside --out"):
        plan_outputs(videos, out, "vp9")
    assert run_cli(*transcode_args(videos, out)) == 2
    assert sorted(p.name for p in (videos / "sub").iterdir()) == ["b.mp4"]
    assert (md5(a), md5(x_a)) == sums and sorted(p.name for p in out.iterdir()) == ["sub"]
    # distinct sources keep distinct outputs, all under OUT
    assert output_relpath("../../d/e.avi", "vp9") == "__up__/__up__/d/e.webm"
    assert output_relpath("a/./b/../c.mp4", "h264") == "a/c.mp4"
    with pytest.raises(ValueError, match="not a relative path"):
        output_relpath("/abs/x.mp4", "vp9")


def test_out_inside_the_videos_folder_is_refused_unless_asked(tmp_path):
    """Finding 11: --out inside the videos folder re-encoded its own outputs on the next run."""
    videos = tmp_path / "videos"
    tiny_video(videos / "a.mp4", seed=1)
    out = videos / "h264"
    assert run_cli(*transcode_args(videos, out)) == 2
    assert not out.exists()  # refused before anything was written
    assert run_cli(*transcode_args(videos, videos)) == 2
    assert run_cli(*transcode_args(videos, out, "--allow-out-inside-videos")) == 0
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.webm")] == ["a.webm"]
    from mcl_fast.data.transcode import transcode_dataset

    report = transcode_dataset(videos, out, codec="vp9", gop=4, progress=False, allow_out_inside_videos=True)
    assert (report.done, report.skipped) == ([], ["a.mp4"])  # its outputs are not inputs
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.webm")] == ["a.webm"]


# --------------------------------------------------------- 11: one run per --out, kills, leftovers


def test_a_second_run_into_the_same_out_is_refused_and_touches_nothing(tmp_path):
    """Finding 11: two runs into one --out deleted each other's temporary files."""
    import fcntl

    videos = tmp_path / "videos"
    tiny_video(videos / "a.mp4", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    live_tmp = out / ".a.tmp4242.webm"  # as the live run's encoder would have it
    live_tmp.write_bytes(b"being encoded")
    fd = os.open(out / ".transcode.lock", os.O_RDWR | os.O_CREAT)  # the live run holds its lock, as a run does
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        refused = cli(*transcode_args(videos, out))
    finally:
        os.close(fd)
    assert refused.returncode == 2
    assert f"being written by another transcode (pid {os.getpid()})" in refused.stderr
    assert live_tmp.read_bytes() == b"being encoded" and not (out / "a.webm").exists()
    # the live run gone (killed: its lock went with it), the next run removes what it left
    assert run_cli(*transcode_args(videos, out)) == 0
    assert not live_tmp.exists() and (out / "a.webm").exists()


PAUSE_BEFORE_FIRST_RENAME = """
import os, sys, time
from pathlib import Path
real_replace, marker = os.replace, Path(os.environ["PAUSE_MARKER"])
def replace(src, dst, *a, **kw):
    if str(dst).endswith(".webm") and not marker.with_suffix(".go").exists():
        marker.write_text(str(src))  # the encoded file waits under its temporary name
        while not marker.with_suffix(".go").exists():
            time.sleep(0.02)
    return real_replace(src, dst, *a, **kw)
os.replace = replace
from mcl_fast.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_transcode_processes_into_one_out_the_second_refuses(tmp_path):
    """Finding 11 with two real processes: while the first holds a finished encode under its
    temporary name, a second run into the same --out refuses and leaves it alone."""
    from mcl_fast.data.transcode import read_sources

    videos = tmp_path / "videos"
    for i in range(2):
        tiny_video(videos / f"v{i}.mp4", seed=i)
    out = tmp_path / "out"
    marker = tmp_path / "paused"
    env = dict(os.environ, PAUSE_MARKER=str(marker),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    first = subprocess.Popen([sys.executable, "-c", PAUSE_BEFORE_FIRST_RENAME, *map(str, transcode_args(videos, out))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), first.communicate()
        tmp = Path(marker.read_text())
        second = cli(*transcode_args(videos, out))
        assert second.returncode == 2 and "being written by another transcode" in second.stderr, second.stderr
        assert tmp.exists() and not (out / "v0.webm").exists()  # the first run's work untouched
    finally:
        marker.with_suffix(".go").write_text("")
        stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 0 and "2 written" in stdout, stderr
    assert sorted(read_sources(out)) == ["v0.webm", "v1.webm"]


KILL_AFTER_FIRST_RENAME = """
import os, signal, sys
real_replace = os.replace
def replace(src, dst, *a, **kw):
    real_replace(src, dst, *a, **kw)
    if str(dst).endswith(".webm"):  # the first output is in place: die before anything else happens
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from mcl_fast.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_right_after_an_output_is_renamed_leaves_it_recorded(tmp_path):
    """Finding 11: a file finished in a killed transcode never entered transcode_sources.json."""
    from mcl_fast.data.transcode import read_sources
    from mcl_fast.video_io import file_fingerprint

    videos = tmp_path / "videos"
    for i in range(3):
        tiny_video(videos / f"v{i}.mp4", seed=i)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_RENAME, *map(str, transcode_args(videos, out))],
                            capture_output=True, text=True, env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = [p.relative_to(out).as_posix() for p in out.rglob("*.webm") if not p.name.startswith(".")]
    assert finished == ["v0.webm"]
    sources = read_sources(out)  # what the loaders read, with no rerun in between
    assert sources["v0.webm"]["fingerprint"] == file_fingerprint(out / "v0.webm")
    assert sources["v0.webm"]["source_fingerprint"] == file_fingerprint(videos / "v0.mp4")

    assert run_cli(*transcode_args(videos, out)) == 0  # the rerun folds the record and skips the file
    record = json.loads((out / "transcode_sources.json").read_text())
    assert sorted(record["files"]) == ["v0.webm", "v1.webm", "v2.webm"]
    assert record["files"]["v0.webm"] == sources["v0.webm"]
    assert not list((out / ".transcode-pending").glob("*"))


def test_leftovers_of_a_killed_run_are_removed_by_the_next(tmp_path):
    videos = tmp_path / "videos"
    tiny_video(videos / "a.mp4", seed=1)
    out = tmp_path / "out"
    assert run_cli(*transcode_args(videos, out)) == 0
    pending = out / ".transcode-pending"
    pending.mkdir(exist_ok=True)
    left = [out / ".b.tmp777.webm", out / "sub" / ".c.tmp9.mp4", out / ".transcode_sources.json.k3j4.tmp",
            pending / ".0123.json.zz.tmp"]
    for p in left:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half")
    # a record written just before a kill, its output never renamed into place: ignored, removed
    (pending / "feed.json").write_text(json.dumps({"output": "gone.webm", "record": {"fingerprint": "x"}}))
    keep = out / "notes.tmp"
    keep.write_text("the user's")
    from mcl_fast.data.transcode import read_sources

    assert "gone.webm" not in read_sources(out)
    assert run_cli(*transcode_args(videos, out)) == 0
    assert not [p for p in left if p.exists()] and not list(pending.glob("*")) and keep.exists()


# ----------------------------------------------------------- 5: option values, settings of outputs


@pytest.mark.parametrize("args,words", [
    (("--short-side", "0"), "--short-side: must be an integer from 16 to 8192, got 0"),
    (("--short-side", "-5"), "--short-side: must be an integer from 16 to 8192, got -5"),
    (("--short-side", "1"), "--short-side: must be an integer from 16 to 8192, got 1"),
    (("--gop", "0"), "--gop: must be an integer from 1 to 1000, got 0"),
    (("--crf", "999"), "--crf: must be an integer from 0 to 63, got 999"),
    (("--codec", "h264", "--crf", "60"), "--crf must be an integer from 0 to 51 for h264, got 60"),
    (("--workers", "0"), "--workers: must be an integer from 1 to 512, got 0"),
    (("--gop", "x"), "--gop: must be an integer from 1 to 1000, got 'x'"),
])
def test_bad_option_values_are_refused_before_any_output(tmp_path, capsys, args, words):
    """Finding 5: --short-side 0/-5/1 wrote 2x2 videos; --gop 0 and --crf 999 failed per file."""
    tiny_video(tmp_path / "videos" / "a.mp4")
    out = tmp_path / "out"
    assert run_cli(*transcode_args(tmp_path / "videos", out)[:-3], *args, "--no-progress") == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_bad_option_value_refused_by_the_real_cli(tmp_path):
    tiny_video(tmp_path / "videos" / "a.mp4")
    done = cli(*transcode_args(tmp_path / "videos", tmp_path / "out"), "--short-side", "0")
    assert done.returncode == 2 and "--short-side: must be an integer from 16 to 8192" in done.stderr
    assert not (tmp_path / "out").exists()


def test_outputs_made_with_other_settings_are_not_kept(tmp_path, capsys):
    """Finding 5: a rerun with --short-side 48 kept the outputs of --short-side 1 ("already there")."""
    from mcl_fast.video_io import probe

    videos = tmp_path / "videos"
    tiny_video(videos / "a.mp4", seed=1, height=64, width=80)
    out = tmp_path / "out"
    assert run_cli(*transcode_args(videos, out, "--short-side", "32")) == 0
    assert (probe(out / "a.webm")["height"], probe(out / "a.webm")["width"]) == (32, 40)
    stamp = (out / "a.webm").stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli(*transcode_args(videos, out, "--short-side", "48")) == 2
    assert "a.webm: made with short_side 32 (this run: 48)" in capsys.readouterr().err
    assert (out / "a.webm").stat().st_mtime_ns == stamp
    assert run_cli(*transcode_args(videos, out, "--short-side", "48", "--overwrite")) == 0
    assert (probe(out / "a.webm")["height"], probe(out / "a.webm")["width"]) == (48, 60)
    capsys.readouterr()
    assert run_cli(*transcode_args(videos, out, "--short-side", "48")) == 0
    assert "0 written, 1 already there" in capsys.readouterr().out
    # an output whose making is not recorded (another tool, an older mcl-fast) is not trusted either
    (out / "transcode_sources.json").unlink()
    assert run_cli(*transcode_args(videos, out, "--short-side", "48")) == 2
    assert "a.webm: no record of how it was made" in capsys.readouterr().err
    # a source replaced since: its output is redone
    assert run_cli(*transcode_args(videos, out, "--short-side", "48", "--overwrite")) == 0
    tiny_video(videos / "a.mp4", seed=7, height=64, width=80)
    capsys.readouterr()
    assert run_cli(*transcode_args(videos, out, "--short-side", "48")) == 0
    assert "1 written, 0 already there" in capsys.readouterr().out


# -------------------------------------------------------------------------- 8: symlink loops


def test_a_symlink_loop_is_scanned_once_in_well_under_a_second(tmp_path):
    """Finding 8: `loop -> .` listed every file 41 times; two loops scanned for more than 30 s."""
    from mcl_fast.video_io import collect_videos, scan_folder

    videos = tmp_path / "videos"
    for rel in ("a.mp4", "c/b.mp4", "c/d/e.mkv"):
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).write_bytes(b"x")  # the scan lists names; it opens nothing
    (videos / "loop").symlink_to(".")
    (videos / "c" / "d" / "up").symlink_to("../..")
    (videos / "alias").symlink_to("c")  # a folder also reached plainly: listed under its plain path
    (videos / "link.mp4").symlink_to("a.mp4")  # the same file twice
    outside = tmp_path / "outside"
    (outside / "z").mkdir(parents=True)
    (outside / "z" / "f.mp4").write_bytes(b"x")
    (videos / "ext").symlink_to(outside)  # a folder only reached through a link: followed
    (outside / "z" / "back").symlink_to(videos)
    start = time.perf_counter()
    found = scan_folder(videos)
    seconds = time.perf_counter() - start
    assert found == ["a.mp4", "c/b.mp4", "c/d/e.mkv", "ext/z/f.mp4"]
    assert seconds < 0.5, seconds
    assert collect_videos(videos)[1] == found
    assert scan_folder(videos, exclude=[outside]) == ["a.mp4", "c/b.mp4", "c/d/e.mkv"]


# ------------------------------------------------------------------ 9: variable resolution


def write_variable_resolution_ts(path: Path) -> Path:
    """An MPEG-TS of 16 frames: 8 at 64x48, then 8 at 48x32 (two H.264 encodes spliced, as a
    broadcast recording switches). PyAV decodes it as one stream whose frame size changes."""
    import av
    import numpy as np

    def segment(h, w, first):
        part = path.with_name(f".{path.stem}.{first}.ts")
        with av.open(str(part), "w", format="mpegts") as out:
            stream = out.add_stream("libx264", rate=25, options={"x264-params": "keyint=4"})
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for i in range(first, first + 8):
                frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 30 * i % 256, np.uint8), format="rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        data = part.read_bytes()
        part.unlink()
        return data

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(segment(48, 64, 0) + segment(32, 48, 10))
    return path


def test_a_video_whose_size_changes_mid_stream_gets_one_verdict_everywhere(tmp_path):
    """Finding 9: prepare accepted it, the loader then failed ("all input arrays must have the
    same shape"). Now prepare, transcode, the torch loader's reader and evaluation's reader all
    reject it with the same reason."""
    import av

    from mcl_fast.data.transcode import transcode_dataset
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.video_io import VideoError, check_video, iter_frames, read_frames

    path = write_variable_resolution_ts(tmp_path / "videos" / "spliced.ts")
    with av.open(str(path)) as container:  # what PyAV decodes: one stream, two sizes
        assert [(f.width, f.height) for f in container.decode(video=0)] == [(64, 48)] * 8 + [(48, 32)] * 8
    reason = "variable resolution: the frame size changes mid-stream from 64x48 to 48x32 (re-encode it at one size)"
    with pytest.raises(VideoError) as full:
        check_video(path)
    assert full.value.reason == reason and full.value.path == str(path)

    report = prepare(tmp_path / "videos", tmp_path / "store", flow="farneback", size=32, workers=0, progress=False)
    assert report.errors == [{"path": "spliced.ts", "reason": reason}]
    report = transcode_dataset(tmp_path / "videos", tmp_path / "out", codec="vp9", gop=4, progress=False)
    assert report.errors == {"spliced.ts": reason} and not list((tmp_path / "out").rglob("*.webm"))
    for frames in ([12], [0, 12], [15, 3]):  # the torch loader's reader: seeking, and from the start
        with pytest.raises(VideoError) as read:
            read_frames(path, frames)
        assert read.value.reason == reason, frames
    with pytest.raises(VideoError) as read:
        list(iter_frames(path, size=32))  # evaluation's reader
    assert read.value.reason == reason
    assert read_frames(path, [1, 5]).shape == (2, 48, 64, 3)  # frames before the change are what they are


# ------------------------------------------------------------- 13: a full disk, a read-only --out


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 400 KiB tmpfs mounted under tmp_path (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def one_line_error(done: subprocess.CompletedProcess, what: str) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"mcl-fast transcode: {what}: "), lines
    return lines[0]


def test_a_full_disk_stops_the_run_in_one_line_leaving_nothing_half_written(tmp_path, small_tmpfs):
    from mcl_fast.data.transcode import read_sources
    from mcl_fast.video_io import check_video, file_fingerprint

    videos = tmp_path / "videos"
    for i in range(3):
        tiny_video(videos / f"v{i}.mp4", seed=i, num_frames=24, height=96, width=128)
    out = small_tmpfs / "out"
    done = cli("transcode", "--videos", videos, "--out", out, "--codec", "h264", "--crf", "0", "--gop", "1",
               "--workers", "1", "--no-progress")
    line = one_line_error(done, "No space left on device")
    assert str(out / ".v1.tmp") in line  # names the file: the second output (each is ~235 kB) did not fit
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    sources = read_sources(out)
    assert [p.name for p in out.rglob("*.mp4")] == ["v0.mp4"]  # the first is whole and recorded
    assert check_video(out / "v0.mp4")["decoded"] == 24
    assert sources["v0.mp4"]["fingerprint"] == file_fingerprint(out / "v0.mp4")


def test_a_read_only_out_is_one_line(tmp_path, small_tmpfs):
    videos = tmp_path / "videos"
    tiny_video(videos / "a.mp4")
    out = small_tmpfs / "out"
    out.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    done = cli(*transcode_args(videos, out))
    assert str(out) in one_line_error(done, "Read-only file system")


def test_the_loaders_find_a_transcoded_copy_of_a_key_above_the_store_root(tmp_path):
    """A store key "../v/a.mp4" (a list file's `../` entry) maps to video_root/__up__/v/a.mp4, where
    transcode wrote it, and never to a path outside video_root."""
    from mcl_fast.data.checks import VideoPaths

    out = tmp_path / "h264"
    (out / "__up__" / "v").mkdir(parents=True)
    (out / "__up__" / "v" / "a.webm").write_bytes(b"x")
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"source")  # what video_root/../v/a.mp4 would have reached
    paths = VideoPaths(store=None, video_root=out)
    assert paths("../v/a.mp4") == str(out / "__up__" / "v" / "a.webm")
    assert paths("../v/b.mp4").startswith(str(out / "__up__"))
