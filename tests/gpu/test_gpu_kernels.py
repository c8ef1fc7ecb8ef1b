"""The motion-map and box-selection kernels on the GPU against the NumPy references (and the
CPU twin when libmcl_host.so is built), on fresh random inputs. Skips without CuPy or a GPU."""
from __future__ import annotations

import numpy as np
import pytest

from mcl_fast._backend import has_gpu

cp = pytest.importorskip("cupy")
if not has_gpu():
    pytest.skip("no CUDA device visible to CuPy", allow_module_level=True)

from mcl_fast import sampling as ref  # noqa: E402
from mcl_fast.gpu import motion as gmotion  # noqa: E402
from mcl_fast.gpu import sampling as gsampling  # noqa: E402
from mcl_fast.motion import maps as maps_ref  # noqa: E402
from mcl_fast.motion.store import quantize_maps  # noqa: E402


@pytest.fixture
def rng(request):
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed={seed}")
    return np.random.default_rng(seed)


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    return np if request.param == "numpy" else cp


def random_flow(rng, n, h, w):
    flow = rng.normal(0, 2, (n, h, w, 2)).astype(np.float32)
    flow[:, h // 3: h // 2, w // 4: w // 2] += np.float32(rng.uniform(-8, 8))
    return flow


def host_or_none():
    try:
        from mcl_fast.gpu import host

        host.library()
        return host
    except Exception:
        return None


# ------------------------------------------------------------------ motion maps

@pytest.mark.parametrize("shape", [(3, 17, 23), (2, 2, 2), (5, 120, 160), (2, 128, 171)])
def test_motion_map_same_body_for_numpy_and_cupy(rng, xp, shape):
    flow = random_flow(rng, *shape)
    got = maps_ref.motion_map(xp.asarray(flow))  # CuPy input dispatches to the kernel
    assert isinstance(got, xp.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(cp.asnumpy(got) if xp is cp else got, maps_ref.motion_map(flow))


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 7])
def test_fused_maps_mean_and_codes(rng, factor):
    flow = random_flow(rng, 6, 37, 53)
    full = maps_ref.motion_map(flow)
    small, m_t = gmotion.motion_maps_downsampled(cp.asarray(flow), factor)
    want = maps_ref.downsample_mean(full, factor)
    assert small.shape == want.shape
    assert float(np.abs(cp.asnumpy(small) - want).max()) <= 1e-5 * float(want.max())
    np.testing.assert_allclose(cp.asnumpy(m_t), full.astype(np.float64).mean(axis=(1, 2)), rtol=1e-5)
    want_codes, scale = quantize_maps(want)
    small2, _, codes = gmotion.motion_maps_fused(cp.asarray(flow), factor, scale=scale)
    np.testing.assert_array_equal(cp.asnumpy(codes), cp.asnumpy(gmotion.quantize(small2, scale)))
    assert np.abs(cp.asnumpy(codes).astype(int) - want_codes).max() <= 1
    host = host_or_none()
    if host is not None:  # the kernel and its CPU twin run the same arithmetic
        h_small, h_m_t, h_codes = host.motion_maps_downsampled(flow, factor, scale=scale)
        np.testing.assert_array_equal(cp.asnumpy(small2), h_small)
        np.testing.assert_array_equal(cp.asnumpy(codes), h_codes)
        np.testing.assert_allclose(cp.asnumpy(m_t), h_m_t, rtol=1e-6)


def test_quantize_maps_equals_the_store(rng):
    maps = (rng.random((7, 32, 42)) ** 2 * 3).astype(np.float32)
    codes, scale = gmotion.quantize_maps(cp.asarray(maps))
    want_codes, want_scale = quantize_maps(maps)
    assert scale == want_scale
    np.testing.assert_array_equal(cp.asnumpy(codes), want_codes)
    codes0, scale0 = gmotion.quantize_maps(cp.zeros((2, 3, 3), cp.float32))
    assert scale0 == 1.0 and not cp.asnumpy(codes0).any()


def test_motion_errors_are_clear():
    with pytest.raises(ValueError, match="N, H, W, 2"):
        gmotion.motion_map(cp.zeros((2, 4, 4), cp.float32))
    with pytest.raises(ValueError, match="factor"):
        gmotion.motion_maps_downsampled(cp.zeros((1, 4, 6, 2), cp.float32), 5)
    with pytest.raises(TypeError, match="cupy"):
        gmotion.motion_map(np.zeros((1, 4, 4, 2), np.float32))


# ------------------------------------------------------------------ percentile and boxes

def percentile_cases(rng):
    yield "uniform", rng.random((6, 13, 17)).astype(np.float32)
    yield "ties", rng.integers(0, 5, (5, 8, 11)).astype(np.float32)
    yield "signed", rng.normal(0, 1e3, (4, 7, 9)).astype(np.float32)
    yield "constant", np.full((2, 5, 5), 0.3, np.float32)
    yield "one pixel", rng.random((3, 1, 1)).astype(np.float32)
    yield "large", rng.gamma(0.5, 1.0, (3, 128, 171)).astype(np.float32)  # many threads per map
    yield "subnormal", (rng.random((3, 9, 9)) * 1e-38).astype(np.float32)


@pytest.mark.parametrize("q", [90.0, 0.0, 50.0, 99.9, 100.0, 90, 33.3, np.float64(37.3)])
def test_percentile_equals_numpy(rng, q):
    for name, maps in percentile_cases(rng):
        got = cp.asnumpy(gsampling.percentile_batch(cp.asarray(maps), q))
        want = np.array([np.percentile(m, q) for m in maps], np.float64)
        np.testing.assert_array_equal(got, want, err_msg=f"case {name}, q={q!r}")


def test_percentile_nan(rng):
    maps = rng.random((2, 6, 6)).astype(np.float32)
    maps[1, 0, 0] = np.nan
    got = cp.asnumpy(gsampling.percentile_batch(cp.asarray(maps), 90.0))
    assert got[0] == np.percentile(maps[0], 90.0) and np.isnan(got[1])


def check_boxes(maps, boxes, percentile=90.0, coverage=0.8):
    got = cp.asnumpy(gsampling.select_box_index_batch(cp.asarray(maps), boxes, percentile, coverage))
    want = np.array([ref.select_box_index(m, b, percentile, coverage) for m, b in zip(maps, boxes)])
    np.testing.assert_array_equal(got, want)
    host = host_or_none()
    if host is not None:
        np.testing.assert_array_equal(got, host.select_box_index_batch(maps, boxes, percentile, coverage)[0])
    return got


@pytest.mark.parametrize("hw", [(32, 42), (13, 17), (1, 1), (128, 171)])
@pytest.mark.parametrize("k", [20, 700])  # 700 > the 256 threads of a block: the reduction is exercised
def test_select_box_matches_reference(rng, hw, k):
    h, w = hw
    maps = (rng.random((16, h, w)) ** 3).astype(np.float32)
    boxes = np.stack([ref.draw_boxes(rng, k, h, w, scale=(0.05, 1.0)) for _ in range(16)])
    check_boxes(maps, boxes)
    check_boxes(maps, boxes, percentile=50, coverage=0.5)


def test_select_box_paths_first_ok_fallback_ties_and_no_hot(rng):
    h, w = 16, 20
    maps = np.zeros((4, h, w), np.float32)
    maps[0, 2:6, 3:9] = rng.random((4, 6)).astype(np.float32) + 1
    maps[1] = rng.random((h, w)).astype(np.float32)
    maps[3, 0, 0] = 1.0
    blob = [2, 3, 4, 6]
    boxes = np.array([[[0, 0, 2, 2], [8, 8, 8, 12], blob, [0, 0, h, w], blob]] * 4, np.int64)
    got = check_boxes(maps, boxes)
    assert got[0] == 2 and got[2] == 0 and got[3] == 0
    ties = np.array([[[0, 0, 2, 2], [0, 10, 8, 10], [8, 0, 8, 10], [0, 10, 8, 10]]] * 4, np.int64)
    check_boxes(maps, ties, coverage=1.01)
    assert (check_boxes(maps, boxes, coverage=0.0) == 0).all()


def test_select_box_rejects_boxes_outside(rng):
    with pytest.raises(ValueError, match="not inside"):
        gsampling.select_box_index_batch(cp.zeros((1, 4, 4), cp.float32), np.array([[[2, 2, 3, 1]]]))
    with pytest.raises(TypeError, match="float32"):
        gsampling.select_box_index_batch(cp.zeros((1, 4, 4), cp.float64), np.array([[[0, 0, 1, 1]]]))


def test_single_map_api_matches_sampling_py(rng):
    for _ in range(20):
        m_s = (rng.random((32, 42)) ** 4).astype(np.float32)
        seed = int(rng.integers(2**31))
        want = ref.sample_crop_box(m_s, np.random.default_rng(seed), frame_size=(128, 171))
        got = gsampling.sample_crop_box(cp.asarray(m_s), np.random.default_rng(seed), frame_size=(128, 171))
        assert got == want
        boxes = ref.draw_boxes(rng, 20, 32, 42)
        assert gsampling.select_box(cp.asarray(m_s), boxes) == ref.select_box(m_s, boxes)


# ------------------------------------------------------------------ clip scores

@pytest.mark.parametrize("n", [5, 64, 300])
@pytest.mark.parametrize("clip", [(16, 2, 1), (4, 1, 3), (130, 1, 1)])
def test_clip_scores_and_clip_start(rng, n, clip):
    clip_len, stride, step = clip
    m_t = rng.gamma(1.0, 1.0, (4, n))
    starts, scores = gsampling.clip_scores_batch(cp.asarray(m_t), clip_len, stride, step)
    for b in range(4):
        want_starts, want = ref.clip_scores(m_t[b], clip_len, stride, step)
        np.testing.assert_array_equal(starts, want_starts)
        np.testing.assert_array_equal(cp.asnumpy(scores[b]), want)
        seed = int(rng.integers(2**31))
        assert gsampling.sample_clip_start(cp.asarray(m_t[b]), clip_len, stride, np.random.default_rng(seed), step) \
            == ref.sample_clip_start(m_t[b], clip_len, stride, np.random.default_rng(seed), step)


# ------------------------------------------------------------------ module loading

def test_compile_error_points_at_the_source(tmp_path, monkeypatch):
    from mcl_fast.gpu import _module

    (tmp_path / "common.cuh").write_text(open(_module.kernels_dir() / "common.cuh").read())
    (tmp_path / "oops.cu").write_text('#include "common.cuh"\nextern "C" __global__ void k() { nope; }\n')
    monkeypatch.setattr(_module, "kernels_dir", lambda: tmp_path)
    _module.load_module.cache_clear()
    try:
        with pytest.raises(Exception, match=r"oops\.cu\(2\)"):
            _module.load_module("oops")
    finally:
        _module.load_module.cache_clear()
