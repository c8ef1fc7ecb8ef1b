"""The TV-L1 kernels' arithmetic, run on the CPU by the host twin, against OpenCV's DualTVL1.

Pieces (pyramid sizes, resize, cubic remap, median, gradient, gray) are checked against OpenCV
directly; the whole solver against ground truth and OpenCV's flow on the fixtures
(tests/fixtures/tvl1/cases.npz, see make_fixtures.py there).

Why the motion maps are compared without an 8-px border: TV-L1 is ill-conditioned where the
warped frame leaves the image, so there OpenCV disagrees with itself after a 1-grey-level change
of a single pixel (full-frame motion-map correlation 0.63-0.95 on these fixtures, 0.996-0.9999
without the border). The official MCL release zeroes the same 8-px border of its motion maps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from host_library import library_or_skip
from mcl_fast.gpu import tvl1_host as th
from mcl_fast.motion import motion_map
from mcl_fast.motion.maps import downsample_mean

cv2 = pytest.importorskip("cv2")
FIXTURES = Path(__file__).parent / "fixtures" / "tvl1" / "cases.npz"
BORDER = 8  # px left out of the motion-map comparison (see the module docstring)


@pytest.fixture(scope="module", autouse=True)
def _lib():
    library_or_skip()


@pytest.fixture(scope="module")
def cases():
    with np.load(FIXTURES) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def host_flows(cases):
    """The host twin's flow for every fixture case (computed once: ~10 s on one core)."""
    out = {}
    for name in ("smooth", "pan", "bikes"):
        frames = cases[f"{name}_frames"]
        out[name] = th.tvl1_pairs(frames[:-1], frames[1:], return_iterations=True)
    return out


def epe(flow, gt, mask):
    return float(np.sqrt(((flow - gt) ** 2).sum(-1))[mask].mean())


def map_correlations(flow_a, flow_b, border=BORDER, block=1):
    """Pearson r of the two flows' motion maps (eq. 1) per pair, border removed, block-averaged."""
    ma, mb = motion_map(flow_a), motion_map(flow_b)
    ma, mb = ma[:, border:-border, border:-border], mb[:, border:-border, border:-border]
    ma, mb = downsample_mean(ma, block), downsample_mean(mb, block)
    return [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(ma, mb)]


# ------------------------------------------------------------------ pieces against OpenCV

def test_default_params_are_opencvs():
    assert th.TVL1Params.from_opencv(cv2.optflow.DualTVL1OpticalFlow_create()) == th.TVL1Params()


@pytest.mark.parametrize("h, w", [(64, 80), (48, 112), (240, 320), (20, 30)])
def test_pyramid_sizes_match_cv_resize(h, w):
    expected, img = [(h, w)], np.zeros((h, w), np.float32)
    for _ in range(4):
        img = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
        if min(img.shape) < 16:  # OpenCV's TV-L1 stops before a level under 16 px
            break
        expected.append(img.shape)
    assert th.pyramid_sizes(h, w, 5, 0.8) == expected


def test_resize_matches_cv_resize():
    rng = np.random.default_rng(0)
    src = (rng.random((2, 51, 67)) * 255).astype(np.float32)
    # Pyramid step: cv2.resize(fx=fy=0.8) means 1/0.8 source px per destination px.
    down = th.resize_linear(src, (41, 54), scale=(1 / 0.8, 1 / 0.8))
    for k in range(2):
        ref = cv2.resize(src[k], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(down[k], ref, rtol=0, atol=1e-3)
    # Flow upsampling: explicit dsize, times 1 / scale_step.
    flow = rng.standard_normal((2, 41, 54)).astype(np.float32) * 5
    up = th.resize_linear(flow, (51, 67), mult=1.25)
    for k in range(2):
        ref = cv2.resize(flow[k], (67, 51), interpolation=cv2.INTER_LINEAR) * np.float32(1.25)
        np.testing.assert_allclose(up[k], ref, rtol=0, atol=1e-4)


def test_remap_cubic_matches_cv_remap_with_zero_border():
    rng = np.random.default_rng(1)
    h, w = 30, 40
    src = (rng.random((h, w)) * 255).astype(np.float32)
    # Positions inside, across the border and far outside (all taps outside -> 0).
    mx = (rng.random((h, w)) * (w + 10) - 5).astype(np.float32)
    my = (rng.random((h, w)) * (h + 10) - 5).astype(np.float32)
    mx[0, :5] = [-1e9, 1e9, np.nan, -3.5, w + 2.5]
    got = th.remap_cubic(src, mx, my)
    ref = cv2.remap(src, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    finite = np.isfinite(mx)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=0, atol=2e-3)
    assert got[0, 0] == 0 and got[0, 1] == 0 and got[0, 2] == 0


@pytest.mark.parametrize("shape", [(5, 5), (13, 17), (64, 80)])
def test_median5_equals_cv_median_blur(shape):
    u = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    u[::3, ::2] = 0.25  # ties
    np.testing.assert_array_equal(th.median5(u), cv2.medianBlur(u, 5))


def test_centered_gradient_is_opencvs_definition():
    img = (np.random.default_rng(3).random((9, 11)) * 255).astype(np.float32)
    gx, gy = th.centered_gradient(img)
    ex = np.empty_like(img)
    ex[:, 1:-1] = 0.5 * (img[:, 2:] - img[:, :-2])
    ex[:, 0] = 0.5 * (img[:, 1] - img[:, 0])  # half one-sided difference at the border
    ex[:, -1] = 0.5 * (img[:, -1] - img[:, -2])
    np.testing.assert_array_equal(gx, ex)
    gy_t, _ = th.centered_gradient(np.ascontiguousarray(img.T))
    np.testing.assert_array_equal(gy, gy_t.T)


def test_gray_equals_cv_cvtcolor():
    rgb = np.random.default_rng(4).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    np.testing.assert_array_equal(th.rgb_to_gray(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


# ------------------------------------------------------------------ the solver

def test_few_iterations_track_opencv_closely(cases):
    """Without the stopping rule and the median, the arithmetic itself matches OpenCV's."""
    from mcl_fast.motion.flow import to_gray

    prm = th.TVL1Params(nscales=2, warps=2, epsilon=0.0, inner_iterations=10, outer_iterations=2,
                        median_filtering=1)
    gray = to_gray(cases["pan_frames"][:2])
    ref = cv2.optflow.DualTVL1OpticalFlow_create(
        nscales=prm.nscales, warps=prm.warps, epsilon=prm.epsilon, innnerIterations=prm.inner_iterations,
        outerIterations=prm.outer_iterations, medianFiltering=prm.median_filtering).calc(gray[0], gray[1], None)
    got, iters = th.tvl1_pairs(gray[:1], gray[1:], prm, return_iterations=True)
    assert iters[0] == 2 * 2 * 2 * 10  # epsilon 0: every iteration of every scale and warp runs
    assert np.abs(got[0] - ref).max() < 1e-3


@pytest.mark.parametrize("name", ["smooth", "pan"])
def test_ground_truth_error_no_worse_than_opencv(cases, host_flows, name):
    flow, iters = host_flows[name]
    gt, mask, cv_flow = cases[f"{name}_gt"], cases[f"{name}_mask"], cases[f"{name}_cv"]
    ours, theirs = epe(flow, gt, mask), epe(cv_flow, gt, mask)
    assert ours <= 1.10 * theirs, (ours, theirs)
    assert ours < 0.25  # and both are accurate: sub-pixel motion recovered
    assert np.all(iters > 0) and np.all(iters < 5 * 5 * 300)  # OpenCV's stopping rule cut the work


@pytest.mark.parametrize("name", ["smooth", "pan", "bikes"])
def test_motion_maps_correlate_with_opencv(cases, host_flows, name):
    flow, _ = host_flows[name]
    cv_flow = cases[f"{name}_cv"]
    assert min(map_correlations(flow, cv_flow)) >= 0.9
    assert min(map_correlations(flow, cv_flow, block=4)) >= 0.95  # at the store's block means
    # And the flows themselves agree: mean end-point difference well under a pixel.
    assert float(np.sqrt(((flow - cv_flow) ** 2).sum(-1)).mean()) < 0.2


def test_tvl1_flow_contract_and_rgb_equals_gray(cases):
    frames = cases["smooth_frames"]
    gray = th.rgb_to_gray(frames)
    prm = th.TVL1Params(nscales=2, warps=1, outer_iterations=1, inner_iterations=5)
    flow = th.tvl1_flow(frames, prm)
    assert flow.shape == frames.shape[:3] + (2,) and flow.dtype == np.float32
    np.testing.assert_array_equal(flow[-1], flow[-2])
    np.testing.assert_array_equal(flow, th.tvl1_flow(gray, prm))


def test_static_pair_has_zero_flow():
    frame = np.random.default_rng(5).integers(0, 256, (1, 24, 32), dtype=np.uint8)
    flow = th.tvl1_pairs(frame, frame)
    assert np.abs(flow).max() < 1e-3


@pytest.mark.parametrize("kwargs, message", [
    (dict(gamma=0.1), "gamma"), (dict(scale_step=1.0), "scale_step"),
    (dict(median_filtering=3), "median_filtering"), (dict(warps=0), "warps"),
])
def test_bad_params_raise(kwargs, message):
    frames = np.zeros((2, 20, 20), np.uint8)
    with pytest.raises(ValueError, match=message):
        th.tvl1_pairs(frames[:1], frames[1:], th.TVL1Params(**kwargs))


def test_bad_frames_raise():
    with pytest.raises(TypeError, match="uint8"):
        th.tvl1_flow(np.zeros((2, 20, 20), np.float32))
    with pytest.raises(ValueError, match="at least 2 frames"):
        th.tvl1_flow(np.zeros((1, 20, 20), np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        th.tvl1_pairs(np.zeros((1, 20, 20), np.uint8), np.zeros((1, 20, 21), np.uint8))
    with pytest.raises(ValueError, match="gray or"):
        th.tvl1_flow(np.zeros((2, 20, 20, 4), np.uint8))
