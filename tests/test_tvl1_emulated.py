"""The GPU TV-L1 path without a GPU: the real __global__ kernels of kernels/tvl1.cu compiled by g++
over the CUDA emulator (tests/cuda_emulator.py: threads as fibers, barriers, warp shuffles, shared
memory, and thread interleavings between barriers drawn at random per seed), driven by the real
mcl_fast.gpu.flow driver through a NumPy stand-in for CuPy. Checks the kernels' indexing, tiling,
halos, in-place shared-memory updates, ping-pong buffers and stopping logic: the result must equal
the host twin bit for bit (tests/test_tvl1_host.py holds that one to OpenCV), for every schedule.
Tiny images only (the emulator is slow).
"""
from __future__ import annotations

import numpy as np
import pytest

import cuda_emulator as ce
from host_library import library_or_skip
from mcl_fast.gpu import tvl1_host as th


@pytest.fixture(scope="module")
def tvl1_emu():
    return ce.build("tvl1")


def emulated(monkeypatch, emulator, seed: int):
    from mcl_fast.gpu import flow as gpu_flow

    emulator.configure(seed=seed, switch_prob=0.5)
    ce.install(monkeypatch, {"tvl1": emulator})
    return gpu_flow


def _frames():
    """3 RGB frames of 24x40 (2 pyramid levels): a texture panning and a square moving."""
    rng = np.random.default_rng(7)
    import cv2

    tex = cv2.GaussianBlur(rng.random((40, 60)).astype(np.float32), (0, 0), 1.5)
    tex = (tex - tex.min()) / (tex.max() - tex.min()) * 255
    frames = []
    for t in range(3):
        f = tex[4 + t:28 + t, 5 + 2 * t:45 + 2 * t].copy()
        f[8:16, 10 + 3 * t:18 + 3 * t] = 255 - f[8:16, 10 + 3 * t:18 + 3 * t]
        frames.append(np.repeat(f[..., None], 3, -1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("params, chunk, seed", [
    (th.TVL1Params(warps=2, outer_iterations=2, inner_iterations=4), 1, 11),              # to the cap
    (th.TVL1Params(warps=2, outer_iterations=2, inner_iterations=7), 3, 12),              # chunks 3+3+1
    (th.TVL1Params(warps=2, outer_iterations=3, inner_iterations=6, epsilon=0.08), 1, 13),  # stops early
    (th.TVL1Params(warps=2, outer_iterations=3, inner_iterations=6, epsilon=0.08), 6, 14),  # ...mid-chunk
])
def test_emulated_gpu_equals_host_twin(monkeypatch, tvl1_emu, params, chunk, seed):
    library_or_skip()
    gpu_flow = emulated(monkeypatch, tvl1_emu, seed)
    frames = _frames()
    before = tvl1_emu.stats()
    got = gpu_flow.compute_flow(frames, params=params, chunk=chunk)
    ref, iters = th.tvl1_pairs(frames[:-1], frames[1:], params, return_iterations=True)
    assert isinstance(got, ce.EmuArray) and got.shape == (3, 24, 40, 2)
    np.testing.assert_array_equal(np.asarray(got)[:-1], ref)
    np.testing.assert_array_equal(np.asarray(got)[-1], ref[-1])
    assert np.abs(ref).max() > 0.5  # the test sees real motion
    cap = 2 * params.warps * params.outer_iterations * params.inner_iterations  # 2 levels
    if params.epsilon > 0.05:
        assert np.all(iters < cap), iters  # the stopping rule fired (and the GPU followed it)
        assert np.any(iters % chunk != 0) or chunk == 1  # ...inside a chunk: the redo path ran
    else:
        assert np.all(iters == cap)
    after = tvl1_emu.stats()
    # threads really were interleaved inside the phases (a switch at about half the accesses)
    assert after["switches"] - before["switches"] > 0.3 * (after["accesses"] - before["accesses"]) > 0


def test_emulated_separate_stacks_equal_consecutive(monkeypatch, tvl1_emu):
    gpu_flow = emulated(monkeypatch, tvl1_emu, 21)
    frames = _frames()
    prm = th.TVL1Params(nscales=1, warps=1, outer_iterations=2, inner_iterations=3)
    pairs = gpu_flow.tvl1_pairs(frames[:-1], frames[1:], params=prm, max_pairs=1, chunk=2)
    whole = gpu_flow.compute_flow(frames, params=prm, chunk=3)
    np.testing.assert_array_equal(np.asarray(pairs), np.asarray(whole)[:-1])


def test_emulated_flow_is_opencvs_tvl1(monkeypatch, tvl1_emu):
    """The emulated GPU flow against OpenCV's own DualTVL1 (the independent reference) on the same
    frames, with OpenCV's default settings cut short to keep the emulator fast."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "optflow"):
        pytest.skip("opencv-contrib (cv2.optflow) not installed")
    gpu_flow = emulated(monkeypatch, tvl1_emu, 31)
    frames = _frames()
    prm = th.TVL1Params(warps=2, outer_iterations=2, inner_iterations=5)
    got = np.asarray(gpu_flow.compute_flow(frames, params=prm))[:-1]
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(warps=2, outerIterations=2, innnerIterations=5)  # sic (OpenCV)
    gray = th.rgb_to_gray(frames)
    want = np.stack([tvl1.calc(gray[i], gray[i + 1], None) for i in range(2)])
    inner = (slice(None), slice(4, -4), slice(4, -4))  # the border is ill-conditioned for every TV-L1
    epe = np.sqrt(((got - want) ** 2).sum(-1))[inner]
    assert float(epe.mean()) < 1e-4 and float(np.quantile(epe, 0.99)) < 1e-3, (epe.mean(), epe.max())


def test_a_barrier_removed_from_the_iteration_kernel_is_caught(monkeypatch, tvl1_emu):
    """Without the barrier between the primal (A) and dual (B) phases, B reads u while A still
    writes it: the emulator's interleavings make the flow differ from the host twin's (or fail),
    while the intact kernel under the same schedules equals it."""
    library_or_skip()
    broken = ce.build("tvl1", edit=lambda src: ce.remove_barrier_before(src, "// B: dual step"))
    frames = _frames()
    prm = th.TVL1Params(nscales=1, warps=1, outer_iterations=1, inner_iterations=3)
    ref = th.tvl1_pairs(frames[:1], frames[1:2], prm)
    for seed in (1, 2):
        intact = emulated(monkeypatch, tvl1_emu, seed).tvl1_pairs(frames[:1], frames[1:2], params=prm, chunk=3)
        np.testing.assert_array_equal(np.asarray(intact), ref)
        gpu_flow = emulated(monkeypatch, broken, seed)
        try:
            got = np.asarray(gpu_flow.tvl1_pairs(frames[:1], frames[1:2], params=prm, chunk=3))
        except ce.EmulatorError:
            continue
        assert not np.array_equal(got, ref), f"seed {seed}: the missing barrier went unnoticed"
