"""A MoCo / CoCLR-style contrastive loop fed by mcl_fast's loader: two views of one motion-focused
clip, a momentum key encoder and a queue of negatives.

Shaped like CoCLR's main_nce.py (MoCo v2 on video: `train_sampler.set_epoch(epoch)` each epoch,
the two views of a sample, InfoNCE against a queue, the key encoder as a moving average), with a
tiny stand-in encoder so it runs on a CPU in seconds:

    python examples/moco_style.py --store STORE                  # e.g. `mcl-fast demo`'s DIR/store
    python examples/moco_style.py --store STORE --views coclr    # CoCLR's second view: crop and flip only
    torchrun --standalone --nproc-per-node 2 examples/moco_style.py --store STORE
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from mcl_fast.data import WEAK, TorchVideoLoader, ViewSpec
from mcl_fast.motion.store import MotionStore

from _report import record_epoch, write_report  # examples/_report.py: what the tests read


def get_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="a motion store (mcl-fast prepare / mcl-fast demo)")
    parser.add_argument("--loader", choices=("torch", "dali"), default="torch")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (the DALI loader on the CPU reads VP9 only)")
    parser.add_argument("--views", choices=("moco", "coclr"), default="moco",
                        help="moco: the paper's pair (both views fully augmented); coclr: the key cropped and flipped only")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2, help="per rank")
    parser.add_argument("--seq-len", type=int, default=4)
    parser.add_argument("--img-dim", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--moco-k", type=int, default=8, help="queue size")
    parser.add_argument("--moco-m", type=float, default=0.999)
    parser.add_argument("--moco-t", type=float, default=0.07)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write what each rank saw to OUT/rank{r}.json")
    return parser.parse_args(argv)


class TinyEncoder(nn.Module):
    """(B, 3, T, S, S) -> (B, dim) L2-normalised; stands in for CoCLR's S3D."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, dim)

    def forward(self, x):
        return F.normalize(self.fc(F.relu(self.conv(x)).mean(dim=(2, 3, 4))), dim=1)


class MoCo(nn.Module):
    """MoCo v2: a query encoder, its momentum copy for the keys, a queue of past keys."""

    def __init__(self, dim: int = 16, k: int = 8, m: float = 0.999, t: float = 0.07):
        super().__init__()
        self.encoder_q, self.encoder_k = TinyEncoder(dim), TinyEncoder(dim)
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())
        self.encoder_k.requires_grad_(False)
        self.m, self.t = m, t
        self.register_buffer("queue", F.normalize(torch.randn(k, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def forward(self, block_q, block_k):
        q = self.encoder_q(block_q)
        with torch.no_grad():
            for p_k, p_q in zip(self.encoder_k.parameters(), self.encoder_q.parameters()):
                p_k.mul_(self.m).add_(p_q.detach(), alpha=1 - self.m)
            k = self.encoder_k(block_k)
            k_all = concat_all_gather(k)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.clone().T], dim=1) / self.t
        with torch.no_grad():  # enqueue every rank's keys: full batches (drop_last=True) keep the queue aligned
            idx = (self.ptr + torch.arange(len(k_all), device=k_all.device)) % len(self.queue)
            self.queue[idx] = k_all
            self.ptr.copy_((self.ptr + len(k_all)) % len(self.queue))
        return logits, torch.zeros(len(q), dtype=torch.long, device=q.device)


def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's x, concatenated (x itself outside a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x)
    return torch.cat(out)


def build_loader(args, store):
    """Two views of one clip: the paper's pair, or CoCLR's (the key cropped and flipped only)."""
    views = "pair" if args.views == "moco" else [ViewSpec(), ViewSpec(aug=WEAK)]
    options = dict(clip_len=args.seq_len, stride=2, size=args.img_dim, views=views, seed=args.seed)
    if args.loader == "dali":
        from mcl_fast.data import MotionFocusedLoader

        return MotionFocusedLoader(store.videos, store, args.batch_size, device=args.device, num_threads=2, **options)
    return TorchVideoLoader(store.videos, store, args.batch_size, num_workers=args.num_workers, device=args.device,
                            **options)


def train_one_epoch(loader, model, optimizer, device) -> tuple[float, list[int]]:
    model.train()
    indices, loss = [], torch.zeros(())
    for batch in loader:
        block_q, block_k = (view.to(device) for view in batch["views"])  # in loader.view_names order
        logits, target = model(block_q, block_k)
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        indices += batch["index"].tolist()
    return loss.item(), indices


def main(args) -> None:
    distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
    if distributed:
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(args.seed)
    store = MotionStore(args.store)
    loader = build_loader(args, store)
    device = torch.device(args.device)
    model = MoCo(k=args.moco_k, m=args.moco_m, t=args.moco_t).to(device)
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.03, momentum=0.9)
    seen = []
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)  # CoCLR's call (a DistributedSampler's); pins the epoch for a resume
        loss, indices = train_one_epoch(loader, model, optimizer, device)
        record_epoch(seen, rank, epoch, loss, indices, views=list(loader.view_names))
    if distributed:
        dist.destroy_process_group()
    write_report(args.out, rank, seen)


if __name__ == "__main__":  # required with num_workers > 0: the workers import this file
    main(get_args())
