"""CuPy wrappers over the CUDA kernels in kernels/*.cu (same signatures as the NumPy references).

Importing this package needs neither CuPy nor a GPU: the submodules are loaded on first use.

- `mcl_fast.gpu.motion`: motion maps (eq. 1) fused with downsample, m_t and quantisation;
- `mcl_fast.gpu.sampling`: batched percentile / crop-box selection / clip scores;
- `mcl_fast.gpu.flow`: TV-L1 optical flow;
- `mcl_fast.gpu.video_maps`: decode (DALI, NVDEC) -> flow -> maps for `prepare --device cuda`;
- `mcl_fast.gpu.host`: the kernels' CPU twin (libmcl_host.so) used by the tests;
- `mcl_fast.gpu._module`: `load_module(name)` -> cupy.RawModule of kernels/<name>.cu.
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("motion", "sampling", "flow", "video_maps", "host")

__all__ = list(_SUBMODULES)


# The modules that register GPU twins of the NumPy references (mcl_fast._backend.gpu_twin).
_TWIN_MODULES = ("motion", "sampling", "flow", "video_maps")


def load_twins() -> None:
    """Import the modules that register GPU twins; cheap (none of them imports CuPy at load)."""
    for name in _TWIN_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
