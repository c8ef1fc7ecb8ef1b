"""Motion-focused sampling on the GPU (kernels/select_box.cu), batched, equal to mcl_fast.sampling.

- percentile_batch: numpy.percentile of each map, bit for bit (radix select + NumPy's _lerp);
- select_box_index_batch: the box select_box_index returns for each map, via hot mask ->
  summed-area table -> O(1) count per box -> the reference's first-ok / first-max / no-hot rule;
- clip_scores_batch: sampling.clip_scores for rows of m_t;
- select_box, sample_crop_box, clip_scores, sample_clip_start: the reference's signatures for one
  CuPy map / m_t (boxes are drawn with the caller's NumPy rng exactly as the reference draws them).

Maps must be float32 (the store's dtype): the percentile's arithmetic depends on the dtype, and
the kernels implement NumPy's float32 rules. A percentile given as a Python int/float keeps
NumPy's float32 interpolation; a NumPy float64 one interpolates in float64, as NumPy does.
"""
from __future__ import annotations

import numpy as np

from .. import sampling as ref
from .._backend import register_gpu_twin, require_cupy
from ._module import get_kernel

THREADS = 256  # the per-map kernels' shared-memory reductions assume exactly this block size


def _weak(percentile) -> bool:
    """NumPy's rule: a Python number as q keeps the data's float32 arithmetic in the lerp."""
    return type(percentile) in (int, float)


def _check_percentile(percentile) -> None:
    if not 0.0 <= float(percentile) <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")


def _maps_on_gpu(maps, what: str = "maps"):
    cp = require_cupy()
    if not isinstance(maps, cp.ndarray):
        raise TypeError(f"{what} must be a cupy.ndarray, got {type(maps).__name__}")
    if maps.dtype != cp.float32:
        raise TypeError(f"{what} must be float32 (the store's dtype; NumPy's percentile rounds per dtype), "
                        f"got {maps.dtype}")
    if maps.ndim != 3 or 0 in maps.shape:
        raise ValueError(f"{what} must be (B, H, W) with B, H, W >= 1, got {maps.shape}")
    if maps.shape[0] > 2**31 - 1 or maps.shape[1] * maps.shape[2] > 2**31 - 1:
        raise ValueError(f"{what} of shape {maps.shape} is too large")
    return cp, cp.ascontiguousarray(maps)


def percentile_batch(maps, percentile: float = 90.0):
    """(B,) float64 CuPy: numpy.percentile(maps[b], percentile) for float32 CuPy maps (B, H, W).

    NaN where a map holds a NaN (as NumPy returns).
    """
    cp, maps = _maps_on_gpu(maps)
    _check_percentile(percentile)
    b = maps.shape[0]
    thr = cp.empty(b, cp.float64)
    get_kernel("select_box", "mcl_select_box_percentile")(
        (b,), (THREADS,), (maps, thr, np.int32(b), np.int64(maps.shape[1] * maps.shape[2]),
                           np.float64(percentile), np.int32(_weak(percentile))))
    return thr


def _boxes_on_gpu(cp, boxes, b: int, h: int, w: int):
    boxes = cp.ascontiguousarray(cp.asarray(boxes), dtype=cp.int64)
    if boxes.ndim != 3 or boxes.shape[0] != b or boxes.shape[2] != 4 or boxes.shape[1] < 1:
        raise ValueError(f"boxes must be (B={b}, K>=1, 4) (y0, x0, h, w), got {tuple(boxes.shape)}")
    y0, x0, bh, bw = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    inside = (y0 >= 0) & (x0 >= 0) & (bh >= 1) & (bw >= 1) & (y0 + bh <= h) & (x0 + bw <= w)
    if not bool(inside.all()):
        bad = np.argwhere(~cp.asnumpy(inside))[0]
        raise ValueError(f"box {cp.asnumpy(boxes[bad[0], bad[1]]).tolist()} (map {bad[0]}, candidate {bad[1]}) "
                         f"is not inside the {h}x{w} map")
    return boxes


@register_gpu_twin("sampling.select_box_index_batch")
def select_box_index_batch(maps, boxes, percentile: float = 90.0, coverage: float = 0.8):
    """(B,) int64 CuPy: sampling.select_box_index(maps[b], boxes[b], percentile, coverage) for each b.

    maps: (B, H, W) float32 CuPy; boxes: (B, K, 4) int (y0, x0, h, w) inside the map (NumPy or CuPy).
    """
    cp, maps = _maps_on_gpu(maps)
    b, h, w = maps.shape
    boxes = _boxes_on_gpu(cp, boxes, b, h, w)
    thr = percentile_batch(maps, percentile)
    sat = cp.empty((b, h + 1, w + 1), cp.int32)
    rows = b * (h + 1)
    get_kernel("select_box", "mcl_select_box_sat_rows")(
        ((rows + THREADS - 1) // THREADS,), (THREADS,), (maps, thr, sat, np.int32(b), np.int32(h), np.int32(w)))
    cols = b * w
    get_kernel("select_box", "mcl_select_box_sat_cols")(
        ((cols + THREADS - 1) // THREADS,), (THREADS,), (sat, np.int32(b), np.int32(h), np.int32(w)))
    index = cp.empty(b, cp.int64)
    get_kernel("select_box", "mcl_select_box_pick")(
        (b,), (THREADS,), (sat, boxes, index, np.int32(b), np.int32(h), np.int32(w), np.int32(boxes.shape[1]),
                           np.float64(coverage)))
    return index


def clip_scores_batch(m_t, clip_len: int, stride: int, candidate_step: int = 1):
    """(starts (S,) int64 NumPy, scores (B, S) float64 CuPy): sampling.clip_scores for each row of m_t (B, N)."""
    cp = require_cupy()
    m_t = cp.ascontiguousarray(cp.asarray(m_t), dtype=cp.float64)
    if m_t.ndim != 2 or m_t.shape[1] < 1:
        raise ValueError(f"m_t must be (B, N) with N >= 1 frames, got {m_t.shape}")
    if candidate_step < 1:
        raise ValueError(f"candidate_step must be >= 1, got {candidate_step}")
    span = ref.clip_span(clip_len, stride)
    b, n = m_t.shape
    if n >= span:
        starts, step = np.arange(0, n - span + 1, candidate_step, dtype=np.int64), candidate_step
    else:  # shorter than one clip: the single start 0, scored over the frames it has
        starts, step = np.zeros(1, np.int64), 1
    scores = cp.empty((b, len(starts)), cp.float64)
    total = b * len(starts)
    if total == 0:
        return starts, scores
    get_kernel("select_box", "mcl_select_box_clip_scores")(
        ((total + THREADS - 1) // THREADS,), (THREADS,),
        (m_t, scores, np.int32(b), np.int32(n), np.int32(len(starts)), np.int32(clip_len), np.int32(stride),
         np.int32(step)))
    return starts, scores


# ------------------------------------------------------------------ the reference's single-video API

@register_gpu_twin("sampling.clip_scores")
def clip_scores(m_t, clip_len: int, stride: int, candidate_step: int = 1):
    """sampling.clip_scores of CuPy m_t (N,): (starts (K,) int64, scores (K,) float64), both CuPy."""
    cp = require_cupy()
    starts, scores = _clip_scores_one(cp, m_t, clip_len, stride, candidate_step)
    return cp.asarray(starts), scores


def _clip_scores_one(cp, m_t, clip_len, stride, candidate_step):
    m_t = cp.asarray(m_t)
    if m_t.ndim != 1 or len(m_t) == 0:
        raise ValueError(f"m_t must be (N,) with N >= 1, got {m_t.shape}")
    starts, scores = clip_scores_batch(m_t[None], clip_len, stride, candidate_step)
    return starts, scores[0]


@register_gpu_twin("sampling.sample_clip_start")
def sample_clip_start(m_t, clip_len: int, stride: int, rng: np.random.Generator, candidate_step: int = 1,
                      motion_prob: float = 1.0) -> int:
    """sampling.sample_clip_start with the scores computed on the GPU; same rng draws, same start."""
    cp = require_cupy()
    starts, scores = _clip_scores_one(cp, m_t, clip_len, stride, candidate_step)  # NumPy starts
    if motion_prob >= 1.0 or rng.random() < motion_prob:
        hot = starts[cp.asnumpy(scores > cp.median(scores))]
        if len(hot):
            starts = hot
    return int(starts[rng.integers(len(starts))])


@register_gpu_twin("sampling.select_box")
def select_box(m_s, boxes, percentile: float = 90.0, coverage: float = 0.8):
    """sampling.select_box for one CuPy map m_s (H, W) float32: (y0, x0, h, w) ints."""
    cp = require_cupy()
    boxes_np = np.asarray(cp.asnumpy(boxes) if isinstance(boxes, cp.ndarray) else boxes, dtype=np.int64)
    if boxes_np.ndim != 2 or boxes_np.shape[1] != 4:
        raise ValueError(f"boxes must be (K, 4) (y0, x0, h, w), got {boxes_np.shape}")
    index = select_box_index_batch(m_s[None], boxes_np[None], percentile, coverage)
    return tuple(int(v) for v in boxes_np[int(index[0])])


@register_gpu_twin("sampling.sample_crop_box")
def sample_crop_box(m_s, rng: np.random.Generator, *, frame_size=None, cell_scale=None,
                    num_candidates: int = 20, scale=(0.3, 1.0), ratio=(0.5, 2.0),
                    percentile: float = 90.0, coverage: float = 0.8):
    """sampling.sample_crop_box for a CuPy map m_s (h, w): the same rng draws, the same box."""
    frame_hw = tuple(frame_size) if frame_size is not None else tuple(m_s.shape)
    boxes = ref.draw_boxes(rng, num_candidates, frame_hw[0], frame_hw[1], scale, ratio)
    judged = boxes if frame_size is None else ref.boxes_to_map(boxes, frame_hw, m_s.shape, cell_scale)
    index = select_box_index_batch(m_s[None], judged[None], percentile, coverage)
    return tuple(int(v) for v in boxes[int(index[0])])
