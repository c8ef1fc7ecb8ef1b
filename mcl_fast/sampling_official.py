"""Temporal sampling and the motion crop of the authors' released code (the `official` preset).

NumPy reference of what the release does (docs/release.md collects the facts). Every function is deterministic given its inputs and the rng
(a numpy.random.Generator); the order in which it draws is part of its contract (the
docstrings say it), so a GPU twin or a test can replay it. Boxes are (y0, x0, h, w) ints in
frame pixels: rows [y0, y0 + h), columns [x0, x0 + w).

Inputs come from mcl_fast.motion.official: clip magnitudes (one per clip start) for the
temporal part, the per-frame (7, 7) maps for the crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MOTION_PROB = 0.7  # chance that a video's clips are motion-focused (else uniform): SeCo's scheme
TOP_FRACTION = 0.5  # each half keeps its top floor(TOP_FRACTION * n_first_half) + 1 starts
TOP_CELLS = 4  # floor(49 * 0.1): the cells that define the motion box
# (largest motion-box area in cells, coverage a crop must reach); larger boxes: a plain random crop
COVERAGE_TABLE = ((4, 0.9), (8, 0.8), (12, 0.7))
CROP_SCALE = (0.2, 1.0)  # candidate area, fraction of the frame
CROP_RATIO = (3 / 4, 4 / 3)  # candidate aspect w/h, log-uniform
SIZE_TRIES = 20
POSITION_TRIES = 40


# ------------------------------------------------------------------------------ temporal


@dataclass(frozen=True)
class OfficialClips:
    """The three clips of one video.

    starts: (3,) int64 clip starts (source frames): [query, other 1, other 2]. The query clip
    feeds the query and key 1 (two crops), the other two clips keys 2 and 3.
    query_first: True when the query comes from the video's first half and the others from the
    second (the order loss's label); motion: True when the draw was motion-focused (rank-based).
    """

    starts: np.ndarray
    query_first: bool
    motion: bool


def split_halves(num_starts: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidate starts 0 .. K-1 split into the video's halves: ([0, K//2), [K//2, K)).

    With K = 1 both halves are the single start 0 (the video has no second clip position).
    """
    if num_starts < 1:
        raise ValueError(f"need at least one clip start, got {num_starts}")
    if num_starts == 1:
        return np.zeros(1, np.int64), np.zeros(1, np.int64)
    starts = np.arange(num_starts, dtype=np.int64)
    return starts[:num_starts // 2], starts[num_starts // 2:]


def top_starts(magnitudes, top_fraction: float = TOP_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """The motion-focused candidates of each half: (first (k,), second (k,)) int64 starts.

    magnitudes: (K,) clip magnitudes of starts 0 .. K-1 (official_clip_magnitudes). Each half
    is ranked by magnitude, highest first (ties: the earlier start first), and keeps its top
    k = floor(top_fraction * n_first_half) + 1 (at most the half's size). Returned in rank order.
    """
    mags = np.asarray(magnitudes, np.float64)
    if mags.ndim != 1:
        raise ValueError(f"magnitudes must be (K,), got shape {mags.shape}")
    first, second = split_halves(len(mags))
    k = int(math.floor(top_fraction * len(first))) + 1
    out = []
    for half in (first, second):
        order = np.argsort(-mags[half], kind="stable")
        out.append(half[order[:k]])
    return out[0], out[1]


def sample_official_clips(magnitudes, rng: np.random.Generator, *, motion_prob: float = MOTION_PROB,
                          top_fraction: float = TOP_FRACTION) -> OfficialClips:
    """Three clip starts of a video, the release's way.

    magnitudes: (K,) clip magnitudes of starts 0 .. K-1 (official_clip_magnitudes; K = N - 32
    for N frames). Draws, in this order:
      1. u = rng.random(): motion-focused when u < motion_prob (one coin for all three clips);
      2. v = rng.random(): the query from the first half and the others from the second when
         v < 0.5, else the reverse;
      3. the query start: pool[rng.integers(len(pool))] from its half's pool;
      4. the two other starts: pool[rng.choice(len(pool), 2, replace=False)] from the other half's
         pool (distinct when it has two or more; with a single candidate both take it, no draw).
    Pools: motion-focused, each half's top_starts; uniform, all of the half's starts.
    """
    mags = np.asarray(magnitudes, np.float64)
    motion = bool(rng.random() < motion_prob)
    query_first = bool(rng.random() < 0.5)
    first, second = top_starts(mags, top_fraction) if motion else split_halves(len(mags))
    query_pool, other_pool = (first, second) if query_first else (second, first)
    query = query_pool[rng.integers(len(query_pool))]
    if len(other_pool) >= 2:
        others = other_pool[rng.choice(len(other_pool), 2, replace=False)]
    else:
        others = np.repeat(other_pool[:1], 2)
    return OfficialClips(np.array([query, *others], np.int64), query_first, motion)


# ---------------------------------------------------------------------------------- crop


def motion_box_cells(cell_map, top_cells: int = TOP_CELLS) -> tuple[int, int, int, int]:
    """Bounding box of the top cells of a (g, g) map: (r0, c0, r1, c1) cells, r1 and c1 exclusive.

    cell_map: the clip's mean per-frame map (e.g. the mean of its 16 (7, 7) official maps).
    Cells are ranked highest first; ties go to the earlier cell in row-major order.
    """
    m = np.asarray(cell_map, np.float64)
    if m.ndim != 2:
        raise ValueError(f"cell_map must be 2-D, got shape {m.shape}")
    top = np.argsort(-m.ravel(), kind="stable")[:top_cells]
    rows, cols = np.unravel_index(top, m.shape)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def required_coverage(box_cells: int, table=COVERAGE_TABLE):
    """The coverage a crop must reach for a motion box of `box_cells` cells; None: no rule
    (c <= 4: 0.9, c <= 8: 0.8, c <= 12: 0.7, larger: None, a plain random crop)."""
    for limit, coverage in table:
        if box_cells <= limit:
            return coverage
    return None


def box_coverage(crops, motion_box) -> np.ndarray:
    """Coverage of the motion box by each crop: (K,) float64.

    crops: (K, 4) (y0, x0, h, w) pixels; motion_box: (y0, y1, x0, x1) float pixels. Coverage =
    (fraction of the box's row extent [y0, y1) inside the crop's rows) x (the same for columns).
    """
    crops = np.asarray(crops, np.float64).reshape(-1, 4)
    by0, by1, bx0, bx1 = (float(v) for v in motion_box)
    y0, x0, h, w = crops.T
    rows = np.clip(np.minimum(by1, y0 + h) - np.maximum(by0, y0), 0, None) / (by1 - by0)
    cols = np.clip(np.minimum(bx1, x0 + w) - np.maximum(bx0, x0), 0, None) / (bx1 - bx0)
    return rows * cols


def _coverage(y0: int, x0: int, h: int, w: int, motion_box) -> float:
    """box_coverage of one crop in plain floats (the 40-position loop runs per sample)."""
    by0, by1, bx0, bx1 = motion_box
    rows = max(0.0, min(by1, y0 + h) - max(by0, y0)) / (by1 - by0)
    cols = max(0.0, min(bx1, x0 + w) - max(bx0, x0)) / (bx1 - bx0)
    return rows * cols


def draw_crop_size(rng: np.random.Generator, height: int, width: int, scale=CROP_SCALE, ratio=CROP_RATIO,
                   tries: int = SIZE_TRIES):
    """(h, w) of the first of `tries` random sizes that fits the frame, or None.

    Each try draws area = rng.uniform(*scale) * H * W, then aspect = exp(rng.uniform(log r0,
    log r1)); w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)) (halves to even);
    it fits when 0 < h <= H and 0 < w <= W.
    """
    for _ in range(tries):
        area = rng.uniform(scale[0], scale[1]) * height * width
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(area * aspect)))
        h = int(round(math.sqrt(area / aspect)))
        if 0 < h <= height and 0 < w <= width:
            return h, w
    return None


def fallback_crop_size(height: int, width: int, ratio=CROP_RATIO) -> tuple[int, int]:
    """(h, w) of the crop used when no size fits: the whole frame, its aspect clamped to `ratio`
    (aspect below r0: full width, h = round(W / r0); above r1: full height, w = round(H * r1))."""
    aspect = width / height
    if aspect < ratio[0]:
        return min(height, int(round(width / ratio[0]))), width
    if aspect > ratio[1]:
        return height, min(width, int(round(height * ratio[1])))
    return height, width


def official_crop_box(cell_map, frame_hw, rng: np.random.Generator, *, top_cells: int = TOP_CELLS,
                      scale=CROP_SCALE, ratio=CROP_RATIO, size_tries: int = SIZE_TRIES,
                      position_tries: int = POSITION_TRIES) -> tuple[int, int, int, int]:
    """The release's motion crop: (y0, x0, h, w) frame pixels.

    cell_map: (g, g) the clip's mean per-frame official map (7 x 7); frame_hw: (H, W) of the
    frames the crop applies to. Cell (r, c) covers frame rows [r H/g, (r+1) H/g) and columns
    [c W/g, (c+1) W/g) (the maps resize the whole frame). The motion box is the bounding box of
    the top `top_cells` cells; its area c in cells gives the required coverage
    (required_coverage). Draws, in this order:
      1. the size: draw_crop_size (up to size_tries tries);
      2a. a size fits, no coverage required: one position, y0 = rng.integers(H - h + 1), then
          x0 = rng.integers(W - w + 1);
      2b. a size fits, coverage required: up to position_tries positions drawn the same way; the
          first whose box_coverage reaches the requirement wins, else the first of the best;
      2c. no size fits, coverage required: the fallback_crop_size crop anchored on a corner of
          the motion box: rng.random() < 0.5 puts its top-left corner on the box's
          (floor(y0), floor(x0)), else its bottom-right on (ceil(y1), ceil(x1)); shifted inside
          the frame;
      2d. no size fits, no coverage required: the fallback size, centred ((H - h) // 2, (W - w) // 2).
    """
    m = np.asarray(cell_map, np.float64)
    height, width = (int(v) for v in frame_hw)
    if height < 1 or width < 1:
        raise ValueError(f"frame_hw must be positive, got {frame_hw}")
    r0, c0, r1, c1 = motion_box_cells(m, top_cells)
    coverage = required_coverage((r1 - r0) * (c1 - c0))
    gy, gx = m.shape
    motion_box = (r0 * height / gy, r1 * height / gy, c0 * width / gx, c1 * width / gx)
    size = draw_crop_size(rng, height, width, scale, ratio, size_tries)
    if size is not None:
        h, w = size
        if coverage is None:
            y0 = int(rng.integers(height - h + 1))
            return y0, int(rng.integers(width - w + 1)), h, w
        best, best_cov = None, -1.0
        for _ in range(position_tries):
            y0 = int(rng.integers(height - h + 1))
            x0 = int(rng.integers(width - w + 1))
            cov = _coverage(y0, x0, h, w, motion_box)
            if cov >= coverage:
                return y0, x0, h, w
            if cov > best_cov:
                best, best_cov = (y0, x0, h, w), cov
        return best
    h, w = fallback_crop_size(height, width, ratio)
    if coverage is None:
        return (height - h) // 2, (width - w) // 2, h, w
    if rng.random() < 0.5:
        y0, x0 = math.floor(motion_box[0]), math.floor(motion_box[2])
    else:
        y0, x0 = math.ceil(motion_box[1]) - h, math.ceil(motion_box[3]) - w
    return int(np.clip(y0, 0, height - h)), int(np.clip(x0, 0, width - w)), h, w


def clip_cell_map(frame_maps, frames) -> np.ndarray:
    """(g, g) float64 mean of the per-frame maps of a clip's frames: frame_maps (N, g, g) (uint8
    as stored, or float), frames (T,) source-frame indices (clipped to the video)."""
    maps = np.asarray(frame_maps)
    idx = np.minimum(np.asarray(frames, np.int64), len(maps) - 1)
    return maps[idx].mean(axis=0, dtype=np.float64)
