"""MCL pretraining: `mcl-fast pretrain --config NAME_OR_FILE [key=value ...] [--resume]`.

One process: `mcl-fast pretrain --config demo_cpu`. Several GPUs / nodes, through torchrun:
    torchrun --nproc-per-node 8 -m mcl_fast.train --config ucf101_r2plus1d
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m mcl_fast.train --config kinetics400_r2plus1d --resume
(the output folder must be shared by all nodes: rank 0 writes checkpoints, every rank reads them).

`train()` wires the pieces; the loop itself is `mcl_fast.engine.train_one_epoch`, which
fine-tuning runs too: SGD with momentum, linear warm-up then cosine to `min_lr` per iteration
(`engine.WarmupCosine`); torch.amp (bf16 by default on GPU, fp16 with a GradScaler as an
option, fp32 on CPU); channels_last_3d; DDP (NCCL on GPU, gloo on CPU); optional torch.compile.
`MoCo` returns logits and embeddings, `losses.MCLLoss` turns them into InfoNCE (+ MAL).
Reported in the bar, TensorBoard and history.json: the losses, instance-discrimination
acc1/acc5 and batch_acc1 (among the step's own keys), the queue's and the keys' mean pairwise
cosine, embedding and feature std (`mcl_fast.diagnostics`), lr, clips/s; a warning on collapse
or on MoCo's freshness shortcut (`train.collapse_warning`, README "MoCo collapse").
Atomic checkpoints every N steps and at each epoch's end; `--resume` continues exactly
(weights, queue, optimiser, scaler, schedule, RNG states, loader position). Under torchrun's
elastic restarts (`--max-restarts`), a restarted job resumes by itself.

Configs are JSON (mcl_fast/configs/NAME.json or any path) deep-merged over DEFAULTS; an
override `a.b=value` must name an existing key; values parse as JSON when they can.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import dist
from ._io import atomic_write_json
from .checkpoint import load_checkpoint, load_latest, rng_state, save_checkpoint, set_rng_state
from .diagnostics import contrastive_diagnostics, mean_pairwise_cosine
from .engine import MetricWindow, Runtime, StepInfo, WarmupCosine, setup_runtime, train_one_epoch
from .losses import MCLLoss
from .run_log import RunLog, plot_history

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
        "queue_size": 131072,  # K negatives; 0: the other keys of the same step (no queue)
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
        "st_weighting": "uniform",    # official: softmax (ST term weighted by a softmax over chunks, the release's terms)
        # The release's terms beside it (need data.preset=official: key2, key3, query_first):
        "positives": 1,               # InfoNCE positives per query; official: 3 (key, key2, key3; all enqueued)
        "intra": False,               # official: intra-video logits [q.k1, q.k_other] / intra_tau (own head), weight 1
        "intra_tau": 0.1,
        "order": False,               # official UCF101: order loss (own head + linear classifier), weight
                                      # (epoch + 1) / epochs (the release's epoch / epochs, 1-based); Kinetics: off
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
        "collapse_warning": True,  # warn on collapse / MoCo's freshness shortcut (mcl_fast.diagnostics)
    },
    "checkpoint": {
        "every_steps": 500,
        "keep": 2,
    },
}


_FREE = ("backbone_kwargs", "loader_kwargs")  # passed through to constructors: any key


class ConfigError(ValueError):
    pass


def _uses_other_clips(loss: dict) -> bool:
    """Whether the loss has a term of the release that needs the video's two other clips."""
    return loss["positives"] == 3 or bool(loss["intra"]) or bool(loss["order"])


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
    from .losses import DISTANCES, ST_WEIGHTINGS, TERMS, VARIANTS, WEIGHTINGS
    from .models import BACKBONES, check_model_config

    m, loss, d, o, t = config["model"], config["loss"], config["data"], config["optim"], config["train"]
    checks = [
        (m["backbone"] in BACKBONES, f"model.backbone must be one of {sorted(BACKBONES)}"),
        (loss["variant"] in VARIANTS, f"loss.variant must be one of {VARIANTS}"),
        (bool(loss["terms"]) and all(x in TERMS for x in loss["terms"]), f"loss.terms must be a subset of {TERMS}"),
        (loss["distance"] in DISTANCES, f"loss.distance must be one of {DISTANCES}"),
        (loss["weighting"] in WEIGHTINGS, f"loss.weighting must be one of {WEIGHTINGS}"),
        (loss["st_weighting"] in ST_WEIGHTINGS, f"loss.st_weighting must be one of {ST_WEIGHTINGS}"),
        (loss["st_weighting"] == "uniform" or loss["distance"] == "cosine",
         "loss.st_weighting=softmax (the release's alignment terms) needs loss.distance=cosine"),
        (loss["positives"] in (1, 3), "loss.positives must be 1 (key) or 3 (key, key2, key3: the release)"),
        (loss["positives"] == 1 or int(m["queue_size"]) > 0,
         "loss.positives=3 (InfoNCE over 3B rows against the queue) needs model.queue_size > 0"),
        (not _uses_other_clips(loss) or d["preset"] == "official",
         "loss.positives=3, loss.intra and loss.order need data.preset=official (its batch has key2, key3, "
         "query_first)"),
        (d["loader"] in ("dali", "torch", "synthetic"), "data.loader must be dali, torch or synthetic"),
        (int(d["batch_size"]) >= 1, "data.batch_size must be >= 1"),
        (int(m["queue_size"]) >= 0, "model.queue_size must be >= 0 (0: negatives from the same step)"),
        (0.0 <= float(m["momentum"]) < 1.0, "model.momentum must be in [0, 1)"),
        (t["amp"] in ("auto", "bf16", "fp16", "off"), "train.amp must be auto, bf16, fp16 or off"),
        (t["device"] in ("auto", "cuda", "cpu"), "train.device must be auto, cuda or cpu"),
        (o["epochs"] >= 1, "optim.epochs must be >= 1"),
        (config["checkpoint"]["keep"] >= 1, "checkpoint.keep must be >= 1"),
        (d["loader"] == "synthetic" or d["store"], "data.store is required unless data.loader=synthetic"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"config {config.get('name')!r}: {message}")
    _check_views(config)
    check_model_config(m, loss, ConfigError)  # 2D backbones: MAL S only; model.init fits the backbone


def _check_views(config: dict) -> None:
    """data.loader_kwargs.views, if given: MoCo's two views (query, key) as ViewSpec dicts."""
    from .data.views import ViewSpec

    views = config["data"]["loader_kwargs"].get("views")
    if views is None:
        return
    where = f"config {config.get('name')!r}: data.loader_kwargs.views"
    if config["data"]["preset"] == "official" or len(views) != 2:
        raise ConfigError(f"{where}: pretraining takes exactly two views (query, key) and the paper preset; "
                          f"got {len(views)} with preset {config['data']['preset']!r}")
    try:
        for view in views:
            ViewSpec.from_dict(view)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


# ---- data sources --------------------------------------------------------------------------
class SyntheticBatches:
    """Random batches with the loader's dict shapes, for tests and benchmarks.

    Batch i of epoch e is a pure function of (seed, e, i): the global batch is generated and this
    shard takes its slice, so N ranks see exactly what one process sees, and resuming at any
    position is exact. query/key (B, 3, T, S, S) float32, motion (B, T', H', W') >= 0, index (B,);
    official=True (the batch of preset="official") adds key2, key3 (B, 3, T, S, S) and query_first
    (B,) bool, and the motion target defaults to the release's (4, 7, 7), in encoded-flow units
    (uniform in [0, 100)).
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
        out = {"query": torch.randn(shape, generator=g), "key": torch.randn(shape, generator=g),
               "motion": torch.rand((n, *self.motion_size), generator=g),
               "index": torch.arange(i * n, (i + 1) * n)}
        if self.official:  # drawn after the paper batch's tensors: those stay what they were
            out["motion"] = out["motion"] * 100
            out["key2"], out["key3"] = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
            out["query_first"] = torch.rand(n, generator=g) < 0.5
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
                                device=device, official=d["preset"] == "official")
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


# ---- the pieces train() wires ----------------------------------------------------------------
def _set_deterministic(on: bool, device: torch.device) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # Some CUDA backward kernels (max-pool 3D) have no deterministic version: warn there.
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = not on


def build_model(config: dict):
    """The MoCo model of config["model"]: the one place a model is built (hooks go here)."""
    from .models import build_backbone
    from .moco import MoCo

    m, loss = config["model"], config["loss"]
    backbone = build_backbone(m["backbone"], init=m["init"], **m["backbone_kwargs"])
    return MoCo(backbone, dim=m["dim"], hidden=m["hidden"], queue_size=m["queue_size"], momentum=m["momentum"],
                tau=m["tau"], split_bn=m["split_bn"], positives=int(loss["positives"]), intra=bool(loss["intra"]),
                order=bool(loss["order"]), tau_intra=float(loss["intra_tau"]))


def build_criterion(config: dict, runtime: Runtime) -> MCLLoss:
    loss = config["loss"]
    mal = {k: loss[k] for k in ("variant", "distance", "weighting", "st_weighting")}
    mal["terms"] = tuple(loss["terms"])
    # Under fp16 autocast, d score / d feat would underflow: scale it up (the maps are normalised).
    return MCLLoss(mal, grad_scale=1024.0 if runtime.amp_dtype == torch.float16 else 1.0)


def build_optimizer(config: dict, model) -> torch.optim.Optimizer:
    """SGD with momentum over the query encoder's trainable parameters."""
    o = config["optim"]
    params = [p for p in model.encoder_q.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])


def mal_weight(config: dict, epoch: int) -> float:
    """lambda at 0-based `epoch`: warmup_weight for the first warmup_weight_epochs, then weight (the
    release: 2 while its 1-based epoch <= 5, i.e. epochs 0-4 here, then 1); 0 with the MAL off."""
    loss = config["loss"]
    if not loss["mal"]:
        return 0.0
    return float(loss["warmup_weight"] if epoch < loss["warmup_weight_epochs"] else loss["weight"])


def order_weight(config: dict, epoch: int) -> float:
    """The release's order-loss weight at 0-based `epoch`: (epoch + 1) / epochs (its epoch / epochs,
    counted from 1), 0 with loss.order off (the release's Kinetics runs)."""
    if not config["loss"]["order"]:
        return 0.0
    return float(epoch + 1) / float(config["optim"]["epochs"])


def pretrain_loss(model, batch: dict, criterion: MCLLoss, mal_weight: float, order_weight: float = 0.0) -> dict:
    """One batch's objective and diagnostics: `compute_loss` of engine.train_one_epoch for MoCo.

    An official batch's key2 / key3 go to the model and its query_first to the criterion."""
    others = {name: batch[name] for name in ("key2", "key3") if name in batch}
    # With data.loader_kwargs.views (two views, checked by validate) the loader hands out a list.
    query, key = batch["views"] if "views" in batch else (batch["query"], batch["key"])
    out = model(query, key, return_features=criterion.needs_features(mal_weight), **others)
    terms = criterion(out, batch.get("motion"), mal_weight, query_first=batch.get("query_first"),
                      order_weight=order_weight)
    terms.update(contrastive_diagnostics(out))
    return terms


def _resume_state(out_dir: Path, resume: str | None, rank: int) -> dict | None:
    """The checkpoint to continue from: "auto" (the newest in out_dir; also after an elastic
    restart), a path, or None (fresh)."""
    if resume is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume = "auto"  # an elastic restart picks up the last checkpoint by itself
    if resume == "auto":
        found = load_latest(out_dir)
        if rank == 0:
            print(f"[mcl-fast] resuming from {found[0]}" if found else f"[mcl-fast] no checkpoint in {out_dir}: "
                  "starting fresh", file=sys.stderr)
        return found[1] if found else None
    return load_checkpoint(resume) if resume else None


def _same_step_everywhere(step: int, runtime: Runtime, out_dir: Path) -> None:
    """Every rank must resume from the same step (the output folder is shared): raise otherwise."""
    if runtime.world == 1:
        return
    s = torch.tensor([step, -step], device=runtime.device)
    torch.distributed.all_reduce(s, op=torch.distributed.ReduceOp.MAX)
    if int(s[0]) != -int(s[1]):
        raise RuntimeError(f"ranks resumed from different steps ({-int(s[1])}..{int(s[0])}): "
                           f"the output folder {out_dir} must be shared by every node")


class Pretraining:
    """The state of one pretraining run and what happens after each step (log, checkpoint).

    Built by `train`; `state_dict(epoch, batch)` is the checkpoint (collective under DDP).
    """

    def __init__(self, config, runtime, model, optimizer, scheduler, steps_per_epoch, max_steps, out_dir,
                 step=0, history=None, on_step=None):
        self.config, self.runtime, self.model = config, runtime, model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.steps_per_epoch, self.max_steps, self.out_dir = steps_per_epoch, max_steps, out_dir
        self.step, self.epoch = step, step // steps_per_epoch
        self.user_on_step = on_step
        t = config["train"]
        self.log_every = max(1, int(t["log_every"]))
        self.every = int(config["checkpoint"]["every_steps"] or 0)
        self.window = MetricWindow()
        self.last: dict = {}
        self.log = RunLog(out_dir, rank=runtime.rank, world=runtime.world, device=runtime.device, total=max_steps,
                          start=step, desc=f"pretrain {config['name']}", history=history,
                          tensorboard=t["tensorboard"] and runtime.rank == 0, progress=t["progress"],
                          collapse_check=bool(t["collapse_warning"]),
                          batch=config["data"]["batch_size"] // runtime.world)

    def state_dict(self, epoch: int, batch_in_epoch: int) -> dict:
        rngs = [rng_state()]
        if self.runtime.world > 1:  # each rank's RNG streams differ: keep them all
            gathered = [None] * self.runtime.world
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.runtime.scaler.state_dict(), "scheduler": self.scheduler.state_dict(),
                "step": self.step, "epoch": epoch,
                "loader": {"epoch": epoch, "batch": batch_in_epoch, "steps_per_epoch": self.steps_per_epoch},
                "rng": rngs, "config": self.config, "history": self.log.history, "world_size": self.runtime.world}

    def checkpoint(self, epoch: int, batch_in_epoch: int) -> None:
        state = self.state_dict(epoch, batch_in_epoch)  # collective when world > 1: every rank calls it
        if self.runtime.rank == 0:
            save_checkpoint(state, self.out_dir, self.step, keep=self.config["checkpoint"]["keep"])

    def queue_stats(self) -> dict:
        """The queue's mean pairwise cosine (the collapse signal), computed at log time."""
        if self.model.queue.shape[0] < 2:
            return {}
        return {"queue_cos": float(mean_pairwise_cosine(self.model.queue))}

    def on_step(self, info: StepInfo) -> bool:
        """After each optimiser step: metrics, logging, checkpoints; True stops the epoch (max_steps)."""
        self.step += 1
        self.window.update(info.metrics, info.samples, info.data_s)
        epoch_done = info.index == self.steps_per_epoch
        if self.step % self.log_every == 0 or self.step == self.max_steps or epoch_done:
            # Judged after the warm-up (a tiny backbone starts in a narrow cone) and once the queue
            # holds only real keys.
            ready = (self.step >= self.steps_per_epoch * max(1, self.config["optim"]["warmup_epochs"])
                     and self.step * self.config["data"]["batch_size"] * self.model.positives
                     >= self.model.queue.shape[0])
            self.last = self.log.log(self.step, self.epoch, info.lr, self.window, self.queue_stats(),
                                     collapse_ready=ready)
        self.log.advance()
        if epoch_done or (self.every and self.step % self.every == 0) or self.step == self.max_steps:
            self.checkpoint(self.epoch + epoch_done, 0 if epoch_done else info.index)
        if self.user_on_step is not None:
            self.user_on_step(self.step)
        return self.step >= self.max_steps

    def run(self, loader, criterion, ddp) -> None:
        o = self.config["optim"]
        self.model.train()
        while self.step < self.max_steps:
            in_epoch = self.step - self.epoch * self.steps_per_epoch
            loader.set_epoch(self.epoch)
            compute = functools.partial(pretrain_loss, criterion=criterion,
                                        mal_weight=mal_weight(self.config, self.epoch),
                                        order_weight=order_weight(self.config, self.epoch))
            done = train_one_epoch(ddp, compute, _seek(loader, in_epoch), self.optimizer, self.runtime,
                                   scheduler=self.scheduler, steps=self.steps_per_epoch, start=in_epoch,
                                   grad_clip=o["grad_clip"], on_step=self.on_step)
            if done == self.steps_per_epoch:
                self.epoch += 1


def train(config: dict, resume: str | None = None, on_step=None) -> dict:
    """Run pretraining as configured; returns a summary dict (steps, final losses, paths).

    resume: None (fresh), "auto" (the newest checkpoint in the output folder) or a checkpoint path.
    on_step: called with the global step after each step's checkpoint (tests use it).
    """
    t_cfg, o_cfg = config["train"], config["optim"]
    runtime = setup_runtime(t_cfg["device"], t_cfg["amp"], t_cfg["channels_last"])
    out_dir = Path(config["output"])
    if runtime.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "config.json", config)
    _set_deterministic(bool(t_cfg["deterministic"]), runtime.device)
    torch.manual_seed(int(t_cfg["seed"]))  # the same initial weights on every rank
    model = build_model(config)
    torch.manual_seed(int(t_cfg["seed"]) * 1000 + runtime.rank)  # then each rank its own random stream
    model, ddp = runtime.prepare(model, broadcast_buffers=False)  # ddp is model itself on one process
    criterion = build_criterion(config, runtime)
    optimizer = build_optimizer(config, model)
    loader = build_loader(config, runtime.device, runtime.rank, runtime.world)
    steps_per_epoch = len(loader)
    if steps_per_epoch < 1:
        raise ConfigError(f"the data source yields no batch per epoch (batch {config['data']['batch_size']})")
    total_steps = steps_per_epoch * o_cfg["epochs"]
    scheduler = WarmupCosine(optimizer, o_cfg["lr"], total_steps, steps_per_epoch * o_cfg["warmup_epochs"],
                             o_cfg["warmup_start_factor"], o_cfg["min_lr"])
    max_steps = min(total_steps, int(t_cfg["max_steps"])) if t_cfg["max_steps"] else total_steps

    step, history = 0, []
    loaded = _resume_state(out_dir, resume, runtime.rank)
    if loaded is not None:
        model.load_state_dict(loaded["model"])
        optimizer.load_state_dict(loaded["optimizer"])
        runtime.scaler.load_state_dict(loaded["scaler"])
        scheduler.load_state_dict(loaded["scheduler"])
        step, history = int(loaded["step"]), list(loaded.get("history", []))
        if int(loaded.get("world_size", runtime.world)) != runtime.world and runtime.rank == 0:
            warnings.warn(f"resuming a {loaded.get('world_size')}-rank checkpoint on {runtime.world} ranks: the "
                          "weights, queue and optimiser carry over; the data order and step count per epoch change")
        rngs = loaded["rng"]
        set_rng_state(rngs[runtime.rank] if runtime.rank < len(rngs) else rngs[0])
    _same_step_everywhere(step, runtime, out_dir)
    if t_cfg["compile"]:
        # Double backward (the MAL's create_graph) does not run through compiled graphs: with the
        # MAL on, only the key encoder (forward only) is compiled.
        model.encoder_k.compile()
        if not config["loss"]["mal"]:
            model.encoder_q.compile()

    run = Pretraining(config, runtime, model, optimizer, scheduler, steps_per_epoch, max_steps, out_dir,
                      step=step, history=history, on_step=on_step)
    run.run(loader, criterion, ddp)
    run.log.close()
    summary = {"step": run.step, "epoch": run.epoch, "world_size": runtime.world, "output": str(out_dir), **run.last}
    if runtime.rank == 0:
        atomic_write_json(out_dir / "history.json", run.log.history)
        if t_cfg["plot"]:
            summary["loss_plot"] = str(plot_history(run.log.history, out_dir / "loss_curves.png"))
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
