"""The motion-map and box-selection kernels' arithmetic, run on the CPU through libmcl_host.so
(the same MCL_HD functions the CUDA kernels call), against the NumPy references on fresh
random inputs. Skips without the library unless CI or MCL_FAST_HOST_LIB is set (then fails)."""
from __future__ import annotations

import numpy as np
import pytest
from host_library import library_or_skip

from mcl_fast import sampling as ref
from mcl_fast.gpu import host
from mcl_fast.motion.maps import downsample_mean, motion_map, pool_motion
from mcl_fast.motion.store import quantize_maps


@pytest.fixture(autouse=True)
def _host_library():
    library_or_skip()


def rng_for(request) -> np.random.Generator:
    """A fresh generator per test run (the seed is printed on failure)."""
    seed = int(np.random.SeedSequence().entropy % 2**32)
    request.node.user_properties.append(("seed", seed))
    print(f"seed={seed}")
    return np.random.default_rng(seed)


def random_flow(rng, n, h, w):
    """Smooth-ish flow plus noise and a sharp moving-edge so maps have structure."""
    flow = rng.normal(0, 2, (n, h, w, 2)).astype(np.float32)
    flow[:, h // 3: h // 2, w // 4: w // 2] += np.float32(rng.uniform(-8, 8))
    return flow


# ------------------------------------------------------------------ motion maps

@pytest.mark.parametrize("shape", [(3, 17, 23), (2, 2, 2), (1, 2, 9), (4, 9, 2), (2, 48, 64)])
def test_motion_map_equals_numpy_bit_for_bit(request, shape):
    flow = random_flow(rng_for(request), *shape)
    got = host.motion_map(flow)
    want = motion_map(flow)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # same float32 operations in the same order


def test_motion_map_of_a_pan_is_zero():
    flow = np.zeros((2, 6, 7, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.5, -1.25
    assert not host.motion_map(flow).any()


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("hw", [(17, 23), (32, 40), (9, 30)])
def test_fused_downsample_and_mean(request, factor, hw):
    if factor > min(hw):
        pytest.skip("factor larger than the frame")
    flow = random_flow(rng_for(request), 3, *hw)
    full = motion_map(flow)
    small, m_t, codes = host.motion_maps_downsampled(flow, factor)
    want = downsample_mean(full, factor)  # partial edge blocks dropped
    assert small.shape == want.shape and codes is None
    assert np.abs(small - want).max() <= 1e-5 * np.abs(want).max()
    want_m_t = full.astype(np.float64).mean(axis=(1, 2))  # eq. 2 over the whole map, edges included
    np.testing.assert_allclose(m_t, want_m_t, rtol=1e-5)
    np.testing.assert_allclose(m_t, pool_motion(full)[2], rtol=1e-5)


def test_fused_quantisation_is_the_stores(request):
    rng = rng_for(request)
    flow = random_flow(rng, 4, 21, 26)
    want_small = downsample_mean(motion_map(flow), 4)
    want_codes, scale = quantize_maps(want_small)
    np.testing.assert_array_equal(host.quantize(want_small, scale), want_codes)  # exact on the same input
    small, _, codes = host.motion_maps_downsampled(flow, 4, scale=scale)
    np.testing.assert_array_equal(codes, host.quantize(small, scale))
    assert np.abs(codes.astype(int) - want_codes).max() <= 1  # small differs by float32 rounding only
    # clipping: values above the scale saturate at 255, zero stays zero
    np.testing.assert_array_equal(host.quantize(np.array([0.0, 0.5, 1.0, 2.0], np.float32), 1.0), [0, 128, 255, 255])


def test_motion_bad_input_is_reported():
    with pytest.raises(ValueError, match="N, H, W, 2"):
        host.motion_map(np.zeros((2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="2x2"):
        host.motion_map(np.zeros((2, 1, 5, 2), np.float32))
    with pytest.raises(ValueError, match="factor"):
        host.motion_maps_downsampled(np.zeros((1, 4, 6, 2), np.float32), 5)
    with pytest.raises(ValueError, match="scale"):
        host.quantize(np.zeros(3, np.float32), 0.0)


# ------------------------------------------------------------------ percentile

def percentile_cases(rng):
    yield "uniform", rng.random((6, 13, 17)).astype(np.float32)
    yield "ties", rng.integers(0, 5, (5, 8, 11)).astype(np.float32)
    yield "signed", rng.normal(0, 1e3, (4, 7, 9)).astype(np.float32)
    yield "constant", np.full((2, 5, 5), 0.3, np.float32)
    yield "sparse", (rng.random((5, 16, 20)) > 0.93).astype(np.float32) * rng.random((5, 16, 20)).astype(np.float32)
    yield "one pixel", rng.random((3, 1, 1)).astype(np.float32)
    yield "one row", rng.random((3, 1, 7)).astype(np.float32)
    yield "tiny values", (rng.random((3, 9, 9)) * 1e-38).astype(np.float32)  # subnormals


@pytest.mark.parametrize("q", [90.0, 0.0, 10.0, 50.0, 99.9, 100.0, 90, 33.3])
def test_percentile_equals_numpy(request, q):
    for name, maps in percentile_cases(rng_for(request)):
        got = host.percentile_batch(maps, q)
        want = np.array([np.percentile(m, q) for m in maps], np.float64)
        np.testing.assert_array_equal(got, want, err_msg=f"case {name}, q={q!r}")


@pytest.mark.parametrize("q", [np.float64(90.0), np.float64(37.3), np.float64(100.0)])
def test_percentile_with_numpy_q_interpolates_in_float64_like_numpy(request, q):
    for name, maps in percentile_cases(rng_for(request)):
        got = host.percentile_batch(maps, q)
        want = np.array([np.percentile(m, q) for m in maps], np.float64)
        np.testing.assert_array_equal(got, want, err_msg=f"case {name}, q={q!r}")


def test_percentile_of_a_map_with_nan_is_nan(request):
    maps = rng_for(request).random((2, 6, 6)).astype(np.float32)
    maps[1, 2, 3] = np.nan
    got = host.percentile_batch(maps, 90.0)
    assert got[0] == np.percentile(maps[0], 90.0) and np.isnan(got[1]) and np.isnan(np.percentile(maps[1], 90.0))


def test_percentile_rejects_other_dtypes():
    with pytest.raises(TypeError, match="float32"):
        host.percentile_batch(np.zeros((1, 3, 3)), 90.0)


# ------------------------------------------------------------------ box selection

def check_boxes(maps, boxes, percentile=90.0, coverage=0.8):
    got, thr = host.select_box_index_batch(maps, boxes, percentile, coverage)
    for b in range(len(maps)):
        want = ref.select_box_index(maps[b], boxes[b], percentile, coverage)
        assert got[b] == want, f"map {b}: kernel chose box {got[b]}, reference {want}"
        assert thr[b] == np.percentile(maps[b], percentile) or np.isnan(thr[b])
    return got


@pytest.mark.parametrize("hw", [(32, 42), (13, 17), (5, 3), (1, 1)])
def test_select_box_matches_reference_on_random_maps(request, hw):
    rng = rng_for(request)
    h, w = hw
    maps = (rng.random((12, h, w)) ** 3).astype(np.float32)
    boxes = np.stack([ref.draw_boxes(rng, 20, h, w) for _ in range(12)])
    check_boxes(maps, boxes)
    check_boxes(maps, boxes, percentile=50.0, coverage=0.5)


def test_select_box_paths_first_ok_fallback_ties_and_no_hot(request):
    rng = rng_for(request)
    h, w = 16, 20
    maps = np.zeros((4, h, w), np.float32)
    maps[0, 2:6, 3:9] = rng.random((4, 6)).astype(np.float32) + 1  # a hot blob
    maps[1] = rng.random((h, w)).astype(np.float32)  # hot pixels everywhere: fallback to the max
    maps[3, 0, 0] = 1.0  # one hot pixel (the 90th percentile of mostly zeros is 0)
    blob = [2, 3, 4, 6]
    boxes = np.array([[[0, 0, 2, 2], [8, 8, 8, 12], blob, [0, 0, h, w], blob]] * 4, np.int64)
    got = check_boxes(maps, boxes)
    assert got[0] == 2  # the first box covering the blob, not its duplicate (index 4)
    assert got[2] == 0  # constant map: no hot pixel -> box 0
    assert got[3] == 0  # box 0 holds the only hot pixel
    # no box reaches the coverage: the first of the boxes with the most hot pixels
    ties = np.array([[[0, 0, 2, 2], [0, 10, 8, 10], [8, 0, 8, 10], [0, 10, 8, 10]]] * 4, np.int64)
    got = check_boxes(maps, ties, coverage=1.01)
    assert got[1] in (1, 2) and got[2] == 0
    assert (check_boxes(maps, boxes, coverage=0.0) == 0).all()  # every box qualifies: the first


def test_select_box_with_many_candidates_and_store_sized_maps(request):
    rng = rng_for(request)
    maps = rng.gamma(0.5, 1.0, (3, 32, 42)).astype(np.float32)
    boxes = np.stack([ref.draw_boxes(rng, 600, 32, 42, scale=(0.05, 0.6)) for _ in range(3)])
    check_boxes(maps, boxes)


def test_select_box_rejects_boxes_outside_the_map():
    maps = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="argument"):
        host.select_box_index_batch(maps, np.array([[[2, 2, 3, 1]]]))
    with pytest.raises(ValueError, match=r"\(B=1, K>=1, 4\)"):
        host.select_box_index_batch(maps, np.array([[0, 0, 1, 1]]))


# ------------------------------------------------------------------ clip scores

@pytest.mark.parametrize("n", [5, 31, 64, 300])
@pytest.mark.parametrize("clip", [(16, 2, 1), (4, 1, 3), (8, 3, 2), (130, 1, 1)])
def test_clip_scores_equal_reference_bit_for_bit(request, n, clip):
    clip_len, stride, step = clip
    m_t = rng_for(request).gamma(1.0, 1.0, (3, n))
    starts, scores = host.clip_scores_batch(m_t, clip_len, stride, step)
    for b in range(3):
        want_starts, want = ref.clip_scores(m_t[b], clip_len, stride, step)
        np.testing.assert_array_equal(starts, want_starts)
        np.testing.assert_array_equal(scores[b], want)  # NumPy's pairwise summation, emulated


# ------------------------------------------------------------------ the loader itself

def test_missing_library_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(host.ENV_VAR, str(tmp_path))
    host.library.cache_clear()
    try:
        assert host.library_path() == tmp_path / host.LIB_NAME
        with pytest.raises(host.HostLibraryMissing, match="make kernels"):
            host.library()
    finally:
        host.library.cache_clear()


# ------------------------------------------------------------------ prepare --device cuda: the decode graph

def test_video_maps_decode_graph_on_dalis_cpu_decoder(synthetic_webm):
    """The DALI graph of mcl_fast.gpu.video_maps (frames=, per-sample resize, pad_mode="none"), run
    with DALI's CPU decoder (device_id=None; VP9): chunks come back in order, resized, and asking
    past the end is an error, never black padding."""
    pytest.importorskip("nvidia.dali")
    from mcl_fast.data.synthetic import read_frames
    from mcl_fast.gpu import video_maps

    path = str(synthetic_webm.path)
    n = video_maps.count_frames(path)
    assert n == synthetic_webm.num_frames
    pipe, source = video_maps._pipeline(None)
    encoded = np.fromfile(path, np.uint8)
    chunks = []
    for frames in (np.arange(0, 10), np.arange(10, n)):
        source.set(encoded, frames, (32, 40))
        (out,) = pipe.run()
        chunks.append(np.array(out.as_tensor())[0])
    video = np.concatenate(chunks)
    assert video.shape == (n, 32, 40, 3) and video.dtype == np.uint8
    import cv2

    want = np.stack([cv2.resize(f, (40, 32), interpolation=cv2.INTER_AREA) for f in read_frames(path)])
    assert np.abs(video.astype(int) - want).mean() < 6  # same frames, another resizer
    source.set(encoded, np.arange(n - 2, n + 2), (32, 40))
    with pytest.raises(RuntimeError):
        pipe.run()
    video_maps._pipeline.cache_clear()  # DALI invalidates a pipeline after an error


def test_decode_chunk_copies_on_cupys_stream(monkeypatch):
    """DALI's output is copied into CuPy memory on CuPy's current stream (ordered after the kernels
    that last used the recycled block), blocking (DALI reuses its buffer on the next run)."""
    from types import SimpleNamespace

    from mcl_fast.gpu import video_maps

    calls = {}

    class Tensor:
        def shape(self):
            return [3, 4, 5, 3]

        def copy_to_external(self, ptr, cuda_stream=None, non_blocking=False, use_copy_kernel=False):
            calls.update(ptr=ptr.value, stream=getattr(cuda_stream, "value", cuda_stream), blocking=not non_blocking)

    source = SimpleNamespace(set=lambda *args: calls.update(frames=list(args[1])))
    pipe = SimpleNamespace(run=lambda: ([Tensor()],))
    out = SimpleNamespace(data=SimpleNamespace(ptr=4096))
    cp = SimpleNamespace(uint8=np.uint8, empty=lambda shape, dtype: out,
                         cuda=SimpleNamespace(get_current_stream=lambda: SimpleNamespace(ptr=0xBEEF)))
    monkeypatch.setattr(video_maps, "_pipeline", lambda device_id: (pipe, source))
    monkeypatch.setattr(video_maps, "require_cupy", lambda: cp)
    assert video_maps.decode_chunk(np.zeros(8, np.uint8), np.arange(3), (4, 5), 0) is out
    assert calls == {"frames": [0, 1, 2], "ptr": 4096, "stream": 0xBEEF, "blocking": True}
