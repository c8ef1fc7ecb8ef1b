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
    index (B,); official=True (the batch of preset="official") adds the views key2, key3 and
    query_first (B,) bool, and the motion target defaults to the release's (4, 7, 7), in
    encoded-flow units (uniform in [0, 100)).
    """

    def __init__(self, batch_size: int, *, clip_len: int, size: int, motion_size=None, batches: int = 50,
                 seed: int = 0, shard_id: int = 0, num_shards: int = 1, device="cpu", official: bool = False):
        self.batch_size, self.clip_len, self.size, self.official = batch_size, clip_len, size, official
        # The real loaders' default target: (clip_len, size / 16, size / 16); official (4, 7, 7).
        default = (4, 7, 7) if official else (clip_len, max(1, size // 16), max(1, size // 16))
        self.motion_size = tuple(motion_size or default)
        self.batches, self.seed, self.shard_id, self.num_shards = batches, seed, shard_id, num_shards
        self.device = torch.device(device)
        self.epoch = 0
        self.start = 0

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
        if self.official:  # drawn after the paper batch's tensors: those stay what they were
            out["motion"] = out["motion"] * 100
            views += [torch.randn(shape, generator=g), torch.randn(shape, generator=g)]
            out["query_first"] = torch.rand(n, generator=g) < 0.5
        lo = self.shard_id * self.batch_size
        out = {k: v[lo:lo + self.batch_size].to(self.device) for k, v in out.items()}
        return {"views": [v[lo:lo + self.batch_size].to(self.device) for v in views], **out}

    def __iter__(self):
        start, self.start = self.start, 0
        for i in range(start, self.batches):
            yield self.batch(self.epoch, i)
