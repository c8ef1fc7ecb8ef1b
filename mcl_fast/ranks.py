"""Splitting a video job (`prepare`, `transcode`) over the processes torchrun starts.

torchrun (on one node, or on many through Slurm) starts WORLD_SIZE processes and tells each its
RANK and LOCAL_RANK. The processes of a job agree on the work without sending it to each other:
each lists the same videos and reads the same output folder, so each computes the same split
(`balanced_slices`, by container frame count) and takes its own slice. torch.distributed (gloo,
env://) is used only where processes must meet: to share what each probed (`Ranks.by_stride`, a
sum), for rank 0 to hand the others the outcome of a step only it runs (`Ranks.on_rank0`: opening
or merging the output; its failure stops every rank with rank 0's message), and as the barrier
before the merge. Each rank writes its own files; rank 0 reads their complete lines to show the
job's total rate and ETA (`JobProgress`). Without torchrun (WORLD_SIZE unset or 1) nothing here
imports torch.
"""
from __future__ import annotations

import heapq
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .video_io import VideoError, probe

# How long a rank waits at a meeting point for the slowest rank (gloo's collective timeout): slices
# are balanced to within about one video, but one rank's storage or GPU can be slower than the rest.
JOB_TIMEOUT_S = 48 * 3600


class RankError(RuntimeError):
    """The torchrun environment is inconsistent, or rank 0 failed a step the other ranks wait on."""


def part_name(stem: str, rank: int, suffix: str) -> str:
    """The name of one rank's file: part_name("journal", 3, ".jsonl") -> "journal-rank00003.jsonl"."""
    return f"{stem}-rank{int(rank):05d}{suffix}"


@dataclass
class Ranks:
    """This process's place in a torchrun job: rank, world (processes in the job), local_rank
    (its index on its node: the GPU it uses with --device cuda), local_world (processes on its node).

    `with Ranks.from_env() as ranks:` joins the job's gloo process group when world > 1 (a
    separate gloo group if the caller already joined one, e.g. an NCCL group) and leaves it on exit.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    timeout_s: float = JOB_TIMEOUT_S

    def __post_init__(self):
        self._group = None
        self._owned = False
        if not (self.world >= 1 and 0 <= self.rank < self.world and 0 <= self.local_rank < max(self.local_world, 1)):
            raise RankError(f"inconsistent torchrun environment: RANK {self.rank}, WORLD_SIZE {self.world}, "
                            f"LOCAL_RANK {self.local_rank}, LOCAL_WORLD_SIZE {self.local_world}")

    @classmethod
    def from_env(cls, environ=None) -> "Ranks":
        """From the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE); one
        process (rank 0 of 1) when they are absent."""
        env = os.environ if environ is None else environ
        try:
            world = int(env.get("WORLD_SIZE", 1))
            rank = int(env.get("RANK", 0))
            local_rank = int(env.get("LOCAL_RANK", 0))
            local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        except ValueError as e:
            raise RankError(f"unreadable torchrun environment: {e}") from None
        return cls(rank=rank, world=world, local_rank=local_rank, local_world=local_world)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank}/{self.world}"

    # -- the process group
    def __enter__(self) -> "Ranks":
        if not self.distributed:
            return self
        import datetime

        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=self.timeout_s)
        if dist.is_initialized():  # the caller's group (maybe NCCL): ours is a gloo group beside it
            if dist.get_world_size() != self.world or dist.get_rank() != self.rank:
                raise RankError(f"the process group ({dist.get_rank()}/{dist.get_world_size()}) is not the "
                                f"torchrun job's ({self})")
            self._group = dist.new_group(backend="gloo", timeout=timeout)
        else:
            dist.init_process_group(backend="gloo", init_method="env://", timeout=timeout)
            self._owned = True
        return self

    def __exit__(self, *exc) -> None:
        if self._owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owned = False
        self._group = None

    # -- meeting points (every rank must call them, in the same order)
    def all_sum(self, values: Sequence[int]) -> list[int]:
        """The element-wise sum over ranks of a list of ints of the same length on every rank."""
        if not self.distributed:
            return [int(v) for v in values]
        import torch
        import torch.distributed as dist

        t = torch.tensor([int(v) for v in values], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self._group)
        return [int(v) for v in t.tolist()]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self._group)

    def by_stride(self, n: int, fn: Callable[[int], int]) -> list[int]:
        """[fn(0), ..., fn(n - 1)] on every rank, each rank computing every world-th item
        (i % world == rank) and the ranks summing their parts: the probing cost is shared."""
        return self.all_sum([int(fn(i)) if i % self.world == self.rank else 0 for i in range(n)])

    def on_rank0(self, fn: Callable[[], int], error=RankError) -> int:
        """Run fn() on rank 0 only and return its int result on every rank. When it raises, rank 0
        re-raises it and every other rank raises `error` with rank 0's message."""
        if not self.distributed:
            return int(fn())
        import torch
        import torch.distributed as dist

        result, message, failure = 0, b"", None
        if self.is_main:
            try:
                result = int(fn())
            except BaseException as e:  # noqa: BLE001 (told to the others, then re-raised)
                failure = e
                message = f"{type(e).__name__}: {e}".encode("utf-8", "replace")
        head = torch.tensor([failure is None if self.is_main else 0, result, len(message)], dtype=torch.int64)
        dist.broadcast(head, 0, group=self._group)
        ok, result, length = (int(v) for v in head.tolist())
        if ok:
            return result
        text = torch.zeros(length, dtype=torch.uint8)
        if self.is_main:
            text = torch.frombuffer(bytearray(message), dtype=torch.uint8)
        dist.broadcast(text, 0, group=self._group)
        if failure is not None:
            raise failure
        raise error(f"rank 0 failed: {bytes(text.tolist()).decode('utf-8', 'replace')}")


# ---------------------------------------------------------------------------- the split


def container_frames(path) -> int:
    """The frames `path`'s container declares (from its duration and rate where it declares no
    count, as WebM), without decoding; 1 for a file that does not open (it fails fast)."""
    try:
        info = probe(path)
    except VideoError:
        return 1
    if info["num_frames"] > 0:
        return int(info["num_frames"])
    if info["duration"] and info["fps"]:
        return max(1, round(info["duration"] * info["fps"]))
    return 1


def balanced_slices(weights: Sequence[int], world: int) -> list[list[int]]:
    """Split items 0..n-1 of the given weights (frame counts) into `world` slices of nearly equal
    total weight: largest first, each to the slice with the least weight so far (ties: the lower
    rank). Deterministic, so every rank computes the same split. Each slice lists its items
    largest first (the long videos start early, the short ones fill the end). The largest slice
    exceeds the mean by at most the largest weight."""
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}")
    loads = [(0, r) for r in range(world)]
    slices: list[list[int]] = [[] for _ in range(world)]
    for i in sorted(range(len(weights)), key=lambda i: (-int(weights[i]), i)):
        load, r = heapq.heappop(loads)
        slices[r].append(i)
        heapq.heappush(loads, (load + max(int(weights[i]), 1), r))
    return slices


# ------------------------------------------------------------------------- job progress


class JobProgress:
    """Rank 0's bar for the whole job: every `interval` s it counts the complete lines in the ranks'
    journals (files matching `pattern` in `folder`, one line per video finished or failed) and
    shows the total as a tqdm bar (videos, videos/s, ETA). Reads only the bytes added since the
    last look. `enabled=False`: does nothing."""

    def __init__(self, folder, pattern: str, total: int, *, desc: str = "job", position: int = 0,
                 interval: float = 2.0, enabled: bool = True):
        self.folder, self.pattern, self.interval = Path(folder), pattern, float(interval)
        self.count = 0
        self._seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._bar = self._thread = None
        if enabled and total > 0:
            import sys

            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="video", desc=desc, position=position, dynamic_ncols=True,
                             file=sys.stderr, leave=True)
            self._thread = threading.Thread(target=self._run, name="job-progress", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        new = 0
        for path in sorted(self.folder.glob(self.pattern)):
            start = self._seen.get(path.name, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1  # complete lines only: a torn last line is counted once whole
            new += data.count(b"\n", 0, end)
            self._seen[path.name] = start + end
        if new:
            self.count += new
            self._bar.update(new)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._poll()
            self._bar.close()
            self._thread = None

    def __enter__(self) -> "JobProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Ranks", "RankError", "JOB_TIMEOUT_S", "balanced_slices", "container_frames", "JobProgress", "part_name"]
