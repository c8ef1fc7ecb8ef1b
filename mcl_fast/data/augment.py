"""Torch twin of the DALI view pipeline (pipeline.py): the same ops in the same order.

crop (integer box) -> bilinear resize with antialiasing to size x size (DALI fn.resize's
default filter) -> colour affine map, clipped to 0..255 (fn.coord_transform + clamp) ->
separable Gaussian blur, reflect-101 borders (fn.gaussian_blur) -> flip (fn.crop_mirror_normalize)
-> the output format (output.OutputFormat: ImageNet-normalised (3, T, S, S) float32 by default).
"""
from __future__ import annotations

import cv2
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
    """Separable Gaussian blur of (N, C, H, W) float32, reflect-101 borders; window 1 is identity.

    OpenCV's sepFilter2D on each (H, W, C) image: a (N*C, 1, H, W) conv2d costs ~20x more on the
    CPU, because oneDNN pads the single channel to a block of 16 and reorders around each call.
    """
    if window <= 1:
        return x
    if x.device.type != "cpu":
        return _blur_conv(x, sigma, window)
    k = gaussian_kernel(sigma, window).numpy()
    images = x.detach().permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C)
    out = np.empty_like(images)
    for i in range(images.shape[0]):
        cv2.sepFilter2D(images[i], -1, k, k, dst=out[i], borderType=cv2.BORDER_REFLECT_101)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def _blur_conv(x: torch.Tensor, sigma: float, window: int) -> torch.Tensor:
    """blur() as two depthwise convolutions (for tensors off the CPU)."""
    k = gaussian_kernel(sigma, window).to(x.device)
    c, pad = x.shape[1], window // 2
    y = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, window).expand(c, 1, 1, window), groups=c)
    return F.conv2d(y, k.view(1, 1, window, 1).expand(c, 1, window, 1), groups=c)


def crop_resize(frames: torch.Tensor, box, size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> the box (y0, x0, h, w) resized to (T, 3, size, size) float32 0..255.

    The resize runs on the uint8 pixels (torch's uint8 antialiased kernel, ~10x faster than
    converting the source-sized crop to float first); its rounding to whole grey levels moves a
    value by at most 1.
    """
    y0, x0, h, w = (int(v) for v in box)
    crop = frames[:, y0:y0 + h, x0:x0 + w].permute(0, 3, 1, 2)
    if crop.device.type != "cpu":  # the uint8 antialiased kernel is the CPU's
        crop = crop.float()
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False).float()


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
