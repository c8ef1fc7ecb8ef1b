"""TorchVideoLoader: the same plans and the same dicts as MotionFocusedLoader, from a PyTorch
DataLoader over a CPU decoder (PyAV; decord when installed and asked for).

It is the baseline of the loader benchmark and the CPU path for H.264 (DALI's CPU decoder reads
VP8/VP9/MJPEG only). Each worker plans its samples with the same Planner and seeds as the DALI
loader, decodes exactly the planned frames (mcl_fast.video_io.read_frames: the frames a
sequential decode numbers so, in every container) and applies the torch twin of the DALI
pipeline (augment.py).
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from ..video_io import read_frames
from .augment import apply_view
from .loader import LoaderBase, failure_reason
from .plan import SamplePlan

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- decoders


def read_frames_decord(path: str, indices, num_frames: int | None = None) -> np.ndarray:
    """video_io.read_frames with decord (optional; `pip install decord`); num_frames is unused."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return reader.get_batch(list(np.asarray(indices, np.int64))).asnumpy()


DECODERS = {"pyav": read_frames, "decord": read_frames_decord}


# ------------------------------------------------------------------------------------ dataset


def render_plan(plan: SamplePlan, size: int, read: Callable = read_frames,
                num_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a plan's frames and apply both views: (query, key), each (3, T, S, S) float32.
    read(path, indices, num_frames) decodes; num_frames: the video's frame count (the store's)."""
    q, k = plan.query, plan.key
    if np.array_equal(q.frames, k.frames):
        uniq, inverse = np.unique(q.frames, return_inverse=True)
        clip = read(plan.path, uniq, num_frames)[inverse]
        q_clip = k_clip = clip
    else:
        q_clip, k_clip = read(plan.path, q.frames, num_frames), read(plan.path, k.frames, num_frames)
    return apply_view(q_clip, q.box, q.aug, size), apply_view(k_clip, k.box, k.aug, size)


class _EpochDataset(torch.utils.data.Dataset):
    """Item i = batch i of one epoch of one shard, rendered in a worker (so the plan's batched
    structure and the failure bookkeeping stay in one place)."""

    def __init__(self, loader: "TorchVideoLoader", epoch: int):
        self.loader, self.epoch, self.batches = loader, epoch, loader._epoch_batches()

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        loader = self.loader
        positions, indices = self.batches[i]
        read = DECODERS[loader.decoder]
        out_q, out_k, plans = [], [], []
        for pos, idx in zip(positions, indices):
            for _ in range(loader.planner.MAX_ATTEMPTS):
                plan = loader.planner.plan(self.epoch, int(pos), int(idx))
                try:
                    q, k = render_plan(plan, loader.size, read, int(loader.store.info(plan.video)["num_frames"]))
                except Exception as err:  # noqa: BLE001 (mark the file bad; the replan replaces it)
                    log.debug("reading %s failed", plan.path, exc_info=err)
                    loader.report_failure(plan.path, failure_reason(err))
                    continue
                break
            else:
                raise RuntimeError(f"{loader.planner.MAX_ATTEMPTS} videos in a row failed to decode near "
                                   f"position {pos} of epoch {self.epoch}")
            out_q.append(q)
            out_k.append(k)
            plans.append(plan)
        batch = {"query": torch.stack(out_q), "key": torch.stack(out_k)}
        batch.update(loader.plan_fields(plans, "cpu"))
        # Replacements travel to the main process, which counts them and reports each file once.
        batch["_failures"] = [list(p.failures) for p in plans]
        return batch


class TorchVideoLoader(LoaderBase):
    """Same arguments and outputs as MotionFocusedLoader (without the DALI-only ones), plus:

    num_workers: DataLoader worker processes (0: decode in the main process).
    decoder: "pyav" (default) or "decord". device: where the tensors go ("cpu" or "cuda").
    pin_memory, prefetch_factor: passed to the DataLoader.
    """

    def __init__(self, videos, store, batch_size: int, *, clip_len: int = 16, stride: int = 2, size: int = 224,
                 augment: bool = True, sampling: str = "motion", preset: str = "paper", seed: int = 0,
                 shard_id: int = 0, num_shards: int = 1, return_meta: bool = False, two_clips: bool = False,
                 sampler: Callable | None = None, motion_size=None, drop_last: bool = False, shuffle: bool = True,
                 video_root=None, verify: bool = True, check_fingerprints: bool = True, min_frames: int | None = None,
                 num_workers: int = 4, decoder: str = "pyav",
                 device: str = "cpu", pin_memory: bool = False, prefetch_factor: int = 2):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        if decoder == "decord":
            try:
                import decord  # noqa: F401
            except ImportError:
                raise ImportError("decoder='decord' needs decord: pip install decord") from None
        super().__init__(videos, store, batch_size, clip_len=clip_len, stride=stride, size=size, augment=augment,
                         sampling=sampling, preset=preset, seed=seed, shard_id=shard_id, num_shards=num_shards,
                         return_meta=return_meta, two_clips=two_clips, sampler=sampler, motion_size=motion_size,
                         drop_last=drop_last, shuffle=shuffle, video_root=video_root, verify=verify,
                         check_fingerprints=check_fingerprints, min_frames=min_frames)
        self.num_workers, self.decoder, self.device = int(num_workers), decoder, torch.device(device)
        self.pin_memory, self.prefetch_factor = pin_memory, int(prefetch_factor)

    def __iter__(self):
        dataset = _EpochDataset(self, self.epoch)
        kwargs = {"prefetch_factor": self.prefetch_factor} if self.num_workers > 0 else {}
        # batch_size=None: each item already is a batch (planned together, like the DALI loader).
        data = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.num_workers,
                                           pin_memory=self.pin_memory, **kwargs)
        for batch in data:
            failures = batch.pop("_failures")  # per sample: [(path, reason)] of the videos it replaced
            self.num_replaced += sum(1 for f in failures if f)
            for path, reason in (f for sample in failures for f in sample):
                self.report_failure(path, reason)
            if self.device.type != "cpu":
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            yield batch


__all__ = ["TorchVideoLoader", "render_plan", "DECODERS"]
