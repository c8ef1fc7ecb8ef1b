"""`prepare --device cuda` for one video: decode on the GPU (DALI, NVDEC), flow and maps on the GPU.

compute_video_maps_gpu(path) returns the same VideoMaps as the CPU path
(mcl_fast.motion.prepare.compute_video_maps): one block-averaged map per decoded frame (the last
repeats the one before), quantised by the store's rule. Frames never visit the host; only the small
maps (N x h/f x w/f floats) come back for the store.

Differences from the CPU path, by design: the frames are resized by DALI (linear with antialiasing,
on RGB, then converted to gray inside the flow) instead of OpenCV's INTER_AREA on gray, and the
flow is the project's TV-L1 kernels instead of OpenCV's; both change maps by small amounts.

The video is decoded in chunks of `chunk_frames` frames (bounded GPU memory for long videos); a
chunk keeps the previous chunk's last frame so every consecutive pair gets its flow.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

from .._backend import has_gpu, register_gpu_twin, require_cupy, require_dali
from ..motion.store import VideoMaps
from ..video_io import VideoError, frame_index, probe, target_size
from ..video_io.nvdec_support import FIX_HINT as NVDEC_FIX_HINT, stream_problem

DEFAULT_CHUNK_FRAMES = 128


@register_gpu_twin("prepare.require_gpu_stack")
def require_gpu_stack() -> None:
    """ImportError naming what `prepare --device cuda` lacks here: CuPy, NVIDIA DALI or a visible GPU.

    Call once before a run, so a machine without them fails at once instead of once per video.
    """
    require_cupy()
    require_dali()
    if not has_gpu():
        raise ImportError("no CUDA device is visible to CuPy (check the driver and CUDA_VISIBLE_DEVICES)")


def count_frames(path: str) -> int:
    """Video packets in the container (= frames for every codec prepare accepts), without decoding."""
    return len(frame_index(path))


class _ChunkSource:
    """external_source callback: one sample per run, the chunk set by `set`."""

    def __init__(self):
        self.sample = None

    def set(self, encoded: np.ndarray, frames: np.ndarray, out_hw: tuple[int, int]):
        self.sample = (encoded, frames.astype(np.int32), np.array(out_hw, np.float32))

    def __call__(self):
        if self.sample is None:
            raise StopIteration
        encoded, frames, size = self.sample
        return [encoded], [frames], [size]


@functools.lru_cache(maxsize=None)
def _pipeline(device_id: int | None):
    """(pipeline, source): decode the given frames (NVDEC; DALI's CPU decoder when device_id is None,
    VP8/VP9/MJPEG only, used by the CPU test of this pipeline), resize to the given (h, w), uint8 FHWC."""
    dali = require_dali()
    fn, types = dali.fn, dali.types
    source = _ChunkSource()
    pipe = dali.pipeline.Pipeline(batch_size=1, num_threads=2, device_id=device_id, prefetch_queue_depth=1,
                                  exec_pipelined=False, exec_async=False)  # run() returns this chunk's frames
    with pipe:
        encoded, frames, size = fn.external_source(source=source, num_outputs=3, batch=True)
        video = fn.decoders.video(encoded, frames=frames, device="cpu" if device_id is None else "mixed",
                                  pad_mode="none")  # past the end: an error, never silent black frames
        video = fn.resize(video, size=size, interp_type=types.INTERP_LINEAR, antialias=True)
        pipe.set_outputs(video)
    pipe.build()
    return pipe, source


def dali_reason(exc: BaseException) -> str:
    """DALI's error text without its boilerplate lines."""
    boiler = ("Critical error in pipeline:", "Current pipeline object is no longer valid.")
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and ln.strip() not in boiler]
    return " ".join(lines)[:300] or type(exc).__name__


def decode_chunk(encoded: np.ndarray, frames: np.ndarray, out_hw, device_id: int):
    """CuPy (F, h, w, 3) uint8 RGB frames `frames` of the encoded video, resized to out_hw, owned by CuPy."""
    cp = require_cupy()
    pipe, source = _pipeline(device_id)
    source.set(encoded, frames, out_hw)
    (video,) = pipe.run()
    tensor = video[0]  # one sample; DALI reuses this buffer on the next run: copy it out now
    out = cp.empty(tuple(tensor.shape()), cp.uint8)
    # On CuPy's stream: `out` may be a block CuPy's pool just recycled from arrays whose kernels are
    # still queued on that stream; a copy on DALI's own stream could overwrite it under them.
    # Blocking: the copy is done (and DALI may reuse its buffer) when this returns.
    stream = ctypes.c_void_p(cp.cuda.get_current_stream().ptr)
    tensor.copy_to_external(ctypes.c_void_p(out.data.ptr), cuda_stream=stream, non_blocking=False)
    return out


def nvdec_trial(path: str, frames, device_id: int) -> str | None:
    """None when DALI's GPU decoder decodes `frames` of `path` alone, else DALI's reason: finds which
    file of a failed loader batch NVDEC refuses when PyAV decodes them all."""
    try:
        decode_chunk(np.fromfile(path, dtype=np.uint8), np.asarray(frames), (64, 64), device_id)
    except RuntimeError as exc:
        _pipeline.cache_clear()  # after a critical error DALI's pipeline object is no longer valid
        return dali_reason(exc)
    return None


@register_gpu_twin("prepare.compute_video_maps")
def compute_video_maps_gpu(path, *, flow: str = "tvl1", size: int = 128, map_downsample: int = 4,
                           chunk_frames: int = DEFAULT_CHUNK_FRAMES, device_id: int | None = None) -> VideoMaps:
    """VideoMaps of `path` computed on the GPU (see the module docstring). Raises VideoError for bad input."""
    from .flow import compute_flow
    from .motion import motion_maps_downsampled

    cp = require_cupy()
    if flow != "tvl1":
        raise VideoError(str(path), f"--device cuda computes TV-L1 flow only (asked {flow!r}); use --device cpu")
    if chunk_frames < 2:
        raise ValueError(f"chunk_frames must be >= 2, got {chunk_frames}")
    path = str(path)
    info = probe(path)  # VideoError for missing/unreadable/non-video files, with the reason
    unsupported = stream_problem(path)  # NVDEC's limits: named here rather than as a DALI error below
    if unsupported:
        raise VideoError(path, f"NVDEC cannot decode it: {unsupported}; {NVDEC_FIX_HINT}")
    num_frames = count_frames(path)
    if num_frames == 0:
        raise VideoError(path, "corrupt: no frame decodes")
    out_hw = target_size(info["height"], info["width"], size)
    if num_frames == 1:  # nothing moves in a single frame (the CPU path's rule)
        return VideoMaps.without_motion(1, (out_hw[0] // map_downsample, out_hw[1] // map_downsample),
                                        fps=info["fps"], height=info["height"], width=info["width"])
    device_id = cp.cuda.runtime.getDevice() if device_id is None else int(device_id)
    encoded = np.fromfile(path, dtype=np.uint8)

    small_maps = []
    last_frame = None  # the previous chunk's last frame: its pair with this chunk's first
    for start in range(0, num_frames, chunk_frames):
        stop = min(num_frames, start + chunk_frames)
        try:
            frames = decode_chunk(encoded, np.arange(start, stop), out_hw, device_id)
        except RuntimeError as exc:  # DALI reports decoder failures (corrupt, truncated) as RuntimeError
            _pipeline.cache_clear()  # after a critical error DALI's pipeline object is no longer valid
            raise VideoError(path, f"GPU decode failed at frames {start}..{stop - 1}: {dali_reason(exc)}") from None
        if last_frame is not None:
            frames = cp.concatenate([last_frame[None], frames])
        last_frame = frames[-1].copy()
        if len(frames) < 2:
            continue
        pair_flow = compute_flow(frames, method="tvl1")[:-1]  # (F-1) pairs; drop the repeated last
        small, _ = motion_maps_downsampled(pair_flow, map_downsample)
        small_maps.append(small)
    maps = cp.concatenate(small_maps)
    maps = cp.concatenate([maps, maps[-1:]])  # the last frame's map repeats the one before (sec. 3.1)
    return VideoMaps.from_maps(cp.asnumpy(maps), fps=info["fps"], height=info["height"], width=info["width"])
