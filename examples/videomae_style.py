"""A VideoMAE-style pretraining loop fed by mcl_fast's loader: one clip per sample, crops and flip
only, and a motion-guided tube mask made in the loader's workers (`batch_transform`).

Shaped like VideoMAE's run_mae_pretraining.py + engine_for_pretraining.py (their seeds, their
`set_epoch` only when distributed, their (videos, bool_masked_pos) pair and per-patch normalised
pixel targets), with a tiny stand-in model so it runs on a CPU in seconds:

    python examples/videomae_style.py --store STORE                  # e.g. `mcl-fast demo`'s DIR/store
    torchrun --standalone --nproc-per-node 2 examples/videomae_style.py --store STORE   # no shard arguments
    python examples/videomae_style.py --tiny-data /tmp/tiny          # make 4 tiny clips and their store first
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from mcl_fast.data import TorchVideoLoader
from mcl_fast.data.masking import MotionTubeMask
from mcl_fast.data.output import IMAGENET_MEAN, IMAGENET_STD
from mcl_fast.motion.store import MotionStore

from _report import record_epoch, write_report  # examples/_report.py: what the tests read

PATCH, TUBELET = 16, 2  # VideoMAE's token: 2 frames x 16 x 16 pixels


def get_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="a motion store (mcl-fast prepare / mcl-fast demo)")
    parser.add_argument("--tiny-data", help="make 4 tiny synthetic clips and their store in this folder, then train")
    parser.add_argument("--loader", choices=("torch", "dali"), default="torch")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (the DALI loader on the CPU reads VP9 only)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2, help="per rank, as VideoMAE's")
    parser.add_argument("--num-frames", type=int, default=4)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loader-seed-per-rank", action="store_true",
                        help="give the loader args.seed + rank (VideoMAE's habit for its global seeds): refused")
    parser.add_argument("--out", help="write what each rank saw (indices, shapes) to OUT/rank{r}.json")
    return parser.parse_args(argv)


class TinyMAE(nn.Module):
    """Patch embedding, an MLP encoder over the visible tokens, a linear decoder over all of them:
    predicts the pixels (TUBELET * PATCH * PATCH * 3) of each hidden token."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.embed = nn.Conv3d(3, dim, (TUBELET, PATCH, PATCH), stride=(TUBELET, PATCH, PATCH))
        self.encoder = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.decoder = nn.Linear(dim, TUBELET * PATCH * PATCH * 3)

    def forward(self, videos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(videos).flatten(2).transpose(1, 2)  # (B, N, D), tokens in (t, h, w) order
        b, n, d = tokens.shape
        full = self.mask_token.expand(b, n, d).clone()
        full[~mask] = self.encoder(tokens[~mask])  # only the visible tokens are encoded
        return self.decoder(full)[mask].reshape(b, -1, self.decoder.out_features)


def patch_targets(videos: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) normalised clips -> (B, N, TUBELET*PATCH*PATCH*3) pixels per token, each
    token normalised by its own mean and std (VideoMAE's normlize_target)."""
    mean = torch.tensor(IMAGENET_MEAN, device=videos.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=videos.device).view(1, 3, 1, 1, 1)
    x = videos * std + mean  # back to [0, 1]
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // TUBELET, TUBELET, h // PATCH, PATCH, w // PATCH, PATCH)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, -1, TUBELET * PATCH * PATCH, c)
    x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(2)


def build_loader(args, store, seed: int):
    """The loader VideoMAE would build: one view (views="clip"), the mask made with the batch."""
    mask = MotionTubeMask(ratio=args.mask_ratio, mode="sample", patch=PATCH, tubelet=TUBELET, seed=seed)
    options = dict(clip_len=args.num_frames, stride=2, size=args.input_size, views="clip", batch_transform=mask,
                   seed=seed)  # no shard_id / num_shards: the process group's rank and world size
    if args.loader == "dali":
        from mcl_fast.data import MotionFocusedLoader

        return MotionFocusedLoader(store.videos, store, args.batch_size, device=args.device, num_threads=2, **options)
    return TorchVideoLoader(store.videos, store, args.batch_size, num_workers=args.num_workers, device=args.device,
                            **options)


def train_one_epoch(model, loader, optimizer, device) -> tuple[float, list[int], list[dict]]:
    """engine_for_pretraining.train_one_epoch: (videos, bool_masked_pos) -> MSE on the hidden tokens."""
    model.train()
    indices, shapes, loss = [], [], torch.zeros(())
    for batch in loader:
        videos, bool_masked_pos = batch["views"][0].to(device), batch["mask"].to(device)
        shapes.append({"videos": [str(videos.dtype), list(videos.shape)],
                       "mask": [str(bool_masked_pos.dtype), list(bool_masked_pos.shape)]})
        b = videos.shape[0]
        with torch.no_grad():
            labels = patch_targets(videos)[bool_masked_pos].reshape(b, -1, TUBELET * PATCH * PATCH * 3)
        outputs = model(videos, bool_masked_pos)
        loss = F.mse_loss(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        indices += batch["index"].tolist()
    return loss.item(), indices, shapes


def tiny_store(folder: str) -> MotionStore:
    """4 synthetic VP9 clips (48x64, 24-30 frames) and their Farneback store, made once."""
    from mcl_fast.data.synthetic import make_video
    from mcl_fast.motion.prepare import prepare

    root = Path(folder)
    if not (root / "store").exists():
        for i in range(4):
            make_video(root / "videos" / f"v{i}.webm", num_frames=24 + 2 * i, height=48, width=64, object_size=12,
                       gop=8, seed=90 + i)
        prepare(str(root / "videos"), str(root / "store"), flow="farneback", size=48, workers=1, progress=False)
    return MotionStore(root / "store")


def main(args) -> None:
    distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
    if distributed:  # utils.init_distributed_mode
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    rank = dist.get_rank() if distributed else 0
    seed = args.seed + rank  # VideoMAE seeds torch and NumPy per rank
    torch.manual_seed(seed)
    np.random.seed(seed)
    store = MotionStore(args.store) if args.store else tiny_store(args.tiny_data)
    # The loader takes the one seed every rank shares: ranks already augment differently.
    loader = build_loader(args, store, seed if args.loader_seed_per_rank else args.seed)
    device = torch.device(args.device)
    model = TinyMAE().to(device)
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    seen = []
    for epoch in range(args.epochs):
        if distributed:
            loader.sampler.set_epoch(epoch)  # VideoMAE calls it only when distributed: either way is right
        loss, indices, shapes = train_one_epoch(model, loader, optimizer, device)
        record_epoch(seen, rank, epoch, loss, indices, shapes=shapes)
    write_report(args.out, rank, seen)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":  # required with num_workers > 0: the workers import this file
    main(get_args())
