"""The one training loop: pretraining (`mcl_fast.train`) and fine-tuning (`mcl_fast.eval.finetune`) both run it.

In the manner of the vision references' `train_one_epoch`: the caller builds a model, an
optimiser, a `WarmupCosine` schedule and a `Runtime` (device, mixed precision, channels-last,
DDP), then calls `train_one_epoch(model, compute_loss, batches, optimizer, runtime, ...)` once
per epoch. `compute_loss(model, batch) -> dict` returns "loss" (the scalar to minimise) and any
number of detached scalar metrics; the loop does the forward under autocast, the backward
through the GradScaler, optional gradient clipping, the optimiser and schedule steps, and
accumulates every metric in a `MetricWindow` that logging averages over steps and ranks.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from . import dist


# ---- schedule ------------------------------------------------------------------------------
class WarmupCosine:
    """Per-iteration lr: linear from lr * start_factor to lr over `warmup` steps, then cosine to min_lr.

    Its state is the step count only, so it checkpoints as a plain dict.
    """

    def __init__(self, optimizer, base_lr: float, total: int, warmup: int, start_factor: float = 0.01,
                 min_lr: float = 0.0):
        self.optimizer, self.base_lr, self.total = optimizer, base_lr, max(1, total)
        self.warmup, self.start_factor, self.min_lr = min(warmup, self.total), start_factor, min_lr
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            f = self.start_factor + (1 - self.start_factor) * step / self.warmup
            return self.base_lr * f
        t = (step - self.warmup) / max(1, self.total - self.warmup)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    def _apply(self) -> None:
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total": self.total, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


# ---- device, precision, layout, DDP ----------------------------------------------------------
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass
class Runtime:
    """Where and how a model trains: device, autocast dtype (None: fp32), channels_last_3d, the
    GradScaler (active only for fp16) and the process group's rank / world size."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    rank: int = 0
    world: int = 1
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self):
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def autocast(self):
        """The forward's mixed-precision context (a no-op in fp32)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, batch: dict) -> dict:
        """Tensors of a batch dict (and lists of them: a `views` batch) onto the device; 5-D clips
        in channels_last_3d when asked."""
        return {k: [self._tensor_to_device(t) for t in v] if isinstance(v, list) else self._tensor_to_device(v)
                for k, v in batch.items()}

    def _tensor_to_device(self, v):
        if not isinstance(v, torch.Tensor):
            return v
        v = v.to(self.device, non_blocking=True)
        if self.channels_last and v.dim() == 5:
            v = v.contiguous(memory_format=torch.channels_last_3d)
        return v

    def prepare(self, model: torch.nn.Module, *, broadcast_buffers: bool = True) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(model on the device in the chosen layout, the module to call: DDP-wrapped when world > 1).

        broadcast_buffers=False for MoCo: its queue is identical on every rank by construction
        and its BN statistics are per rank (shuffle BN).
        """
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        if self.world == 1:
            return model, model
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            broadcast_buffers=broadcast_buffers)
        return model, ddp


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """"auto": bf16 on GPU, fp32 (None) on CPU; "bf16", "fp16", "off" as named."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def setup_runtime(device: str = "auto", amp: str = "auto", channels_last="auto") -> Runtime:
    """Join the torchrun process group if there is one (mcl_fast.dist) and describe the runtime.

    device: "auto" | "cuda" | "cpu"; amp: see `amp_dtype`; channels_last: "auto" (on GPU) or a bool.
    """
    dev, rank, world = dist.init_distributed(device)
    last = dev.type == "cuda" if channels_last == "auto" else bool(channels_last)
    return Runtime(dev, amp_dtype(amp, dev), last, rank, world)


# ---- metrics ---------------------------------------------------------------------------------
class MetricWindow:
    """Sums of per-step scalar metrics (tensors, no host sync per step) since the last `reset`.

    `means()` averages them over the steps of the window and over ranks (one all-reduce).
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.samples = 0
        self.data_s = 0.0
        self.t0 = time.perf_counter()

    def update(self, metrics: dict, samples: int, data_s: float = 0.0) -> None:
        for k, v in metrics.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.steps += 1
        self.samples += samples
        self.data_s += data_s

    def means(self) -> dict[str, float]:
        """{name: mean over steps and ranks}; a collective call under DDP (every rank must call it)."""
        if not self.sums:
            return {}
        names = sorted(self.sums)
        values = torch.stack([self.sums[k] for k in names]) / max(1, self.steps)
        return dict(zip(names, dist.all_reduce_mean(values).tolist()))


# ---- the loop --------------------------------------------------------------------------------
@dataclass
class StepInfo:
    """What `on_step` gets after each optimisation step: position, lr used, the step's metrics."""

    index: int          # batches done in this epoch (1 after the first step)
    lr: float           # the learning rate the step used
    metrics: dict       # compute_loss's output (tensors)
    samples: int        # samples in the batch on this rank
    data_s: float       # seconds spent waiting for the batch


def train_step(model, compute_loss: Callable, batch: dict, optimizer, runtime: Runtime,
               grad_clip: float | None = None) -> dict:
    """One optimisation step: forward + loss under autocast, scaled backward, optional clipping
    (after unscaling), optimiser step, scaler update. Returns compute_loss's dict."""
    with runtime.autocast():
        out = compute_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    runtime.scaler.scale(out["loss"]).backward()
    if grad_clip:
        runtime.scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    runtime.scaler.step(optimizer)
    runtime.scaler.update()
    return out


def train_one_epoch(model, compute_loss: Callable, batches: Iterable[dict], optimizer, runtime: Runtime, *,
                    scheduler: WarmupCosine | None = None, steps: int | None = None, start: int = 0,
                    grad_clip: float | None = None, on_step: Callable[[StepInfo], bool | None] | None = None) -> int:
    """Train over `batches` (an iterator already positioned at batch `start` of the epoch).

    compute_loss(model, batch) -> {"loss": scalar tensor, other detached scalar metrics}. The
    schedule steps after every optimiser step. Stops after `steps` batches in all (counting the
    `start` ones skipped), when the batches run out, or when on_step returns True.
    on_step(StepInfo) runs after each step (logging, checkpoints). Returns batches done in the epoch.
    """
    index = start
    it = iter(batches)
    while steps is None or index < steps:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            if steps is not None:
                raise RuntimeError(f"the data ended after {index} of the {steps} batches it announced") from None
            break
        batch = runtime.to_device(batch)
        data_s = time.perf_counter() - t0
        lr = optimizer.param_groups[0]["lr"]
        out = train_step(model, compute_loss, batch, optimizer, runtime, grad_clip)
        if scheduler is not None:
            scheduler.step()
        index += 1
        first = next((v for v in batch.values() if isinstance(v, torch.Tensor)), None)
        samples = int(first.shape[0]) if first is not None else 0
        if on_step is not None and on_step(StepInfo(index, lr, out, samples, data_s)):
            break
    return index


def check_finite(metrics: dict, where: str) -> None:
    """FloatingPointError naming the non-finite metrics (checked at log time: no per-step host sync)."""
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"non-finite values {where}: {bad}")


__all__ = ["WarmupCosine", "Runtime", "amp_dtype", "setup_runtime", "MetricWindow", "StepInfo", "train_step",
           "train_one_epoch", "check_finite"]
