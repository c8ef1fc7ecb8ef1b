"""The per-sample sampling plan shared by the DALI loader and the torch loader.

A plan says everything random about one training sample: which frames each clip decodes, which
crop box each view takes from its clip, whether it is flipped, and its photometric augmentation.
Plans are pure NumPy, drawn from a generator seeded by (seed, epoch, position in the epoch,
attempt), so the same seed gives the same plans in any loader, on any number of workers, in any
order. Both loaders then only *execute* the plan: that is why they produce the same pixels.

This module holds the records, the built-in sampler's configuration (MotionSampler) and the
epoch order; planner.py makes the plans of a whole batch at once (batchplan.py), which is what
the loaders run; tests/plan_reference.py is the per-sample reference it is checked against.

Conventions: frames are source-frame indices (int64, always inside [0, num_frames-1]);
colours are RGB in 0..255. Samplers choose boxes (y0, x0, h, w) in the store's source pixels
(store.info(v) height x width: what the motion maps were computed on); a plan's ViewPlan.box is
in the pixels of the file it decodes (`SamplePlan.path`), which differ from the source pixels
only when that file is a resized copy (`mcl-fast transcode --short-side`): see scale_box.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mcl_fast import sampling as reference  # the NumPy sampling oracle

from .batchplan import adaptive_avg_pool
from .output import IMAGENET_MEAN, IMAGENET_STD
from .views import Augmentation

# ImageNet statistics (output.py's, which the paper's backbones and MoCo v2 normalise with), in 0..255 units.
MEAN_255 = tuple(m * 255 for m in IMAGENET_MEAN)
STD_255 = tuple(v * 255 for v in IMAGENET_STD)

# The paper's augmentation (MoCo v2, sec. 4.2) is views.PAPER; a view spec can set its own.
CONTRAST_CENTER = 128.0  # contrast scales around mid-grey (fixed, so the whole jitter is one affine map)



# ---------------------------------------------------------------------------------- records


@dataclass(slots=True)
class ViewAug:
    """Photometric and geometric augmentation of one view, the same on every frame (a record: read only;
    not frozen, because planning makes tens of thousands per second and frozen init is 3x slower).

    The colour part (jitter then optional greyscale) is one affine map on RGB 0..255 values:
    rgb' = clip(color_matrix @ rgb + color_offset, 0, 255). Blur is a separable Gaussian of
    blur_sigma px over blur_window taps at the output resolution (blur_window 1: no blur),
    reflect-101 borders. flip mirrors the width axis after everything else.
    """

    flip: bool = False
    color_matrix: np.ndarray = field(default_factory=lambda: np.eye(3, dtype=np.float32))
    color_offset: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    blur_sigma: float = 0.0
    blur_window: int = 1

    @property
    def identity_color(self) -> bool:
        return bool(np.array_equal(self.color_matrix, np.eye(3, dtype=np.float32)) and not self.color_offset.any())


@dataclass(slots=True)
class ViewPlan:
    """One view: frames (T,) int64 source indices (its clip's), box (y0, x0, h, w) in the decoded
    file's pixels, aug; clip: the index of its clip in SamplePlan.clips; size: output side."""

    frames: np.ndarray
    box: tuple[int, int, int, int]
    aug: ViewAug
    clip: int = 0
    size: int | None = None


@dataclass(slots=True)
class SamplePlan:
    """Everything one loader sample needs.

    index: the sample's position in `videos` (the dataset index, returned as `index`);
    video: its store key; path: the file to decode; views: one ViewPlan per output view (view 0
    is the query); clips: the frames (T_c,) int64 of each clip, which the views are cut from;
    motion: (T', H', W') float32 the query tubelet's ST-motion, cropped at the query box and
    flipped with it; failures: [(path, reason)] of videos this sample replaced.
    extras: a sampler's per-sample values (Clips.extras), batched under their names;
    motion_flipped: whether `motion` was mirrored (the query's flip, unless the sampler's
    Clips.motion_flip said not to follow it).
    `query` and `key` are views 0 and 1.
    """

    index: int
    video: str
    path: str
    views: tuple
    clips: tuple
    motion: np.ndarray
    failures: tuple = ()
    extras: dict = field(default_factory=dict)
    motion_flipped: bool = False

    @property
    def query(self) -> ViewPlan:
        return self.views[0]

    @property
    def key(self) -> ViewPlan:
        if len(self.views) < 2:
            raise AttributeError("this plan has a single view (no key)")
        return self.views[1]


@dataclass(frozen=True)
class Choice:
    """What a two-view sampler returns: the frames and box of the query and the key.

    With the default views the key's frames are its own clip: return the query's frames again
    for both views from one clip (then they are decoded once).
    """

    query_frames: np.ndarray
    query_box: tuple[int, int, int, int]
    key_frames: np.ndarray
    key_box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Clips:
    """What a sampler returns for any views spec.

    frames: one (T_c,) int array of source frame indices per clip of the views spec, in clip
    order (clip 0 is the query's), T_c that clip's clip_len; inside [0, num_frames - 1].
    boxes: None, or one (y0, x0, h, w) box (source pixels) or None per view; a missing box is
    drawn by the loader with the view's crop rule after the sampler returns.
    motion: None (the loader crops the store's maps under the query box), or the (T', H', W')
    motion target itself (T', H', W' the loader's motion_size), before any flip: it is mirrored
    with the query like the default target.
    motion_flip: False leaves `motion` as it is when the query is flipped (the authors' release
    mirrors its flows with the frames only half the time); True (default) mirrors it with the query.
    extras: None, or {name: value} per-sample values (a bool, a number or an array, the same
    names, dtypes and shapes for every sample) that the loaders stack into batch[name] (B, ...),
    e.g. a variant preset's per-sample labels; a name may not be one of the batch's own keys
    (BATCH_KEYS).
    """

    frames: tuple
    boxes: tuple | None = None
    motion: np.ndarray | None = None
    motion_flip: bool = True
    extras: dict | None = None


# the keys a loader's batch can hold itself: a sampler's extras may not take them
BATCH_KEYS = frozenset({"views", "motion", "index", "label", "frames", "boxes", "flips", "motion_flipped", "mask"})


# ----------------------------------------------------------------------------- augmentation


def jitter_ranges(aug: Augmentation) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) (3,) of the brightness, contrast and saturation factors of `aug`."""
    strength = np.array([aug.brightness, aug.contrast, aug.saturation], np.float64)
    return np.maximum(1.0 - strength, 0.0), 1.0 + strength


# ---------------------------------------------------------------------------------- samplers


# sampling modes (the paper's Table 1 ablation): which of the clip (TA) and the crop (SA) are motion-focused.
SAMPLING_MODES = {
    "motion": (True, True),  # TA+SA: the paper's sampling
    "temporal": (True, False),  # TA only: motion-focused clip, random-resized crop
    "spatial": (False, True),  # SA only: uniform clip, motion-focused crop
    "random": (False, False),  # the baseline: uniform clip, random-resized crop
}


def check_sampling(sampling: str) -> str:
    """sampling itself, or ValueError naming the choices."""
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {', '.join(repr(m) for m in SAMPLING_MODES)}, got {sampling!r}")
    return sampling


class MotionSampler:
    """The built-in sampler's configuration: motion-focused (paper sec. 3.2), random, or one of the two halves.

    The planner (planner.py) draws its clips and boxes for a whole batch; tests/plan_reference.py
    holds the per-sample steps it is checked against.
    sampling="motion" (TA+SA): the clip by sample_clip_start (T-motion above the median), each
    view's box by sample_crop_box on the clip's S-motion (preset's percentile, coverage, candidates).
    sampling="temporal" (TA): the clip as "motion", each box a random-resized crop (the preset's
    scale and ratio), independent of the motion map.
    sampling="spatial" (SA): a uniformly random clip (random_clip_start), each box as "motion"
    on that clip's S-motion.
    sampling="random": a uniform clip and random-resized-crop boxes, all else equal.
    All modes draw from the sample's generator in the same order: the query's clip start, the
    key's (two_clips), then the views' boxes (motion-focused: all candidates of the query, then
    the key's). two_clips=True: the key comes from its own clip instead of the query's.
    preset: a name of sampling.PRESETS or a SamplingConfig (e.g. a variant's, data/presets.py).

    A user sampler is any callable sampler(maps, info, rng) -> Choice or Clips instead.
    """

    def __init__(self, clip_len: int = 16, stride: int = 2, sampling: str = "motion",
                 preset: "str | reference.SamplingConfig" = "paper", two_clips: bool = False):
        check_sampling(sampling)
        self.clip_len, self.stride, self.sampling, self.two_clips = int(clip_len), int(stride), sampling, two_clips
        self.config = preset if isinstance(preset, reference.SamplingConfig) else reference.get_preset(preset)

    @property
    def motion_clip(self) -> bool:
        """True when the clip is motion-focused (TA: "motion", "temporal")."""
        return SAMPLING_MODES[self.sampling][0]

    @property
    def motion_crop(self) -> bool:
        """True when the crop is motion-focused (SA: "motion", "spatial")."""
        return SAMPLING_MODES[self.sampling][1]

    @staticmethod
    def motion_t(maps: np.ndarray) -> np.ndarray:
        """(N,) float32 T-motion of (N, h, w) per-frame maps: each frame's spatial mean (eq. 2)."""
        return maps.reshape(len(maps), -1).mean(axis=1)


def _check_frames(frames, clip_len: int, n: int, name: str, video: str) -> np.ndarray:
    frames = np.asarray(frames, np.int64)
    if frames.shape != (clip_len,):
        raise ValueError(f"{video}: sampler returned {name} frames of shape {frames.shape}, expected ({clip_len},)")
    if frames.min() < 0 or frames.max() > n - 1:
        raise ValueError(f"{video}: sampler returned {name} frames outside [0, {n - 1}]: {frames.tolist()}")
    return frames


def _check_box(box, height: int, width: int, name: str, video: str) -> tuple[int, int, int, int]:
    y0, x0, h, w = (int(v) for v in box)
    if h < 1 or w < 1 or y0 < 0 or x0 < 0 or y0 + h > height or x0 + w > width:
        raise ValueError(f"{video}: sampler returned {name} box {tuple(box)} outside the {height}x{width} frame")
    return y0, x0, h, w


def validate_choice(choice: Choice, info: dict, clip_len: int, video: str) -> Choice:
    """Check a (user) sampler's Choice; raises ValueError naming the video and the problem."""
    n, height, width = int(info["num_frames"]), int(info["height"]), int(info["width"])
    out = []
    for name, frames, box in (("query", choice.query_frames, choice.query_box),
                              ("key", choice.key_frames, choice.key_box)):
        out += [_check_frames(frames, clip_len, n, name, video), _check_box(box, height, width, name, video)]
    return Choice(*out)


def validate_clips(clips: Clips, info: dict, clip_lens, num_views: int, motion_size, video: str) -> Clips:
    """Check a (user) sampler's Clips against the views spec: one frames array per clip (clip_lens
    (C,) their lengths), None or one box (or None) per view, the motion target's shape. Raises
    ValueError naming the video and the problem."""
    n, height, width = int(info["num_frames"]), int(info["height"]), int(info["width"])
    frames = tuple(clips.frames)
    if len(frames) != len(clip_lens):
        raise ValueError(f"{video}: sampler returned {len(frames)} clips; the views spec has {len(clip_lens)}")
    frames = tuple(_check_frames(f, int(t), n, f"clip {c}", video) for c, (f, t) in enumerate(zip(frames, clip_lens)))
    boxes = clips.boxes
    if boxes is not None:
        if len(boxes) != num_views:
            raise ValueError(f"{video}: sampler returned {len(boxes)} boxes; the views spec has {num_views} views")
        boxes = tuple(None if b is None else _check_box(b, height, width, f"view {v}", video)
                      for v, b in enumerate(boxes))
    motion = clips.motion
    if motion is not None:
        motion = np.ascontiguousarray(motion, np.float32)
        if motion.shape != tuple(motion_size):
            raise ValueError(f"{video}: sampler returned a motion target of shape {motion.shape}, expected "
                             f"{tuple(motion_size)} (motion_size)")
    extras = {}
    if clips.extras is not None:
        if not isinstance(clips.extras, dict):
            raise TypeError(f"{video}: Clips.extras must be a dict {{name: value}}, got {type(clips.extras).__name__}")
        for name, value in clips.extras.items():
            if not isinstance(name, str) or name in BATCH_KEYS:
                raise ValueError(f"{video}: Clips.extras name {name!r} is taken by the batch itself "
                                 f"({', '.join(sorted(BATCH_KEYS))}); choose another")
            value = np.asarray(value)
            if value.dtype == object:
                raise TypeError(f"{video}: Clips.extras[{name!r}] must be a bool, a number or a numeric array")
            extras[name] = value
    return Clips(frames=frames, boxes=boxes, motion=motion, motion_flip=bool(clips.motion_flip), extras=extras)


# ------------------------------------------------------------------------------------ motion


def map_cells(boxes, frame_hw, map_hw, cell_scale=None) -> np.ndarray:
    """(K, 4) int64 map cells covered by (K, 4) source-pixel boxes (reference.boxes_to_map).

    cell_scale: (sy, sx) map cells per source pixel (MotionStore.cells_per_pixel, which accounts
    for the edge rows/cols the block-mean downsample drops); None: map_hw / frame_hw.
    """
    return reference.boxes_to_map(boxes, frame_hw, map_hw, None if cell_scale is None else tuple(cell_scale))


def cells_per_pixel(store, video: str):
    """store.cells_per_pixel(video) -> (sy, sx) (a MotionStore); None for a duck-typed store
    without it (then map_hw / frame_hw)."""
    method = getattr(store, "cells_per_pixel", None)
    return tuple(float(v) for v in method(video)) if method is not None else None


def crop_motion(maps: np.ndarray, frames: np.ndarray, box, frame_hw, out_size, flip: bool,
                cell_scale=None) -> np.ndarray:
    """The query's motion target: (T', H', W') float32.

    maps (N, h, w) per-frame motion; takes the maps of `frames`, crops the map cells the box
    (source pixels) covers (map_cells: start floored, end ceiled; cell_scale as there),
    resamples to out_size by area averaging (adaptive average pooling, torch's windows, which
    repeat cells when upsampling: batchplan.adaptive_avg_pool), and mirrors the width when the
    query is flipped.
    """
    y0, x0, h, w = map_cells(np.asarray([box]), frame_hw, maps.shape[1:], cell_scale)[0]
    tube = maps[np.minimum(np.asarray(frames), len(maps) - 1), y0:y0 + h, x0:x0 + w]
    pooled = adaptive_avg_pool(tube, out_size)
    return np.ascontiguousarray(pooled[:, :, ::-1] if flip else pooled)


# ------------------------------------------------------------------------------ file pixels


def scale_box(box, src_hw, dst_hw) -> tuple[int, int, int, int]:
    """A (y0, x0, h, w) box in a src_hw frame -> the same region of the frame resized to dst_hw.

    Each edge is scaled by dst/src on its axis and rounded to the nearest pixel (the resize maps
    the whole frame onto the whole frame, so per-axis ratios are exact); at least one pixel.
    """
    (sh, sw), (dh, dw) = (int(v) for v in src_hw), (int(v) for v in dst_hw)
    if (sh, sw) == (dh, dw):
        return tuple(int(v) for v in box)
    y0, x0, h, w = (float(v) for v in box)
    ry, rx = dh / sh, dw / sw
    top, left = min(int(np.floor(y0 * ry + 0.5)), dh - 1), min(int(np.floor(x0 * rx + 0.5)), dw - 1)
    bottom, right = int(np.floor((y0 + h) * ry + 0.5)), int(np.floor((x0 + w) * rx + 0.5))
    bottom, right = min(max(bottom, top + 1), dh), min(max(right, left + 1), dw)
    return top, left, bottom - top, right - left


# ------------------------------------------------------------------------------- epoch order


def epoch_order(num_videos: int, *, seed: int, epoch: int, shard_id: int = 0, num_shards: int = 1,
                shuffle: bool = True, drop_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """This shard's samples for one epoch: (positions (M,), dataset indices (M,)) int64.

    The epoch's order is a permutation drawn from (seed, epoch) (identity if not shuffle); the
    shard takes the contiguous slice [shard_id*M, (shard_id+1)*M). Shards are disjoint and
    together cover the dataset once. drop_last=False pads the order with its first
    (-n mod num_shards) entries so every shard has M = ceil(n / num_shards) samples (DDP needs
    equal counts; those few videos appear twice); drop_last=True drops the last n mod num_shards
    (M = floor(n / num_shards); nothing repeats). Positions index the padded order and seed each
    sample's generator, so a sample's plan depends on where it sits in the epoch, not on sharding.
    """
    if num_videos < 1:
        raise ValueError("the loader needs at least one video")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, {num_shards}), got {shard_id}")
    order = (np.random.default_rng([int(seed), int(epoch)]).permutation(num_videos) if shuffle
             else np.arange(num_videos))
    if drop_last:
        per = num_videos // num_shards
        if per == 0:
            raise ValueError(f"{num_videos} videos cannot fill {num_shards} shards with drop_last=True")
    else:
        per = -(-num_videos // num_shards)
        order = np.concatenate([order, np.resize(order, per * num_shards - num_videos)])
    positions = np.arange(shard_id * per, (shard_id + 1) * per, dtype=np.int64)
    return positions, order[positions].astype(np.int64)


def num_batches(samples_per_shard: int, batch_size: int, drop_last: bool) -> int:
    return samples_per_shard // batch_size if drop_last else -(-samples_per_shard // batch_size)


def sample_rng(seed: int, epoch: int, position: int, attempt: int = 0) -> np.random.Generator:
    """The generator of one sample: independent of batch size, sharding and worker."""
    return np.random.default_rng([int(seed), int(epoch), int(position), int(attempt)])
