"""MotionFocusedLoader: motion-focused two-view clips from a DALI pipeline, as dicts of torch tensors.

    loader = MotionFocusedLoader(store.videos, store, batch_size=8, size=112, device="gpu")
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:        # query, key (B, 3, T, S, S); motion (B, T', H', W'); index (B,)
            ...

For each sample the Python planner (plan.py) reads the video's motion maps from the store,
picks the clip and the crop boxes (NumPy references on the CPU path; on the GPU path the batch's
clip scores, percentile thresholds and box selection run in the batched GPU kernels, with the
same results) and the augmentation parameters, all from a generator seeded by (seed, epoch,
position). A DALI pipeline (pipeline.py) then decodes exactly those frames, crops, resizes,
augments and normalises. DALI prefetches: the source callback plans batches ahead.

Bad input: a video that cannot be opened or decoded is replaced by another sample (drawn
deterministically), counted in `num_replaced` (samples replaced), listed in `failures`
(path -> reason, the reason mcl_fast.video_io gives everywhere) and reported once in one line.
At construction (checks.py), videos missing from the store (or that `prepare` rejected), files
whose content, frame count or aspect ratio disagrees with the store, and an epoch with no batch
are errors that name them; videos shorter than a clip are counted in one notice. A file that is
a resized copy of the store's source (`mcl-fast transcode --short-side`) is fine: boxes are
chosen in source pixels and scaled to the file's, and `return_meta` boxes are in the file's pixels.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Callable, Sequence

import numpy as np
import torch

from ..sampling import clip_span
from ..video_io import VideoError, first_frame_problem, probe, read_frames
from .checks import VideoPaths, check_videos, short_video_policy, uniform_scale
from .plan import MotionSampler, Planner, SamplePlan, check_sampling, epoch_order, num_batches

log = logging.getLogger(__name__)

DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})  # what fn.decoders.video reads without a GPU


class UnsupportedCodec(ValueError):
    """A video whose codec the chosen decoder cannot read (a setup error, not a bad file)."""


def resolve_store(store):
    """A MotionStore, or the path of one."""
    if isinstance(store, (str, os.PathLike)):
        from mcl_fast.motion.store import MotionStore

        return MotionStore(store)
    for attr in ("read", "info", "video_path", "videos"):
        if not hasattr(store, attr):
            raise TypeError(f"store must be a MotionStore or its path, got {type(store).__name__} without .{attr}")
    return store


def failure_reason(err: BaseException) -> str:
    """One line saying why reading a video failed: a VideoError's reason, else the error's first line."""
    if isinstance(err, VideoError):
        return err.reason
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first}"[:200]


class LoaderBase:
    """What both loaders share: options, planner, epochs, sharding, failure reports, batch meta."""

    def __init__(self, videos, store, batch_size: int, *, clip_len: int = 16, stride: int = 2, size: int = 224,
                 augment: bool = True, sampling: str = "motion", preset: str = "paper", seed: int = 0,
                 shard_id: int = 0, num_shards: int = 1, return_meta: bool = False, two_clips: bool = False,
                 sampler: Callable | None = None, motion_size=None, drop_last: bool = False, shuffle: bool = True,
                 video_root=None, verify: bool = True, check_fingerprints: bool = True, min_frames: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        check_sampling(sampling)  # checked even when a user sampler replaces it: a typo is never silent
        self.store = resolve_store(store)
        self.batch_size, self.clip_len, self.stride, self.size = int(batch_size), int(clip_len), int(stride), int(size)
        self.augment, self.seed, self.return_meta, self.two_clips = bool(augment), int(seed), return_meta, two_clips
        self.shard_id, self.num_shards, self.drop_last, self.shuffle = int(shard_id), int(num_shards), drop_last, shuffle
        self.paths = VideoPaths(self.store, video_root)
        self.codecs = getattr(self, "codecs", None)  # codecs the decoder reads (None: any); set by subclasses
        videos = [str(v) for v in videos]
        # (H, W) of files whose size differs from the store's source frames (resized transcodes);
        # without verify they are probed lazily, the first time a video is planned (file_size).
        self._file_hw: dict[str, tuple[int, int] | None] = check_videos(
            videos, self.store, self.paths, verify, self.codecs, video_root=video_root, fingerprints=check_fingerprints,
            nvdec=getattr(self, "nvdec", False))
        self._verified = bool(verify)
        # Short videos: kept and padded (listed in short_videos), or dropped under min_frames.
        self.videos, self.short_videos, self.dropped_videos = short_video_policy(
            videos, self.store, clip_span(self.clip_len, self.stride), min_frames)
        self._check_batches()
        # motion target: T' = clip_len, H' = W' = size / 16 (7 at 112, 14 at 224); MAL pools it
        # to the feature map's shape anyway.
        self.motion_size = tuple(motion_size) if motion_size is not None else (self.clip_len, max(1, size // 16),
                                                                               max(1, size // 16))
        if len(self.motion_size) != 3:
            raise ValueError(f"motion_size must be (T', H', W'), got {motion_size}")
        self.sampler = sampler if sampler is not None else MotionSampler(clip_len, stride, sampling, preset, two_clips)
        if sampler is not None and not callable(sampler):
            raise TypeError("sampler must be callable: sampler(maps, info, rng) -> plan.Choice")
        self.failures: dict[str, str] = {}  # path -> reason, each reported once
        self.num_replaced = 0  # samples whose video failed and was replaced by another
        self._good: set[str] = set()
        self.planner = Planner(self.store, self.videos, clip_len=self.clip_len, size=self.size, sampler=self.sampler,
                               augment=self.augment, motion_size=self.motion_size, seed=self.seed,
                               is_bad=self.is_bad, path_of=self.paths, file_hw=self.file_size)
        self.epoch = 0
        self._skip = 0
        epoch_order(len(self.videos), seed=self.seed, epoch=0, shard_id=self.shard_id,
                    num_shards=self.num_shards, drop_last=drop_last)  # validates the sharding now

    def _check_batches(self) -> None:
        """ValueError when an epoch would have no batch (drop_last with too few videos per shard)."""
        if self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")
        n = len(self.videos)
        per_shard = n // self.num_shards if self.drop_last else -(-n // self.num_shards)
        if per_shard < self.batch_size and self.drop_last:
            raise ValueError(f"an epoch would have no batch: {n} videos over {self.num_shards} shard(s) leave "
                             f"{per_shard} per shard, fewer than batch_size={self.batch_size}, and drop_last=True "
                             "drops the incomplete batch; lower batch_size or the shard count, add videos, "
                             "or pass drop_last=False")

    # -- epochs ------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order (and plans) the next iteration produces."""
        self.epoch = int(epoch)

    def skip(self, n: int) -> None:
        """Start the next iteration at batch n of the epoch, without decoding batches 0..n-1.

        Plans are a function of (seed, epoch, position), so a resumed run gets exactly the batches
        it would have had. Applies to the next `iter()` only.
        """
        if not 0 <= int(n) <= len(self):
            raise ValueError(f"skip({n}): the epoch has {len(self)} batches")
        self._skip = int(n)

    def _epoch_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The current epoch's batches from the skip point (consumes the skip)."""
        start, self._skip = self._skip, 0
        return self.batches()[start:]

    def epoch_samples(self, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(positions, dataset indices) of this shard in `epoch` (default: the current one)."""
        return epoch_order(len(self.videos), seed=self.seed, epoch=self.epoch if epoch is None else epoch,
                           shard_id=self.shard_id, num_shards=self.num_shards, shuffle=self.shuffle,
                           drop_last=self.drop_last)

    def batches(self, epoch: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        positions, indices = self.epoch_samples(epoch)
        b = self.batch_size
        return [(positions[i:i + b], indices[i:i + b]) for i in range(0, len(positions), b)][:len(self)]

    def __len__(self) -> int:
        """Batches per epoch for this shard (the last one may be smaller unless drop_last)."""
        return num_batches(len(self.epoch_samples(0)[0]), self.batch_size, self.drop_last)

    # -- file pixels -------------------------------------------------------------------------
    def file_size(self, video: str) -> tuple[int, int] | None:
        """(H, W) of `video`'s file when it differs from the store's source size (a resized
        transcode under video_root), else None. Known from the construction check with verify;
        otherwise read from the container header the first time (cached). A different aspect
        ratio raises ValueError naming the video."""
        if self._verified or video in self._file_hw:
            return self._file_hw.get(video)
        info, path = self.store.info(video), self.paths(video)
        src_hw = (int(info["height"]), int(info["width"]))
        try:
            meta = probe(path)
        except VideoError:
            return None  # is_bad already let it through; a failing decode replaces it later
        file_hw = (meta["height"], meta["width"])
        if file_hw == src_hw or min(file_hw) <= 0:
            self._file_hw[video] = None
        elif uniform_scale(src_hw, file_hw):
            self._file_hw[video] = file_hw
        else:
            raise ValueError(f"the motion store does not match {path}: the file is {file_hw[0]}x{file_hw[1]}, the "
                             f"store's source {src_hw[0]}x{src_hw[1]} (another aspect ratio); rebuild the store")
        return self._file_hw[video]

    # -- bad input ---------------------------------------------------------------------------
    def is_bad(self, path: str) -> str | None:
        """Reason `path` cannot be used, or None. Checked once per file: it opens, its codec is one
        the decoder reads (else UnsupportedCodec: a setup error) and its first frame decodes."""
        if path in self.failures:
            return self.failures[path]
        if path in self._good:
            return None
        reason = self._codec_problem(path) or first_frame_problem(path)
        if reason is None:
            self._good.add(path)
            return None
        self.report_failure(path, reason)
        return reason

    def _codec_problem(self, path: str) -> str | None:
        if self.codecs is None:
            return None
        try:
            codec = probe(path)["codec"]
        except VideoError as err:
            return err.reason
        if codec not in self.codecs:
            raise UnsupportedCodec(f"{path}: codec {codec} cannot be decoded here (this decoder reads "
                                   f"{', '.join(sorted(self.codecs))}); re-encode with `mcl-fast transcode --codec vp9`"
                                   " or use device='gpu' / TorchVideoLoader")
        return None

    def report_failure(self, path: str, reason: str) -> None:
        """Record that `path` failed (one line: the file and why; reported once per file)."""
        if path not in self.failures:
            self.failures[path] = reason
            self._good.discard(path)
            if torch.utils.data.get_worker_info() is not None:
                return  # a DataLoader worker: the main process reports it (TorchVideoLoader)
            msg = f"skipping video {path}: {reason} (replaced by another sample; reported once)"
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def count_replacements(self, plans: Sequence[SamplePlan]) -> None:
        """Count the samples replaced in plans being handed out, and report each bad file once."""
        for plan in plans:
            self.num_replaced += bool(plan.failures)
            for path, reason in plan.failures:
                self.report_failure(path, reason)

    # -- output ------------------------------------------------------------------------------
    def plan_fields(self, plans: Sequence[SamplePlan], device) -> dict:
        """motion, index and (return_meta) frames/boxes/flips of a batch, as torch tensors on `device`."""
        out = {"motion": torch.from_numpy(np.stack([p.motion for p in plans])),
               "index": torch.tensor([p.index for p in plans], dtype=torch.int64)}
        if self.return_meta:
            out.update(meta_fields(plans, self.two_clips))
        return {k: v.to(device) for k, v in out.items()}


def meta_fields(plans: Sequence[SamplePlan], two_clips: bool) -> dict:
    """frames (B, T) query frame indices, box_query/box_key (B, 4) int64 (y0, x0, h, w) in the
    decoded file's pixels (the store's source pixels unless video_root holds a resized transcode),
    flip_query/flip_key (B,) bool; frames_key (B, T) as well with two clips. CPU tensors (the
    loaders move them to their device with the rest of the batch)."""
    out = {"frames": torch.from_numpy(np.stack([p.query.frames for p in plans])),
           "box_query": torch.tensor([p.query.box for p in plans], dtype=torch.int64),
           "box_key": torch.tensor([p.key.box for p in plans], dtype=torch.int64),
           "flip_query": torch.tensor([p.query.aug.flip for p in plans], dtype=torch.bool),
           "flip_key": torch.tensor([p.key.aug.flip for p in plans], dtype=torch.bool)}
    if two_clips:
        out["frames_key"] = torch.from_numpy(np.stack([p.key.frames for p in plans]))
    return out


# --------------------------------------------------------------------------------- the loader


class MotionFocusedLoader(LoaderBase):
    """Motion-focused two-view clips decoded by DALI (see the module docstring and DESIGN.md).

    videos: store keys; store: a MotionStore or its path; batch_size per shard.
    clip_len, stride: frames per clip and their spacing (paper: 16, 2). size: output side S.
    device: "gpu" (NVDEC, H.264/HEVC/VP9/AV1..., outputs on the current CUDA device) or "cpu"
    (DALI's CPU decoder: VP8, VP9, MJPEG only; transcode H.264 with `mcl-fast transcode --codec vp9`).
    augment: colour jitter p=0.8 (0.4, 0.4, 0.4, 0.1), greyscale p=0.2, blur p=0.5, flip p=0.5,
    the same on every frame of a view; False gives plain crops (no flip either).
    sampling: "motion" (paper: motion-focused clip and crop), "random" (baseline), or the
    ablation's halves "temporal" (motion-focused clip, random crop) and "spatial" (random clip,
    motion-focused crop), see plan.MotionSampler; preset: "paper" or "official";
    sampler: a callable sampler(maps, info, rng) -> plan.Choice replacing both.
    two_clips: the key from a second clip of the same video (default: both views from one clip).
    motion_size: (T', H', W') of `motion` (default (clip_len, size // 16, size // 16)).
    seed, shard_id, num_shards, shuffle, drop_last: see plan.epoch_order; len() is the number of
    batches of this shard. return_meta: add frames, box_query, box_key, flip_query, flip_key (boxes
    in the decoded file's pixels; see meta_fields), on the same device as the rest.
    video_root: read the files from here instead of the store's root (a transcoded copy). A copy
    resized by `mcl-fast transcode --short-side` works: boxes are chosen in the store's source
    pixels and scaled to the file's (a copy with another aspect ratio is an error).
    verify: at construction, check each file against the store (checks.check_videos): its content
    fingerprint is the one the maps were made from (check_fingerprints=False opts out: use files
    that changed since), its frame count (where the container declares one) and frame size agree,
    and, on the CPU, its codec is one DALI's CPU decoder reads. The files are read by
    checks.PROBE_THREADS threads, with a progress bar past checks.PROGRESS_MIN videos; every rank
    does it, so with ~1M videos verify once (e.g. on rank 0, or in a smoke run) and pass
    verify=False elsewhere: sizes are then read lazily, the first time each video is planned.
    min_frames: videos shorter than a clip ((clip_len - 1) * stride + 1 frames) are kept and their
    last frame repeats (counted in one notice, listed in `short_videos`); min_frames=N drops the
    videos shorter than N frames instead (listed in `dropped_videos`; `videos` and `index` then
    refer to the videos kept).
    num_threads, prefetch: DALI worker threads and prefetch depth (batches).
    """

    def __init__(self, videos, store, batch_size: int, *, clip_len: int = 16, stride: int = 2, size: int = 224,
                 device: str = "gpu", augment: bool = True, sampling: str = "motion", preset: str = "paper",
                 seed: int = 0, shard_id: int = 0, num_shards: int = 1, return_meta: bool = False,
                 two_clips: bool = False, sampler: Callable | None = None, motion_size=None,
                 drop_last: bool = False, shuffle: bool = True, video_root=None, verify: bool = True,
                 check_fingerprints: bool = True, min_frames: int | None = None,
                 num_threads: int = 4, prefetch: int = 2, device_id: int | None = None):
        from mcl_fast._backend import has_gpu, require_dali

        if device not in ("gpu", "cpu"):
            raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")
        require_dali()
        if device == "gpu" and not has_gpu():
            raise RuntimeError("device='gpu' needs a CUDA GPU (and CuPy); none found. Use device='cpu' with "
                               "VP9 videos (`mcl-fast transcode --codec vp9`) or TorchVideoLoader")
        self.codecs = DALI_CPU_CODECS if device == "cpu" else None
        self.nvdec = device == "gpu"  # the file scan checks NVDEC's minimum frame sizes
        super().__init__(videos, store, batch_size, clip_len=clip_len, stride=stride, size=size, augment=augment,
                         sampling=sampling, preset=preset, seed=seed, shard_id=shard_id, num_shards=num_shards,
                         return_meta=return_meta, two_clips=two_clips, sampler=sampler, motion_size=motion_size,
                         drop_last=drop_last, shuffle=shuffle, video_root=video_root, verify=verify,
                         check_fingerprints=check_fingerprints, min_frames=min_frames)
        self.device, self.num_threads, self.prefetch, self.device_id = device, int(num_threads), int(prefetch), device_id
        self._pipe = None
        self._feed: _Feeder | None = None
        self._select = _gpu_box_selector(self.sampler) if device == "gpu" else None
        self._score = _gpu_clip_scorer(self.sampler) if device == "gpu" else None

    @property
    def torch_device(self) -> torch.device:
        if self.device == "gpu":
            return torch.device("cuda", self.device_id if self.device_id is not None else torch.cuda.current_device())
        return torch.device("cpu")

    def _source(self):
        return self._feed()

    def _build(self):
        from .pipeline import build_view_pipeline

        self._pipe = build_view_pipeline(self._source, batch_size=self.batch_size, size=self.size,
                                         device=self.device, two_clips=self.two_clips, augment=self.augment,
                                         num_threads=self.num_threads, device_id=self.device_id,
                                         prefetch=self.prefetch, seed=self.seed)

    def __iter__(self):
        from .pipeline import to_torch

        batches = self._epoch_batches()
        self._feed = _Feeder(self, self.epoch, batches)
        if self._pipe is None:
            self._build()
        finished = False
        try:
            done = 0
            while done < len(batches):
                try:
                    query, key = self._pipe.run()
                except StopIteration:
                    raise RuntimeError("the DALI pipeline ended the epoch early") from None
                except Exception as err:  # a decode failure inside DALI: find it, replace it, go on
                    if self._feed.error is not None:
                        raise self._feed.error from None
                    self._recover(done, err)
                    continue
                plans = self._feed.served.pop(done)
                self.count_replacements(plans)
                batch = {"query": to_torch(query, self.torch_device), "key": to_torch(key, self.torch_device)}
                batch.update(self.plan_fields(plans, self.torch_device))
                done += 1
                yield batch
            try:  # the source raised StopIteration after the last batch: drain it, rewind
                self._pipe.run()
            except StopIteration:
                self._pipe.reset()
                finished = True
        finally:
            if not finished:  # left mid-epoch: prefetched batches would leak into the next epoch
                self._pipe = None

    def _recover(self, batch_no: int, err: Exception) -> None:
        """A batch failed inside DALI: decode the samples of the batches in flight with PyAV to find
        the bad files, mark them, rebuild the pipeline and restart feeding at `batch_no` (its plans
        now replace those files)."""
        culprits = {}
        for number in sorted(k for k in self._feed.served if k >= batch_no):
            for plan in self._feed.served[number]:
                if plan.path in culprits:
                    continue
                try:
                    read_frames(plan.path, np.concatenate([plan.query.frames, plan.key.frames]),
                                num_frames=int(self.store.info(plan.video)["num_frames"]))
                except Exception as exc:  # noqa: BLE001 (any failure marks the file)
                    culprits[plan.path] = failure_reason(exc)
        if not culprits:
            raise RuntimeError(f"the DALI pipeline failed on batch {batch_no} and no video in it fails to "
                               f"decode with PyAV: {err}") from err
        log.debug("DALI failed on batch %d (files %s)", batch_no, ", ".join(culprits), exc_info=err)
        for path, reason in culprits.items():
            self.report_failure(path, reason)
        self._feed.restart(batch_no)
        self._build()


class _Feeder:
    """The external_source callback: plans batch after batch of one epoch and returns DALI inputs.

    DALI calls it ahead of the consumer (prefetch), so served batches wait in `served` until the
    iterator pairs them with the pipeline's outputs. Raises StopIteration after the last batch.
    """

    def __init__(self, loader: MotionFocusedLoader, epoch: int, batches):
        self.loader, self.epoch, self.batches = loader, epoch, batches
        self.next = 0
        self.served: dict[int, list[SamplePlan]] = {}
        self.error: Exception | None = None

    def restart(self, batch_no: int) -> None:
        self.served = {k: v for k, v in self.served.items() if k < batch_no}
        self.next = batch_no

    def __call__(self):
        from .pipeline import plan_inputs

        if self.next >= len(self.batches):
            raise StopIteration
        loader = self.loader
        positions, indices = self.batches[self.next]
        try:
            plans = loader.planner.plan_batch(self.epoch, positions, indices, loader._select, loader._score)
            encoded = [np.fromfile(p.path, dtype=np.uint8) for p in plans]
        except Exception as err:  # surfaced by the iterator as itself, not as a DALI error
            self.error = err
            raise
        self.served[self.next] = plans
        self.next += 1
        return plan_inputs(plans, encoded, loader.two_clips, loader.augment)


def _gpu_box_selector(sampler):
    """Batched box selection in the GPU kernel (mcl_fast.gpu.sampling.select_box_index_batch) for
    the MotionSampler's motion-focused crop ("motion", "spatial"): one call per group of samples
    sharing a map shape. Returns None (the NumPy path) for other samplers and modes."""
    if not isinstance(sampler, MotionSampler) or not sampler.motion_crop:
        return None
    from mcl_fast._backend import require_cupy
    from mcl_fast.gpu.sampling import select_box_index_batch

    cp = require_cupy()
    cfg = sampler.config

    def select(proposals):
        # Flatten (sample, view) pairs and group by map shape so each group is one (G, h, w) batch.
        chosen = np.zeros((len(proposals), 2), np.int64)
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for i, p in enumerate(proposals):
            for v in range(2):
                groups.setdefault(p["m_s"][v].shape, []).append((i, v))
        for shape, members in groups.items():
            maps = cp.asarray(np.stack([proposals[i]["m_s"][v] for i, v in members]).astype(np.float32))
            boxes = cp.asarray(np.stack([proposals[i]["judged"][v] for i, v in members]))
            picks = cp.asnumpy(select_box_index_batch(maps, boxes, percentile=cfg.percentile,
                                                      coverage=cfg.coverage))
            for (i, v), pick in zip(members, picks):
                chosen[i, v] = int(pick)
        return chosen

    return select


def _gpu_clip_scorer(sampler):
    """Batched clip scores in the GPU kernel (mcl_fast.gpu.sampling.clip_scores_batch, bit-equal
    to sampling.clip_scores) for the MotionSampler's motion-focused clip ("motion", "temporal"):
    one call per group of samples whose videos have the same length (the kernel takes (B, N)
    rows). Returns None for other samplers and modes.
    The median and the draws stay on the host, from the same float64 scores, so the clips are
    the CPU path's."""
    if not isinstance(sampler, MotionSampler) or not sampler.motion_clip:
        return None
    from mcl_fast._backend import require_cupy
    from mcl_fast.gpu.sampling import clip_scores_batch

    cp = require_cupy()

    def score(m_ts):
        out: list = [None] * len(m_ts)
        groups: dict[int, list[int]] = {}
        for i, m_t in enumerate(m_ts):
            groups.setdefault(len(m_t), []).append(i)
        for members in groups.values():
            starts, scores = clip_scores_batch(cp.asarray(np.stack([m_ts[i] for i in members])),
                                               sampler.clip_len, sampler.stride)
            scores = cp.asnumpy(scores)
            for row, i in enumerate(members):
                out[i] = (starts, scores[row])
        return out

    return score
