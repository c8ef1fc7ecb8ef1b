"""Torch twin of the DALI view pipeline (pipeline.py): the same ops in the same order.

crop (integer box) -> bilinear resize with antialiasing to size x size (DALI fn.resize's
default filter) -> colour affine map, clipped to 0..255 (fn.coord_transform + clamp) ->
separable Gaussian blur, reflect-101 borders (fn.gaussian_blur) -> flip (fn.crop_mirror_normalize)
-> the output format (output.OutputFormat: ImageNet-normalised (3, T, S, S) float32 by default).

On the CPU a view is worked in (T, S, S, 3) float32 (the layout the uint8 resize leaves and
OpenCV's per-pixel ops read) with four passes over the output-sized pixels: the uint8 -> float
conversion, one affine map that is the colour change and the normalisation together (the
clip to 0..255 becomes a per-channel clip in normalised units), the blur, and one copy into the
caller's buffer that also flips and lays the view out. Blur and normalisation commute (the
kernel sums to 1 and the normalisation is per channel), so this is the DALI order's output
up to float rounding.
"""
from __future__ import annotations

import contextlib
import threading

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .output import OutputFormat
from .plan import MEAN_255, STD_255, ViewAug

IMAGENET = OutputFormat()
PIXELS = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # (mean, std) that leaves RGB in 0..255


@contextlib.contextmanager
def opencv_threads(threads: int):
    """OpenCV's thread count set to `threads` inside the block, then restored."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


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
    images = x.detach().permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C)
    return torch.from_numpy(blur_nhwc(images, sigma, window)).permute(0, 3, 1, 2)


def blur_nhwc(images: np.ndarray, sigma: float, window: int) -> np.ndarray:
    """blur() in place on (N, H, W, C) float32 NumPy images (sepFilter2D reads its source rows
    into its own ring buffer, so dst=src is exact: tests/test_augment.py); returns `images`."""
    if window <= 1:
        return images
    k = gaussian_kernel(sigma, window).numpy()
    for image in images:
        cv2.sepFilter2D(image, -1, k, k, dst=image, borderType=cv2.BORDER_REFLECT_101)
    return images


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
    value by at most 1. On the CPU the result is channels-last: (T, S, S, 3) in memory.
    """
    y0, x0, h, w = (int(v) for v in box)
    crop = frames[:, y0:y0 + h, x0:x0 + w].permute(0, 3, 1, 2)
    if crop.device.type != "cpu":  # the uint8 antialiased kernel is the CPU's
        crop = crop.float()
    x = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.float() if crop.device.type != "cpu" else x


def view_affine(aug: ViewAug, mean, std) -> tuple[np.ndarray, tuple | None]:
    """The view's colour map followed by (x - mean) / std as one affine on RGB: its (3, 4) float32
    matrix for cv2.transform, and the per-channel (low, high) that 0 and 255 become (None when the
    view has no colour change: resized uint8 pixels are already inside)."""
    inv, mean = 1.0 / np.asarray(std, np.float64), np.asarray(mean, np.float64)
    matrix = np.asarray(aug.color_matrix, np.float64) * inv[:, None]
    offset = (np.asarray(aug.color_offset, np.float64) - mean) * inv
    bounds = None if aug.identity_color else (tuple(-mean * inv) + (0.0,), tuple((255.0 - mean) * inv) + (0.0,))
    return np.concatenate([matrix, offset[:, None]], axis=1).astype(np.float32), bounds


def render_nhwc(frames, box, aug: ViewAug, size: int, mean, std, work: np.ndarray | None = None) -> np.ndarray:
    """One view before its flip, on the CPU: (T, H, W, 3) uint8 -> (T, S, S, 3) float32, coloured,
    normalised ((x - mean) / std in 0..255 units) and blurred (in `work` when given: augment_nhwc)."""
    frames = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    resized = crop_resize(frames, box, size).permute(0, 2, 3, 1).numpy()  # channels-last: a view
    return augment_nhwc(resized, aug, mean, std, work)


def augment_nhwc(resized: np.ndarray, aug: ViewAug, mean, std, work: np.ndarray | None = None) -> np.ndarray:
    """A resized view's colour, normalisation and blur: (T, S, S, 3) uint8 (any strides) -> (T, S,
    S, 3) float32, (x - mean) / std in 0..255 units, not flipped: in `work` (float32, as many
    elements) when given, else in a new array."""
    t, h, w, _ = resized.shape
    x = np.empty((t * h, w, 3), np.float32) if work is None else work.reshape(t * h, w, 3)  # one image to OpenCV
    np.copyto(x.reshape(resized.shape), resized, casting="unsafe")
    matrix, bounds = view_affine(aug, mean, std)
    cv2.transform(x, matrix, dst=x)
    if bounds is not None:
        cv2.min(cv2.max(x, bounds[0], dst=x), bounds[1], dst=x)  # per-channel clip, 4-tuples are cv2 Scalars
    return blur_nhwc(x.reshape(t, h, w, 3), aug.blur_sigma, aug.blur_window)


def finish_view(resized: np.ndarray, aug: ViewAug, out: torch.Tensor, output: OutputFormat = IMAGENET) -> torch.Tensor:
    """The rest of a view after its crop and uint8 resize (the DALI loader's CPU mode): (T, S, S, 3)
    uint8 -> colour, blur, flip and `output`'s format, written into `out` (one CPU sample); returns out."""
    x = augment_nhwc(resized, aug, output.mean_255, output.std_255, work_array(resized.size))
    return store_view(x, aug.flip, out, output)


_work = threading.local()


def work_array(size: int) -> np.ndarray:
    """This thread's float32 scratch of `size` elements, reused from call to call (grown when too
    small). A view's working copy is ~10 MB at 16x224²: allocated fresh each time, glibc hands it
    back to the kernel and its ~2400 pages fault in again, ~4 ms per view (tests/test_augment.py
    counts the faults). Its contents are overwritten by the next view rendered on this thread."""
    have = getattr(_work, "array", None)
    if have is None or have.size < size:
        _work.array = have = np.empty(size, np.float32)
    return have[:size]


def store_view(x: np.ndarray, flip: bool, out: torch.Tensor, output: OutputFormat) -> torch.Tensor:
    """Copy a (T, S, S, 3) float32 view into `out` (one sample in `output`'s dtype and layout),
    flipped on the way (a NumPy view with a negative stride: the copy is the flip); returns out."""
    if output.dtype == "uint8":
        np.clip(np.rint(x, out=x), 0, 255, out=x)
    if output.layout == "NCTHW" and out.dtype == torch.float32 and out.is_contiguous():
        return _store_planes(x, flip, out)
    src = (x[:, :, ::-1] if flip else x).transpose(output.from_nhwc)
    if out.dtype == torch.bfloat16:  # NumPy has no bfloat16: torch converts
        out.copy_(torch.from_numpy(np.ascontiguousarray(src)))
    else:
        np.copyto(out.numpy(), src, casting="unsafe")
    return out


def _store_planes(x: np.ndarray, flip: bool, out: torch.Tensor) -> torch.Tensor:
    """store_view for a contiguous (3, T, S, S) float32 sample (the default format): OpenCV splits
    the channels into their planes and mirrors each plane in place, the same values NumPy's
    strided transposing copy writes, in a fraction of its time (tests/test_augment.py)."""
    t, h, w, _ = x.shape
    planes = [plane.reshape(t * h, w) for plane in out.numpy()]
    cv2.mixChannels([x.reshape(t * h, w, 3)], planes, [0, 0, 1, 1, 2, 2])
    if flip:
        for plane in planes:
            cv2.flip(plane, 1, dst=plane)
    return out


def render_into(frames, box, aug: ViewAug, size: int, out: torch.Tensor,
                output: OutputFormat = IMAGENET) -> torch.Tensor:
    """One view of a plan written into `out` (CPU, shape output.sample_shape(T, size)); returns out."""
    x = render_nhwc(frames, box, aug, size, output.mean_255, output.std_255, work_array(out.numel()))
    return store_view(x, aug.flip, out, output)


def render_view(frames, box, aug: ViewAug, size: int) -> torch.Tensor:
    """One view of a plan before the output format: (T, H, W, 3) uint8 frames (NumPy or torch) ->
    (T, 3, S, S) float32 RGB in 0..255."""
    if isinstance(frames, torch.Tensor) and frames.device.type != "cpu":
        return _render_view_torch(frames, box, aug, size)
    x = render_nhwc(frames, box, aug, size, *PIXELS)
    return torch.from_numpy(np.ascontiguousarray(x[:, :, ::-1]) if aug.flip else x).permute(0, 3, 1, 2)


def _render_view_torch(frames: torch.Tensor, box, aug: ViewAug, size: int) -> torch.Tensor:
    """render_view in torch ops, for frames off the CPU."""
    x = crop_resize(frames, box, size)
    if not aug.identity_color:
        m = torch.as_tensor(aug.color_matrix, dtype=torch.float32, device=x.device)
        t = torch.as_tensor(aug.color_offset, dtype=torch.float32, device=x.device)
        x = (torch.einsum("ij,njhw->nihw", m, x) + t.view(1, 3, 1, 1)).clamp_(0.0, 255.0)
    x = blur(x, aug.blur_sigma, aug.blur_window)
    return x.flip(-1) if aug.flip else x


def apply_view(frames, box, aug: ViewAug, size: int, output: OutputFormat = IMAGENET) -> torch.Tensor:
    """One view of a plan: (T, H, W, 3) uint8 frames (NumPy or torch) -> the view in `output`'s
    format (default (3, T, S, S) float32, ImageNet-normalised)."""
    if isinstance(frames, torch.Tensor) and frames.device.type != "cpu":
        return output.apply(_render_view_torch(frames, box, aug, size))
    out = torch.empty(output.sample_shape(len(frames), size), dtype=output.torch_dtype)
    return render_into(frames, box, aug, size, out, output)


def denormalize(view: torch.Tensor) -> torch.Tensor:
    """(…, 3, T, S, S) normalised -> the same in RGB 0..255 (undoes the ImageNet normalisation)."""
    shape = [1] * view.dim()
    shape[-4] = 3
    mean = torch.tensor(MEAN_255, device=view.device, dtype=view.dtype).view(shape)
    std = torch.tensor(STD_255, device=view.device, dtype=view.dtype).view(shape)
    return view * std + mean
