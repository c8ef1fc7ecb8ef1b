"""Motion estimation: eq. (1) motion maps, eq. (2) pooling, CPU flow backends, and the paper's
claim that motion boundaries cancel a camera pan while keeping the moving object."""
from __future__ import annotations

import numpy as np
import pytest

from mcl_fast.data.synthetic import read_frames, render_frames
from mcl_fast.motion import compute_flow, motion_map, pool_motion
from mcl_fast.motion.maps import downsample_mean


# ------------------------------------------------------------------------------ eq. (1)


def _eq1_reference(flow):
    """Eq. (1) written out channel by channel with numpy.gradient on 2-D arrays."""
    out = np.empty(flow.shape[:3], np.float64)
    for i in range(flow.shape[0]):
        u, v = flow[i, ..., 0].astype(np.float64), flow[i, ..., 1].astype(np.float64)
        u_y, u_x = np.gradient(u)
        v_y, v_x = np.gradient(v)
        out[i] = np.sqrt(u_x ** 2 + u_y ** 2 + v_x ** 2 + v_y ** 2)
    return out


@pytest.mark.parametrize("shape", [(3, 7, 9), (2, 2, 2), (1, 16, 5)])
def test_motion_map_matches_eq1_on_random_flow(shape):
    rng = np.random.default_rng(0)
    flow = rng.normal(0, 3, shape + (2,)).astype(np.float32)
    m = motion_map(flow)
    assert m.shape == shape and m.dtype == np.float32
    np.testing.assert_allclose(m, _eq1_reference(flow), rtol=1e-5, atol=1e-5)


def test_motion_map_hand_example():
    """u = x² + 3y, v = -2x on a 4x5 grid: central differences inside, one-sided at the borders."""
    y, x = np.mgrid[0:4, 0:5].astype(np.float32)
    flow = np.stack([x ** 2 + 3 * y, -2 * x], axis=-1)[None]
    # d(x²)/dx by numpy.gradient along x = 0..4: [1, 2, 4, 6, 7]; du/dy = 3; dv/dx = -2; dv/dy = 0.
    u_x = np.array([1, 2, 4, 6, 7], np.float64)
    expected = np.sqrt(u_x ** 2 + 9 + 4)[None, None, :].repeat(4, axis=1)
    np.testing.assert_allclose(motion_map(flow), expected, rtol=1e-6)


def test_translation_has_zero_motion_map():
    flow = np.broadcast_to(np.float32([2.5, -1.0]), (2, 6, 8, 2))
    np.testing.assert_array_equal(motion_map(flow), 0.0)


def test_motion_map_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, H, W, 2\)"):
        motion_map(np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="2x2"):
        motion_map(np.zeros((4, 1, 5, 2)))


# ------------------------------------------------------------------------------ eq. (2)


def test_pool_motion_shapes_and_means():
    rng = np.random.default_rng(1)
    m_st = rng.random((5, 6, 7)).astype(np.float32)
    st, m_s, m_t = pool_motion(m_st)
    assert st is m_st and m_s.shape == (6, 7) and m_t.shape == (5,)
    np.testing.assert_allclose(m_s, sum(m_st[i] for i in range(5)) / 5, rtol=1e-6)
    np.testing.assert_allclose(m_t, [m_st[i].sum() / 42 for i in range(5)], rtol=1e-6)
    np.testing.assert_allclose(m_s.mean(), m_t.mean(), rtol=1e-6)


def test_downsample_mean_blocks():
    maps = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    out = downsample_mean(maps, 2)
    assert out.shape == (2, 2, 3)
    assert out[1, 1, 2] == maps[1, 2:4, 4:6].mean()


# --------------------------------------------------------------------------- flow backends


def _shifted_pair(dx: int, dy: int, n: int = 4, h: int = 40, w: int = 56):
    """n frames of a static texture moved by (dy, dx) px per frame (integer: exact)."""
    big, _ = render_frames(num_frames=1, height=h + 4 * n, width=w + 4 * n, object_size=1, speed=0.0, seed=11)
    big = big[0]
    oy, ox = 2 * n, 2 * n
    return np.stack([big[oy - dy * t: oy - dy * t + h, ox - dx * t: ox - dx * t + w] for t in range(n)])


@pytest.mark.parametrize("method", ["farneback", "tvl1"])
@pytest.mark.parametrize("gray", [False, True])
def test_compute_flow_recovers_translation(method, gray):
    frames = _shifted_pair(dx=2, dy=-1)
    if gray:
        from mcl_fast.motion.flow import to_gray

        frames = to_gray(frames)
    flow = compute_flow(frames, method)
    assert flow.shape == frames.shape[:3] + (2,) and flow.dtype == np.float32
    np.testing.assert_array_equal(flow[-1], flow[-2])  # the last flow repeats (sec. 3.1)
    centre = flow[:-1, 8:-8, 8:-8]  # borders see content entering the frame
    np.testing.assert_allclose(np.median(centre[..., 0]), 2.0, atol=0.25)  # u: x displacement
    np.testing.assert_allclose(np.median(centre[..., 1]), -1.0, atol=0.25)  # v: y displacement


def test_compute_flow_errors():
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="at least 2 frames"):
        compute_flow(frames, "farneback")
    with pytest.raises(ValueError, match="unknown flow method"):
        compute_flow(np.zeros((2, 8, 8), np.uint8), "nope")
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        compute_flow(np.zeros((2, 8, 8, 4), np.uint8), "farneback")


# ------------------------------------------------------------ motion boundaries vs camera pan


def _object_and_background_masks(boxes, shape, inner: int, outer: int):
    """Per flow i (frame i -> i+1): the object's box dilated by `inner` px, and the background
    farther than `outer` px from it (flow smoothing bleeds a few pixels past the edge).
    The last flow repeats the one before it, so it is left out of both."""
    n, h, w = shape
    obj = np.zeros(shape, bool)
    near = np.zeros(shape, bool)
    for i in range(n - 1):
        y0, x0, bh, bw = boxes[i, 0]
        obj[i, max(0, y0 - inner): y0 + bh + inner, max(0, x0 - inner): x0 + bw + inner] = True
        near[i, max(0, y0 - outer): y0 + bh + outer, max(0, x0 - outer): x0 + bw + outer] = True
    background = ~near
    background[-1] = False
    return obj, background


@pytest.mark.parametrize("method, frames_used, inner, outer, min_ratio", [
    ("farneback", 24, 4, 12, 5.0),
    ("tvl1", 6, 2, 6, 10.0),  # TV-L1 keeps edges sharp, but is slow: a few frames suffice
])
def test_motion_map_high_on_object_low_on_panning_background(pan_video, method, frames_used, inner, outer,
                                                             min_ratio):
    frames = read_frames(pan_video.path, max_frames=frames_used)
    flow = compute_flow(frames, method)
    m = motion_map(flow)
    obj, background = _object_and_background_masks(pan_video.boxes, m.shape, inner, outer)
    motion_ratio = m[obj].mean() / m[background].mean()
    assert motion_ratio >= min_ratio, motion_ratio
    # The pan moves the background by 1.48 px/frame, the object at 2.5: raw flow magnitude barely
    # separates them, the motion map (which cancels the pan) does.
    magnitude = np.linalg.norm(flow, axis=-1)
    magnitude_ratio = magnitude[obj].mean() / magnitude[background].mean()
    assert magnitude_ratio < 2.0 and motion_ratio > 2 * magnitude_ratio, (motion_ratio, magnitude_ratio)
    # The background really moves: the flow recovers the pan (dx, dy) = (1.3, 0.7) there.
    np.testing.assert_allclose(np.median(flow[background][:, 0]), 1.3, atol=0.3)
    np.testing.assert_allclose(np.median(flow[background][:, 1]), 0.7, atol=0.3)
