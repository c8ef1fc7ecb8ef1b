"""MCL pretraining: `mcl-fast pretrain --config NAME_OR_FILE [key=value ...] [--resume]`.

One process: `mcl-fast pretrain --config demo_cpu`. Several GPUs / nodes, through torchrun:
    torchrun --nproc-per-node 8 -m mcl_fast.train --config ucf101_r2plus1d
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m mcl_fast.train --config kinetics400_r2plus1d --resume
(the output folder must be shared by all nodes: rank 0 writes checkpoints, every rank reads them).

The loop: SGD with momentum, linear warm-up then cosine to `min_lr` per iteration; torch.amp
(bf16 by default on GPU, fp16 with a GradScaler as an option, fp32 on CPU); channels_last_3d;
optional torch.compile; DDP (NCCL on GPU, gloo on CPU); TensorBoard scalars, a tqdm bar and a
loss-curve PNG; atomic checkpoints every N steps and at each epoch's end; `--resume` continues
exactly (weights, queue, optimiser, scaler, schedule, RNG states, loader position). Under
torchrun's elastic restarts (`--max-restarts`), a restarted job resumes by itself.

Configs are JSON (mcl_fast/configs/NAME.json or any path) deep-merged over DEFAULTS; an
override `a.b=value` must name an existing key; values parse as JSON when they can.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import dist
from ._io import atomic_write_json
from .checkpoint import load_checkpoint, load_latest, rng_state, save_checkpoint, set_rng_state

# ---- configs -------------------------------------------------------------------------------
CONFIG_DIR = Path(__file__).parent / "configs"

DEFAULTS: dict = {
    "name": "custom",
    "output": "out/pretrain",
    "model": {
        "backbone": "r2plus1d_50",
        "backbone_kwargs": {},
        "init": None,          # a 2D ResNet-50 checkpoint to inflate into the backbone (mcl_fast/models/inflate.py)
        "dim": 128,            # embedding size
        "hidden": 2048,        # MLP head width
        "queue_size": 131072,  # K negatives
        "momentum": 0.999,     # key encoder momentum
        "tau": 0.1,            # InfoNCE temperature
        "split_bn": 2,         # BN sub-batches when the job has one process (1: off)
    },
    "loss": {
        "mal": True,
        "variant": "v3",
        "terms": ["s", "t", "st"],
        "weight": 1.0,                # lambda
        "warmup_weight": 1.0,         # lambda during the first warmup_weight_epochs (official: 2)
        "warmup_weight_epochs": 0,    # official: 5
        "distance": "l2",             # official: cosine
        "weighting": "global",        # official: per_time
    },
    "data": {
        "loader": "dali",       # dali | torch | synthetic
        "store": None,          # motion store folder (dali, torch)
        "videos": None,         # null: every video in the store; a list; or a file, one per line
        "batch_size": 64,       # global: split over ranks
        "clip_len": 16,
        "stride": 2,
        "size": 224,
        "augment": True,
        "sampling": "motion",   # motion | temporal | spatial | random
        "preset": "paper",      # paper | official
        "loader_kwargs": {},    # passed on to the loader's constructor
        "synthetic_batches": 50,  # batches per epoch of the synthetic source
        "motion_size": None,    # synthetic motion (T', H', W'); null: (clip_len, size // 16, size // 16)
    },
    "optim": {
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "epochs": 200,
        "warmup_epochs": 5,
        "warmup_start_factor": 0.01,  # the warm-up starts at lr * this
        "min_lr": 0.0,
        "grad_clip": None,
    },
    "train": {
        "device": "auto",        # auto | cuda | cpu
        "amp": "auto",           # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off
        "channels_last": "auto",  # auto (on GPU) | true | false
        "compile": False,
        "seed": 0,
        "deterministic": False,
        "max_steps": None,       # stop early (the schedule still spans all epochs)
        "log_every": 10,
        "tensorboard": True,
        "progress": True,
        "plot": True,
        "kill_at_step": None,    # testing: SIGKILL this process after that step (not after an elastic restart)
    },
    "checkpoint": {
        "every_steps": 500,
        "keep": 2,
    },
}


_FREE = ("backbone_kwargs", "loader_kwargs")  # passed through to constructors: any key


class ConfigError(ValueError):
    pass


def _merge(base: dict, update: dict, where: str, source: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}{key}"
        if key not in out:
            raise ConfigError(f"{source}: unknown config key {path!r}")
        if isinstance(out[key], dict) and key not in _FREE:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {path!r} must be an object, got {value!r}")
            out[key] = _merge(out[key], value, f"{path}.", source)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_path(name_or_file: str) -> Path:
    """A file path as given, else mcl_fast/configs/NAME.json."""
    p = Path(name_or_file)
    if p.is_file():
        return p
    named = CONFIG_DIR / f"{name_or_file}.json"
    if named.is_file():
        return named
    known = sorted(q.stem for q in CONFIG_DIR.glob("*.json"))
    raise ConfigError(f"config {name_or_file!r} is neither a file nor one of {known}")


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(config: dict, overrides: Sequence[str]) -> dict:
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, text = item.split("=", 1)
        node = config
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {item!r}: unknown config key {key!r}")
            node = node[part]
        free = len(parts) > 1 and parts[-2] in _FREE  # kwargs dicts take any key
        if parts[-1] not in node and not free:
            raise ConfigError(f"override {item!r}: unknown config key {key!r}")
        node[parts[-1]] = parse_value(text)
    return config


def load_config(name_or_file: str, overrides: Sequence[str] = ()) -> dict:
    """Defaults <- the JSON file <- key=value overrides. Raises ConfigError naming the problem."""
    path = config_path(name_or_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a JSON object")
    config = _merge(DEFAULTS, data, "", str(path))
    config = apply_overrides(config, overrides)
    validate(config)
    return config


def validate(config: dict) -> None:
    from .losses import DISTANCES, TERMS, VARIANTS, WEIGHTINGS
    from .models import BACKBONES, check_model_config

    m, loss, d, o, t = config["model"], config["loss"], config["data"], config["optim"], config["train"]
    checks = [
        (m["backbone"] in BACKBONES, f"model.backbone must be one of {sorted(BACKBONES)}"),
        (loss["variant"] in VARIANTS, f"loss.variant must be one of {VARIANTS}"),
        (bool(loss["terms"]) and all(x in TERMS for x in loss["terms"]), f"loss.terms must be a subset of {TERMS}"),
        (loss["distance"] in DISTANCES, f"loss.distance must be one of {DISTANCES}"),
        (loss["weighting"] in WEIGHTINGS, f"loss.weighting must be one of {WEIGHTINGS}"),
        (d["loader"] in ("dali", "torch", "synthetic"), "data.loader must be dali, torch or synthetic"),
        (int(d["batch_size"]) >= 1, "data.batch_size must be >= 1"),
        (t["amp"] in ("auto", "bf16", "fp16", "off"), "train.amp must be auto, bf16, fp16 or off"),
        (t["device"] in ("auto", "cuda", "cpu"), "train.device must be auto, cuda or cpu"),
        (o["epochs"] >= 1, "optim.epochs must be >= 1"),
        (config["checkpoint"]["keep"] >= 1, "checkpoint.keep must be >= 1"),
        (d["loader"] == "synthetic" or d["store"], "data.store is required unless data.loader=synthetic"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"config {config.get('name')!r}: {message}")
    check_model_config(m, loss, ConfigError)  # 2D backbones: MAL S only; model.init fits the backbone


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


# ---- data sources --------------------------------------------------------------------------
class SyntheticBatches:
    """Random batches with the loader's dict shapes, for tests and benchmarks.

    Batch i of epoch e is a pure function of (seed, e, i): the global batch is generated and this
    shard takes its slice, so N ranks see exactly what one process sees, and resuming at any
    position is exact. query/key (B, 3, T, S, S) float32, motion (B, T', H', W') >= 0, index (B,).
    """

    def __init__(self, batch_size: int, *, clip_len: int, size: int, motion_size=None, batches: int = 50,
                 seed: int = 0, shard_id: int = 0, num_shards: int = 1, device="cpu"):
        self.batch_size, self.clip_len, self.size = batch_size, clip_len, size
        # The real loaders' default target: (clip_len, size / 16, size / 16).
        self.motion_size = tuple(motion_size or (clip_len, max(1, size // 16), max(1, size // 16)))
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
        out = {"query": torch.randn(shape, generator=g), "key": torch.randn(shape, generator=g),
               "motion": torch.rand((n, *self.motion_size), generator=g),
               "index": torch.arange(i * n, (i + 1) * n)}
        lo = self.shard_id * self.batch_size
        return {k: v[lo:lo + self.batch_size].to(self.device) for k, v in out.items()}

    def __iter__(self):
        start, self.start = self.start, 0
        for i in range(start, self.batches):
            yield self.batch(self.epoch, i)


def read_video_list(value, store) -> list[str]:
    """data.videos: null (every video of the store), a list, or a text file with one entry per line."""
    if value is None:
        return list(store.videos)
    if isinstance(value, list):
        return [str(v) for v in value]
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"data.videos: {path} is not a file")
    from .video_io import VideoListError, read_video_list as read_list_file

    try:
        return read_list_file(path)  # a split file's label after the path is dropped
    except VideoListError as err:
        raise ConfigError(f"data.videos: {err}") from None


def build_loader(config: dict, device: torch.device, rank: int, world: int):
    """The configured data source for this rank: len(), set_epoch(e), iterable of batch dicts."""
    d = config["data"]
    if d["batch_size"] % world:
        raise ConfigError(f"data.batch_size={d['batch_size']} (global) does not split over {world} ranks")
    per_rank = d["batch_size"] // world
    seed = int(config["train"]["seed"])
    if d["loader"] == "synthetic":
        return SyntheticBatches(per_rank, clip_len=d["clip_len"], size=d["size"], motion_size=d["motion_size"],
                                batches=d["synthetic_batches"], seed=seed, shard_id=rank, num_shards=world,
                                device=device)
    from .motion.store import MotionStore  # lazy: only real loaders need the store

    store = MotionStore(d["store"])
    videos = read_video_list(d["videos"], store)
    if not videos:
        raise ConfigError(f"data.videos: no videos to train on in {d['store']}")
    # Full batches only: shuffle BN gathers equal-sized batches under DDP, and a 1-clip last batch
    # would make split-batch BN an instance norm (and feed that to its running statistics).
    kwargs = dict(clip_len=d["clip_len"], stride=d["stride"], size=d["size"], augment=d["augment"],
                  sampling=d["sampling"], preset=d["preset"], seed=seed, shard_id=rank, num_shards=world,
                  drop_last=True)
    kwargs.update(d["loader_kwargs"])
    if d["loader"] == "dali":
        from .data import MotionFocusedLoader

        kwargs["device"] = "gpu" if device.type == "cuda" else "cpu"
        return MotionFocusedLoader(videos, store, per_rank, **kwargs)
    from .data import TorchVideoLoader

    kwargs["device"] = str(device)
    return TorchVideoLoader(videos, store, per_rank, **kwargs)


def _seek(loader, n: int):
    """Iterate the loader from batch n of its current epoch (exact resume of the loader position)."""
    if n and hasattr(loader, "skip"):
        loader.skip(n)
        return iter(loader)
    it = iter(loader)
    for _ in range(n):  # the loaders' epoch order is a function of (seed, epoch): discard n batches
        next(it)
    return it


# ---- logging -------------------------------------------------------------------------------
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


def plot_history(history: list[dict], path: Path) -> Path | None:
    """Loss curves PNG (mcl_fast.figures.plot_loss_curves) of the logged history."""
    if not history:
        return None
    from .figures import plot_loss_curves

    series = {k: [h[k] for h in history] for k in ("loss", "nce", "mal") if k in history[0]}
    every = history[1]["step"] - history[0]["step"] if len(history) > 1 else 1
    return plot_loss_curves(series, path, xlabel=f"logged step (every {every} steps)")


# ---- the run -------------------------------------------------------------------------------
def _amp_dtype(config: dict, device: torch.device):
    amp = config["train"]["amp"]
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def _flag(value, device: torch.device) -> bool:
    return device.type == "cuda" if value == "auto" else bool(value)


def _set_deterministic(on: bool, device: torch.device) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # Some CUDA backward kernels (max-pool 3D) have no deterministic version: warn there.
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = not on


def build_model(config: dict):
    from .models import build_backbone
    from .moco import MoCo

    m, loss = config["model"], config["loss"]
    backbone = build_backbone(m["backbone"], init=m["init"], **m["backbone_kwargs"])
    mal = {k: loss[k] for k in ("variant", "distance", "weighting")}
    mal["terms"] = tuple(loss["terms"])
    return MoCo(backbone, dim=m["dim"], hidden=m["hidden"], queue_size=m["queue_size"], momentum=m["momentum"],
                tau=m["tau"], split_bn=m["split_bn"], mal=mal)


def mal_weight(config: dict, epoch: int) -> float:
    loss = config["loss"]
    if not loss["mal"]:
        return 0.0
    return float(loss["warmup_weight"] if epoch < loss["warmup_weight_epochs"] else loss["weight"])


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 5:
                v = v.contiguous(memory_format=torch.channels_last_3d)
        out[k] = v
    return out


def train_step(model, batch: dict, optimizer, scaler, autocast, mal_weight: float, grad_clip=None) -> dict:
    """One optimisation step on a batch dict (query, key, motion): forward under `autocast`,
    backward through the GradScaler (a no-op unless fp16), optional clipping, optimiser step.
    Returns the model's output dict (detached scalars plus "loss")."""
    with autocast:
        out = model(batch["query"], batch["key"], batch.get("motion"), mal_weight=mal_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out["loss"]).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return out


def make_autocast(device: torch.device, amp_dtype):
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()


def train(config: dict, resume: str | None = None) -> dict:
    """Run pretraining as configured; returns a summary dict (steps, final losses, paths)."""
    device, rank, world = dist.init_distributed(config["train"]["device"])
    t_cfg, o_cfg = config["train"], config["optim"]
    out_dir = Path(config["output"])
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "config.json", config)
    _set_deterministic(bool(t_cfg["deterministic"]), device)
    torch.manual_seed(int(t_cfg["seed"]))  # the same initial weights on every rank
    model = build_model(config).to(device)
    torch.manual_seed(int(t_cfg["seed"]) * 1000 + rank)  # then each rank its own random stream
    amp_dtype = _amp_dtype(config, device)
    channels_last = _flag(t_cfg["channels_last"], device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    if amp_dtype == torch.float16:
        model.mal_grad_scale = 1024.0  # keeps d score / d feat out of fp16's underflow range
    params = [p for p in model.encoder_q.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=o_cfg["lr"], momentum=o_cfg["momentum"],
                                weight_decay=o_cfg["weight_decay"])
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    loader = build_loader(config, device, rank, world)
    steps_per_epoch = len(loader)
    if steps_per_epoch < 1:
        raise ConfigError(f"the data source yields no batch per epoch (batch {config['data']['batch_size']})")
    total_steps = steps_per_epoch * o_cfg["epochs"]
    scheduler = WarmupCosine(optimizer, o_cfg["lr"], total_steps, steps_per_epoch * o_cfg["warmup_epochs"],
                             o_cfg["warmup_start_factor"], o_cfg["min_lr"])
    max_steps = min(total_steps, int(t_cfg["max_steps"])) if t_cfg["max_steps"] else total_steps

    # -- resume --------------------------------------------------------------------------------
    step, history, loaded = 0, [], None
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if resume is None and restarted:
        resume = "auto"  # an elastic restart picks up the last checkpoint by itself
    if resume == "auto":
        found = load_latest(out_dir)
        loaded = found[1] if found else None
        if rank == 0:
            print(f"[mcl-fast] resuming from {found[0]}" if found else f"[mcl-fast] no checkpoint in {out_dir}: "
                  "starting fresh", file=sys.stderr)
    elif resume:
        loaded = load_checkpoint(resume)
    if loaded is not None:
        model.load_state_dict(loaded["model"])
        optimizer.load_state_dict(loaded["optimizer"])
        scaler.load_state_dict(loaded["scaler"])
        scheduler.load_state_dict(loaded["scheduler"])
        step, history = int(loaded["step"]), list(loaded.get("history", []))
        if int(loaded.get("world_size", world)) != world and rank == 0:
            warnings.warn(f"resuming a {loaded.get('world_size')}-rank checkpoint on {world} ranks: the "
                          "weights, queue and optimiser carry over; the data order and step count per epoch change")
        rng = loaded["rng"][rank] if rank < len(loaded["rng"]) else loaded["rng"][0]
        set_rng_state(rng)
    if world > 1:  # every rank must resume from the same step (a shared output folder)
        s = torch.tensor([step, -step], device=device)
        torch.distributed.all_reduce(s, op=torch.distributed.ReduceOp.MAX)
        if int(s[0]) != -int(s[1]):
            raise RuntimeError(f"ranks resumed from different steps ({-int(s[1])}..{int(s[0])}): "
                               f"the output folder {out_dir} must be shared by every node")

    if t_cfg["compile"]:
        # Double backward (the MAL's create_graph) does not run through compiled graphs: with the
        # MAL on, only the key encoder (forward only) is compiled.
        model.encoder_k.compile()
        if not config["loss"]["mal"]:
            model.encoder_q.compile()
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False)  # the queue is identical on all ranks; BN is per rank (shuffled)

    writer = None
    if rank == 0 and t_cfg["tensorboard"]:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tb"), purge_step=step or None)
        except Exception as e:  # tensorboard missing or broken: train anyway
            warnings.warn(f"TensorBoard disabled: {e}")
    gpu = GpuMonitor(device)
    bar = None
    if rank == 0 and t_cfg["progress"]:
        from tqdm import tqdm

        bar = tqdm(total=max_steps, initial=step, desc=f"pretrain {config['name']}", unit="step",
                   dynamic_ncols=True)

    def make_state(epoch: int, batch_in_epoch: int) -> dict:
        rngs = [rng_state()]
        if world > 1:  # each rank's RNG streams differ: keep them all
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "epoch": epoch,
                "loader": {"epoch": epoch, "batch": batch_in_epoch, "steps_per_epoch": steps_per_epoch},
                "rng": rngs, "config": config, "history": history, "world_size": world}

    def checkpoint(epoch: int, batch_in_epoch: int) -> None:
        state = make_state(epoch, batch_in_epoch)  # collective when world > 1: every rank calls it
        if rank == 0:
            save_checkpoint(state, out_dir, step, keep=config["checkpoint"]["keep"])

    every = int(config["checkpoint"]["every_steps"] or 0)
    log_every = max(1, int(t_cfg["log_every"]))
    kill_at = t_cfg["kill_at_step"]
    autocast = make_autocast(device, amp_dtype)
    model.train()
    window = {"data": 0.0, "steps": 0, "clips": 0, "sums": {}}
    last = {}
    epoch = step // steps_per_epoch
    t_mark = time.perf_counter()
    while step < max_steps:
        in_epoch = step - epoch * steps_per_epoch
        loader.set_epoch(epoch)
        it = _seek(loader, in_epoch)
        w_mal = mal_weight(config, epoch)
        while step < max_steps and in_epoch < steps_per_epoch:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                raise RuntimeError(f"the loader ended after {in_epoch} of the {steps_per_epoch} batches "
                                   f"it announced (epoch {epoch})") from None
            batch = _to_device(batch, device, channels_last)
            t1 = time.perf_counter()
            out = train_step(ddp, batch, optimizer, scaler, autocast, w_mal, o_cfg["grad_clip"])
            lr = scheduler.get_last_lr()
            scheduler.step()
            step += 1
            in_epoch += 1
            for k, v in out.items():
                window["sums"][k] = window["sums"].get(k, 0.0) + v.detach().float()
            window["data"] += t1 - t0
            window["steps"] += 1
            window["clips"] += int(batch["query"].shape[0]) * world
            if step % log_every == 0 or step == max_steps or in_epoch == steps_per_epoch:
                now = time.perf_counter()
                elapsed = now - t_mark
                t_mark = now
                names = sorted(window["sums"])
                vals = torch.stack([window["sums"][k] for k in names]) / window["steps"]
                vals = dist.all_reduce_mean(vals).tolist()
                if not all(math.isfinite(v) for v in vals):
                    raise FloatingPointError(f"non-finite loss at step {step}: {dict(zip(names, vals))}")
                last = dict(zip(names, vals))
                clips = window["clips"] / max(elapsed, 1e-9)  # all ranks, query+key pairs per second
                row = {"step": step, "epoch": epoch, "lr": lr, **last, "clips_per_s": clips,
                       "data_wait": window["data"] / max(elapsed, 1e-9)}
                history.append(row)
                if writer is not None:
                    for k, v in row.items():
                        if k not in ("step", "epoch"):
                            writer.add_scalar(f"train/{k}", v, step)
                    for k, v in gpu.read().items():
                        writer.add_scalar(k, v, step)
                if bar is not None:
                    bar.set_postfix(loss=f"{last['loss']:.3f}", lr=f"{lr:.2e}", clips_s=f"{clips:.1f}")
                window = {"data": 0.0, "steps": 0, "clips": 0, "sums": {}}
            if bar is not None:
                bar.update(1)
            if in_epoch == steps_per_epoch or (every and step % every == 0) or step == max_steps:
                checkpoint(epoch + (in_epoch == steps_per_epoch), 0 if in_epoch == steps_per_epoch else in_epoch)
            if kill_at is not None and step == int(kill_at) and not restarted:
                os.kill(os.getpid(), signal.SIGKILL)  # testing: one crash right after this step
        if in_epoch == steps_per_epoch:
            epoch += 1
    if bar is not None:
        bar.close()
    summary = {"step": step, "epoch": epoch, "world_size": world, "output": str(out_dir), **last}
    if rank == 0:
        atomic_write_json(out_dir / "history.json", history)
        if t_cfg["plot"]:
            summary["loss_plot"] = str(plot_history(history, out_dir / "loss_curves.png"))
        if writer is not None:
            writer.close()
        atomic_write_json(out_dir / "summary.json", summary)
    dist.cleanup()
    return summary


# ---- command line --------------------------------------------------------------------------
def add_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", required=True, help="a config name (mcl_fast/configs/NAME.json) or a JSON file")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. data.store=demo_out/store optim.epochs=2")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in the output folder (fresh start if none)")
    parser.add_argument("--resume-from", default=None, metavar="CKPT", help="continue from this checkpoint file")
    return parser


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="MCL pretraining (run under torchrun for DDP)", add_help=add_help)
    return add_args(parser)


def run(args: argparse.Namespace) -> int:
    """Entry point of `mcl-fast pretrain`: 0 on success, 2 on a configuration error."""
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"mcl-fast pretrain: {e}", file=sys.stderr)
        return 2
    try:
        summary = train(config, resume=args.resume_from or ("auto" if args.resume else None))
    except ConfigError as e:
        print(f"mcl-fast pretrain: {e}", file=sys.stderr)
        return 2
    if dist.get_rank() == 0:
        print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
