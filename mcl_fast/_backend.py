"""The only module that imports CuPy and NVIDIA DALI.

Everything else asks here, so a machine without the GPU packages imports the whole library
and gets one clear error, with the install command, only when it asks for a GPU feature.
Both are imported on first use, not at import time: DALI alone costs about a second, and every
`prepare` worker process would pay it for nothing.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Callable

_GPU_EXTRA = "pip install 'mcl_fast[gpu]'  (nvidia-dali-cuda130, cupy-cuda13x, nvidia-ml-py)"


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing or broken
        return False


HAS_CUPY = _installed("cupy")
HAS_DALI = _installed("nvidia.dali")

# Submodules every DALI user here needs; importing them makes them attributes of the package.
_DALI_SUBMODULES = ("fn", "types", "math", "pipeline", "plugin.pytorch")


@functools.lru_cache(maxsize=None)
def require_cupy() -> ModuleType:
    """Return the cupy module or raise an ImportError that says how to install it."""
    if not HAS_CUPY:
        raise ImportError(f"this feature needs CuPy: {_GPU_EXTRA}")
    try:
        return importlib.import_module("cupy")
    except Exception as e:  # installed but broken (e.g. no CUDA runtime)
        raise ImportError(f"CuPy is installed but does not import ({e}); {_GPU_EXTRA}") from e


@functools.lru_cache(maxsize=None)
def require_dali() -> ModuleType:
    """Return the nvidia.dali module with fn, types, math, pipeline and plugin.pytorch imported."""
    if not HAS_DALI:
        raise ImportError(f"this feature needs NVIDIA DALI: {_GPU_EXTRA}")
    try:
        dali = importlib.import_module("nvidia.dali")
        for sub in _DALI_SUBMODULES:
            importlib.import_module(f"nvidia.dali.{sub}")
    except Exception as e:
        raise ImportError(f"NVIDIA DALI is installed but does not import ({e}); {_GPU_EXTRA}") from e
    return dali


@functools.lru_cache(maxsize=None)
def has_gpu() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        return require_cupy().cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def is_cupy_array(x) -> bool:
    # An array can only be a CuPy array if CuPy was imported already: never import it here.
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


# GPU twins. The NumPy references (mcl_fast.motion, mcl_fast.sampling) sit below mcl_fast.gpu and
# never import it: imports point one way (docs/architecture.md, enforced by import-linter). A reference handed
# a CuPy array, or device="cuda", asks here for its twin by name; the modules of mcl_fast.gpu
# register their twins when they load, and the first request loads them. This is the one place
# where a lower layer reaches the GPU package, and it does so only at run time, only when asked.
_GPU_PACKAGE = "mcl_fast.gpu"
_GPU_TWINS: dict[str, Callable] = {}


def register_gpu_twin(name: str) -> Callable[[Callable], Callable]:
    """Decorator for mcl_fast.gpu: register `fn` as the GPU twin called `name` ("sampling.select_box")."""
    def register(fn: Callable) -> Callable:
        _GPU_TWINS[name] = fn
        return fn

    return register


def gpu_twin(name: str) -> Callable:
    """The GPU twin registered as `name`, loading mcl_fast.gpu's twins on first use (no CuPy import)."""
    if name not in _GPU_TWINS:
        importlib.import_module(_GPU_PACKAGE).load_twins()
    try:
        return _GPU_TWINS[name]
    except KeyError:
        raise LookupError(f"no GPU twin is registered as {name!r}; known: {sorted(_GPU_TWINS)}") from None
