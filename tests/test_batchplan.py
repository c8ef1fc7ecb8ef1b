"""The batched planner's building blocks against the per-sample references they replace."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcl_fast import sampling as S
from mcl_fast.data import batchplan as BP
from mcl_fast.data import plan as P

import plan_reference as R


@pytest.mark.parametrize("seed,epoch", [(0, 0), (7, 3), (2**32 + 5, 1), (123456789, 2**33), (2**70, 5)])
def test_sample_streams_are_default_rng(seed, epoch):
    rng = np.random.default_rng(seed % 1000)
    streams = BP.SampleStreams()
    for attempts in (np.zeros(40, np.int64), np.full(40, 3), rng.integers(0, 4, 40)):
        positions = rng.integers(0, 2**31, 40)
        positions[0], positions[1] = 0, 2**32 + 9  # a position of two words: the exact per-sample path
        streams.prepare(seed, epoch, positions, attempts)
        for i, (pos, att) in enumerate(zip(positions, attempts)):
            want = np.random.default_rng([seed, epoch, int(pos), int(att)])
            got = streams.generator(i)
            for draw in (lambda g: g.random(3), lambda g: g.integers(1000), lambda g: g.permutation(4),
                         lambda g: g.uniform(0.3, 1.0, 2), lambda g: g.integers(7, size=5)):
                assert np.array_equal(draw(got), draw(want)), (seed, epoch, pos, att)


def test_uniform_is_affine_on_this_platform():
    # numpy computes uniform as low + (high - low) * u; a platform that fuses it into one multiply-add
    # would make the planner draw each uniform separately (same plans, slower): say so if it happens
    assert BP.uniform_is_affine()


def test_colour_affines_equal_color_affine_bit_for_bit():
    rng = np.random.default_rng(0)
    v = 200
    b, c, s = (rng.uniform(0.6, 1.4, v) for _ in range(3))
    h = rng.uniform(-0.1, 0.1, v)
    gray = rng.random(v) < 0.3
    order = np.stack([rng.permutation(4) for _ in range(v)])
    matrices, offsets = BP.color_affines(b, c, s, h, gray, order, P.CONTRAST_CENTER)
    for i in range(v):
        m, t = R.color_affine(b[i], c[i], s[i], h[i], bool(gray[i]), order[i])
        assert np.array_equal(matrices[i], m) and np.array_equal(offsets[i], t)
    m, t = BP.color_affines(np.ones(1), np.ones(1), np.ones(1), np.zeros(1), np.ones(1, bool),
                             np.arange(4)[None], P.CONTRAST_CENTER)
    want = R.color_affine(grayscale=True)
    assert np.array_equal(m[0], want[0]) and np.array_equal(t[0], want[1])


def test_adaptive_avg_pool_is_torchs():
    rng = np.random.default_rng(1)
    for _ in range(300):
        t, h, w = (int(x) for x in rng.integers(1, 24, 3))
        out = tuple(int(x) for x in rng.integers(1, 16, 3))  # down- and upsampling, overlapping windows
        x = (rng.random((t, h, w)) * 3).astype(np.float32)
        want = F.adaptive_avg_pool3d(torch.from_numpy(x)[None, None], out)[0, 0].numpy()
        got = BP.adaptive_avg_pool(x, out)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    q = rng.integers(0, 256, (8, 10, 13)).astype(np.uint8)  # levels pooled, then scaled: the store's maps
    want = F.adaptive_avg_pool3d(torch.from_numpy(q.astype(np.float32) * np.float32(0.01))[None, None],
                                 (8, 4, 5))[0, 0].numpy()
    np.testing.assert_allclose(BP.adaptive_avg_pool(q, (8, 4, 5), 0.01), want, rtol=2e-6)


def test_select_box_index_batch_equals_select_box_index():
    rng = np.random.default_rng(2)
    for trial in range(200):
        h, w = int(rng.integers(2, 40)), int(rng.integers(2, 45))
        g = int(rng.integers(1, 8))
        maps = (rng.random((g, h, w)) ** 4).astype(np.float32)
        if trial % 4 == 0:
            maps[:] = 0  # no hot pixel: the first box
        if trial % 4 == 1:
            maps = np.rint(maps * 9).astype(np.float32)  # many ties at the threshold
        sets = int(rng.integers(1, 3 * g))
        map_index = rng.integers(0, g, sets)
        boxes = np.stack([S.boxes_to_map(S.draw_boxes(rng, 20, 64, 80), (64, 80), (h, w)) for _ in range(sets)])
        got = S.select_box_index_batch(maps, boxes, 90.0, 0.8, map_index=map_index)
        want = [S.select_box_index(maps[m], boxes[e], 90.0, 0.8) for e, m in enumerate(map_index)]
        assert np.array_equal(got, want)
        same = S.select_box_index_batch(maps, boxes[:g] if sets >= g else boxes[:1].repeat(g, 0))
        assert len(same) == g


def test_boxes_from_draws_is_draw_boxes():
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    heights, widths = np.array([48, 240, 17]), np.array([64, 320, 5])
    draws = [(a.uniform(0.3, 1.0, 20), a.uniform(np.log(0.5), np.log(2.0), 20), a.random(20), a.random(20))
             for _ in range(3)]
    got = S.boxes_from_draws(*(np.stack(d) for d in zip(*draws)), heights[:, None], widths[:, None])
    for i in range(3):
        assert np.array_equal(got[i], S.draw_boxes(b, 20, int(heights[i]), int(widths[i])))
