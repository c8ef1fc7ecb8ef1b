"""The real __global__ bodies of kernels/motion_map.cu and kernels/select_box.cu on the CPU.

Each kernel runs on the CUDA emulator (tests/cuda_emulator.py: blocks, shared memory, barriers,
atomics, and thread interleavings between barriers drawn at random per seed), launched by the real
Python wrappers (mcl_fast.gpu.motion / sampling) through a NumPy stand-in for CuPy, and is held to
the NumPy references (mcl_fast.motion.maps, mcl_fast.sampling, numpy.percentile) and to the CPU
twin. Copies of the kernels with a barrier removed, or an atomic made a plain read-modify-write,
must be caught. The floating-point mode is the GPU build's, read off the PTX that
mcl_fast.gpu._module compiles (tests/gpu_build.py). Small problems: the emulator switches threads at
every other shared-memory access.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

import cuda_emulator as ce
from mcl_fast import sampling as ref
from mcl_fast.motion import maps as maps_ref
from mcl_fast.motion.store import quantize_maps

SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def emulators():
    return {"motion_map": ce.build("motion_map"), "select_box": ce.build("select_box")}


def on_emulator(monkeypatch, emulators, seed: int, ftz: bool = False):
    """mcl_fast.gpu.motion / sampling with their kernels on the emulator; returns (cp, motion, sampling)."""
    from mcl_fast.gpu import motion, sampling

    for emu in emulators.values():
        emu.configure(seed=seed, switch_prob=0.5, ftz=ftz)
    cp = ce.install(monkeypatch, emulators)
    return types.SimpleNamespace(cp=cp, motion=motion, sampling=sampling)


@pytest.fixture(params=SEEDS, ids=lambda s: f"seed{s}")
def gpu(request, monkeypatch, emulators):
    return on_emulator(monkeypatch, emulators, request.param)


def host_or_none():
    from mcl_fast.gpu import host

    try:
        host.library()
        return host
    except host.HostLibraryMissing:
        return None


def random_flow(rng, n, h, w):
    flow = rng.normal(0, 2, (n, h, w, 2)).astype(np.float32)
    flow[:, h // 3: h // 2, w // 4: w // 2] += np.float32(rng.uniform(-8, 8))
    return flow


# ------------------------------------------------------------------ motion maps

@pytest.mark.parametrize("shape", [(3, 17, 23), (2, 2, 2), (1, 40, 9)])
def test_motion_map_kernel_equals_numpy_bit_for_bit(gpu, shape):
    flow = random_flow(np.random.default_rng(shape[1]), *shape)
    got = gpu.motion.motion_map(gpu.cp.asarray(flow))
    np.testing.assert_array_equal(np.asarray(got), maps_ref.motion_map(flow))


@pytest.mark.parametrize("shape, factor", [((3, 19, 29), 4), ((2, 14, 23), 1), ((2, 13, 21), 3), ((1, 3, 600), 1),
                                           ((2, 9, 520), 7)])
def test_fused_kernel_reduces_like_the_references(gpu, shape, factor):
    """Shared-memory column sums + tree reduction: block means vs maps.downsample_mean, m_t vs the
    float64 mean of the full map, codes vs the store's quantisation, and the twin bit for bit.
    600 / 520 columns: several tiles per cell row (partial sums indexed per tile)."""
    flow = random_flow(np.random.default_rng(factor), *shape)
    full = maps_ref.motion_map(flow)
    want = maps_ref.downsample_mean(full, factor)
    want_codes, scale = quantize_maps(want)
    small, m_t, codes = gpu.motion.motion_maps_fused(gpu.cp.asarray(flow), factor, scale=scale)
    small, m_t, codes = np.asarray(small), np.asarray(m_t), np.asarray(codes)
    assert small.shape == want.shape and np.isfinite(small).all()
    assert float(np.abs(small - want).max()) <= 1e-5 * float(want.max())
    np.testing.assert_allclose(m_t, full.astype(np.float64).mean(axis=(1, 2)), rtol=1e-6)
    assert np.abs(codes.astype(int) - want_codes).max() <= 1
    np.testing.assert_array_equal(codes, np.asarray(gpu.motion.quantize(gpu.cp.asarray(small), scale)))
    host = host_or_none()
    if host is not None:  # the kernel and its CPU twin add in one order
        h_small, h_m_t, h_codes = host.motion_maps_downsampled(flow, factor, scale=scale)
        np.testing.assert_array_equal(small, h_small)
        np.testing.assert_array_equal(codes, h_codes)
        np.testing.assert_allclose(m_t, h_m_t, rtol=1e-6)


def test_quantize_kernel_equals_the_store(gpu):
    maps = (np.random.default_rng(5).random((3, 12, 17)) ** 2 * 3).astype(np.float32)
    codes, scale = gpu.motion.quantize_maps(gpu.cp.asarray(maps))
    want_codes, want_scale = quantize_maps(maps)
    assert scale == want_scale
    np.testing.assert_array_equal(np.asarray(codes), want_codes)


# ------------------------------------------------------------------ percentile, boxes, clip scores

def percentile_cases(rng):
    yield "uniform", rng.random((3, 13, 17)).astype(np.float32)
    yield "ties", rng.integers(0, 5, (3, 8, 11)).astype(np.float32)
    yield "signed", rng.normal(0, 1e3, (2, 7, 9)).astype(np.float32)
    yield "one pixel", rng.random((2, 1, 1)).astype(np.float32)
    yield "many threads", rng.gamma(0.5, 1.0, (1, 33, 40)).astype(np.float32)  # > 256 pixels per thread block
    yield "subnormal", (rng.random((3, 9, 9)) * 1e-38).astype(np.float32)


@pytest.mark.parametrize("q", [90.0, 0.0, 50.0, 100.0, 33.3, np.float64(37.3)])
def test_percentile_kernel_equals_numpy(gpu, q):
    for name, maps in percentile_cases(np.random.default_rng(17)):
        got = np.asarray(gpu.sampling.percentile_batch(gpu.cp.asarray(maps), q))
        want = np.array([np.percentile(m, q) for m in maps], np.float64)
        np.testing.assert_array_equal(got, want, err_msg=f"case {name}, q={q!r}")


def test_percentile_kernel_nan(gpu):
    maps = np.random.default_rng(3).random((2, 6, 6)).astype(np.float32)
    maps[1, 4, 5] = np.nan  # one NaN, seen by one thread only: the barrier-OR spreads it
    got = np.asarray(gpu.sampling.percentile_batch(gpu.cp.asarray(maps), 90.0))
    assert got[0] == np.percentile(maps[0], 90.0) and np.isnan(got[1])


@pytest.mark.parametrize("hw, k", [((13, 17), 20), ((8, 10), 700), ((1, 1), 5)])
def test_select_box_kernels_match_the_reference(gpu, hw, k):
    """700 candidates > the 256 threads of a block: the tree reduction of choices is exercised."""
    rng = np.random.default_rng(k)
    h, w = hw
    maps = (rng.random((4, h, w)) ** 3).astype(np.float32)
    maps[3] = 0.0  # no hot pixel: box 0
    boxes = np.stack([ref.draw_boxes(rng, k, h, w, scale=(0.05, 1.0)) for _ in range(4)])
    for percentile, coverage in ((90.0, 0.8), (50, 0.5)):
        got = np.asarray(gpu.sampling.select_box_index_batch(gpu.cp.asarray(maps), boxes, percentile, coverage))
        want = [ref.select_box_index(m, b, percentile, coverage) for m, b in zip(maps, boxes)]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n, clip", [(5, (16, 2, 1)), (64, (4, 1, 3)), (140, (130, 1, 1))])
def test_clip_score_kernel_equals_numpy_bit_for_bit(gpu, n, clip):
    clip_len, stride, step = clip
    m_t = np.random.default_rng(n).gamma(1.0, 1.0, (2, n))
    starts, scores = gpu.sampling.clip_scores_batch(gpu.cp.asarray(m_t), clip_len, stride, step)
    for b in range(2):
        want_starts, want = ref.clip_scores(m_t[b], clip_len, stride, step)
        np.testing.assert_array_equal(starts, want_starts)
        np.testing.assert_array_equal(np.asarray(scores[b]), want)


def test_every_kernel_ran_on_the_emulator(monkeypatch, emulators):
    """The tests above launch each __global__ function of both files (so none is left unexecuted)."""
    g = on_emulator(monkeypatch, emulators, 1)
    launched = set()
    real = ce.EmuKernel.__call__

    def spy(self, grid, block, args):
        launched.add(self.name)
        return real(self, grid, block, args)

    monkeypatch.setattr(ce.EmuKernel, "__call__", spy)
    rng = np.random.default_rng(0)
    flow = g.cp.asarray(random_flow(rng, 1, 6, 7))
    g.motion.motion_map(flow)
    g.motion.motion_maps_fused(flow, 2, scale=1.0)
    g.motion.quantize(g.cp.asarray(np.ones((1, 2, 2), np.float32)), 2.0)
    maps = rng.random((2, 5, 6)).astype(np.float32)
    g.sampling.select_box_index_batch(g.cp.asarray(maps), np.stack([ref.draw_boxes(rng, 4, 5, 6)] * 2))
    g.sampling.clip_scores_batch(g.cp.asarray(rng.random((1, 20))), 4, 2)
    assert launched == set(emulators["motion_map"].signatures) | set(emulators["select_box"].signatures)


# ------------------------------------------------------------------ the emulator catches what it should

def _fused_once(g, seed_flow=0):
    flow = random_flow(np.random.default_rng(seed_flow), 2, 12, 300)  # 2 tiles per cell row
    small, m_t, _ = g.motion.motion_maps_fused(g.cp.asarray(flow), 3)
    return flow, np.asarray(small), np.asarray(m_t)


def _fused_is_right(flow, small, m_t) -> bool:
    full = maps_ref.motion_map(flow)
    want = maps_ref.downsample_mean(full, 3)
    return bool(np.all(np.abs(small - want) <= 1e-5 * want.max())
                and np.allclose(m_t, full.astype(np.float64).mean(axis=(1, 2)), rtol=1e-6))


BROKEN_MOTION = {
    # the column sums are read by other threads: without the barrier they are not there yet
    "column sums": lambda src: ce.remove_barrier_before(src, "double cell_total = 0.0;"),
    # the tree reduction: a level reads what the previous level is still writing
    "reduction": lambda src: ce.remove_barrier_before(src, "if (t == 0 && n < frames) partial"),
}


@pytest.mark.parametrize("what", sorted(BROKEN_MOTION))
def test_a_removed_barrier_in_the_fused_kernel_is_caught(monkeypatch, emulators, what):
    broken = dict(emulators, motion_map=ce.build("motion_map", edit=BROKEN_MOTION[what]))
    for seed in SEEDS:
        assert _fused_is_right(*_fused_once(on_emulator(monkeypatch, emulators, seed)))  # intact: right
        try:
            result = _fused_once(on_emulator(monkeypatch, broken, seed))
        except ce.EmulatorError:
            continue
        assert not _fused_is_right(*result), f"seed {seed}: the missing barrier ({what}) went unnoticed"


def _boxes_once(g):
    rng = np.random.default_rng(4)
    maps = (rng.random((8, 8, 10)) ** 3).astype(np.float32)
    boxes = np.stack([ref.draw_boxes(rng, 600, 8, 10, scale=(0.05, 1.0)) for _ in range(8)])
    got = np.asarray(g.sampling.select_box_index_batch(g.cp.asarray(maps), boxes))
    thr = np.asarray(g.sampling.percentile_batch(g.cp.asarray(maps), 90.0))
    want = [ref.select_box_index(m, b) for m, b in zip(maps, boxes)]
    return np.array_equal(got, want) and np.array_equal(thr, [np.percentile(m, 90.0) for m in maps])


BROKEN_SELECT = {
    "pick reduction": lambda src: ce.remove_barrier_before(src, "if (threadIdx.x == 0) index[b]"),
    "radix pass end": lambda src: ce.remove_barrier_before(src, "if (threadIdx.x < 2) {"),
    # the histogram with plain `+=` instead of atomicAdd: a data race inside one phase
    "racy histogram": lambda src: src.replace("atomicAdd(&hist[0][digit], 1u)", "hist[0][digit] += 1u"),
}


@pytest.mark.parametrize("what", sorted(BROKEN_SELECT))
def test_a_race_in_select_box_is_caught(monkeypatch, emulators, what):
    broken = dict(emulators, select_box=ce.build("select_box", edit=BROKEN_SELECT[what]))
    assert broken["select_box"] is not emulators["select_box"]
    for seed in SEEDS:
        assert _boxes_once(on_emulator(monkeypatch, emulators, seed))
        try:
            caught = not _boxes_once(on_emulator(monkeypatch, broken, seed))
        except ce.EmulatorError:
            caught = True
        assert caught, f"seed {seed}: {what} went unnoticed"


def test_switching_only_at_barriers_would_miss_the_racy_histogram(monkeypatch, emulators):
    """Why threads switch inside phases: run to the next barrier (the previous emulator's rule) and
    the non-atomic histogram update still counts right; switch at accesses and it loses counts."""
    broken = dict(emulators, select_box=ce.build("select_box", edit=BROKEN_SELECT["racy histogram"]))
    g = on_emulator(monkeypatch, broken, 1)
    broken["select_box"].configure(seed=1, switch_prob=0.0)
    assert _boxes_once(g)
    broken["select_box"].configure(seed=1, switch_prob=0.5)
    assert not _boxes_once(g)


def test_out_of_bounds_shared_access_is_an_error(monkeypatch, emulators):
    broken = dict(emulators, motion_map=ce.build(
        "motion_map", edit=lambda src: src.replace("block_sums[t] += block_sums[t + half]",
                                                   "block_sums[t] += block_sums[t + 2 * half + 1]")))
    with pytest.raises(ce.EmulatorError, match="block_sums: index"):
        _fused_once(on_emulator(monkeypatch, broken, 1))


DEADLOCK = """
extern "C" __global__ void mcl_test_deadlock(float* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.f, 1);  // half a warp
  else __syncthreads();
}
"""


def test_a_divergent_barrier_is_reported_not_a_hang():
    """Half a warp in a shuffle, the rest at a barrier: a GPU hangs; the emulator says why."""
    emu = ce.build("motion_map", edit=lambda src: src + DEADLOCK)
    with pytest.raises(ce.EmulatorError, match="deadlock: 16 threads wait at a barrier, 16 at a shuffle"):
        emu.kernel("mcl_test_deadlock")((1,), (32,), (np.zeros(32, np.float32),))


# ------------------------------------------------------------------ denormals under the GPU's flags (fixture nvrtc: conftest)


def _subnormal_percentiles(g) -> tuple[np.ndarray, np.ndarray]:
    maps = (np.random.default_rng(9).random((3, 9, 9)) * 1e-38).astype(np.float32)  # subnormal floats
    got = np.stack([np.asarray(g.sampling.percentile_batch(g.cp.asarray(maps), q)) for q in (90.0, 33.3, 50)])
    want = np.array([[np.percentile(m, q) for m in maps] for q in (90.0, 33.3, 50)])
    return got, want


def test_subnormal_percentile_under_the_gpu_builds_flags(monkeypatch, tmp_path, emulators, nvrtc):
    """The emulator flushes denormals exactly when the PTX mcl_fast.gpu._module compiles for the GPU
    flushes them; under those flags the percentile of subnormal maps equals NumPy's."""
    from gpu_build import flushes_denormals, module_ptx

    ftz = flushes_denormals(module_ptx(monkeypatch, tmp_path, nvrtc, "select_box"))
    got, want = _subnormal_percentiles(on_emulator(monkeypatch, emulators, 1, ftz=ftz))
    np.testing.assert_array_equal(got, want)


def test_flush_to_zero_would_break_the_subnormal_percentile(monkeypatch, emulators):
    """CuPy's default -ftz=true (tests/test_cmake_build.py shows the PTX) would give other thresholds:
    the failure the GPU run would have had, reproduced on the CPU."""
    got, want = _subnormal_percentiles(on_emulator(monkeypatch, emulators, 1, ftz=True))
    assert not np.array_equal(got, want)
