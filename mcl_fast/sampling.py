"""Motion-focused temporal and spatial sampling (paper sec. 3.2), NumPy only.

This module is the oracle the GPU kernels are checked against: every function is
deterministic given its inputs and the `rng` (a numpy.random.Generator).
Boxes are (y0, x0, h, w) integers: rows [y0, y0+h), columns [x0, x0+w).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._backend import gpu_twin, is_cupy_array


def _gpu(name: str):
    """The CuPy twin of `name` (registered by mcl_fast.gpu.sampling): a function given CuPy returns on the GPU."""
    return gpu_twin(f"sampling.{name}")


@dataclass(frozen=True)
class SamplingConfig:
    """Everything that differs between the `paper` default and the authors' `official` preset."""

    motion_prob: float = 1.0  # chance that the clip is motion-focused (else uniform)
    percentile: float = 90.0  # hot pixels: S-motion above this percentile
    coverage: float = 0.8  # a crop must hold this fraction of the hot pixels
    scale: tuple[float, float] = (0.3, 1.0)  # candidate area, fraction of the frame
    ratio: tuple[float, float] = (0.5, 2.0)  # candidate aspect w/h, log-uniform
    num_candidates: int = 20


PRESETS = {
    "paper": SamplingConfig(),
    # Released code: motion-focused with p=0.7 (SeCo scheme); candidate sizes of area
    # U(0.2, 1) and aspect in [3/4, 4/3]; 40 positions tried. See README "paper vs official".
    # The release's rank-based three clips and top-4-cell crop are in sampling_official.py.
    "official": SamplingConfig(motion_prob=0.7, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), num_candidates=40),
}


def get_preset(name: str) -> SamplingConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def clip_span(clip_len: int, stride: int) -> int:
    """Number of source frames a clip of clip_len frames at this stride spans."""
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got {clip_len}, {stride}")
    return (clip_len - 1) * stride + 1


def clip_frame_indices(start: int, clip_len: int, stride: int, num_frames: int) -> np.ndarray:
    """(clip_len,) int64 frame indices of a clip; past the video's end they repeat its last frame."""
    idx = start + stride * np.arange(clip_len, dtype=np.int64)
    return np.minimum(idx, num_frames - 1)


def clip_scores(m_t, clip_len: int, stride: int, candidate_step: int = 1):
    """Mean T-motion of every candidate clip.

    m_t: (N,) per-frame motion (eq. 2). Returns (starts (K,) int64, scores (K,) float64) with
    starts = range(0, N - span + 1, candidate_step); a video shorter than the span has the
    single start 0, scored over the frames it has. CuPy m_t gives CuPy starts and scores.
    """
    if is_cupy_array(m_t):
        return _gpu("clip_scores")(m_t, clip_len, stride, candidate_step)
    m_t = np.asarray(m_t, dtype=np.float64)
    n = len(m_t)
    if n == 0:
        raise ValueError("clip_scores needs at least one frame")
    span = clip_span(clip_len, stride)
    if n < span:
        return np.zeros(1, np.int64), np.array([m_t[::stride].mean()])
    starts = np.arange(0, n - span + 1, candidate_step, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(m_t, span)[starts, ::stride]  # (K, clip_len)
    return starts, windows.mean(axis=1)


def sample_clip_start(m_t, clip_len: int, stride: int, rng: np.random.Generator,
                      candidate_step: int = 1, motion_prob: float = 1.0) -> int:
    """Uniform among starts scoring strictly above the median score (sec. 3.2).

    If no start does (a static video), uniform among all. With motion_prob < 1 (the
    official preset's 0.7) the clip is instead uniform over all starts with chance 1 - motion_prob.
    CuPy m_t: scored on the GPU, the same rng draws give the same start.
    """
    if is_cupy_array(m_t):
        return _gpu("sample_clip_start")(m_t, clip_len, stride, rng, candidate_step, motion_prob)
    starts, scores = clip_scores(m_t, clip_len, stride, candidate_step)
    if motion_prob >= 1.0 or rng.random() < motion_prob:
        hot = starts[scores > np.median(scores)]
        if len(hot):
            starts = hot
    return int(starts[rng.integers(len(starts))])


def random_clip_start(num_frames: int, clip_len: int, stride: int, rng: np.random.Generator) -> int:
    """The baseline: a uniformly random clip start."""
    return int(rng.integers(max(1, num_frames - clip_span(clip_len, stride) + 1)))


def draw_boxes(rng: np.random.Generator, n: int, height: int, width: int,
               scale=(0.3, 1.0), ratio=(0.5, 2.0)) -> np.ndarray:
    """n random-resized-crop candidates inside a height×width frame: (n, 4) int64 (y0, x0, h, w).

    Area is U(scale)·H·W, aspect w/h log-uniform in `ratio`; sides are clipped to the frame.
    """
    area = rng.uniform(scale[0], scale[1], n) * height * width
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), n))
    w = np.clip(np.rint(np.sqrt(area * aspect)), 1, width).astype(np.int64)
    h = np.clip(np.rint(np.sqrt(area / aspect)), 1, height).astype(np.int64)
    y0 = np.floor(rng.random(n) * (height - h + 1)).astype(np.int64)
    x0 = np.floor(rng.random(n) * (width - w + 1)).astype(np.int64)
    return np.stack([y0, x0, h, w], axis=1)


def hot_mask(m_s, percentile: float = 90.0) -> np.ndarray:
    """Pixels strictly above numpy.percentile(m_s, percentile) (linear interpolation)."""
    m_s = np.asarray(m_s)
    return m_s > np.percentile(m_s, percentile)


def box_counts(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Number of True pixels of a (H, W) mask inside each (y0, x0, h, w) box: a summed-area table."""
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    sat[1:, 1:] = mask.cumsum(0).cumsum(1)
    y0, x0, h, w = (np.asarray(boxes, np.int64)[:, i] for i in range(4))
    y1, x1 = y0 + h, x0 + w
    return sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]


def select_box_index(m_s, boxes, percentile: float = 90.0, coverage: float = 0.8) -> int:
    """Index into `boxes` of the box select_box returns."""
    if is_cupy_array(m_s):
        return int(_gpu("select_box_index_batch")(m_s[None], np.asarray(boxes)[None], percentile, coverage)[0])
    mask = hot_mask(m_s, percentile)
    total = int(mask.sum())
    if total == 0:
        return 0
    counts = box_counts(mask, boxes)
    ok = np.flatnonzero(counts >= coverage * total)
    return int(ok[0]) if len(ok) else int(np.argmax(counts))  # argmax: the first of the maxima


def select_box(m_s, boxes, percentile: float = 90.0, coverage: float = 0.8):
    """The first box holding >= coverage of the hot pixels (m_s > percentile); if none does, the
    first holding the most; with no hot pixels, the first box. Returns (y0, x0, h, w) ints."""
    if is_cupy_array(m_s):
        return _gpu("select_box")(m_s, boxes, percentile, coverage)
    boxes = np.asarray(boxes)
    return tuple(int(v) for v in boxes[select_box_index(m_s, boxes, percentile, coverage)])


def boxes_to_map(boxes, frame_hw, map_hw, cell_scale=None) -> np.ndarray:
    """Frame-pixel boxes -> the map cells they touch (start floored, end ceiled, at least one cell).

    cell_scale=(sy, sx) is map cells per frame pixel (`MotionStore.cells_per_pixel`: a store's
    maps drop the edge rows/columns that do not fill a block); default map_hw / frame_hw.
    """
    boxes = np.asarray(boxes, np.float64)
    sy, sx = cell_scale if cell_scale is not None else (map_hw[0] / frame_hw[0], map_hw[1] / frame_hw[1])
    y0 = np.floor(boxes[:, 0] * sy)
    x0 = np.floor(boxes[:, 1] * sx)
    y1 = np.maximum(np.ceil((boxes[:, 0] + boxes[:, 2]) * sy), y0 + 1)
    x1 = np.maximum(np.ceil((boxes[:, 1] + boxes[:, 3]) * sx), x0 + 1)
    y0 = np.clip(y0, 0, map_hw[0] - 1)
    x0 = np.clip(x0, 0, map_hw[1] - 1)
    y1 = np.clip(y1, y0 + 1, map_hw[0])
    x1 = np.clip(x1, x0 + 1, map_hw[1])
    return np.stack([y0, x0, y1 - y0, x1 - x0], axis=1).astype(np.int64)


def sample_crop_box(m_s, rng: np.random.Generator, *, frame_size=None, cell_scale=None,
                    num_candidates: int = 20, scale=(0.3, 1.0), ratio=(0.5, 2.0),
                    percentile: float = 90.0, coverage: float = 0.8):
    """draw_boxes then select_box.

    m_s: (h, w) S-motion of the clip. Without frame_size the boxes are in m_s's pixels. With
    frame_size=(H, W) (the video's, when m_s is a downsampled store map) candidates are drawn in
    frame pixels, judged on the map cells they cover (see boxes_to_map for cell_scale), and
    returned in frame pixels. CuPy m_s is judged on the GPU with the same draws and result.
    """
    if is_cupy_array(m_s):
        return _gpu("sample_crop_box")(m_s, rng, frame_size=frame_size, cell_scale=cell_scale,
                                      num_candidates=num_candidates, scale=scale, ratio=ratio,
                                      percentile=percentile, coverage=coverage)
    m_s = np.asarray(m_s)
    frame_hw = tuple(frame_size) if frame_size is not None else m_s.shape
    boxes = draw_boxes(rng, num_candidates, frame_hw[0], frame_hw[1], scale, ratio)
    judged = boxes if frame_size is None else boxes_to_map(boxes, frame_hw, m_s.shape, cell_scale)
    return tuple(int(v) for v in boxes[select_box_index(m_s, judged, percentile, coverage)])


def random_crop_box(rng: np.random.Generator, height: int, width: int, scale=(0.3, 1.0), ratio=(0.5, 2.0)):
    """The baseline: one random-resized-crop box."""
    return tuple(int(v) for v in draw_boxes(rng, 1, height, width, scale, ratio)[0])
