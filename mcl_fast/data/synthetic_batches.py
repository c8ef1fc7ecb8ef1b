"""Random batches with the loaders' batch layout (`data.loader=synthetic`): training without videos,
for tests and benchmarks."""
from __future__ import annotations

import numpy as np
import torch


class SyntheticBatches:
    """Random batches with the loader's dict shapes, for tests and benchmarks.

    Batch i of epoch e is a pure function of (seed, e, i): the global batch is generated and this
    shard takes its slice, so N ranks see exactly what one process sees, and resuming at any
    position is exact. views [query, key] (B, 3, T, S, S) float32, motion (B, T', H', W') >= 0,
    index (B,). A variant's batch (a subclass: default_motion_size, extend) adds its own.
    """

    def __init__(self, batch_size: int, *, clip_len: int, size: int, motion_size=None, batches: int = 50,
                 seed: int = 0, shard_id: int = 0, num_shards: int = 1, device="cpu"):
        self.batch_size, self.clip_len, self.size = batch_size, clip_len, size
        self.motion_size = tuple(motion_size or self.default_motion_size(clip_len, size))
        self.batches, self.seed, self.shard_id, self.num_shards = batches, seed, shard_id, num_shards
        self.device = torch.device(device)
        self.epoch = 0
        self.start = 0

    def default_motion_size(self, clip_len: int, size: int) -> tuple[int, int, int]:
        """The real loaders' default target: (clip_len, size / 16, size / 16)."""
        return clip_len, max(1, size // 16), max(1, size // 16)

    def extend(self, out: dict, views: list, shape: tuple, g: torch.Generator) -> None:
        """A variant's own tensors, added to the global batch in place (out, views of `shape`)
        after the paper batch's are drawn from g, so those stay what they were. None here."""

    def __len__(self) -> int:
        return self.batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, n: int) -> None:
        """Start the next iteration at batch n of the epoch (a free seek: batches are pure)."""
        self.start = n

    def batch(self, epoch: int, i: int) -> dict:
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0]))
        n = self.batch_size * self.num_shards
        shape = (n, 3, self.clip_len, self.size, self.size)
        views = [torch.randn(shape, generator=g), torch.randn(shape, generator=g)]
        out = {"motion": torch.rand((n, *self.motion_size), generator=g), "index": torch.arange(i * n, (i + 1) * n)}
        self.extend(out, views, shape, g)
        lo = self.shard_id * self.batch_size
        out = {k: v[lo:lo + self.batch_size].to(self.device) for k, v in out.items()}
        return {"views": [v[lo:lo + self.batch_size].to(self.device) for v in views], **out}

    def __iter__(self):
        start, self.start = self.start, 0
        for i in range(start, self.batches):
            yield self.batch(self.epoch, i)
