"""CPU video decoding for `prepare`, with PyAV (any codec FFmpeg reads).

Every problem with an input file becomes a `VideoError` that names the file and says what is
wrong, so `prepare` can list it and go on:

- missing or unreadable path, a directory, a zero-byte file;
- not a video: FFmpeg cannot open it, or it has no video stream;
- corrupt: the decoder reports an error mid-stream, or marks a decoded frame as corrupt. The
  decoder runs with ``err_detect=explode`` so that errors it would otherwise conceal abort
  the decode. Random bytes inside entropy-coded data (CABAC) can still decode without any
  detectable error; no decoder-side check can see those;
- truncated: fewer frames decoded than the container says it holds (its frame count, or, when
  it has none, as WebM/Matroska, its duration times the frame rate), beyond a small tolerance
  (`TRUNCATION_TOLERANCE`: edit lists and packed B-frames make honest files differ by a frame
  or two).
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

# An honest file may decode a frame or two fewer than its container's frame count.
TRUNCATION_TOLERANCE = 2
# Without a frame count the expected number comes from the duration, which can include a longer
# audio track: allow this fraction of it on top of TRUNCATION_TOLERANCE.
DURATION_TOLERANCE = 0.1


class VideoError(ValueError):
    """A video that cannot be used. `path` and `reason` are kept apart for error reports."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # survive the trip back from a worker process
        return (type(self), (self.path, self.reason))


def _ffmpeg_message(exc: BaseException) -> str:
    """The FFmpeg error without PyAV's '[Errno N]' prefix and the file name it repeats."""
    strerror = getattr(exc, "strerror", None)
    return strerror or str(exc)


def _check_path(path: str) -> None:
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


def _open(path: str):
    """Open the container and its first video stream (threaded decoding, strict error checks)."""
    import av

    _check_path(path)
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as e:
        if _looks_like_mp4(path):
            raise VideoError(path, "MP4/MOV without a readable index (moov atom): truncated or incomplete "
                                   f"file? ({_ffmpeg_message(e)})") from None
        raise VideoError(path, f"not a video file FFmpeg can read ({_ffmpeg_message(e)})") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(path, f"unreadable: {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(path, "no video stream")
    stream = container.streams.video[0]
    # Never enable PyAV logging (av.logging.set_level) beside threaded decoding: an FFmpeg thread
    # that logs waits for the GIL held by the decoding thread, and the decode hangs (seen here).
    stream.thread_type = "AUTO"
    # Abort on errors the decoder would otherwise conceal (corrupt data mid-stream).
    stream.codec_context.options = {"err_detect": "explode"}
    return container, stream


def _stream_info(container, stream) -> dict:
    cc = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    return {
        "num_frames": int(stream.frames or 0),
        "fps": fps,
        "height": int(cc.height or 0),
        "width": int(cc.width or 0),
        "codec": cc.name,
        "duration": duration,
    }


def probe(path) -> dict:
    """Container metadata without decoding: num_frames (from the container; 0 when it does not
    say, e.g. WebM), fps, height, width, codec, duration (seconds or None)."""
    path = os.fspath(path)
    container, stream = _open(path)
    try:
        return _stream_info(container, stream)
    finally:
        container.close()


def target_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """(h, w) with the short side `size` and the aspect ratio kept (rounded); unchanged if None."""
    if size is None:
        return height, width
    if height <= width:
        return size, max(1, int(round(width * size / height)))
    return max(1, int(round(height * size / width))), size


def _expected_frames(info: dict) -> tuple[int, int, str] | None:
    """(expected, tolerance, wording) for the truncation check, or None when unknown."""
    if info["num_frames"] > 0:
        return info["num_frames"], TRUNCATION_TOLERANCE, ""
    if info["duration"] and info["fps"] > 0:
        expected = int(round(info["duration"] * info["fps"]))
        return expected, TRUNCATION_TOLERANCE + int(DURATION_TOLERANCE * expected), "about "
    return None


class VideoReader:
    """One pass over a video's frames. `info` holds `probe`'s fields; after the pass,
    `decoded` is the number of frames decoded and `frame_size` the (height, width) of the
    source frames (the first frame's)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._container, self._stream = _open(self.path)
        self.info = _stream_info(self._container, self._stream)
        self.decoded = 0
        self.frame_size: tuple[int, int] | None = None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def frames(self, size: int | None = None, gray: bool = False) -> Iterator[np.ndarray]:
        """Yield frames in decode order: (h, w) uint8 gray or (h, w, 3) uint8 RGB, resized
        (cv2.INTER_AREA) so the short side is `size`. Gray is cv2's BT.601 RGB->gray, the same
        as `mcl_fast.motion.flow.to_gray`. Every frame has the size of the first one."""
        import av
        import cv2

        out_hw = None
        try:
            for frame in self._container.decode(self._stream):
                if frame.is_corrupt:
                    raise VideoError(self.path, f"corrupt: frame {self.decoded} decoded with errors")
                img = frame.to_ndarray(format="rgb24")
                if gray:
                    img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
                if out_hw is None:
                    self.frame_size = img.shape[:2]
                    out_hw = target_size(img.shape[0], img.shape[1], size)
                if img.shape[:2] != out_hw:
                    img = cv2.resize(img, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)
                self.decoded += 1
                yield img
        except av.FFmpegError as e:
            raise VideoError(
                self.path, f"corrupt: decode error after {self.decoded} frames ({_ffmpeg_message(e)})"
            ) from None
        expected = _expected_frames(self.info)
        if expected is not None:
            n, tol, about = expected
            if self.decoded < n - tol:
                raise VideoError(self.path, f"truncated: decoded {self.decoded} of {about}{n} frames")


def iter_frames(path, size: int | None = None, gray: bool = False) -> Iterator[np.ndarray]:
    """Stream the decoded frames of `path` (see `VideoReader.frames`); raises VideoError."""
    with VideoReader(path) as reader:
        yield from reader.frames(size=size, gray=gray)
