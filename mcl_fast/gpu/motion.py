"""Motion maps on the GPU (kernels/motion_map.cu): eq. (1), fused with the store's downsample,
the per-frame spatial mean m_t (eq. 2) and the uint8 quantisation.

Inputs and outputs are CuPy arrays; results equal the NumPy references in
mcl_fast.motion.maps (eq. 1 bit for bit; block means and m_t to float32 rounding).
"""
from __future__ import annotations

import numpy as np

from .._backend import register_gpu_twin, require_cupy
from ._module import get_kernel

THREADS = 256  # = MCL_MOTION_THREADS in kernels/motion_map.cu (the fused kernel's block size)
MAX_GRID_Y = 65535  # cell rows per frame (gridDim.y limit)
MAX_GRID_Z = 65535  # frames per fused launch (gridDim.z limit)


def quantize_gain(scale: float) -> np.float64:
    """The store's multiplier 255 / scale in double (mcl_fast.motion.store.quantize_maps); scale > 0."""
    scale = float(scale)
    if not scale > 0 or not np.isfinite(scale):
        raise ValueError(f"quantisation scale must be a finite number > 0, got {scale}")
    return np.float64(255.0 / scale)


def _flow_on_gpu(flow):
    cp = require_cupy()
    if not isinstance(flow, cp.ndarray):
        raise TypeError(f"flow must be a cupy.ndarray, got {type(flow).__name__}")
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be (N, H, W, 2), got {flow.shape}")
    if flow.shape[1] < 2 or flow.shape[2] < 2:
        raise ValueError(f"flow frames must be at least 2x2 pixels, got {flow.shape[1:3]}")
    flow = cp.ascontiguousarray(flow, dtype=cp.float32)
    if getattr(flow.data, "ptr", 0) % 8:  # the kernels load (u, v) as one 8-byte float2
        flow = flow.copy()
    return cp, flow


@register_gpu_twin("motion.motion_map")
def motion_map(flow):
    """Eq. (1) of (N, H, W, 2) float CuPy flow -> (N, H, W) float32 CuPy (numpy.gradient semantics)."""
    cp, flow = _flow_on_gpu(flow)
    n, h, w, _ = flow.shape
    out = cp.empty((n, h, w), cp.float32)
    total = n * h * w
    if total:
        blocks = min((total + THREADS - 1) // THREADS, 1 << 20)  # the kernel loops grid-stride
        get_kernel("motion_map", "mcl_motion_map")((blocks,), (THREADS,), (flow, out, np.int32(n), np.int32(h), np.int32(w)))
    return out


def motion_maps_fused(flow, factor: int, scale: float | None = None):
    """One pass over the flow: (small, m_t, codes).

    small: (N, H//f, W//f) float32, maps.downsample_mean(motion_map(flow), f) (partial edge blocks dropped);
    m_t: (N,) float32, the spatial mean of each full-size map (eq. 2), summed in float64;
    codes: (N, H//f, W//f) uint8 quantize(small, scale) when `scale` (> 0) is given, else None.
    The full-size map is never written to memory.
    """
    cp, flow = _flow_on_gpu(flow)
    n, h, w, _ = flow.shape
    factor = int(factor)
    gain = quantize_gain(scale) if scale is not None else np.float64(0.0)
    if not 1 <= factor <= min(h, w, THREADS):
        raise ValueError(f"factor {factor} must be in [1, {min(h, w, THREADS)}] for {h}x{w} flow")
    if -(-h // factor) > MAX_GRID_Y:
        raise ValueError(f"{h} rows / factor {factor} exceeds the kernel's {MAX_GRID_Y} cell rows")
    small = cp.empty((n, h // factor, w // factor), cp.float32)
    codes = cp.empty(small.shape, cp.uint8) if scale is not None else cp.empty(1, cp.uint8)
    cells_y, cells_x = -(-h // factor), -(-w // factor)
    cells_per_tile = THREADS // factor  # whole cells per block row (kernels/motion_map.cu)
    tiles_x = -(-cells_x // cells_per_tile)
    partial = cp.empty((n, cells_y, tiles_x), cp.float64)
    kernel = get_kernel("motion_map", "mcl_motion_map_fused")
    for start in range(0, n, MAX_GRID_Z):
        stop = min(n, start + MAX_GRID_Z)
        kernel((tiles_x, cells_y, stop - start), (THREADS,),
               (flow[start:stop], small[start:stop], codes[start:stop] if scale is not None else codes,
                partial[start:stop], np.int32(stop - start), np.int32(h), np.int32(w), np.int32(factor),
                np.int32(scale is not None), gain))
    m_t = (partial.sum(axis=(1, 2)) / float(h * w)).astype(cp.float32)
    return small, m_t, (codes if scale is not None else None)


def motion_maps_downsampled(flow, factor: int):
    """(maps_small (N, H//f, W//f) float32, m_t (N,) float32) of CuPy flow; see motion_maps_fused."""
    small, m_t, _ = motion_maps_fused(flow, factor)
    return small, m_t


def quantize(maps, scale: float):
    """uint8 codes of CuPy maps as the store writes them: rint(m * (255 / scale)) in double, clipped to [0, 255]."""
    cp = require_cupy()
    gain = quantize_gain(scale)
    maps = cp.ascontiguousarray(maps, dtype=cp.float32)
    codes = cp.empty(maps.shape, cp.uint8)
    if maps.size:
        blocks = min((maps.size + THREADS - 1) // THREADS, 1 << 20)
        get_kernel("motion_map", "mcl_motion_quantize")((blocks,), (THREADS,), (maps, codes, np.int64(maps.size), gain))
    return codes


def quantize_maps(maps):
    """GPU twin of mcl_fast.motion.store.quantize_maps: (uint8 CuPy codes, scale) with
    scale = max(maps) (1.0 when all zero). ValueError for an empty array, NaN/inf or negative values."""
    cp = require_cupy()
    maps = cp.ascontiguousarray(maps, dtype=cp.float32)
    if maps.ndim != 3 or maps.size == 0:
        raise ValueError(f"maps must be a non-empty (N, h, w) array, got {maps.shape}")
    lo, hi, finite = (float(v) for v in cp.asnumpy(cp.stack([maps.min(), maps.max(), cp.isfinite(maps).all()])))
    if not finite:
        raise ValueError("maps hold non-finite values")
    if lo < 0:
        raise ValueError(f"motion maps are non-negative, got a minimum of {lo}")
    scale = hi if hi > 0 else 1.0
    return quantize(maps, scale), scale
