"""ctypes loader of libmcl_host.so, the CPU twin of the CUDA kernels (see kernels/README.md).

The library runs each kernel's `__host__ __device__` arithmetic on the CPU, so the tests check the
kernels' maths against the NumPy references on machines without a GPU. CMake builds it
(`make kernels` -> build/libmcl_host.so); `MCL_FAST_HOST_LIB` names the build directory or the file.

Wrappers here cover the motion-map and box-selection kernels; another kernel's module declares
its own functions with `declare(...)`.
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np

LIB_NAME = "libmcl_host.so"
ENV_VAR = "MCL_FAST_HOST_LIB"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Pointer types for C-contiguous arrays of one dtype (ctypes checks dtype, layout and writability).
f32 = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
f64 = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
i64 = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
u8 = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")

_STATUS = {-1: "a size or count is out of range", -2: "an argument is out of range"}


class HostLibraryMissing(RuntimeError):
    """libmcl_host.so was not found or could not be loaded."""


def library_path() -> Path:
    """Where the library should be: $MCL_FAST_HOST_LIB (a directory or the file), else <repo>/build."""
    env = os.environ.get(ENV_VAR)
    path = Path(env) if env else REPO_ROOT / "build"
    return path / LIB_NAME if path.is_dir() or not path.suffix else path


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL:
    """The loaded host library; HostLibraryMissing (with the build command) when absent."""
    path = library_path()
    if not path.is_file():
        raise HostLibraryMissing(
            f"{path} not found: build the kernels' CPU twin with `make kernels` "
            f"(cmake -S . -B build && cmake --build build), or point {ENV_VAR} at its directory")
    try:
        return ctypes.CDLL(str(path))
    except OSError as err:
        raise HostLibraryMissing(f"{path} could not be loaded: {err}") from err


def declare(name: str, argtypes, restype=ctypes.c_int):
    """Return library function `name` with its ctypes signature set."""
    fn = getattr(library(), name)
    fn.argtypes = list(argtypes)
    fn.restype = restype
    return fn


def check(name: str, status: int) -> None:
    """Raise ValueError for a host function's negative status code."""
    if status != 0:
        raise ValueError(f"{name}: {_STATUS.get(status, f'error code {status}')}")


c_int, c_ll, c_float, c_double = ctypes.c_int, ctypes.c_longlong, ctypes.c_float, ctypes.c_double


def _flow_array(flow) -> np.ndarray:
    flow = np.ascontiguousarray(flow, dtype=np.float32)
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be (N, H, W, 2), got {flow.shape}")
    if flow.shape[1] < 2 or flow.shape[2] < 2:
        raise ValueError(f"flow frames must be at least 2x2 pixels, got {flow.shape[1:3]}")
    return flow


# ------------------------------------------------------------------ motion maps

def motion_map(flow) -> np.ndarray:
    """Eq. (1) by the kernel arithmetic on the CPU: (N, H, W, 2) -> (N, H, W) float32."""
    flow = _flow_array(flow)
    n, h, w, _ = flow.shape
    out = np.empty((n, h, w), np.float32)
    fn = declare("mcl_host_motion_map", [f32, f32, c_int, c_int, c_int])
    check("mcl_host_motion_map", fn(flow, out, n, h, w))
    return out


def motion_maps_downsampled(flow, factor: int, scale: float | None = None):
    """The fused kernel on the CPU: (small (N, H//f, W//f) float32, m_t (N,) float64, codes or None).

    codes (uint8, same shape as small; the store's quantisation) are written when `scale` (> 0) is given.
    """
    flow = _flow_array(flow)
    n, h, w, _ = flow.shape
    if not 1 <= factor <= min(h, w):
        raise ValueError(f"factor {factor} must be in [1, {min(h, w)}] for {h}x{w} flow")
    small = np.empty((n, h // factor, w // factor), np.float32)
    m_t = np.empty(n, np.float64)
    codes = np.empty(small.shape, np.uint8) if scale is not None else None
    gain = 255.0 / float(scale) if scale is not None else 0.0  # the store's multiplier, in double
    fn = declare("mcl_host_motion_map_fused",
                 [f32, f32, ctypes.c_void_p, f64, c_int, c_int, c_int, c_int, c_double])
    codes_ptr = codes.ctypes.data_as(ctypes.c_void_p) if codes is not None else None
    check("mcl_host_motion_map_fused",
          fn(flow, small, codes_ptr, m_t, n, h, w, int(factor), gain))
    return small, m_t, codes


def quantize(maps, scale: float) -> np.ndarray:
    """uint8 codes as the store writes them: rint(m * (255 / scale)) in double, clipped to [0, 255]; scale > 0."""
    if not float(scale) > 0:
        raise ValueError(f"quantisation scale must be > 0, got {scale}")
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    codes = np.empty(maps.shape, np.uint8)
    fn = declare("mcl_host_motion_quantize", [f32, u8, c_ll, c_double])
    check("mcl_host_motion_quantize", fn(maps, codes, maps.size, 255.0 / float(scale)))
    return codes


# ------------------------------------------------------------------ box selection

def _maps_array(maps) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.dtype != np.float32:
        raise TypeError(f"maps must be float32 (the store's dtype), got {maps.dtype}")
    if maps.ndim != 3 or 0 in maps.shape:
        raise ValueError(f"maps must be (B, H, W) with H, W >= 1, got {maps.shape}")
    return np.ascontiguousarray(maps)


def percentile_batch(maps, percentile: float = 90.0) -> np.ndarray:
    """(B,) float64: numpy.percentile(maps[b], percentile) for float32 maps (B, H, W)."""
    maps = _maps_array(maps)
    thr = np.empty(len(maps), np.float64)
    fn = declare("mcl_host_select_box_percentile", [f32, f64, c_int, c_ll, c_double, c_int])
    weak = type(percentile) in (int, float)  # NumPy: a Python number keeps float32 arithmetic
    check("mcl_host_select_box_percentile",
          fn(maps, thr, len(maps), maps[0].size, float(percentile), int(weak)))
    return thr


def select_box_index_batch(maps, boxes, percentile: float = 90.0, coverage: float = 0.8):
    """(index (B,) int64, threshold (B,) float64) of select_box_index for each map and its boxes."""
    maps = _maps_array(maps)
    boxes = np.ascontiguousarray(boxes, dtype=np.int64)
    b, h, w = maps.shape
    if boxes.ndim != 3 or boxes.shape[0] != b or boxes.shape[2] != 4 or boxes.shape[1] < 1:
        raise ValueError(f"boxes must be (B={b}, K>=1, 4), got {boxes.shape}")
    index = np.empty(b, np.int64)
    thr = np.empty(b, np.float64)
    fn = declare("mcl_host_select_box_index",
                 [f32, i64, i64, f64, c_int, c_int, c_int, c_int, c_double, c_int, c_double])
    weak = type(percentile) in (int, float)
    check("mcl_host_select_box_index",
          fn(maps, boxes, index, thr, b, h, w, boxes.shape[1], float(percentile), int(weak), float(coverage)))
    return index, thr


def clip_scores_batch(m_t, clip_len: int, stride: int, candidate_step: int = 1):
    """(starts (S,) int64, scores (B, S) float64) of sampling.clip_scores for each row of m_t (B, N)."""
    from ..sampling import clip_span

    m_t = np.ascontiguousarray(m_t, dtype=np.float64)
    if m_t.ndim != 2 or m_t.shape[1] < 1:
        raise ValueError(f"m_t must be (B, N) with N >= 1, got {m_t.shape}")
    span = clip_span(clip_len, stride)
    n = m_t.shape[1]
    starts = np.arange(0, n - span + 1, candidate_step, dtype=np.int64) if n >= span else np.zeros(1, np.int64)
    step = candidate_step if n >= span else 1
    scores = np.empty((m_t.shape[0], len(starts)), np.float64)
    fn = declare("mcl_host_clip_scores", [f64, f64, c_int, c_int, c_int, c_int, c_int, c_int])
    check("mcl_host_clip_scores", fn(m_t, scores, m_t.shape[0], n, len(starts), clip_len, stride, step))
    return starts, scores
