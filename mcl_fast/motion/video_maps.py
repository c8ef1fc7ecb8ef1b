"""One video's motion maps as `prepare` computes them and a store writer takes them, and the
pieces every kind's per-video pass shares (the flow estimator of this process, the source's
fingerprint).

VideoMaps holds the paper's quantised maps; a kind of store with more per-video data extends it
in its own module (the release's adds flows and clip magnitudes; store_kinds.py lists the kinds).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..video_io import VideoError, file_fingerprint
from .flow import PairFlow

BASE_KIND = "paper"  # the kind of store plain maps go into (store_kind.MapsKind.name)

_FLOW_CACHE: dict[str, PairFlow] = {}


def pair_flow(method: str) -> PairFlow:
    """This process's flow estimator of `method` (one per process: TV-L1 setup is not free)."""
    if method not in _FLOW_CACHE:
        _FLOW_CACHE[method] = PairFlow(method)
    return _FLOW_CACHE[method]


def source_fingerprint(path) -> str:
    """The file's content fingerprint (video_io.file_fingerprint), recorded in the store so the
    loaders can tell when a file is no longer the one the maps were made from."""
    try:
        return file_fingerprint(path)
    except OSError as e:
        raise VideoError(path, f"unreadable: {e.strerror or e}") from None


def quantize_maps(maps) -> tuple[np.ndarray, float]:
    """(N, h, w) non-negative float maps -> (uint8 maps, scale).

    scale = max(maps) (1.0 if all zero); q = rint(maps / scale * 255). `dequantize(q, scale)`
    is within scale / 510 of `maps` everywhere.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.size == 0:
        raise ValueError(f"maps must be a non-empty (N, h, w) array, got {maps.shape}")
    if not np.isfinite(maps).all():
        raise ValueError("maps hold non-finite values")
    lo, hi = float(maps.min()), float(maps.max())
    if lo < 0:
        raise ValueError(f"motion maps are non-negative, got a minimum of {lo}")
    scale = hi if hi > 0 else 1.0
    q = np.rint(maps.astype(np.float64) * (255.0 / scale))
    return np.clip(q, 0, 255).astype(np.uint8), scale


def dequantize(q: np.ndarray, scale: float) -> np.ndarray:
    """uint8 maps and their scale -> float32 maps (q * scale / 255)."""
    return np.asarray(q).astype(np.float32) * np.float32(scale / 255.0)


@dataclass
class VideoMaps:
    """One video's quantised motion maps, as `prepare` computes them (CPU or GPU).

    num_frames: frames decoded (= len(maps_u8): the last frame repeats the map before it);
    fps; height, width: the source frame size; maps_u8: (num_frames, map_h, map_w) uint8;
    scale: dequantised maps are maps_u8 * scale / 255, within `max_abs_error` = scale / 510;
    fingerprint: the source file's content fingerprint (None: unknown).
    """

    num_frames: int
    fps: float
    height: int
    width: int
    maps_u8: np.ndarray
    scale: float
    fingerprint: str | None = None

    @property
    def kind(self) -> str:
        """The kind of store these maps go into (store_kinds.KINDS): the paper's, unless a
        subclass carries another kind's data."""
        return BASE_KIND

    @classmethod
    def from_maps(cls, maps, *, fps: float, height: int, width: int, fingerprint: str | None = None) -> "VideoMaps":
        """Quantise (N, h, w) float maps (one per frame) with `quantize_maps`."""
        q, scale = quantize_maps(maps)
        return cls(num_frames=len(q), fps=float(fps), height=int(height), width=int(width), maps_u8=q, scale=scale,
                   fingerprint=fingerprint)

    @classmethod
    def without_motion(cls, num_frames: int, map_shape, *, fps: float, height: int, width: int,
                       fingerprint: str | None = None) -> "VideoMaps":
        """All-zero maps: a video too short for optical flow (one frame) has no motion."""
        return cls.from_maps(np.zeros((int(num_frames), *map_shape), np.float32), fps=fps, height=height,
                             width=width, fingerprint=fingerprint)

    @property
    def max_abs_error(self) -> float:
        """The most the dequantised maps differ from the float maps: half a quantisation step."""
        return self.scale / 510.0

    def dequantized(self) -> np.ndarray:
        return dequantize(self.maps_u8, self.scale)
