"""The loader benchmark's peer rows: the same plans (videos, frames, crop boxes) rendered the ways
other video SSL code does it, and each decoder's decode-only floor.

- decode-only (pyav / decord): the planned frames decoded (the union of a sample's clips, once),
  nothing else: the floor a loader on that decoder cannot go under.
- decord + kornia: decord's get_batch, then per view the plan's crop, a float antialiased resize
  (kornia.geometry.transform.resize) and the paper's augmentation as one
  kornia.augmentation.VideoSequential over the batch (ColorJitter p=0.8, RandomGrayscale 0.2,
  RandomGaussianBlur 0.5, RandomHorizontalFlip, Normalize), the same parameters on every frame.
- VideoMAE-style: decord's get_batch, then per clip in torch what a VideoMAE / pytorchvideo
  transform stack does: uint8 -> float (C, T, H, W), crop, bilinear resize (pytorchvideo's
  short_side_scale: F.interpolate, no antialiasing), then torchvision's functional colour ops
  transcribed (brightness, contrast, saturation, hue through HSV, in a random order), greyscale,
  a depthwise conv2d Gaussian blur with reflect padding, flip and normalisation; torch.stack.

These are our own transcriptions of those libraries' usual pipelines (not their code). The
augmentation parameters are drawn by each pipeline with the paper's probabilities and ranges;
the frames and boxes are the loaders' plans of the same epoch, so the pixel work is the same.
Peers run in the benchmark's process with one torch thread, as in a DataLoader worker.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class PlannedEpochs:
    """An iterable like a loader's: each pass renders the next epoch's plans (the loaders' planner,
    same seed and options) with render_batch(plans) -> list of per-view batch tensors. Passes
    run under one torch thread (restored after)."""

    def __init__(self, names, store, video_root, size: int, batch: int, render_batch):
        from mcl_fast.data.base import LoaderBase
        from mcl_fast.data.options import LoaderOptions

        self.base = LoaderBase(names, store, batch, LoaderOptions(size=size, seed=0, verify=False,
                                                                  video_root=video_root))
        self.size, self.render_batch, self.epoch = size, render_batch, 0

    def __iter__(self):
        from mcl_fast.data.torch_loader import render_threads

        epoch, self.epoch = self.epoch, self.epoch + 1
        plans = self.base.plan_chunk(epoch, self.base.batches(epoch))
        for chunk in plans:
            with render_threads(1):
                views = self.render_batch(chunk, self.size)
            yield {"views": views, "index": torch.tensor([p.index for p in chunk])}


def decode_plan(plan, decoder: str) -> list[np.ndarray]:
    """The plan's clips, (T, H, W, 3) uint8 each, decoded with `decoder` ("pyav", "decord")."""
    from mcl_fast.data.torch_loader import DECODERS, decode_clips

    return decode_clips(plan, DECODERS[decoder])


def decode_only(decoder: str):
    """render_batch that decodes and returns nothing else (the floor)."""
    def render(plans, size):
        return [torch.from_numpy(decode_plan(p, decoder)[0]) for p in plans]  # videos differ in size: no stack
    return render


# ----------------------------------------------------------------------------------- kornia


def kornia_pipeline(size: int):
    import kornia.augmentation as K

    blur = int(0.1 * size) // 2 * 2 + 1  # MoCo v2's kernel: 10 % of the side, odd
    return K.VideoSequential(
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((blur, blur), (0.1, 2.0), p=0.5), K.RandomHorizontalFlip(p=0.5),
        K.Normalize(mean=torch.tensor(MEAN), std=torch.tensor(STD)),
        data_format="BTCHW", same_on_frame=True)


def kornia_render():
    """render_batch of decord + kornia: crop and resize per view, VideoSequential per batch."""
    from kornia.geometry.transform import resize

    pipelines = {}

    def render(plans, size):
        aug = pipelines.setdefault(size, kornia_pipeline(size))
        views = [[] for _ in plans[0].views]
        for plan in plans:
            clips = decode_plan(plan, "decord")
            for k, v in enumerate(plan.views):
                y0, x0, h, w = v.box
                crop = torch.from_numpy(clips[v.clip][:, y0:y0 + h, x0:x0 + w]).permute(0, 3, 1, 2).float() / 255
                views[k].append(resize(crop, (size, size), interpolation="bilinear", antialias=True))
        return [aug(torch.stack(v)).transpose(1, 2) for v in views]  # (B, 3, T, S, S) like the loaders
    return render


# --------------------------------------------------------------------- VideoMAE / pytorchvideo


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) -> (…, 1, H, W) luma, torchvision's weights."""
    return (0.299 * x[..., 0:1, :, :] + 0.587 * x[..., 1:2, :, :] + 0.114 * x[..., 2:3, :, :])


def _rgb_to_hsv(x):
    r, g, b = x.unbind(-3)
    maxc, minc = x.max(-3).values, x.min(-3).values
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / torch.where(eqc, torch.ones_like(maxc), maxc)
    cr_div = torch.where(eqc, torch.ones_like(cr), cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(x):
    h, s, v = x.unbind(-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int32) % 6
    p, q, t = (v * (1.0 - s)).clamp(0, 1), (v * (1.0 - s * f)).clamp(0, 1), (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    mask = i.unsqueeze(-3) == torch.arange(6, dtype=torch.int32).view(-1, 1, 1)
    a = torch.stack([torch.stack(c, dim=-3) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))],
                    dim=-4)  # (..., 3, 6, H, W): each output channel's six candidates
    return torch.einsum("...ijk,...xijk->...xjk", mask.to(x.dtype), a)


def _jitter(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """torchvision's ColorJitter(0.4, 0.4, 0.4, 0.1) on (T, 3, H, W) in [0, 1]: four ops in a random order."""
    b, c, s = rng.uniform(0.6, 1.4, 3)
    hue = rng.uniform(-0.1, 0.1)
    for op in rng.permutation(4):
        if op == 0:
            x = (x * b).clamp(0, 1)
        elif op == 1:
            x = (c * x + (1 - c) * _grey(x).mean((-3, -2, -1), keepdim=True)).clamp(0, 1)
        elif op == 2:
            x = (s * x + (1 - s) * _grey(x)).clamp(0, 1)
        else:
            hsv = _rgb_to_hsv(x)
            hsv[..., 0, :, :] = (hsv[..., 0, :, :] + hue) % 1.0
            x = _hsv_to_rgb(hsv)
    return x


def _gaussian_blur(x: torch.Tensor, sigma: float, window: int) -> torch.Tensor:
    """torchvision's gaussian_blur: reflect pad, one depthwise conv2d with the 2-D kernel."""
    k = torch.exp(-0.5 * ((torch.arange(window) - (window - 1) / 2) / sigma) ** 2)
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(3, 1, window, window)
    pad = window // 2
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), kernel, groups=3)


def videomae_view(frames: np.ndarray, box, size: int, rng: np.random.Generator) -> torch.Tensor:
    """One view, the VideoMAE / pytorchvideo way: (T, H, W, 3) uint8 -> (3, T, S, S) normalised."""
    y0, x0, h, w = box
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0  # (C, T, H, W), pytorchvideo's layout
    x = x[:, :, y0:y0 + h, x0:x0 + w]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (C, T) as the batch: per clip
    x = x.transpose(0, 1)  # (T, C, S, S) for the image ops
    u = rng.random(4)
    if u[0] < 0.8:
        x = _jitter(x, rng)
    if u[1] < 0.2:
        x = _grey(x).expand_as(x)
    if u[2] < 0.5:
        x = _gaussian_blur(x, float(rng.uniform(0.1, 2.0)), int(0.1 * size) // 2 * 2 + 1)
    if u[3] < 0.5:
        x = x.flip(-1)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x.transpose(0, 1).contiguous()


def videomae_render():
    """render_batch of the VideoMAE-style pipeline: per clip and view, then torch.stack."""
    rng = np.random.default_rng(0)

    def render(plans, size):
        views = [[] for _ in plans[0].views]
        for plan in plans:
            clips = decode_plan(plan, "decord")
            for k, v in enumerate(plan.views):
                views[k].append(videomae_view(clips[v.clip], v.box, size, rng))
        return [torch.stack(v) for v in views]
    return render
