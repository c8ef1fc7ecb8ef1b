"""pytest plugin: a `cupy` module on NumPy whose kernels run on the CPU CUDA emulator, so the GPU
test modules (tests/gpu) execute their own code before any GPU does:

    python -m pytest -p emulated_cupy tests/gpu/test_gpu_kernels.py   (tests/ on sys.path)

Only what the GPU tests and the wrappers use is there (arrays are NumPy arrays, so this cannot
catch a CuPy API a real GPU would refuse); NVRTC compiles through mcl_fast.gpu._module with
libnvrtc via ctypes. Used by tests/test_gpu_tests_emulated.py in a separate process, never
imported by the normal test run (it replaces sys.modules["cupy"]).
"""
from __future__ import annotations

import sys
import types

import numpy as np

import cuda_emulator as ce
import gpu_build

cp = ce.fake_cupy()
cp.__name__ = "cupy"
cp.__version__ = "emulated"
cp.testing = types.SimpleNamespace(
    assert_array_equal=lambda a, b, *args, **kw: np.testing.assert_array_equal(np.asarray(a), np.asarray(b), *args, **kw))
_nvrtc_lib = gpu_build.find_nvrtc()
_compiling = gpu_build.fake_cupy_for_compiling(gpu_build.CtypesNVRTC(_nvrtc_lib)) if _nvrtc_lib else None
cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                nvrtc=_compiling.cuda.nvrtc if _compiling else None,
                                Device=_compiling.cuda.Device if _compiling else None)
cp.RawModule = gpu_build.RecordingRawModule
sys.modules["cupy"] = cp


class _Patch:
    def setattr(self, obj, name, value):
        setattr(obj, name, value)


def pytest_configure(config):
    from mcl_fast import _backend

    emulators = {m: ce.build(m) for m in ("motion_map", "select_box", "tvl1")}
    for emu in emulators.values():
        emu.configure(seed=5, switch_prob=0.5)
    _backend.has_gpu.cache_clear()
    _backend.has_gpu = lambda: True
    _backend.require_cupy = lambda: cp
    ce.install(_Patch(), emulators, cp)
