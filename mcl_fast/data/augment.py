"""Torch twin of the DALI view pipeline (pipeline.py): the same ops in the same order.

crop (integer box) -> bilinear resize with antialiasing to size x size (DALI fn.resize's
default filter) -> colour affine map, clipped to 0..255 (fn.coord_transform + clamp) ->
separable Gaussian blur, reflect-101 borders (fn.gaussian_blur) -> flip (fn.crop_mirror_normalize)
-> the output format (output.OutputFormat: ImageNet-normalised (3, T, S, S) float32 by default).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .output import OutputFormat
from .plan import MEAN_255, STD_255, ViewAug

IMAGENET = OutputFormat()


def gaussian_kernel(sigma: float, window: int) -> torch.Tensor:
    """(window,) float32 normalised Gaussian taps centred on the middle one."""
    x = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    k = torch.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return (k / k.sum()).float()


def blur(x: torch.Tensor, sigma: float, window: int) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) float, reflect-101 borders; window 1 is identity."""
    if window <= 1:
        return x
    k = gaussian_kernel(sigma, window).to(x.device)
    n, c, h, w = x.shape
    pad = window // 2
    y = F.pad(x.reshape(n * c, 1, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, window))
    y = F.conv2d(y, k.view(1, 1, window, 1))
    return y.reshape(n, c, h, w)


def crop_resize(frames: torch.Tensor, box, size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> the box (y0, x0, h, w) resized to (T, 3, size, size) float32 0..255."""
    y0, x0, h, w = (int(v) for v in box)
    crop = frames[:, y0:y0 + h, x0:x0 + w].permute(0, 3, 1, 2).float()
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def render_view(frames, box, aug: ViewAug, size: int) -> torch.Tensor:
    """One view of a plan before the output format: (T, H, W, 3) uint8 frames (NumPy or torch) ->
    (T, 3, S, S) float32 RGB in 0..255."""
    frames = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    x = crop_resize(frames, box, size)  # (T, 3, S, S)
    if not aug.identity_color:
        m = torch.as_tensor(aug.color_matrix, dtype=torch.float32, device=x.device)
        t = torch.as_tensor(aug.color_offset, dtype=torch.float32, device=x.device)
        x = (torch.einsum("ij,njhw->nihw", m, x) + t.view(1, 3, 1, 1)).clamp_(0.0, 255.0)
    x = blur(x, aug.blur_sigma, aug.blur_window)
    return x.flip(-1) if aug.flip else x


def apply_view(frames, box, aug: ViewAug, size: int, output: OutputFormat = IMAGENET) -> torch.Tensor:
    """One view of a plan: (T, H, W, 3) uint8 frames (NumPy or torch) -> the view in `output`'s
    format (default (3, T, S, S) float32, ImageNet-normalised)."""
    return output.apply(render_view(frames, box, aug, size))


def denormalize(view: torch.Tensor) -> torch.Tensor:
    """(…, 3, T, S, S) normalised -> the same in RGB 0..255 (undoes the ImageNet normalisation)."""
    shape = [1] * view.dim()
    shape[-4] = 3
    mean = torch.tensor(MEAN_255, device=view.device, dtype=view.dtype).view(shape)
    std = torch.tensor(STD_255, device=view.device, dtype=view.dtype).view(shape)
    return view * std + mean
