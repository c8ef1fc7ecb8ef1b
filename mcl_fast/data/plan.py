"""The per-sample sampling plan shared by the DALI loader and the torch loader.

A plan says everything random about one training sample: which frames each view decodes,
which crop box it takes, whether it is flipped, and its photometric augmentation. Plans are
pure NumPy, drawn from a generator seeded by (seed, epoch, position in the epoch, attempt), so
the same seed gives the same plans in any loader, on any number of workers, in any order.
Both loaders then only *execute* the plan: that is why they produce the same pixels.

Conventions: frames are source-frame indices (int64, always inside [0, num_frames-1]);
colours are RGB in 0..255. Samplers choose boxes (y0, x0, h, w) in the store's source pixels
(store.info(v) height x width: what the motion maps were computed on); a plan's ViewPlan.box is
in the pixels of the file it decodes (`SamplePlan.path`), which differ from the source pixels
only when that file is a resized copy (`mcl-fast transcode --short-side`): see scale_box.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from mcl_fast import sampling as reference  # the NumPy sampling oracle

# ImageNet statistics (the paper's backbones and MoCo v2 normalise with them), in 0..255 units.
MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# Augmentation probabilities and ranges (MoCo v2 / the paper sec. 4.2).
JITTER_P, JITTER_STRENGTH, HUE_MAX = 0.8, 0.4, 0.1
GRAYSCALE_P, BLUR_P, BLUR_SIGMA, FLIP_P = 0.2, 0.5, (0.1, 2.0), 0.5
CONTRAST_CENTER = 128.0  # contrast scales around mid-grey (fixed, so the whole jitter is one affine map)

# RGB <-> YIQ: saturation scales I and Q, hue rotates them; Y is the grey value.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], np.float64)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


# ---------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ViewAug:
    """Photometric and geometric augmentation of one view, the same on every frame.

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


@dataclass(frozen=True)
class ViewPlan:
    """One view: frames (T,) int64 source indices, box (y0, x0, h, w) in the decoded file's pixels, aug."""

    frames: np.ndarray
    box: tuple[int, int, int, int]
    aug: ViewAug


@dataclass(frozen=True)
class SamplePlan:
    """Everything one loader sample needs.

    index: the sample's position in `videos` (the dataset index, returned as `index`);
    video: its store key; path: the file to decode; query/key: the two views;
    motion: (T', H', W') float32 the query tubelet's ST-motion, cropped at the query box and
    flipped with it; failures: [(path, reason)] of videos this sample replaced.
    """

    index: int
    video: str
    path: str
    query: ViewPlan
    key: ViewPlan
    motion: np.ndarray
    failures: tuple = ()


@dataclass(frozen=True)
class Choice:
    """What a sampler returns: the frames and box of each view (augmentation is drawn after)."""

    query_frames: np.ndarray
    query_box: tuple[int, int, int, int]
    key_frames: np.ndarray
    key_box: tuple[int, int, int, int]


# ----------------------------------------------------------------------------- augmentation


def _affine(matrix, offset=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 homogeneous form of rgb -> matrix @ rgb + offset."""
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = offset
    return out


def color_affine(brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0, hue: float = 0.0,
                 grayscale: bool = False, order: Sequence[int] = (0, 1, 2, 3)) -> tuple[np.ndarray, np.ndarray]:
    """(3, 3) float32 matrix and (3,) float32 offset of colour jitter then greyscale, on RGB 0..255.

    brightness b: rgb*b. contrast c: (rgb - 128)*c + 128. saturation s: scales the chroma (I, Q of
    YIQ) by s. hue h (fraction of a turn, in [-0.5, 0.5]): rotates the chroma by 2*pi*h. `order`
    is the order the four are applied in (indices into b, c, s, h). Greyscale keeps Y =
    0.299 R + 0.587 G + 0.114 B in all three channels (the same weights as torchvision).
    """
    theta = 2.0 * np.pi * hue
    steps = [
        _affine(np.eye(3) * brightness),
        _affine(np.eye(3) * contrast, [(1.0 - contrast) * CONTRAST_CENTER] * 3),
        _affine(_YIQ_TO_RGB @ np.diag([1.0, saturation, saturation]) @ _RGB_TO_YIQ),
        _affine(_YIQ_TO_RGB @ np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)],
                                        [0, np.sin(theta), np.cos(theta)]]) @ _RGB_TO_YIQ),
    ]
    total = np.eye(4)
    for i in order:
        total = steps[i] @ total
    if grayscale:
        total = _affine(np.repeat(_RGB_TO_YIQ[:1], 3, axis=0)) @ total
    return total[:3, :3].astype(np.float32), total[:3, 3].astype(np.float32)


def blur_window(sigma: float, size: int) -> int:
    """Odd Gaussian window covering +-3 sigma, smaller than the image (reflect padding needs it)."""
    window = 2 * int(np.ceil(3.0 * sigma)) + 1
    return int(max(1, min(window, size - 1 if size % 2 == 0 else size)))


def draw_view_aug(rng: np.random.Generator, size: int, augment: bool = True) -> ViewAug:
    """The random augmentation of one view (colour jitter p=0.8, greyscale p=0.2, blur p=0.5,
    flip p=0.5). Always draws the same count of numbers, so later draws do not depend on
    which branches fired. With augment=False returns the identity."""
    u = rng.random(4)  # jitter?, greyscale?, blur?, flip?
    b, c, s = rng.uniform(1 - JITTER_STRENGTH, 1 + JITTER_STRENGTH, 3)
    h = rng.uniform(-HUE_MAX, HUE_MAX)
    order = rng.permutation(4)
    sigma = float(rng.uniform(*BLUR_SIGMA))
    if not augment:
        return ViewAug()
    jitter, gray, blur, flip = u[0] < JITTER_P, u[1] < GRAYSCALE_P, u[2] < BLUR_P, u[3] < FLIP_P
    if jitter or gray:
        matrix, offset = color_affine(b, c, s, h, gray, order) if jitter else color_affine(grayscale=True)
    else:
        matrix, offset = np.eye(3, dtype=np.float32), np.zeros(3, np.float32)  # exact: DALI skips nothing
    return ViewAug(flip=bool(flip), color_matrix=matrix, color_offset=offset,
                   blur_sigma=sigma if blur else 0.0, blur_window=blur_window(sigma, size) if blur else 1)


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
    """The default sampler: motion-focused (paper sec. 3.2), random, or one of the two halves.

    Callable as sampler(maps, info, rng) -> Choice, where maps is the (N, h, w) float32
    per-frame motion of the video and info its store info (num_frames, height, width).
    sampling="motion" (TA+SA): the clip by sample_clip_start (T-motion above the median), each
    view's box by sample_crop_box on the clip's S-motion (preset's percentile, coverage, candidates).
    sampling="temporal" (TA): the clip as "motion", each box a random-resized crop (the preset's
    scale and ratio), independent of the motion map.
    sampling="spatial" (SA): a uniformly random clip (random_clip_start), each box as "motion"
    on that clip's S-motion.
    sampling="random": a uniform clip and random-resized-crop boxes, all else equal.
    All modes draw from rng in the same order: the query's clip start, the key's (two_clips),
    then the two views' boxes (motion-focused: all candidates of the query, then the key's).
    two_clips=True: the key comes from its own clip (sampled the same way) instead of the query's.

    A user sampler is any callable with the same signature returning a Choice.
    The motion-focused crop is also split into propose()/finish() so the GPU path can select the
    boxes of a whole batch in one kernel call: propose draws everything random, finish turns
    the selected candidate indices into a Choice. propose and random_crop_choice also take the
    clip scores computed elsewhere (the GPU path scores a whole batch's clips in one kernel call
    per video length); they are used only by the modes with a motion-focused clip.
    """

    def __init__(self, clip_len: int = 16, stride: int = 2, sampling: str = "motion", preset: str = "paper",
                 two_clips: bool = False):
        check_sampling(sampling)
        self.clip_len, self.stride, self.sampling, self.two_clips = int(clip_len), int(stride), sampling, two_clips
        self.config = reference.get_preset(preset)

    @property
    def motion_clip(self) -> bool:
        """True when the clip is motion-focused (TA: "motion", "temporal")."""
        return SAMPLING_MODES[self.sampling][0]

    @property
    def motion_crop(self) -> bool:
        """True when the crop is motion-focused (SA: "motion", "spatial")."""
        return SAMPLING_MODES[self.sampling][1]

    # -- clips ------------------------------------------------------------------------------
    @staticmethod
    def motion_t(maps: np.ndarray) -> np.ndarray:
        """(N,) float32 T-motion of (N, h, w) per-frame maps: each frame's spatial mean (eq. 2)."""
        return maps.reshape(len(maps), -1).mean(axis=1)

    def draw_start(self, clip_scores, rng: np.random.Generator) -> int:
        """reference.sample_clip_start given its clip_scores (starts, scores): the same draws."""
        starts, scores = clip_scores
        if self.config.motion_prob >= 1.0 or rng.random() < self.config.motion_prob:
            hot = starts[scores > np.median(scores)]
            if len(hot):
                starts = hot
        return int(starts[rng.integers(len(starts))])

    def draw_clips(self, maps: np.ndarray, info: dict, rng: np.random.Generator, clip_scores=None) -> list:
        """[query frames (T,), key frames (T,)] int64: one start (two with two_clips), motion-focused
        or uniform as the mode says. clip_scores: see propose (ignored for a uniform clip)."""
        n = int(info["num_frames"])
        if not self.motion_clip:
            draw = lambda: reference.random_clip_start(n, self.clip_len, self.stride, rng)  # noqa: E731
        elif clip_scores is None:
            m_t = self.motion_t(maps)
            draw = lambda: reference.sample_clip_start(m_t, self.clip_len, self.stride, rng,  # noqa: E731
                                                       motion_prob=self.config.motion_prob)
        else:
            draw = lambda: self.draw_start(clip_scores, rng)  # noqa: E731
        starts = [draw()]
        starts.append(draw() if self.two_clips else starts[0])
        return [reference.clip_frame_indices(s, self.clip_len, self.stride, n) for s in starts]

    # -- motion-focused crop, in two steps ----------------------------------------------------
    def propose(self, maps: np.ndarray, info: dict, rng: np.random.Generator, clip_scores=None) -> dict:
        """Draw clip starts and candidate boxes ("motion", "spatial"). Returns a dict: frames (2, T),
        m_s (2, h, w), candidates (2, K, 4) in source pixels, judged (2, K, 4) the map cells they
        cover (info["cells_per_pixel"], when the planner provides it, maps pixels to cells).
        clip_scores: reference.clip_scores(motion_t(maps), clip_len, stride) computed elsewhere
        (bit-equal values give the same draws); None: sample_clip_start computes them."""
        if not self.motion_crop:
            raise ValueError(f"propose() is for the motion-focused crop; sampling={self.sampling!r} has none")
        cfg = self.config
        frame_hw = (int(info["height"]), int(info["width"]))
        frames = self.draw_clips(maps, info, rng, clip_scores)
        m_s = [maps[np.minimum(f, len(maps) - 1)].mean(axis=0) for f in frames[:1 + self.two_clips]]
        if not self.two_clips:
            m_s = m_s * 2
        candidates = np.stack([reference.draw_boxes(rng, cfg.num_candidates, *frame_hw, cfg.scale, cfg.ratio)
                               for _ in range(2)])
        judged = np.stack([map_cells(c, frame_hw, maps.shape[1:], info.get("cells_per_pixel")) for c in candidates])
        return {"frames": np.stack(frames), "m_s": np.stack(m_s), "candidates": candidates, "judged": judged}

    def select(self, proposal: dict) -> np.ndarray:
        """(2,) indices of the chosen candidates, NumPy reference (reference.select_box_index)."""
        cfg = self.config
        return np.array([reference.select_box_index(proposal["m_s"][v], proposal["judged"][v], cfg.percentile,
                                                   cfg.coverage) for v in range(2)])

    @staticmethod
    def finish(proposal: dict, chosen) -> Choice:
        boxes = [tuple(int(x) for x in proposal["candidates"][v, int(chosen[v])]) for v in range(2)]
        return Choice(proposal["frames"][0], boxes[0], proposal["frames"][1], boxes[1])

    # -- random crop ------------------------------------------------------------------------
    def random_crop_choice(self, maps: np.ndarray, info: dict, rng: np.random.Generator,
                           clip_scores=None) -> Choice:
        """"random" and "temporal": the clip(s) as the mode says, then one random-resized-crop box
        per view (reference.random_crop_box with the preset's scale and ratio)."""
        cfg = self.config
        hw = (int(info["height"]), int(info["width"]))
        frames = self.draw_clips(maps, info, rng, clip_scores)
        boxes = [reference.random_crop_box(rng, *hw, cfg.scale, cfg.ratio) for _ in range(2)]
        return Choice(frames[0], boxes[0], frames[1], boxes[1])

    def random_choice(self, info: dict, rng: np.random.Generator) -> Choice:
        """The "random" mode's Choice (needs no maps)."""
        if self.motion_clip:
            raise ValueError(f"random_choice() draws a uniform clip; sampling={self.sampling!r} needs the maps")
        return self.random_crop_choice(None, info, rng)

    def __call__(self, maps: np.ndarray, info: dict, rng: np.random.Generator) -> Choice:
        if not self.motion_crop:
            return self.random_crop_choice(maps, info, rng)
        proposal = self.propose(maps, info, rng)
        return self.finish(proposal, self.select(proposal))


def validate_choice(choice: Choice, info: dict, clip_len: int, video: str) -> Choice:
    """Check a (user) sampler's Choice; raises ValueError naming the video and the problem."""
    n, height, width = int(info["num_frames"]), int(info["height"]), int(info["width"])
    out = []
    for name, frames, box in (("query", choice.query_frames, choice.query_box),
                              ("key", choice.key_frames, choice.key_box)):
        frames = np.asarray(frames, np.int64)
        if frames.shape != (clip_len,):
            raise ValueError(f"{video}: sampler returned {name} frames of shape {frames.shape}, expected ({clip_len},)")
        if frames.min() < 0 or frames.max() > n - 1:
            raise ValueError(f"{video}: sampler returned {name} frames outside [0, {n - 1}]: {frames.tolist()}")
        y0, x0, h, w = (int(v) for v in box)
        if h < 1 or w < 1 or y0 < 0 or x0 < 0 or y0 + h > height or x0 + w > width:
            raise ValueError(f"{video}: sampler returned {name} box {box} outside the {height}x{width} frame")
        out += [frames, (y0, x0, h, w)]
    return Choice(*out)


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
    resamples to out_size by area averaging (adaptive average pooling, which repeats cells
    when upsampling), and mirrors the width when the query is flipped.
    """
    import torch
    import torch.nn.functional as F

    y0, x0, h, w = map_cells(np.asarray([box]), frame_hw, maps.shape[1:], cell_scale)[0]
    tube = maps[np.minimum(np.asarray(frames), len(maps) - 1), y0:y0 + h, x0:x0 + w]
    pooled = F.adaptive_avg_pool3d(torch.from_numpy(np.ascontiguousarray(tube, np.float32))[None, None],
                                   tuple(int(s) for s in out_size))[0, 0].numpy()
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


# ----------------------------------------------------------------------------------- planner


class Planner:
    """Turns (epoch, position, dataset index) into a SamplePlan, reading the motion store.

    store: a MotionStore (duck-typed: read(v), info(v), video_path(v); cells_per_pixel(v) used
    when present). videos: store keys. path_of(video) -> file path (default store.video_path).
    file_hw(video) -> (H, W) of the file to decode, or None when it is the store's source size;
    boxes are chosen in source pixels and scaled to the file's (scale_box) when they differ.
    sampler: a MotionSampler or a user callable sampler(maps, info, rng) -> Choice.
    is_bad(path) -> reason or None: the caller's decode check; a bad video is replaced by
    another (drawn from the sample's own generator, so the replacement is deterministic) and
    listed in the plan's `failures`.
    """

    MAX_ATTEMPTS = 16

    def __init__(self, store, videos: Sequence[str], *, clip_len: int, size: int, sampler: Callable,
                 augment: bool, motion_size, seed: int, is_bad: Callable[[str], str | None] | None = None,
                 path_of: Callable[[str], str] | None = None,
                 file_hw: Callable[[str], tuple[int, int] | None] | None = None):
        self.store, self.videos = store, list(videos)
        self.clip_len, self.size, self.sampler, self.augment = int(clip_len), int(size), sampler, augment
        self.motion_size, self.seed = tuple(int(s) for s in motion_size), int(seed)
        self.is_bad = is_bad or (lambda path: None)
        self.path_of = path_of or (lambda video: str(store.video_path(video)))
        self.file_hw = file_hw or (lambda video: None)

    def plan(self, epoch: int, position: int, index: int, select: Callable | None = None,
             score: Callable | None = None) -> SamplePlan:
        """The plan of the sample at `position` of `epoch` (dataset index `index`), after any
        replacements. select, score: optional batched GPU steps, see plan_batch."""
        return self.plan_batch(epoch, [position], [index], select, score)[0]

    def plan_batch(self, epoch: int, positions, indices, select: Callable | None = None,
                   score: Callable | None = None) -> list[SamplePlan]:
        """Plans of a batch. For the MotionSampler (ignored for user samplers), two optional batched
        steps replace the per-sample NumPy ones (the GPU path passes its kernels):
        select(proposals) -> (B, 2) chosen candidate indices, used by the modes with a
        motion-focused crop ("motion", "spatial"); score([m_t (N_i,) float32 per sample]) ->
        [(starts, scores) per sample], equal to reference.clip_scores(m_t, clip_len, stride), used
        by the modes with a motion-focused clip ("motion", "temporal"). Either gives the same plans."""
        resolved = []  # (position, index, rng, failures)
        for pos, idx in zip(positions, indices):
            resolved.append(self._resolve(epoch, int(pos), int(idx)))
        choices: list[Choice | None] = [None] * len(resolved)
        pending = []  # (slot, proposal) for batched selection
        sampler = self.sampler
        ours = isinstance(sampler, MotionSampler)
        batched = select is not None and ours and sampler.motion_crop
        loaded = []
        for pos, idx, rng, _ in resolved:
            video = self.videos[idx]
            maps, info = self.store.read(video), dict(self.store.info(video))
            scale = cells_per_pixel(self.store, video)
            if scale is not None:
                info["cells_per_pixel"] = scale
            loaded.append((maps, info))
        scores = [None] * len(resolved)
        if score is not None and ours and sampler.motion_clip:  # the batch's clip scores in one go (before any draw)
            scores = list(score([MotionSampler.motion_t(maps) for maps, _ in loaded]))
        for slot, ((pos, idx, rng, _), (maps, info)) in enumerate(zip(resolved, loaded)):
            if batched:
                pending.append((slot, sampler.propose(maps, info, rng, clip_scores=scores[slot])))
            else:
                if ours and not sampler.motion_crop:  # "random", "temporal"
                    choice = sampler.random_crop_choice(maps, info, rng, clip_scores=scores[slot])
                elif ours:  # a motion-focused crop, selected here on the CPU
                    proposal = sampler.propose(maps, info, rng, clip_scores=scores[slot])
                    choice = MotionSampler.finish(proposal, sampler.select(proposal))
                else:
                    choice = sampler(maps, info, rng)
                choices[slot] = validate_choice(choice, info, self.clip_len, self.videos[idx])
        if pending:
            chosen = select([p for _, p in pending])
            for (slot, proposal), pick in zip(pending, chosen):
                choices[slot] = MotionSampler.finish(proposal, pick)
        plans = []
        for (pos, idx, rng, failures), choice, (maps, info) in zip(resolved, choices, loaded):
            video = self.videos[idx]
            q_aug = draw_view_aug(rng, self.size, self.augment)
            k_aug = draw_view_aug(rng, self.size, self.augment)
            frame_hw = (int(info["height"]), int(info["width"]))
            motion = crop_motion(maps, choice.query_frames, choice.query_box, frame_hw, self.motion_size, q_aug.flip,
                                 info.get("cells_per_pixel"))
            file_hw = self.file_hw(video) or frame_hw  # a resized transcode: same region, its pixels
            q_box, k_box = (scale_box(box, frame_hw, file_hw) for box in (choice.query_box, choice.key_box))
            plans.append(SamplePlan(
                index=idx, video=video, path=self.path_of(video),
                query=ViewPlan(np.asarray(choice.query_frames, np.int64), q_box, q_aug),
                key=ViewPlan(np.asarray(choice.key_frames, np.int64), k_box, k_aug),
                motion=motion, failures=tuple(failures)))
        return plans

    def _resolve(self, epoch: int, position: int, index: int):
        """Replace a bad video by another, deterministically; returns (pos, idx, rng, failures)."""
        failures = []
        for attempt in range(self.MAX_ATTEMPTS):
            rng = sample_rng(self.seed, epoch, position, attempt)
            if attempt:
                index = int(rng.integers(len(self.videos)))
            path = self.path_of(self.videos[index])
            reason = self.is_bad(path)
            if reason is None:
                return position, index, rng, failures
            failures.append((path, reason))
        raise RuntimeError(f"{self.MAX_ATTEMPTS} videos in a row failed to decode; the last: "
                           f"{failures[-1][0]}: {failures[-1][1]}")
