"""Where a training run reports: history rows, TensorBoard scalars, the tqdm bar, GPU counters,
the collapse warning and the loss-curve PNG. Only rank 0 writes; every rank calls `log` (it
averages the metric window over ranks, a collective)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .diagnostics import CollapseMonitor
from .engine import MetricWindow, check_finite


class GpuMonitor:
    """GPU utilisation (%, pynvml through torch.cuda.utilization, which maps CUDA_VISIBLE_DEVICES as
    Slurm sets it) and memory in use on the device (GiB, from CUDA), when available."""

    def __init__(self, device: torch.device):
        self.device = device if device.type == "cuda" else None

    def read(self) -> dict:
        if self.device is None:
            return {}
        out = {"gpu/torch_peak_gib": torch.cuda.max_memory_allocated(self.device) / 2**30}
        try:
            free, total = torch.cuda.mem_get_info(self.device)
            out["gpu/mem_gib"] = (total - free) / 2**30
            out["gpu/util"] = float(torch.cuda.utilization(self.device))  # needs pynvml (nvidia-ml-py)
        except Exception:  # no pynvml: memory only
            pass
        return out


def plot_history(history: list[dict], path: Path, keys=("loss", "nce", "mal")) -> Path | None:
    """Loss curves PNG (mcl_fast.figures.plot_loss_curves) of the logged history."""
    if not history:
        return None
    from .figures import plot_loss_curves

    series = {k: [h[k] for h in history] for k in keys if k in history[0]}
    every = history[1]["step"] - history[0]["step"] if len(history) > 1 else 1
    return plot_loss_curves(series, path, xlabel=f"logged step (every {every} steps)")


class RunLog:
    """history (list of dict rows), TensorBoard under out_dir/tb, a tqdm bar, the collapse monitor.

    `log(step, epoch, lr, window, extra)` turns a MetricWindow into one row (mean over its steps
    and ranks, plus clips/s and the data-wait share), writes it everywhere and resets the window.
    """

    def __init__(self, out_dir: Path, *, rank: int, world: int, device: torch.device, total: int, start: int,
                 desc: str, history: list | None = None, tensorboard: bool = True, progress: bool = True,
                 collapse_check: bool = True, batch: int = 1):
        self.rank, self.world = rank, world
        self.history = list(history or [])
        self.collapse = CollapseMonitor() if collapse_check and rank == 0 else None
        self.batch = batch
        self.gpu = GpuMonitor(device)
        self.writer = self.bar = None
        if rank == 0 and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=start or None)
            except Exception as e:  # tensorboard missing or broken: train anyway
                warnings.warn(f"TensorBoard disabled: {e}")
        if rank == 0 and progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True)

    def log(self, step: int, epoch: int, lr: float, window: MetricWindow, extra: dict | None = None,
            collapse_ready: bool = True) -> dict:
        """Append and write one row; `extra` adds values computed at log time (e.g. queue_cos)."""
        import time

        means = window.means()  # collective under DDP
        elapsed = max(time.perf_counter() - window.t0, 1e-9)
        row = {"step": step, "epoch": epoch, "lr": lr, **means, **(extra or {}),
               "clips_per_s": window.samples * self.world / elapsed, "data_wait": window.data_s / elapsed}
        check_finite(row, f"at step {step}")
        window.reset()
        self.history.append(row)
        if self.collapse is not None and collapse_ready:
            self.collapse.check(row, self.batch)
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self.writer.add_scalar(f"train/{k}", v, step)
            for k, v in self.gpu.read().items():
                self.writer.add_scalar(k, v, step)
        if self.bar is not None:
            shown = {"loss": row.get("loss"), "acc1": row.get("acc1"), "qcos": row.get("queue_cos"), "lr": lr}
            self.bar.set_postfix({k: (f"{v:.2e}" if k == "lr" else f"{v:.3g}") for k, v in shown.items()
                                  if v is not None}, refresh=False)
        return row

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
