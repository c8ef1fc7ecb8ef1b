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
    """The knobs of the motion-focused clip and crop (sec. 3.2); `PRESETS["paper"]` is the paper's.
    A variant that samples otherwise keeps its own numbers in its own modules (data/presets.py)."""

    motion_prob: float = 1.0  # chance that the clip is motion-focused (else uniform)
    percentile: float = 90.0  # hot pixels: S-motion above this percentile
    coverage: float = 0.8  # a crop must hold this fraction of the hot pixels
    scale: tuple[float, float] = (0.3, 1.0)  # candidate area, fraction of the frame
    ratio: tuple[float, float] = (0.5, 2.0)  # candidate aspect w/h, log-uniform
    num_candidates: int = 20


# The presets MotionSampler runs; a variant's preset (data/presets.py) brings its own sampler.
PRESETS = {"paper": SamplingConfig()}


def get_preset(name: str) -> SamplingConfig:
    """The SamplingConfig of a preset; ValueError naming the choices otherwise."""
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

    If no start does (a static video), uniform among all. With motion_prob < 1 (SeCo's scheme,
    0.7) the clip is instead uniform over all starts with chance 1 - motion_prob.
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
    area_frac = rng.uniform(scale[0], scale[1], n)
    log_aspect = rng.uniform(np.log(ratio[0]), np.log(ratio[1]), n)
    return boxes_from_draws(area_frac, log_aspect, rng.random(n), rng.random(n), height, width)


def boxes_from_draws(area_frac, log_aspect, y_u, x_u, height, width) -> np.ndarray:
    """draw_boxes' arithmetic on its four draws: (..., 4) int64 (y0, x0, h, w).

    area_frac ~ U(scale), log_aspect ~ U(log ratio), y_u, x_u ~ U[0, 1): arrays of one shape;
    height, width: ints or arrays broadcasting with them (one frame size per box). The batched
    planner draws the numbers of many samples first and turns them into boxes in one call.
    """
    area = area_frac * height * width
    aspect = np.exp(log_aspect)
    w = np.clip(np.rint(np.sqrt(area * aspect)), 1, width).astype(np.int64)
    h = np.clip(np.rint(np.sqrt(area / aspect)), 1, height).astype(np.int64)
    y0 = np.floor(y_u * (height - h + 1)).astype(np.int64)
    x0 = np.floor(x_u * (width - w + 1)).astype(np.int64)
    return np.stack([y0, x0, h, w], axis=-1)


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


def _lerp_like_numpy(a: np.ndarray, b: np.ndarray, n: int, percentile: float) -> np.ndarray:
    """numpy.percentile's "linear" interpolation between the order statistics a (the floor index)
    and b (the next) of n values, for a Python-number percentile: the same float operations."""
    virtual = (n - 1) * np.true_divide(percentile, 100)
    gamma = float(virtual - np.floor(virtual))
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma


def percentile_rows(rows: np.ndarray, percentile: float = 90.0) -> np.ndarray:
    """numpy.percentile(rows, percentile, axis=1) of a (G, n) float32 array, bit for bit, 5-10x
    faster for maps: one single-kth partition of the values' bit patterns (finite non-negative
    float32 order like their int32 views) and the next order statistic as a minimum. Falls back
    to numpy.percentile for other data, and wherever the fast path was not checked equal to it."""
    rows = np.asarray(rows)
    g, n = rows.shape
    if rows.dtype != np.float32 or n < 2 or not _fast_percentile_ok(float(percentile)):
        return np.percentile(rows, percentile, axis=1)
    bits = rows.view(np.int32)
    if bits.min() < 0 or bits.max() >= 0x7F800000:  # a negative, -0.0, inf or nan: numpy's rules
        return np.percentile(rows, percentile, axis=1)
    return percentile_rows_fast(rows, float(percentile))


_FAST_PERCENTILE: dict[float, bool] = {}


def _fast_percentile_ok(percentile: float) -> bool:
    """Whether percentile_rows' fast path equals numpy.percentile here (checked once per q on
    random maps with ties and zeros, several row lengths)."""
    ok = _FAST_PERCENTILE.get(percentile)
    if ok is None:
        _FAST_PERCENTILE[percentile] = False  # the checks below run the fallback
        rng = np.random.default_rng(2021)
        ok = True
        for n in (2, 7, 100, 1344, 1681):
            rows = (rng.random((16, n)) ** 4).astype(np.float32)
            rows[::3] = np.rint(rows[::3] * 7).astype(np.float32) * np.float32(0.37)
            rows[1] = 0.0
            ok &= bool(np.array_equal(percentile_rows_fast(rows, percentile), np.percentile(rows, percentile, axis=1)))
        _FAST_PERCENTILE[percentile] = ok
    return ok


def percentile_rows_fast(rows: np.ndarray, percentile: float) -> np.ndarray:
    """percentile_rows' fast path alone (finite non-negative float32 rows of n >= 2 values)."""
    g, n = rows.shape
    k = int(np.floor((n - 1) * np.true_divide(percentile, 100)))
    if k >= n - 1:
        return rows.max(axis=1)
    part = np.partition(rows.view(np.int32), k, axis=1)
    return _lerp_like_numpy(part[:, k].view(np.float32), part[:, k + 1:].min(axis=1).view(np.float32), n, percentile)


def select_box_index_batch(maps, boxes, percentile: float = 90.0, coverage: float = 0.8, *,
                           map_index=None) -> np.ndarray:
    """(E,) int64: select_box_index(maps[map_index[e]], boxes[e], percentile, coverage) for each e.

    maps: (G, H, W) float; boxes: (E, K, 4) int (y0, x0, h, w) inside the maps; map_index (E,)
    the map each set of boxes is judged on (default: E = G, set e on map e; several sets may share
    a map, whose percentile is then computed once). The percentiles, hot masks and summed-area
    tables of the whole batch are single NumPy calls (the thresholds are numpy.percentile's, bit
    for bit). CuPy maps without map_index run the GPU kernel (mcl_fast.gpu.sampling).
    """
    if is_cupy_array(maps) and map_index is None:
        return _gpu("select_box_index_batch")(maps, boxes, percentile, coverage)
    maps = np.asarray(maps)
    boxes = np.asarray(boxes, np.int64)
    g = len(maps)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    thr = percentile_rows(maps.reshape(g, -1), percentile)  # numpy.percentile's, bit for bit
    mask = maps > thr.reshape(g, 1, 1)  # the dtype numpy.percentile gives, as select_box_index compares
    # summed-area tables, built (G, W, H)-major: numpy's cumsum is fast along a middle axis and slow
    # along a short last one
    cols = np.ascontiguousarray(np.cumsum(mask, axis=1, dtype=np.int32).transpose(0, 2, 1))  # (G, W, H)
    sat_t = np.zeros((g, maps.shape[2] + 1, maps.shape[1] + 1), np.int32)
    np.cumsum(cols, axis=1, out=sat_t[:, 1:, 1:])
    sat = sat_t.transpose(0, 2, 1)  # (G, H + 1, W + 1) view
    total = sat[:, -1, -1]  # hot pixels per map
    row = (np.arange(g) if map_index is None else np.asarray(map_index, np.int64))[:, None]
    total = total[row[:, 0]]
    y0, x0, h, w = (boxes[:, :, i] for i in range(4))
    y1, x1 = y0 + h, x0 + w
    counts = sat[row, y1, x1] - sat[row, y0, x1] - sat[row, y1, x0] + sat[row, y0, x0]  # (E, K)
    ok = counts >= coverage * total[:, None]
    first_ok = np.argmax(ok, axis=1)
    pick = np.where(ok.any(axis=1), first_ok, np.argmax(counts, axis=1))  # argmax: the first of the maxima
    return np.where(total == 0, 0, pick).astype(np.int64)


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
    boxes (..., 4); the sizes and scales may be arrays broadcasting with boxes[..., 0] (one per
    box, or per row of a (B, K, 4) batch).
    """
    boxes = np.asarray(boxes, np.float64)
    sy, sx = cell_scale if cell_scale is not None else (map_hw[0] / frame_hw[0], map_hw[1] / frame_hw[1])
    y0 = np.floor(boxes[..., 0] * sy)
    x0 = np.floor(boxes[..., 1] * sx)
    y1 = np.maximum(np.ceil((boxes[..., 0] + boxes[..., 2]) * sy), y0 + 1)
    x1 = np.maximum(np.ceil((boxes[..., 1] + boxes[..., 3]) * sx), x0 + 1)
    y0 = np.clip(y0, 0, map_hw[0] - 1)
    x0 = np.clip(x0, 0, map_hw[1] - 1)
    y1 = np.clip(y1, y0 + 1, map_hw[0])
    x1 = np.clip(x1, x0 + 1, map_hw[1])
    return np.stack([y0, x0, y1 - y0, x1 - x0], axis=-1).astype(np.int64)


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
