"""An image-level MoCo on single frames of the training videos: the small-scale stand-in for the
paper's ImageNet-MoCo initialisation (issue 22).

The paper starts MCL "with the network initialization by MoCo on ImageNet"; the release inflates
a MoCo v2 ResNet-50. At the demo's scale there is no ImageNet: `sample_frames` takes frames of the
training videos, `train_image_moco` trains `TinyNet2d` (the 2D counterpart of `tiny`) by MoCo on
two random crops of each frame (negatives: the other frames of the step, as the CPU video recipe;
docs/collapse.md), and writes a checkpoint that `model.init` inflates into `tiny`
(models/inflate.py). The run is resumable: a partial checkpoint every `save_every` steps.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._io import atomic_write
from .data.output import IMAGENET_MEAN, IMAGENET_STD


def sample_frames(videos, per_video: int = 4) -> torch.Tensor:
    """(N, 3, H, W) uint8: `per_video` frames evenly spaced through each video (N = videos x per_video).

    Every video must decode to frames of one size (the demo's action videos do)."""
    from .data.synthetic import read_frames

    frames = []
    for path in videos:
        video = read_frames(path)  # (T, H, W, 3) uint8
        idx = np.linspace(0, len(video) - 1, per_video + 2)[1:-1].round().astype(int)
        frames.append(video[idx])
    return torch.from_numpy(np.concatenate(frames)).permute(0, 3, 1, 2).contiguous()


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator, scale=(0.35, 1.0)) -> torch.Tensor:
    """A random resized crop (area fraction in `scale`, aspect kept) and a random horizontal flip
    of each image: uint8 (B, 3, H, W) -> float32 (B, 3, size, size), ImageNet-normalised as the
    video loaders' output (one batched grid_sample: no per-image Python loop)."""
    b = images.shape[0]
    side = torch.empty(b).uniform_(*scale, generator=generator).sqrt()  # crop side / image side
    centre = (torch.rand(b, 2, generator=generator) * 2 - 1) * (1 - side).unsqueeze(1)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = side * flip, side
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta, (b, 3, size, size), align_corners=False)
    crops = F.grid_sample(images.float() / 255, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (crops - mean) / std


def build_image_moco(width: int = 16, dim: int = 128, hidden: int = 128, momentum: float = 0.99, tau: float = 0.1):
    """MoCo (mcl_fast.moco, no queue) over a TinyNet2d."""
    from .models.tiny import TinyNet2d
    from .moco import MoCo

    return MoCo(TinyNet2d(width=width), dim=dim, hidden=hidden, queue_size=0, momentum=momentum, tau=tau, split_bn=1)


def _save(path: Path, obj: dict) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def train_image_moco(frames: torch.Tensor, out_path, *, steps: int = 300, batch_size: int = 64, size: int = 40,
                     lr: float = 0.05, width: int = 16, seed: int = 0, save_every: int = 100,
                     progress: bool = True) -> dict:
    """Train TinyNet2d by MoCo on random crops of `frames` (N, 3, H, W) uint8; write `out_path`.

    out_path: {"state_dict": TinyNet2d's weights (what model.init reads), "history": InfoNCE per
    step, "steps", "batch_size"}. A finished out_path is returned as is; `<out_path>.partial` (model,
    optimiser, RNG, history) resumes a killed run. lr follows a cosine from `lr` to 0.
    Returns the checkpoint dict. Costs ~0.05 s per step of 64 crops of 40x40 on one core.
    """
    from tqdm import tqdm

    from .losses import info_nce

    out_path = Path(out_path)
    if out_path.is_file():
        return torch.load(out_path, map_location="cpu", weights_only=True)
    partial = out_path.with_name(out_path.name + ".partial")
    torch.manual_seed(seed)
    model = build_image_moco(width=width).train()
    params = [p for p in model.encoder_q.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    history: list[float] = []
    if partial.is_file():
        state = torch.load(partial, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        history = list(state["history"])
    bar = tqdm(total=steps, initial=len(history), desc="image MoCo", unit="step", disable=not progress)
    for step in range(len(history), steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        pick = torch.randint(0, len(frames), (batch_size,), generator=generator)
        query = random_crops(frames[pick], size, generator)
        key = random_crops(frames[pick], size, generator)
        loss = info_nce(model(query, key)["logits"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}", chance=f"{math.log(batch_size):.2f}")
        if (step + 1) % save_every == 0 and step + 1 < steps:
            _save(partial, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "generator": generator.get_state(), "history": history})
    bar.close()
    result = {"state_dict": model.encoder_q.backbone.state_dict(), "history": history, "steps": steps,
              "batch_size": batch_size}
    _save(out_path, result)
    partial.unlink(missing_ok=True)
    return result


__all__ = ["sample_frames", "random_crops", "build_image_moco", "train_image_moco"]
