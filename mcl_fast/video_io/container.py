"""Opening a video file and reading what its container declares (PyAV), without decoding.

Also the one rule for "fewer frames than declared" (`truncation_reason`), which every
reader applies after decoding a whole file.
"""
from __future__ import annotations

import contextlib
import os
import threading

from .errors import VideoError, ffmpeg_message

# An honest file may decode a frame or two fewer than its container's frame count (edit lists,
# packed B-frames).
TRUNCATION_TOLERANCE = 2
# Without a frame count, the data must reach this fraction of the container's duration (less
# TRUNCATION_TOLERANCE frames): durations are rounded, and some muxers pad the last packet.
DURATION_TOLERANCE = 0.05


def check_path(path: str) -> None:
    """VideoError unless `path` is a readable, non-empty regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoError(path, "file not found") from None
    except OSError as e:
        raise VideoError(path, f"unreadable: {e.strerror or e}") from None
    if os.path.isdir(path):
        raise VideoError(path, "is a directory, not a video file")
    if st.st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoError(path, "unreadable: permission denied")


def _looks_like_mp4(path: str) -> bool:
    """True when the file starts with an ISO-BMFF 'ftyp' box (MP4, MOV, M4V, 3GP)."""
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == b"ftyp"
    except OSError:
        return False


_decoding = threading.local()


@contextlib.contextmanager
def decoder_threads(count: int | None):
    """FFmpeg's decoding threads for the videos this thread opens inside the block: `count` (1: on
    the calling thread alone), None: FFmpeg's choice (about one per core). A loader's worker
    decodes short runs of frames and is itself one of several processes: frame threads there
    cost ~5 % more CPU per clip for no throughput (docs/loader.md)."""
    before = getattr(_decoding, "count", None)
    _decoding.count = count
    try:
        yield
    finally:
        _decoding.count = before


_reformatters = threading.local()


def rgb24(frame):
    """A decoded PyAV frame as (H, W, 3) uint8 RGB: frame.to_ndarray(format="rgb24"), pixel for
    pixel, through one swscale context per thread converting on that thread alone.

    to_ndarray makes a new SwsContext for every frame (a per-frame VideoReformatter), and with
    PyAV's default threads=0 swscale starts its own slice threads for each one. Reused, the
    context is set up once per frame size (FFmpeg reconfigures it when the size or format
    changes); frames here are a few hundred pixels wide, where threads cost more than they save."""
    reformatter = getattr(_reformatters, "rgb24", None)
    if reformatter is None:
        from av.video.reformatter import VideoReformatter

        reformatter = _reformatters.rgb24 = VideoReformatter()
    return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def open_video(path):
    """(container, first video stream), threaded decoding (decoder_threads) with FFmpeg's default
    error concealment. Raises VideoError: missing/empty/unreadable, not a video, no video stream."""
    import av

    path = os.fspath(path)
    check_path(path)
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as e:
        if _looks_like_mp4(path):
            raise VideoError(path, "MP4/MOV without a readable index (moov atom): truncated or incomplete "
                                   f"file? ({ffmpeg_message(e)})") from None
        raise VideoError(path, f"not a video file FFmpeg can read ({ffmpeg_message(e)})") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(path, f"unreadable: {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(path, "no video stream")
    stream = container.streams.video[0]
    # Never enable PyAV logging (av.logging.set_level) beside threaded decoding: an FFmpeg thread
    # that logs waits for the GIL held by the decoding thread, and the decode hangs.
    stream.thread_type = "AUTO"
    count = getattr(_decoding, "count", None)
    if count is not None:
        stream.thread_count = int(count)
    return container, stream


def stream_info(container, stream) -> dict:
    """What the container declares: num_frames (0 when it does not say, as WebM/MKV/MPEG-PS),
    fps, height, width, codec, duration (seconds, the whole file: every stream; None if unknown)
    and start (seconds where its timestamps start)."""
    cc = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    duration = None
    if container.duration:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    elif stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    start = container.start_time / 1_000_000 if container.start_time else 0.0
    return {"num_frames": int(stream.frames or 0), "fps": float(rate) if rate else 0.0,
            "height": int(cc.height or 0), "width": int(cc.width or 0), "codec": cc.name,
            "duration": duration, "start": start}


def probe(path) -> dict:
    """`stream_info` of `path` without decoding; raises VideoError."""
    container, stream = open_video(path)
    try:
        return stream_info(container, stream)
    finally:
        container.close()


def truncation_reason(info: dict, decoded: int, data_end: float | None) -> str | None:
    """Why a fully decoded file counts as truncated, or None.

    info: `stream_info`; decoded: frames the whole file decoded to; data_end: seconds (on the
    container's clock) where the last packet of any stream ends (None if unknown). With a declared frame count, truncated
    means more than TRUNCATION_TOLERANCE frames fewer. Without one (WebM, MKV, MPEG-PS/TS) the
    data must reach the container's duration, less DURATION_TOLERANCE of it: any stream counts,
    so an audio track longer than the video is no truncation.
    """
    declared = info["num_frames"]
    if declared > 0:
        if decoded < declared - TRUNCATION_TOLERANCE:
            return f"truncated: decoded {decoded} of {declared} frames"
        return None
    duration, fps = info["duration"], info["fps"]
    if not duration or data_end is None:
        return None
    slack = DURATION_TOLERANCE * duration + (TRUNCATION_TOLERANCE / fps if fps > 0 else 0.0)
    data_end -= info.get("start", 0.0)
    if data_end < duration - slack:
        return (f"truncated: the data ends at {data_end:.2f} s of the {duration:.2f} s its container "
                f"declares (decoded {decoded} frames)")
    return None
