"""Reading chosen frames: `read_frames(path, [i, j, ...])` returns exactly the frames a sequential
decode (`reader.VideoReader`) numbers i, j, ... for every file that decodes.

Seeking is fast but not trustworthy in every container (MPEG-PS/TS and AVI timestamps, B-frames,
edit lists, open GOPs). So a seek is only taken when the file's packet index allows it, and its
result only when every frame it gives is identified beyond doubt and has the size the container
declares; otherwise the frames are decoded from the start of the file, which is always right
(and meets a size change on the way: a variable-resolution file is rejected with the reason a
full decode gives, as soon as a read reaches a frame of another size). Per process, each file's index and
whether seeking failed on it are cached (keyed by size and modification time).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .._cache import LRU
from .container import open_video, rgb24
from .errors import VideoError, ffmpeg_message
from .reader import VideoReader

INDEX_CACHE_SIZE = 4096  # files whose packet index a process keeps


@dataclass(frozen=True)
class FrameIndex:
    """What demuxing (no decoding) says about a file's video frames.

    pts: (N,) int64 sorted presentation timestamps of the video packets (stream time base),
    one per frame; keyframe_pts: sorted pts of the keyframe packets; complete: every packet
    carried a distinct pts, so pts[k] identifies frame k (else only a decode from the start can).
    """

    pts: np.ndarray
    keyframe_pts: np.ndarray
    complete: bool

    def __len__(self) -> int:
        return len(self.pts)


_indexes = LRU(INDEX_CACHE_SIZE)  # (path, size, mtime) -> FrameIndex
# (path, size, mtime) of files where a seek gave an unidentifiable frame (bounded like _indexes)
_no_seek = LRU(INDEX_CACHE_SIZE)


def _refuse_seeking(path: str) -> None:
    _no_seek.put(_file_key(path), None)


def _file_key(path: str) -> tuple:
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


def frame_index(path) -> FrameIndex:
    """The demuxed packet index of `path`'s first video stream (cached per process). Packets an
    edit list discards and empty packets are left out. Raises VideoError."""
    import av

    path = os.fspath(path)
    try:
        key = _file_key(path)
    except OSError:
        key = None  # open_video says why (missing, unreadable)
    cached = _indexes.get(key) if key is not None else None
    if cached is not None:  # a file unchanged since it was indexed: no container open
        return cached
    container, stream = open_video(path)  # VideoError for missing / unreadable / not a video
    key = key if key is not None else _file_key(path)
    try:
        pts, keys, complete = [], [], True
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.pts is None:
                    complete = False
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        except av.FFmpegError as e:
            raise VideoError(path, f"corrupt: cannot demux ({ffmpeg_message(e)})") from None
    finally:
        container.close()
    pts_arr = np.sort(np.asarray(pts, np.int64))
    complete = complete and len(pts_arr) > 0 and bool(np.all(np.diff(pts_arr) > 0))
    index = FrameIndex(pts_arr, np.sort(np.asarray(keys, np.int64)), complete)
    _indexes.put(key, index)
    return index


def read_frames(path, indices, num_frames: int | None = None) -> np.ndarray:
    """Frames `indices` (any order, repeats allowed) of `path`: (len, H, W, 3) uint8 RGB, equal
    to those a sequential decode numbers so.

    num_frames: the frame count a sequential decode gives (e.g. the motion store's), when known:
    seeking is used only when the packet index agrees with it. Raises ValueError for an index
    outside the video, VideoError naming the file when it does not decode that far.
    """
    path = os.fspath(path)
    indices = np.asarray(indices, np.int64).reshape(-1)
    if len(indices) == 0:
        raise ValueError(f"{path}: no frame indices given")
    wanted = np.unique(indices)
    if wanted[0] < 0 or (num_frames is not None and wanted[-1] >= num_frames):
        raise ValueError(f"{path}: frame indices {wanted[0]}..{wanted[-1]} outside the video's "
                         f"{num_frames} frames")
    index = frame_index(path)
    got = None
    if _seekable(path, index, num_frames):
        if wanted[-1] >= len(index):
            raise ValueError(f"{path}: frame indices {wanted[0]}..{wanted[-1]} outside the video's "
                             f"{len(index)} frames")
        got = _read_by_seeking(path, index, wanted)
    if got is None:
        got = _read_from_start(path, wanted)
    return np.stack([got[int(i)] for i in indices])


def _seekable(path: str, index: FrameIndex, num_frames: int | None) -> bool:
    if not index.complete or len(index.keyframe_pts) == 0:
        return False
    if num_frames is not None and len(index) != num_frames:
        return False  # packets and decoded frames disagree: only a full decode numbers frames right
    return _file_key(path) not in _no_seek


def _read_by_seeking(path: str, index: FrameIndex, wanted: np.ndarray) -> dict | None:
    """{k: frame} by seeking to the keyframe before the first wanted frame and decoding forward;
    None when the result cannot be trusted (then the caller decodes from the start).

    A frame is taken only when its pts is in the index, it is displayed at or after the keyframe
    the seek landed on (leading pictures of an open GOP reference frames before the seek), the
    decoder does not mark it corrupt and it has the declared size (else the decode from the start
    names the size change)."""
    import av

    first, last = int(wanted[0]), int(wanted[-1])
    keys = index.keyframe_pts
    target = keys[max(0, int(np.searchsorted(keys, index.pts[first], side="right")) - 1)]
    want = set(int(k) for k in wanted)
    got: dict[int, np.ndarray] = {}
    container, stream = open_video(path)
    declared = (int(stream.codec_context.height or 0), int(stream.codec_context.width or 0))
    try:
        container.seek(int(target), stream=stream, backward=True, any_frame=False)
        landed = None  # pts of the first keyframe after the seek: decoding really starts there
        for packet in container.demux(stream):
            if landed is None and packet.size > 0 and packet.is_keyframe:
                if packet.pts is None:
                    return None
                landed = packet.pts
            for frame in packet.decode():
                if frame.pts is None:
                    _refuse_seeking(path)
                    return None
                k = int(np.searchsorted(index.pts, frame.pts))
                if k >= len(index) or index.pts[k] != frame.pts:
                    _refuse_seeking(path)  # timestamps after a seek differ: never seek here
                    return None
                if 0 not in declared and (int(frame.height), int(frame.width)) != declared:
                    _refuse_seeking(path)  # another size than the header's: a decode from the start judges
                    return None
                if landed is None or frame.pts < landed or k not in want:
                    continue
                if frame.is_corrupt:
                    return None
                got[k] = rgb24(frame)
                if k >= last:
                    break
            if len(got) == len(want) or (got and max(got) >= last):
                break
    except av.FFmpegError:
        return None
    finally:
        container.close()
    if len(got) < len(want):  # the seek landed past a wanted frame: this container seeks loosely
        _refuse_seeking(path)
        return None
    return got


def _read_from_start(path: str, wanted: np.ndarray) -> dict:
    """{k: frame} decoding from the first frame to the last wanted one."""
    want, last = set(int(k) for k in wanted), int(wanted[-1])
    got: dict[int, np.ndarray] = {}
    with VideoReader(path) as reader:
        frames = reader.av_frames()  # raises VideoError (corrupt, truncated) as a full decode does
        for k, frame in enumerate(frames):
            if k in want:
                got[k] = rgb24(frame)
            if k >= last:
                frames.close()
                break
        decoded = reader.decoded
    if len(got) < len(want):
        raise ValueError(f"{path}: frame indices {wanted[0]}..{last} outside the video's {decoded} frames")
    return got
