"""The only module that imports CuPy and NVIDIA DALI.

Everything else asks here, so a machine without the GPU packages imports the whole library
and gets one clear error, with the install command, only when it asks for a GPU feature.
"""
from __future__ import annotations

import functools
import importlib
from types import ModuleType

_GPU_EXTRA = "pip install 'mcl_fast[gpu]'  (nvidia-dali-cuda130, cupy-cuda13x, nvidia-ml-py)"


def _try_import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return None


cupy = _try_import("cupy")
HAS_CUPY = cupy is not None

dali = _try_import("nvidia.dali")
HAS_DALI = dali is not None


def require_cupy() -> ModuleType:
    """Return the cupy module or raise an ImportError that says how to install it."""
    if cupy is None:
        raise ImportError(f"this feature needs CuPy: {_GPU_EXTRA}")
    return cupy


def require_dali() -> ModuleType:
    """Return the nvidia.dali module (with .fn, .types, .pipeline_def imported)."""
    if dali is None:
        raise ImportError(f"this feature needs NVIDIA DALI: {_GPU_EXTRA}")
    for sub in ("fn", "types", "pipeline", "plugin.pytorch"):
        importlib.import_module(f"nvidia.dali.{sub}")
    return dali


@functools.lru_cache(maxsize=None)
def has_gpu() -> bool:
    """True when CuPy is importable and sees at least one CUDA device."""
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def is_cupy_array(x) -> bool:
    return cupy is not None and isinstance(x, cupy.ndarray)


def array_module(x) -> ModuleType:
    """numpy or cupy, whichever owns `x` (the CuPy idiom `get_array_module`)."""
    if is_cupy_array(x):
        return cupy
    import numpy

    return numpy


def to_numpy(x):
    return x.get() if is_cupy_array(x) else x
