"""Motion-guided token masks for masked video modelling (VideoMAE-style loops).

The loaders hand every batch the crop-aligned motion of its first view (`motion`, (B, T', H', W'),
cropped and flipped like the clip). `MotionTubeMask` turns it into the boolean mask a masked
autoencoder takes, one entry per token of a (tubelet x patch x patch) grid, True = hidden:

    loader = TorchVideoLoader(videos, store, 8, views="clip", batch_transform=MotionTubeMask(ratio=0.9))
    for batch in loader:
        clip, mask = batch["views"][0], batch["mask"]     # (B, 3, T, H, W) float32, (B, N) bool

Modes (`mode=`): "random" hides uniformly random tokens (VideoMAE's tube masking: the scores
are ignored); "motion" hides the tokens with the most motion (the model must reconstruct what
moves); "sample" draws the hidden tokens without replacement with probability proportional to
score ** (1 / temperature), so motion tilts the choice without fixing it. With `tube=True` (the
default, as VideoMAE) a spatial position is hidden in every time step or in none: scores are
averaged over time and int(ratio * h * w) positions are hidden per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .._checksum import digest

MODES = ("random", "motion", "sample")


def token_grid(frames: int, height: int, width: int, tubelet: int, patch: int) -> tuple[int, int, int]:
    """(t, h, w) tokens of a (frames, height, width) clip; every size must divide evenly."""
    if frames % tubelet or height % patch or width % patch:
        raise ValueError(f"a {frames}x{height}x{width} clip does not split into {tubelet}x{patch}x{patch} tokens")
    return frames // tubelet, height // patch, width // patch


def token_motion(motion: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """(B, T', H', W') motion -> (B, t, h, w) float32 mean motion per token (adaptive average pooling)."""
    if motion.dim() != 4:
        raise ValueError(f"motion must be (B, T, H, W), got shape {tuple(motion.shape)}")
    return F.adaptive_avg_pool3d(motion.float().unsqueeze(1), grid).squeeze(1)


def _hidden(scores: np.ndarray, count: int, mode: str, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the `count` entries of the flat `scores` to hide."""
    n = scores.size
    if mode == "random":
        return rng.choice(n, count, replace=False)
    if mode == "motion":
        # stable sort: ties (e.g. a static clip) break by position, deterministically
        return np.argsort(-scores, kind="stable")[:count]
    weights = np.clip(scores.astype(np.float64), 0.0, None) ** (1.0 / temperature)
    if not np.isfinite(weights).all() or weights.sum() <= 0 or np.count_nonzero(weights) < count:
        weights = weights + 1e-12 + (weights.max(initial=0.0) or 1.0) * 1e-6  # static clip: near uniform
    return rng.choice(n, count, replace=False, p=weights / weights.sum())


def motion_mask(motion: torch.Tensor, grid: tuple[int, int, int], ratio: float, *, mode: str = "motion",
                tube: bool = True, temperature: float = 1.0, rngs=None) -> torch.Tensor:
    """(B, T', H', W') motion -> (B, t*h*w) bool mask over the token grid (t, h, w), True = hidden.

    `rngs`: one numpy Generator per sample (used by "random" and "sample"); default seed 0 each.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scores = token_motion(motion, grid).numpy()  # (B, t, h, w)
    t, h, w = grid
    batch = scores.shape[0]
    rngs = rngs if rngs is not None else [np.random.default_rng(0) for _ in range(batch)]
    mask = np.zeros((batch, t, h * w), dtype=bool)
    for b in range(batch):
        if tube:
            mask[b, :, _hidden(scores[b].mean(0).ravel(), int(ratio * h * w), mode, temperature, rngs[b])] = True
        else:
            flat = mask[b].reshape(-1)
            flat[_hidden(scores[b].ravel(), int(ratio * t * h * w), mode, temperature, rngs[b])] = True
    return torch.from_numpy(mask.reshape(batch, -1))


@dataclass(frozen=True)
class MotionTubeMask:
    """A loader `batch_transform` that adds `mask` (B, N) bool, N = T/tubelet * H/patch * W/patch.

    Reads the batch's first view for the clip size and `motion` for the scores. Its random draws
    are seeded by (seed, the sample's dataset index, its motion's checksum): a pure function of the
    batch, the same in a worker process or the main one, and different whenever the clip or crop is.
    """

    ratio: float = 0.9
    mode: str = "motion"
    tube: bool = True
    patch: int = 16
    tubelet: int = 2
    temperature: float = 1.0
    seed: int = 0
    layout: str = "NCTHW"

    def _clip_size(self, view: torch.Tensor) -> tuple[int, int, int]:
        if self.layout == "NCTHW":
            return tuple(view.shape[2:5])
        if self.layout == "NTCHW":
            return (view.shape[1], view.shape[3], view.shape[4])
        if self.layout == "NTHWC":
            return tuple(view.shape[1:4])
        raise ValueError(f"layout must be NCTHW, NTCHW or NTHWC, got {self.layout!r}")

    def _rngs(self, batch: dict) -> list[np.random.Generator]:
        motion, index = batch["motion"], batch["index"].tolist()
        return [np.random.default_rng([self.seed, int(i), int(digest(motion[b].contiguous().numpy())[-8:], 16)])
                for b, i in enumerate(index)]

    def __call__(self, batch: dict) -> dict:
        if "motion" not in batch:
            raise KeyError("MotionTubeMask needs the batch's 'motion' (the loaders always return it)")
        grid = token_grid(*self._clip_size(batch["views"][0]), self.tubelet, self.patch)
        motion = batch["motion"].cpu()
        mask = motion_mask(motion, grid, self.ratio, mode=self.mode, tube=self.tube, temperature=self.temperature,
                           rngs=self._rngs({**batch, "motion": motion}))
        batch["mask"] = mask.to(batch["motion"].device)  # with the rest of the batch (DALI on the GPU: CUDA)
        return batch
