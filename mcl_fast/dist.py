"""Distributed helpers: torchrun initialisation, rank queries, gathers without gradient.

Launch with torchrun (single node: `--nproc-per-node N`; several nodes: `--nnodes M
--rdzv-backend c10d --rdzv-endpoint HOST:PORT`); the process group reads RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the environment torchrun sets. NCCL on GPU,
gloo on CPU. Without those variables everything runs as one process.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> tuple[torch.device, int, int]:
    """Join the process group torchrun describes (if any) and pick this rank's device.

    device: "auto" (cuda if available), "cuda" or "cpu". Returns (device, rank, world_size).
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not is_dist():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if use_cuda else {}))
    return dev, get_rank(), get_world_size()


def cleanup() -> None:
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on every rank -> (world * B, ...), rank order; no gradient (as MoCo's helper)."""
    if not is_dist() or get_world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


@torch.no_grad()
def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_dist():
        dist.broadcast(x, src)
    return x


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy; the input is unchanged)."""
    if not is_dist():
        return x.clone()
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / get_world_size()
