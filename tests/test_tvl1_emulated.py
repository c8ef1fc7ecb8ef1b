"""The GPU TV-L1 path without a GPU: kernels/tvl1.cu's __global__ kernels compiled by g++ over a
small CUDA emulator (tests/fixtures/tvl1/cuda_emu.h: threads as fibers, real barriers and
shuffles, shared memory), driven by the real mcl_fast.gpu.flow driver through a NumPy stand-in
for CuPy. Checks the kernels' indexing, tiling, halos, ping-pong buffers and stopping logic:
the result must equal the host twin bit for bit. Tiny images only (the emulator is slow).
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest

from mcl_fast.gpu import host
from mcl_fast.gpu import tvl1_host as th

ROOT = Path(__file__).resolve().parents[1]
EMU_DIR = ROOT / "tests" / "fixtures" / "tvl1"


@pytest.fixture(scope="module")
def emu_lib(tmp_path_factory):
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: the CUDA emulator test compiles kernels/tvl1.cu with it")
    out = tmp_path_factory.mktemp("emu") / "libtvl1_emu.so"
    cmd = [gxx, "-O2", "-std=c++17", "-ffp-contract=off", "-fPIC", "-shared", "-Wno-unknown-pragmas",
           "-I", str(ROOT / "kernels"), "-I", str(EMU_DIR), "-o", str(out), str(EMU_DIR / "emu_tvl1.cpp")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"emulator build failed:\n{res.stderr[-3000:]}"
    return ctypes.CDLL(str(out))


class EmuArray(np.ndarray):
    """A NumPy array with CuPy's .get()."""

    def get(self):
        return np.asarray(self).copy()


def _emu(a):
    return np.asarray(a).view(EmuArray)


def fake_cupy():
    """The part of CuPy's API that mcl_fast.gpu.flow uses, on NumPy."""
    cp = types.SimpleNamespace()
    cp.ndarray = EmuArray
    cp.uint8, cp.float32, cp.int32 = np.uint8, np.float32, np.int32
    cp.asarray = lambda a, dtype=None: _emu(np.asarray(a, dtype=dtype))
    cp.ascontiguousarray = lambda a: _emu(np.ascontiguousarray(a))
    cp.empty = lambda shape, dtype=np.float32: _emu(np.full(shape, np.nan, dtype) if np.dtype(dtype).kind == "f"
                                                      else np.zeros(shape, dtype))  # NaN: catches unwritten reads
    cp.zeros = lambda shape, dtype=np.float32: _emu(np.zeros(shape, dtype))
    cp.empty_like = lambda a: cp.empty(a.shape, a.dtype)
    cp.asnumpy = lambda a: np.asarray(a).copy()
    return cp


_CTYPE = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.float32: ctypes.c_float, np.float64: ctypes.c_double}


class EmuKernel:
    def __init__(self, lib, name):
        self.fn = getattr(lib, f"emu_{name}")
        self.fn.restype = None

    def __call__(self, grid, block, args):
        holders = []
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous, "kernel arguments must be C-contiguous"
                holders.append(ctypes.c_void_p(a.ctypes.data))
            else:
                holders.append(_CTYPE[type(a)](a))  # the driver must pass typed NumPy scalars
        argv = (ctypes.c_void_p * len(holders))(*[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p) for h in holders])
        g = (ctypes.c_uint * 3)(*(tuple(grid) + (1, 1))[:3])
        b = (ctypes.c_uint * 3)(*(tuple(block) + (1, 1))[:3])
        self.fn(g, b, argv)


@pytest.fixture
def emulated_flow(emu_lib, monkeypatch):
    from mcl_fast.gpu import flow as gpu_flow

    cp = fake_cupy()
    monkeypatch.setattr(gpu_flow, "require_cupy", lambda: cp)
    monkeypatch.setattr(gpu_flow, "is_cupy_array", lambda a: isinstance(a, EmuArray))
    monkeypatch.setattr(gpu_flow, "_kernel", lambda name: EmuKernel(emu_lib, name))
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


@pytest.mark.parametrize("params, chunk", [
    (th.TVL1Params(warps=2, outer_iterations=2, inner_iterations=4), 1),              # to the cap
    (th.TVL1Params(warps=2, outer_iterations=2, inner_iterations=7), 3),              # chunks 3+3+1
    (th.TVL1Params(warps=2, outer_iterations=3, inner_iterations=6, epsilon=0.08), 1),  # stops early
    (th.TVL1Params(warps=2, outer_iterations=3, inner_iterations=6, epsilon=0.08), 6),  # ...mid-chunk
])
def test_emulated_gpu_equals_host_twin(emulated_flow, params, chunk):
    host.library_or_skip()
    frames = _frames()
    got = emulated_flow.compute_flow(frames, params=params, chunk=chunk)
    ref, iters = th.tvl1_pairs(frames[:-1], frames[1:], params, return_iterations=True)
    assert isinstance(got, EmuArray) and got.shape == (3, 24, 40, 2)
    np.testing.assert_array_equal(np.asarray(got)[:-1], ref)
    np.testing.assert_array_equal(np.asarray(got)[-1], ref[-1])
    assert np.abs(ref).max() > 0.5  # the test sees real motion
    cap = 2 * params.warps * params.outer_iterations * params.inner_iterations  # 2 levels
    if params.epsilon > 0.05:
        assert np.all(iters < cap), iters  # the stopping rule fired (and the GPU followed it)
        assert np.any(iters % chunk != 0) or chunk == 1  # ...inside a chunk: the redo path ran
    else:
        assert np.all(iters == cap)


def test_emulated_separate_stacks_equal_consecutive(emulated_flow):
    frames = _frames()
    prm = th.TVL1Params(nscales=1, warps=1, outer_iterations=2, inner_iterations=3)
    pairs = emulated_flow.tvl1_pairs(frames[:-1], frames[1:], params=prm, max_pairs=1, chunk=2)
    whole = emulated_flow.compute_flow(frames, params=prm, chunk=3)
    np.testing.assert_array_equal(np.asarray(pairs), np.asarray(whole)[:-1])
