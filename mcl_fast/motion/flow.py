"""Optical flow backends: OpenCV TV-L1 and Farneback on the CPU, the project's TV-L1 kernels on the GPU."""
from __future__ import annotations

import numpy as np

from .._backend import gpu_twin, is_cupy_array

FLOW_METHODS = ("tvl1", "farneback")

# cv2.calcOpticalFlowFarneback(prev, next, flow, pyr_scale, levels, winsize, iterations,
# poly_n, poly_sigma, flags): OpenCV's documented example settings.
FARNEBACK_PARAMS = (0.5, 3, 15, 3, 5, 1.2, 0)


def to_gray(frames) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB or (N, H, W) uint8 gray -> (N, H, W) uint8 gray (BT.601 weights)."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim == 3:
        return np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim == 4 and frames.shape[-1] == 3:
        return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames.astype(np.uint8, copy=False)])
    raise ValueError(f"frames must be (N, H, W, 3) RGB or (N, H, W) gray uint8, got {frames.shape}")


class PairFlow:
    """Flow between two gray frames with one reusable OpenCV estimator (TV-L1 setup is not free)."""

    def __init__(self, method: str = "tvl1"):
        import cv2

        if method not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {method!r}; choose one of {FLOW_METHODS}")
        self.method = method
        self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create() if method == "tvl1" else None

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """prev, nxt: (H, W) uint8. Returns (H, W, 2) float32, the flow from prev to nxt."""
        import cv2

        if self._tvl1 is not None:
            return self._tvl1.calc(prev, nxt, None)
        return cv2.calcOpticalFlowFarneback(prev, nxt, None, *FARNEBACK_PARAMS)


def compute_flow(frames, method: str = "tvl1", device: str = "cpu"):
    """Dense optical flow of consecutive frames.

    frames: (N, H, W, 3) uint8 RGB or (N, H, W) uint8 gray, N >= 2.
    Returns (N, H, W, 2) float32 (u = x displacement, v = y displacement, pixels);
    flow[i] goes from frame i to i+1 and flow[N-1] repeats flow[N-2] (paper, sec. 3.1).
    device="cuda" (or a CuPy input) runs the project's TV-L1 kernels and returns CuPy.
    """
    if device not in ("cpu", "cuda", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device != "cpu" or is_cupy_array(frames):
        return gpu_twin("motion.compute_flow")(frames, method=method)
    gray = to_gray(frames)
    if len(gray) < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {len(gray)}")
    pair = PairFlow(method)
    flow = np.empty(gray.shape + (2,), np.float32)
    for i in range(len(gray) - 1):
        flow[i] = pair(gray[i], gray[i + 1])
    flow[-1] = flow[-2]
    return flow
