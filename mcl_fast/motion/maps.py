"""Motion maps from optical flow: eq. (1) motion boundaries and eq. (2) pooling.

NumPy reference; a CuPy input goes to its registered GPU twin (the fused kernel in mcl_fast.gpu.motion).
"""
from __future__ import annotations

import numpy as np

from .._backend import gpu_twin, is_cupy_array


def motion_map(flow):
    """Eq. (1): m = sqrt(u_x² + u_y² + v_x² + v_y²) per pixel.

    flow: (N, H, W, 2) float, (u, v) in pixels. Returns (N, H, W) float32.
    Derivatives follow numpy.gradient: central differences inside, one-sided at the borders,
    unit spacing. A pure translation (camera pan) has zero derivatives, so it scores zero.
    """
    if is_cupy_array(flow):
        return gpu_twin("motion.motion_map")(flow)
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be (N, H, W, 2), got {flow.shape}")
    if flow.shape[1] < 2 or flow.shape[2] < 2:
        raise ValueError(f"flow frames must be at least 2x2 pixels, got {flow.shape[1:3]}")
    d_dy, d_dx = np.gradient(flow, axis=(1, 2))  # each (N, H, W, 2)
    return np.sqrt((d_dy * d_dy + d_dx * d_dx).sum(axis=-1)).astype(np.float32)


def pool_motion(m_st):
    """Eq. (2): (m_st, m_s, m_t) with m_s (H, W) the mean over time, m_t (N,) the mean over space."""
    return m_st, m_st.mean(axis=0), m_st.mean(axis=(1, 2))


def downsample_mean(maps, factor: int):
    """Average non-overlapping factor×factor blocks: (N, H, W) -> (N, H//f, W//f).

    Edge rows/columns that do not fill a block are dropped. Block means keep m_t (the
    spatial mean) exact up to those dropped edges.
    """
    if factor == 1:
        return maps
    n, h, w = maps.shape
    hh, ww = h // factor, w // factor
    if hh == 0 or ww == 0:
        raise ValueError(f"maps of {h}x{w} are smaller than one {factor}x{factor} block")
    blocks = maps[:, : hh * factor, : ww * factor].reshape(n, hh, factor, ww, factor)
    return blocks.mean(axis=(2, 4), dtype=np.float32) if not is_cupy_array(maps) else blocks.mean(axis=(2, 4))
