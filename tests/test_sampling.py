"""Motion-focused sampling (paper sec. 3.2): clip choice by T-motion and crop choice by S-motion."""
from __future__ import annotations

import numpy as np
import pytest

from mcl_fast.data.official import SAMPLING
from mcl_fast.sampling import (PRESETS, box_counts, boxes_to_map, clip_scores, draw_boxes, get_preset,
                               random_crop_box, sample_clip_start, sample_crop_box, select_box,
                               select_box_index)

# ------------------------------------------------------------------------- temporal sampling


def _brute_scores(m_t, clip_len, stride):
    span = (clip_len - 1) * stride + 1
    return [np.mean([m_t[s + stride * j] for j in range(clip_len)]) for s in range(len(m_t) - span + 1)]


@pytest.mark.parametrize("clip_len, stride, step", [(4, 2, 1), (3, 1, 2), (1, 1, 1), (5, 3, 3)])
def test_clip_scores_match_brute_force(clip_len, stride, step):
    m_t = np.random.default_rng(0).random(30)
    starts, scores = clip_scores(m_t, clip_len, stride, candidate_step=step)
    span = (clip_len - 1) * stride + 1
    np.testing.assert_array_equal(starts, np.arange(0, 30 - span + 1, step))
    np.testing.assert_allclose(scores, np.asarray(_brute_scores(m_t, clip_len, stride))[starts])


def test_sample_clip_start_only_and_all_starts_above_median_uniformly():
    rng = np.random.default_rng(1)
    m_t = rng.random(40)
    starts, scores = clip_scores(m_t, 4, 2)
    hot = set(starts[scores > np.median(scores)].tolist())
    assert 0 < len(hot) < len(starts)
    draws = np.array([sample_clip_start(m_t, 4, 2, rng) for _ in range(4000)])
    assert set(draws.tolist()) == hot  # only above-median starts, and every one of them
    counts = np.bincount(draws, minlength=len(m_t))[sorted(hot)]
    expected = len(draws) / len(hot)
    assert counts.min() > 0.7 * expected and counts.max() < 1.3 * expected  # roughly uniform


def test_ties_at_the_median_are_not_above_it():
    # Scores 1, 1, 1, 5 (clip_len 1): median 1, only the last start is strictly above it.
    m_t = np.array([1.0, 1.0, 1.0, 5.0])
    rng = np.random.default_rng(2)
    assert {sample_clip_start(m_t, 1, 1, rng) for _ in range(50)} == {3}


def test_static_video_is_uniform_over_all_starts():
    m_t = np.zeros(20)
    rng = np.random.default_rng(3)
    draws = np.array([sample_clip_start(m_t, 4, 2, rng) for _ in range(3000)])
    counts = np.bincount(draws, minlength=14)
    assert len(counts) == 14 and (counts > 0.7 * 3000 / 14).all() and (counts < 1.3 * 3000 / 14).all()


def test_video_shorter_than_span_starts_at_zero():
    m_t = np.array([0.1, 0.9, 0.3])
    starts, scores = clip_scores(m_t, 8, 2)
    np.testing.assert_array_equal(starts, [0])
    np.testing.assert_allclose(scores, [np.mean([0.1, 0.3])])
    rng = np.random.default_rng(4)
    assert {sample_clip_start(m_t, 8, 2, rng) for _ in range(20)} == {0}


def test_motion_prob_official_behaviour():
    """motion_prob=0.7: motion-focused 70 % of the time, uniform over all starts otherwise, so a
    below-median start comes up with probability 0.3 * (cold starts / all starts)."""
    assert SAMPLING.motion_prob == 0.7 and get_preset("paper").motion_prob == 1.0  # the release's: data/official.py
    m_t = np.r_[np.zeros(20), np.ones(20)]  # clip_len 1: 20 cold starts, 20 hot
    rng = np.random.default_rng(5)
    draws = np.array([sample_clip_start(m_t, 1, 1, rng, motion_prob=0.7) for _ in range(6000)])
    cold = (draws < 20).mean()
    assert abs(cold - 0.3 * 0.5) < 0.02, cold
    assert set(draws.tolist()) == set(range(40))
    uniform = np.array([sample_clip_start(m_t, 1, 1, rng, motion_prob=0.0) for _ in range(2000)])
    assert abs((uniform < 20).mean() - 0.5) < 0.04
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("nope")


def test_the_release_keeps_its_sampling_numbers_in_one_place():
    """The release's numbers are sampling_official's; the loaders' config of them (data/official.SAMPLING)
    is built from those, and sampling.py keeps no copy of them."""
    from mcl_fast import sampling_official as release

    assert set(PRESETS) == {"paper"}
    assert (SAMPLING.motion_prob, SAMPLING.scale, SAMPLING.ratio, SAMPLING.num_candidates) == (
        release.MOTION_PROB, release.CROP_SCALE, release.CROP_RATIO, release.POSITION_TRIES) == (
        0.7, (0.2, 1.0), (3 / 4, 4 / 3), 40)


def test_sample_clip_start_is_deterministic_given_the_rng():
    m_t = np.random.default_rng(6).random(50)
    a = [sample_clip_start(m_t, 8, 2, np.random.default_rng(9)) for _ in range(3)]
    assert len(set(a)) == 1


# ---------------------------------------------------------------------------- crop selection


def _brute_counts(mask, boxes):
    return np.array([mask[y:y + h, x:x + w].sum() for y, x, h, w in boxes])


@pytest.mark.parametrize("height, width", [(32, 32), (24, 40), (12, 30)])
def test_draw_boxes_inside_frame_and_within_bounds(height, width):
    rng = np.random.default_rng(7)
    boxes = draw_boxes(rng, 2000, height, width, scale=(0.3, 1.0), ratio=(0.5, 2.0))
    assert boxes.shape == (2000, 4) and np.issubdtype(boxes.dtype, np.integer)
    y0, x0, h, w = boxes.T
    assert (y0 >= 0).all() and (x0 >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (y0 + h <= height).all() and (x0 + w <= width).all()
    # Boxes not clipped by the frame keep the drawn area and aspect up to rounding each side by
    # at most half a pixel.
    unclipped = (h < height) & (w < width)
    assert unclipped.sum() > 200
    h, w = h[unclipped].astype(float), w[unclipped].astype(float)
    area = h * w / (height * width)
    area_lo = 0.3 * (1 - 0.5 / h) * (1 - 0.5 / w)
    area_hi = 1.0 * (1 + 0.5 / h) * (1 + 0.5 / w)
    assert (area >= area_lo).all() and (area <= area_hi).all()
    aspect = w / h
    assert (aspect >= 0.5 * (1 - 0.5 / w) / (1 + 0.5 / h)).all()
    assert (aspect <= 2.0 * (1 + 0.5 / w) / (1 - 0.5 / h)).all()
    if height == width:  # in a square frame neither end of the range gets clipped away
        assert aspect.min() < 0.6 and aspect.max() > 1.7
    y0, x0, h, w = boxes.T
    # Positions cover the frame: both edges get used.
    assert (y0 == 0).any() and (x0 == 0).any() and (x0 + w == width).any()


def test_box_counts_match_brute_force():
    rng = np.random.default_rng(8)
    mask = rng.random((20, 30)) > 0.7
    boxes = draw_boxes(rng, 200, 20, 30, scale=(0.01, 1.0))
    np.testing.assert_array_equal(box_counts(mask, boxes), _brute_counts(mask, boxes))


def _random_map(rng, height, width):
    """A few Gaussian blobs (localised motion) plus noise, or pure noise."""
    y, x = np.mgrid[0:height, 0:width]
    m = rng.random((height, width)) * rng.uniform(0, 0.3)
    for _ in range(rng.integers(0, 4)):
        cy, cx, s = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(1, max(height, width) / 3)
        m += rng.uniform(0.5, 2) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))
    return m


def test_select_box_property_against_brute_force():
    rng = np.random.default_rng(9)
    covered_cases = fallback_cases = 0
    for trial in range(300):
        height, width = int(rng.integers(6, 40)), int(rng.integers(6, 40))
        m_s = _random_map(rng, height, width)
        boxes = draw_boxes(rng, int(rng.integers(1, 30)), height, width, scale=(0.05, 1.0))
        hot = m_s > np.percentile(m_s, 90)
        counts = _brute_counts(hot, boxes)
        total = hot.sum()
        chosen = select_box(m_s, boxes)
        assert isinstance(chosen, tuple) and all(isinstance(v, int) for v in chosen)
        i = select_box_index(m_s, boxes)
        assert chosen == tuple(int(v) for v in boxes[i])
        good = counts >= 0.8 * total
        if good.any():
            covered_cases += 1
            assert counts[i] >= 0.8 * total  # the 80 % guarantee
            assert i == np.flatnonzero(good)[0]  # and it is the first such candidate
        else:
            fallback_cases += 1
            assert counts[i] == counts.max() and i == np.flatnonzero(counts == counts.max())[0]
    assert covered_cases > 50 and fallback_cases > 20  # both branches exercised


def test_select_box_fallbacks():
    m_s = np.zeros((10, 10))
    m_s[0, 0] = m_s[9, 9] = 1.0  # two far-apart hot pixels: no small box holds 80 % of them
    boxes = np.array([[5, 5, 2, 2], [0, 0, 3, 3], [7, 7, 3, 3], [4, 4, 2, 2]])
    assert select_box(m_s, boxes) == (0, 0, 3, 3)  # the first of the boxes holding the most
    assert select_box(m_s, np.r_[boxes, [[0, 0, 10, 10]]]) == (0, 0, 10, 10)  # the only covering one
    # No hot pixels (a static clip: nothing above the 90th percentile): the first box.
    assert select_box(np.full((10, 10), 3.0), boxes) == (5, 5, 2, 2)


def test_sample_crop_box_finds_the_moving_region():
    m_s = np.zeros((48, 64))
    m_s[30:40, 45:58] = 1.0  # 130 hot pixels: over 10 % of 3072, all of them above the percentile
    rng = np.random.default_rng(10)
    hits = 0
    for _ in range(100):
        y, x, h, w = sample_crop_box(m_s, rng, num_candidates=20)
        hits += m_s[y:y + h, x:x + w].sum() >= 0.8 * m_s.sum()
    assert hits >= 95


def test_sample_crop_box_on_a_downsampled_map_returns_frame_pixels():
    m_s = np.zeros((12, 16))
    m_s[8:10, 11:14] = 1.0  # map cells; the frame is 4x larger
    rng = np.random.default_rng(11)
    for _ in range(50):
        y, x, h, w = sample_crop_box(m_s, rng, frame_size=(48, 64))
        assert 0 <= y and 0 <= x and y + h <= 48 and x + w <= 64
    # The judged cells are those the frame box touches.
    np.testing.assert_array_equal(boxes_to_map([[4, 6, 8, 9]], (48, 64), (12, 16)), [[1, 1, 2, 3]])


def test_random_crop_box_inside_frame():
    rng = np.random.default_rng(12)
    for _ in range(100):
        y, x, h, w = random_crop_box(rng, 30, 50)
        assert 0 <= y < y + h <= 30 and 0 <= x < x + w <= 50


# ---------------------------------------------------------------- real footage: bikes.mp4


@pytest.fixture(scope="module")
def bikes_motion(bikes_path):
    """Per-frame motion maps of the whole of bikes.mp4 at short side 72 (Farneback): (250, 72, 170)."""
    from mcl_fast.data.synthetic import read_frames
    from mcl_fast.motion import compute_flow, motion_map

    frames = read_frames(bikes_path, short_side=72)
    return motion_map(compute_flow(frames, "farneback"))


def _chosen_vs_random(maps, seed, draws=200, clip_len=8, stride=2):
    """Mean over draws of (density, share of the clip's S-motion) inside the motion-focused box
    and inside a random box, both relative to the clip's mean, on motion-focused clips."""
    rng = np.random.default_rng(seed)
    m_t = maps.mean(axis=(1, 2))
    height, width = maps.shape[1:]
    stats = np.zeros((2, 2))
    for _ in range(draws):
        start = sample_clip_start(m_t, clip_len, stride, rng)
        m_s = maps[start: start + (clip_len - 1) * stride + 1: stride].mean(axis=0)
        for row, (y, x, h, w) in enumerate([sample_crop_box(m_s, rng), random_crop_box(rng, height, width)]):
            inside = m_s[y:y + h, x:x + w]
            stats[row] += inside.mean() / m_s.mean(), inside.sum() / m_s.sum()
    return stats / draws


def test_bikes_chosen_boxes_are_denser_in_motion_where_motion_is_local(bikes_motion):
    """Frames 137-186, one shot between two scene cuts: a cyclist passes behind a fence, the rest
    of the street barely moves. The chosen boxes hold a clearly higher motion density than
    random boxes (measured 1.55-1.75x over seeds)."""
    stats = _chosen_vs_random(bikes_motion[137:187], seed=0)
    density_ratio = stats[0, 0] / stats[1, 0]
    assert density_ratio >= 1.3, density_ratio


def test_bikes_chosen_boxes_hold_more_s_motion_over_the_whole_clip(bikes_motion):
    """All 250 frames. The 80 % coverage rule holds the motion, not the densest patch: where the
    motion is spread (traffic everywhere) the chosen box is large, so over the whole clip its
    share of the S-motion rises clearly (measured ~1.4x) and its density less (~1.2x)."""
    stats = _chosen_vs_random(bikes_motion, seed=1)
    share_ratio = stats[0, 1] / stats[1, 1]
    density_ratio = stats[0, 0] / stats[1, 0]
    assert share_ratio >= 1.25, share_ratio
    assert density_ratio >= 1.08, density_ratio


def test_boxes_to_map_follows_the_cells_a_store_map_covers():
    # 320x240 source, flow at short side 128 (171x128), 4x4 blocks: 42x32 cells covering flow
    # columns [0, 168), i.e. source x in [0, 314.4); the default ratio 42/320 would misplace the
    # right edge by about a cell.
    sy, sx = 128 / (4 * 240), 171 / (4 * 320)
    box = np.array([[0, 272, 240, 48]])
    cells = boxes_to_map(box, (240, 320), (32, 42), cell_scale=(sy, sx))
    assert cells.tolist() == [[0, 36, 32, 6]]  # floor(272*sx)=36, the end clipped to the map
    plain = boxes_to_map(box, (240, 320), (32, 42))
    assert plain[0, 1] == 35  # what the old map/frame ratio gave
