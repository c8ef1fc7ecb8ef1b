"""Helpers shared by the loader tests: an independent decode and PSNR."""
from __future__ import annotations

import numpy as np


def decode_all(path) -> np.ndarray:
    """Every frame of `path`, decoded start to end with PyAV (independent of the loaders)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def psnr(a, b) -> float:
    mse = float(((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
