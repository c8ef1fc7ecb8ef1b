"""TorchVideoLoader: the same plans and the same dicts as MotionFocusedLoader, from a PyTorch
DataLoader over a CPU decoder (PyAV; decord when installed and asked for).

It is the baseline of the loader benchmark and the CPU path for H.264 (DALI's CPU decoder reads
VP8/VP9/MJPEG only). Each worker plans its samples with the same Planner and seeds as the DALI
loader, decodes exactly the planned frames (seek to the keyframe before the first, decode
forward) and applies the torch twin of the DALI pipeline (augment.py).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

from .augment import apply_view
from .loader import LoaderBase
from .plan import SamplePlan

_PTS_CACHE_SIZE = 4096


# ------------------------------------------------------------------------------ PyAV reading


class UnsupportedCodec(ValueError):
    """A video whose codec the chosen decoder cannot read (a setup error, not a bad file)."""


def _ffmpeg_message(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err)


def open_video(path: str):
    """(container, first video stream) with threaded, strict decoding; raises ValueError naming
    the file (missing, empty, not a video, no video stream)."""
    import av

    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a video file FFmpeg can read ({_ffmpeg_message(err)})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.options = {"err_detect": "explode"}  # report corrupt data, do not conceal it
    return container, stream


def probe_header(path: str) -> dict:
    """Container metadata, no decoding: codec, num_frames (0 when the container does not say, as
    WebM), fps, duration (s or None), height, width. Raises ValueError naming the file."""
    container, stream = open_video(path)
    try:
        rate = stream.average_rate or stream.guessed_rate
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = container.duration / 1_000_000 if container.duration else None
        cc = stream.codec_context
        return {"codec": cc.name, "num_frames": int(stream.frames or 0), "fps": float(rate) if rate else 0.0,
                "duration": duration, "height": int(cc.height or 0), "width": int(cc.width or 0)}
    finally:
        container.close()


def probe_video(path: str, codecs=None) -> str | None:
    """None if `path` opens as a video and its first frame decodes, else the reason (a sentence).

    codecs: if given, the FFmpeg codec names the caller's decoder reads; another codec raises
    UnsupportedCodec (every file of the dataset would fail the same way: not a per-file skip).
    """
    import av

    try:
        container, stream = open_video(path)
    except ValueError as err:
        return str(err).split(": ", 1)[-1]
    try:
        codec = stream.codec_context.name
        if codecs is not None and codec not in codecs:
            raise UnsupportedCodec(f"{path}: codec {codec} cannot be decoded here (this decoder reads "
                                   f"{', '.join(sorted(codecs))}); re-encode with `mcl-fast transcode --codec vp9`"
                                   f" or use device='gpu' / TorchVideoLoader")
        for frame in container.decode(stream):
            if frame.is_corrupt:
                return "corrupt: the first frame decodes with errors"
            return None
        return "no frames decode"
    except av.FFmpegError as err:
        return f"corrupt: {_ffmpeg_message(err)}"
    except UnsupportedCodec:
        raise
    except Exception as err:  # noqa: BLE001 (anything else PyAV raises on a broken file)
        return f"cannot decode: {err}"
    finally:
        container.close()


_pts_cache: "OrderedDict[str, np.ndarray]" = OrderedDict()


def frame_pts(path: str) -> np.ndarray:
    """Sorted presentation timestamps of every frame of the first video stream (demux only,
    cached per process): frame k is the one whose pts is the k-th smallest."""
    import av

    path = str(path)
    if path in _pts_cache:
        _pts_cache.move_to_end(path)
        return _pts_cache[path]
    with av.open(path) as container:
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
    out = np.sort(np.asarray(pts, np.int64))
    _pts_cache[path] = out
    if len(_pts_cache) > _PTS_CACHE_SIZE:
        _pts_cache.popitem(last=False)
    return out


def read_frames_at(path: str, indices) -> np.ndarray:
    """Decode the frames at `indices` (any order, repeats allowed): (len, H, W, 3) uint8 RGB.

    Seeks to the keyframe at or before the first wanted frame and decodes forward to the last
    one, so a short-GOP file (mcl-fast transcode) costs at most a GOP of extra decoding.
    Raises ValueError naming the file when an index is outside the video or a frame never decodes.
    """
    import av

    indices = np.asarray(indices, np.int64)
    pts = frame_pts(path)
    if len(indices) and (indices.min() < 0 or indices.max() >= len(pts)):
        raise ValueError(f"{path}: frame indices {indices.min()}..{indices.max()} outside the video's {len(pts)} frames")
    wanted = {int(i) for i in indices}
    first, last = min(wanted), max(wanted)
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        container.seek(int(pts[first]), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            k = int(np.searchsorted(pts, frame.pts))
            if k < len(pts) and pts[k] == frame.pts and k in wanted:
                got[k] = frame.to_ndarray(format="rgb24")
            if k >= last:
                break
    lost = sorted(wanted - got.keys())
    if lost:
        raise ValueError(f"{path}: frames {lost[:8]} did not decode (the file may be truncated or corrupt)")
    return np.stack([got[int(i)] for i in indices])


def read_frames_decord(path: str, indices) -> np.ndarray:
    """The same with decord (optional; `pip install decord`)."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return reader.get_batch(list(np.asarray(indices, np.int64))).asnumpy()


DECODERS = {"pyav": read_frames_at, "decord": read_frames_decord}


# ------------------------------------------------------------------------------------ dataset


def render_plan(plan: SamplePlan, size: int, read: Callable = read_frames_at) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a plan's frames and apply both views: (query, key), each (3, T, S, S) float32."""
    q, k = plan.query, plan.key
    if np.array_equal(q.frames, k.frames):
        uniq, inverse = np.unique(q.frames, return_inverse=True)
        clip = read(plan.path, uniq)[inverse]
        q_clip = k_clip = clip
    else:
        q_clip, k_clip = read(plan.path, q.frames), read(plan.path, k.frames)
    return apply_view(q_clip, q.box, q.aug, size), apply_view(k_clip, k.box, k.aug, size)


class _EpochDataset(torch.utils.data.Dataset):
    """Item i = batch i of one epoch of one shard, rendered in a worker (so the plan's batched
    structure and the failure bookkeeping stay in one place)."""

    def __init__(self, loader: "TorchVideoLoader", epoch: int):
        self.loader, self.epoch, self.batches = loader, epoch, loader._epoch_batches()

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        loader = self.loader
        positions, indices = self.batches[i]
        read = DECODERS[loader.decoder]
        out_q, out_k, plans = [], [], []
        for pos, idx in zip(positions, indices):
            for _ in range(loader.planner.MAX_ATTEMPTS):
                plan = loader.planner.plan(self.epoch, int(pos), int(idx))
                try:
                    q, k = render_plan(plan, loader.size, read)
                except Exception as err:  # noqa: BLE001 (mark the file bad; the replan replaces it)
                    loader.report_failure(plan.path, f"decode failed ({err})")
                    continue
                break
            else:
                raise RuntimeError(f"{loader.planner.MAX_ATTEMPTS} videos in a row failed to decode near "
                                   f"position {pos} of epoch {self.epoch}")
            out_q.append(q)
            out_k.append(k)
            plans.append(plan)
        batch = {"query": torch.stack(out_q), "key": torch.stack(out_k)}
        batch.update(loader.plan_fields(plans, "cpu"))
        # Replacements travel to the main process, which counts them and reports each file once.
        batch["_failures"] = [f for p in plans for f in p.failures]
        return batch


class TorchVideoLoader(LoaderBase):
    """Same arguments and outputs as MotionFocusedLoader (without the DALI-only ones), plus:

    num_workers: DataLoader worker processes (0: decode in the main process).
    decoder: "pyav" (default) or "decord". device: where the tensors go ("cpu" or "cuda").
    pin_memory, prefetch_factor: passed to the DataLoader.
    """

    def __init__(self, videos, store, batch_size: int, *, clip_len: int = 16, stride: int = 2, size: int = 224,
                 augment: bool = True, sampling: str = "motion", preset: str = "paper", seed: int = 0,
                 shard_id: int = 0, num_shards: int = 1, return_meta: bool = False, two_clips: bool = False,
                 sampler: Callable | None = None, motion_size=None, drop_last: bool = False, shuffle: bool = True,
                 video_root=None, verify: bool = True, num_workers: int = 4, decoder: str = "pyav",
                 device: str = "cpu", pin_memory: bool = False, prefetch_factor: int = 2):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        if decoder == "decord":
            try:
                import decord  # noqa: F401
            except ImportError:
                raise ImportError("decoder='decord' needs decord: pip install decord") from None
        super().__init__(videos, store, batch_size, clip_len=clip_len, stride=stride, size=size, augment=augment,
                         sampling=sampling, preset=preset, seed=seed, shard_id=shard_id, num_shards=num_shards,
                         return_meta=return_meta, two_clips=two_clips, sampler=sampler, motion_size=motion_size,
                         drop_last=drop_last, shuffle=shuffle, video_root=video_root, verify=verify)
        self.num_workers, self.decoder, self.device = int(num_workers), decoder, torch.device(device)
        self.pin_memory, self.prefetch_factor = pin_memory, int(prefetch_factor)

    def __iter__(self):
        dataset = _EpochDataset(self, self.epoch)
        kwargs = {"prefetch_factor": self.prefetch_factor} if self.num_workers > 0 else {}
        # batch_size=None: each item already is a batch (planned together, like the DALI loader).
        data = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.num_workers,
                                           pin_memory=self.pin_memory, **kwargs)
        for batch in data:
            failures = batch.pop("_failures")
            self.num_replaced += len(failures)
            for path, reason in failures:
                self.report_failure(path, reason)
            if self.device.type != "cpu":
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            yield batch


__all__ = ["TorchVideoLoader", "read_frames_at", "probe_video", "probe_header", "render_plan", "UnsupportedCodec"]
