"""MCL pretraining: `mcl-fast pretrain --config NAME_OR_FILE [key=value ...] [--resume] [--overwrite]`.

One process (`mcl-fast pretrain --config demo_cpu`) or many through torchrun
(`torchrun --nproc-per-node 8 -m mcl_fast.train --config ucf101_r2plus1d`). `train()` wires the
loader, the model and objective of the config's `method` (the paper's `MoCo` and `MCLLoss`, or
a variant's, through its module in METHOD_VARIANTS), the optimiser and checkpoints around
`engine.train_one_epoch`; configs are JSON deep-merged over DEFAULTS and checked against
`config_schema()` before anything is written; one run per output folder, `--resume` exact.
What it does in detail: docs/training.md ("What `pretrain` does").
"""
from __future__ import annotations

import argparse
import copy
import functools
import itertools
import json
import os
import sys
import time
import uuid
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Sequence

import torch

from . import dist, train_official
from ._io import FolderBusy, atomic_write_json, fsync_path, lock_folder, run_command
from .checkpoint import (RUN_ID, list_checkpoints, load_checkpoint, load_latest, rng_state, save_checkpoint,
                         set_rng_state)
from .config import (BOOL, FREE_DICT, TEXT, ConfigError, Field, apply_overrides, check_value, dataclass_defaults,
                     dataclass_schema, flatten, integer, merge, number, one_of, split_override, value_at)
from .data.options import LoaderOptions
from .data.presets import loader_variant
from .data.synthetic_batches import SyntheticBatches
from .diagnostics import contrastive_diagnostics, mean_pairwise_cosine
from .engine import AMP_MODES, MetricWindow, Runtime, StepInfo, WarmupCosine, setup_runtime, train_one_epoch
from .losses import MCLLoss
from .run_log import RunLog, plot_history

# ---- configs -------------------------------------------------------------------------------
CONFIG_DIR = Path(__file__).parent / "configs"

# The LoaderOptions a config sets, each as data.<name> (the loaders' seed and shards come from
# train.seed and the ranks; callables have no JSON form).
LOADER_OPTIONS = tuple(f.name for f in fields(LoaderOptions) if f.init and f.name not in
                       ("seed", "shard_id", "num_shards", "clip_sampler", "batch_transform"))
# Each loader's own constructor options, data.<name> too (null: that loader's default; others ignore them).
LOADER_OWN = {"torch": ("num_workers", "decoder"), "dali": ("num_threads", "prefetch")}

# The objective and model: MCL as published, or a variant's (method -> its module; the loaders'
# presets carry the same names, the config a section of the same name).
METHOD_VARIANTS = {"official": train_official}
METHODS = ("paper", *METHOD_VARIANTS)

DEFAULTS: dict = {
    "name": "custom",
    "output": "out/pretrain",
    "method": "paper",  # paper (MCL as published) | official (the authors' release: docs/release.md)
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
        "warmup_weight": 1.0,         # lambda during the first warmup_weight_epochs (the release: 2)
        "warmup_weight_epochs": 0,    # the release: 5
        "distance": "l2",             # the paper's MAL: l2 | cosine (a variant's method has its own terms)
        "weighting": "global",        # the paper's MAL: global | per_time Grad-CAM weights
    },
    **{name: dict(variant.SECTION) for name, variant in METHOD_VARIANTS.items()},  # each for its method only
    "data": {
        "loader": "dali",       # dali | torch | synthetic
        "store": None,          # motion store folder (dali, torch)
        "videos": None,         # null: every video in the store; a list; or a file, one per line
        "batch_size": 64,       # global: split over ranks
        "synthetic_batches": 50,  # batches per epoch of the synthetic source
        "num_workers": None,    # torch loader: worker processes
        "decoder": None,        # torch loader: pyav | decord | torchcodec
        "num_threads": None,    # dali loader: CPU threads
        "prefetch": None,       # dali loader: batches decoded ahead
        # LoaderOptions (data/options.py), their defaults: clip_len 16, stride 2, size 224, augment,
        # sampling (motion | temporal | spatial | random), preset (one of METHODS: a variant's method
        # needs its preset), motion_size (null: (clip_len, size // 16, size // 16)), views, video_root, ...
        **dataclass_defaults(LoaderOptions, LOADER_OPTIONS),
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


_FREE = ("backbone_kwargs",)  # passed through to the backbone's constructor: any key
# data keys that are no loader option (the trainer's own), which data.loader_kwargs never held.
LOADER_KEYS_OF_TRAINER = ("loader", "store", "videos", "batch_size", "synthetic_batches")


def _unknown_key(source: str, path: str) -> ConfigError:
    """The error for a key DEFAULTS lacks, naming its replacement if an earlier version had it."""
    replaced = {key: new for variant in METHOD_VARIANTS.values() for key, new in variant.REPLACED_KEYS.items()}
    hint = f" (replaced by {replaced[path]}: docs/release.md)" if path in replaced else ""
    return ConfigError(f"{source}: unknown config key {path!r}{hint}")


def upgrade_config(config: dict, source: str) -> dict:
    """A config (file or checkpoint) of an earlier version in today's keys, a warning naming each
    move: data.loader_kwargs' keys as data.<key>, a variant's earlier loss keys as `method`."""
    config = _lift_loader_kwargs(config, source)
    for variant in METHOD_VARIANTS.values():
        config = variant.upgrade_loss_keys(config, source)
    return config


def _lift_loader_kwargs(config: dict, source: str) -> dict:
    """data.loader_kwargs (the earlier pass-through to the loader) moved key by key to data.<key>;
    ConfigError for a key that is no data option, or one set in both places to different values."""
    data = config.get("data")
    if not isinstance(data, dict) or "loader_kwargs" not in data:
        return config
    config = copy.deepcopy(config)
    data = config["data"]
    kwargs = data.pop("loader_kwargs")
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{source}: data.loader_kwargs must be an object, got {json.dumps(kwargs)}")
    for key, value in kwargs.items():
        if key not in DEFAULTS["data"] or key in LOADER_KEYS_OF_TRAINER:
            raise ConfigError(f"{source}: data.loader_kwargs.{key}: not an option a config sets (data.<name> takes "
                              f"{', '.join(k for k in DEFAULTS['data'] if k not in LOADER_KEYS_OF_TRAINER)})")
        if key in data and data[key] != value:
            raise ConfigError(f"{source}: data.{key}={json.dumps(data[key])} and data.loader_kwargs.{key}="
                              f"{json.dumps(value)} set the same option twice: keep data.{key} only")
        data[key] = value
    if kwargs:
        warnings.warn(f"{source}: data.loader_kwargs (an earlier version's pass-through) read as "
                      f"{', '.join(f'data.{k}' for k in kwargs)}; write the config that way (docs/training.md)",
                      stacklevel=3)
    return config


def _lift_loader_kwargs_override(item: str) -> list[str]:
    """An override of data.loader_kwargs (or one of its keys) as overrides of data.<key>, with a warning."""
    key, value = split_override(item)
    if key != "data.loader_kwargs" and not key.startswith("data.loader_kwargs."):
        return [item]
    lifted = _lift_loader_kwargs({"data": {"loader_kwargs": value if key == "data.loader_kwargs"
                                           else {key[len("data.loader_kwargs."):]: value}}}, f"override {item!r}")
    return [f"data.{k}={json.dumps(v)}" for k, v in lifted["data"].items()]


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


def load_config(name_or_file: str, overrides: Sequence[str] = ()) -> dict:
    """Defaults <- the JSON file <- key=value overrides. Raises ConfigError naming the problem."""
    path = config_path(name_or_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a JSON object")
    config = merge(DEFAULTS, upgrade_config(data, str(path)), str(path), free=_FREE, unknown=_unknown_key)
    overrides = [lifted for item in overrides for lifted in _lift_loader_kwargs_override(item)]
    config = apply_overrides(config, overrides, free=_FREE, unknown=_unknown_key)
    validate(config)
    return config


# ---- the config schema: every key's type and range, in one table ----------------------------
@functools.lru_cache(maxsize=1)
def config_schema() -> dict:
    """key -> Field for every key of DEFAULTS (model.backbone_kwargs takes any content). The one place
    a config value's type and range are stated; the data section's loader options come from
    LoaderOptions (their kinds from its annotations, their values checked by it in `validate`)."""
    from .data.plan import SAMPLING_MODES
    from .losses import DISTANCES, TERMS, VARIANTS, WEIGHTINGS
    from .models import BACKBONES

    loader_options = dataclass_schema(LoaderOptions, LOADER_OPTIONS, refined={
        "sampling": one_of(*SAMPLING_MODES), "preset": one_of(*METHODS),  # LoaderOptions leaves these to the planner
        "motion_size": Field(("null", "list"), items=integer(1), length=3)})
    return {
        "name": TEXT, "output": TEXT, "method": one_of(*METHODS),
        "model.backbone": one_of(*sorted(BACKBONES)), "model.backbone_kwargs": FREE_DICT,
        "model.init": Field(("str", "null")), "model.dim": integer(1), "model.hidden": integer(1),
        "model.queue_size": integer(0), "model.momentum": number(0, 1, open_high=True),
        "model.tau": number(0, open_low=True), "model.split_bn": integer(1),
        "loss.mal": BOOL, "loss.variant": one_of(*VARIANTS),
        "loss.terms": Field(("list",), items=one_of(*TERMS), length=0),
        "loss.weight": number(0), "loss.warmup_weight": number(0), "loss.warmup_weight_epochs": integer(0),
        "loss.distance": one_of(*DISTANCES), "loss.weighting": one_of(*WEIGHTINGS),
        **{key: field for variant in METHOD_VARIANTS.values() for key, field in variant.SCHEMA.items()},
        "data.loader": one_of("dali", "torch", "synthetic"), "data.store": Field(("str", "null")),
        "data.videos": Field(("null", "str", "list"), items=TEXT),
        "data.batch_size": integer(1), "data.synthetic_batches": integer(1),
        "data.num_workers": integer(0, null=True), "data.decoder": Field(("str", "null")),
        "data.num_threads": integer(1, null=True), "data.prefetch": integer(1, null=True),
        **{f"data.{name}": field for name, field in loader_options.items()},
        "optim.lr": number(0, open_low=True), "optim.momentum": number(0, 1), "optim.weight_decay": number(0),
        "optim.epochs": integer(1), "optim.warmup_epochs": integer(0),
        "optim.warmup_start_factor": number(0, 1, open_low=True), "optim.min_lr": number(0),
        "optim.grad_clip": number(0, open_low=True, null=True),
        "train.device": one_of("auto", "cuda", "cpu"), "train.amp": one_of(*AMP_MODES),
        "train.channels_last": one_of("auto", True, False), "train.compile": BOOL, "train.seed": integer(0),
        "train.deterministic": BOOL, "train.max_steps": integer(1, null=True), "train.log_every": integer(1),
        "train.tensorboard": BOOL, "train.progress": BOOL, "train.plot": BOOL, "train.collapse_warning": BOOL,
        "checkpoint.every_steps": integer(0, null=True), "checkpoint.keep": integer(1),
    }


def check_types(config: dict) -> None:
    """Every value against config_schema(): ConfigError naming the key, what it must be and what it is."""
    for key, field in config_schema().items():
        check_value(key, field, value_at(config, key), f"config {config.get('name')!r}")


def validate(config: dict) -> None:
    """Types and ranges (config_schema), then the rules that tie keys together."""
    from .models import check_model_config

    check_types(config)
    m, loss, d = config["model"], config["loss"], config["data"]
    relations = [rule for variant in METHOD_VARIANTS.values() for rule in variant.relations(config, DEFAULTS["loss"])]
    relations.append((d["loader"] == "synthetic" or d["store"], "data.store is required unless data.loader=synthetic"))
    for ok, message in relations:
        if not ok:
            raise ConfigError(f"config {config.get('name')!r}: {message}")
    _check_views(config)
    loader_options(config)
    check_model_config(m, loss, ConfigError)  # 2D backbones: MAL S only; model.init fits the backbone


def _check_views(config: dict) -> None:
    """data.views, if given: MoCo's two views (query, key) as ViewSpec dicts."""
    from .data.views import ViewSpec

    views = config["data"]["views"]
    if views is None or views == "pair":  # the loaders' default pair, by name
        return
    where = f"config {config.get('name')!r}: data.views"
    if isinstance(views, str):
        raise ConfigError(f"{where}: pretraining takes MoCo's two views: \"pair\" or two view dicts, got {views!r}")
    if config["data"]["preset"] != "paper" or len(views) != 2:
        raise ConfigError(f"{where}: pretraining takes exactly two views (query, key) and the paper preset; "
                          f"got {len(views)} with preset {config['data']['preset']!r}")
    try:
        for view in views:
            ViewSpec.from_dict(view)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def loader_options(config: dict) -> LoaderOptions:
    """The config's data.<option>s as the loaders' LoaderOptions, which checks their values;
    ConfigError naming data where one is wrong."""
    d = config["data"]
    try:
        return LoaderOptions(**{name: d[name] for name in LOADER_OPTIONS})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config {config.get('name')!r}: data: {e}") from None


# ---- data sources --------------------------------------------------------------------------
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
        variant = loader_variant(d["preset"])  # a variant's batch has its own views and fields
        batches = SyntheticBatches if variant is None else variant.synthetic
        return batches(per_rank, clip_len=d["clip_len"], size=d["size"], motion_size=d["motion_size"],
                       batches=d["synthetic_batches"], seed=seed, shard_id=rank, num_shards=world, device=device)
    from .motion.store import MotionStore  # lazy: only real loaders need the store

    store = MotionStore(d["store"])
    videos = read_video_list(d["videos"], store)
    if not videos:
        raise ConfigError(f"data.videos: no videos to train on in {d['store']}")
    # data.drop_last defaults to full batches only: shuffle BN gathers equal-sized batches under DDP,
    # and a 1-clip last batch would make split-batch BN an instance norm (and feed that to its
    # running statistics).
    kwargs = {name: d[name] for name in LOADER_OPTIONS}
    kwargs.update(seed=seed, shard_id=rank, num_shards=world)
    kwargs.update({name: d[name] for name in LOADER_OWN[d["loader"]] if d[name] is not None})
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
    """The MoCo model of config["model"] for config["method"]: the one place a model is built (hooks go here)."""
    from .models import build_backbone
    from .moco import MoCo

    m = config["model"]
    backbone = build_backbone(m["backbone"], init=m["init"], **m["backbone_kwargs"])
    common = dict(dim=m["dim"], hidden=m["hidden"], queue_size=m["queue_size"], momentum=m["momentum"], tau=m["tau"],
                  split_bn=m["split_bn"])
    if config["method"] in METHOD_VARIANTS:
        return METHOD_VARIANTS[config["method"]].build_model(backbone, common, config)
    return MoCo(backbone, **common)


def build_criterion(config: dict, runtime: Runtime) -> MCLLoss:
    """The objective of config["method"] (an MCLLoss), with the MAL's settings of config["loss"]."""
    loss = config["loss"]
    mal = {"variant": loss["variant"], "terms": tuple(loss["terms"])}
    # Under fp16 autocast, d score / d feat would underflow: scale it up (the maps are normalised).
    grad_scale = 1024.0 if runtime.amp_dtype == torch.float16 else 1.0
    if config["method"] in METHOD_VARIANTS:
        return METHOD_VARIANTS[config["method"]].build_criterion(mal, grad_scale, config)
    return MCLLoss({**mal, "distance": loss["distance"], "weighting": loss["weighting"]}, grad_scale)


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


def pretrain_loss(model, batch: dict, criterion: MCLLoss, mal_weight: float, **weights: float) -> dict:
    """One batch's objective and diagnostics: `compute_loss` of engine.train_one_epoch for MoCo.

    batch["views"] holds the query and the key, then any further views (key2, key3 of a three-clip
    batch): those the model takes (`extra_views`) go to it by name, the paper's MoCo takes none.
    The batch entries the criterion names (`batch_keys`) and its epoch's `weights`
    (`criterion.epoch_weights`) go to the criterion."""
    query, key, *others = batch["views"]
    names = getattr(model, "module", model).extra_views  # DDP wraps the model
    out = model(query, key, return_features=criterion.needs_features(mal_weight), **dict(zip(names, others)))
    terms = criterion(out, batch.get("motion"), mal_weight, **{k: batch.get(k) for k in criterion.batch_keys},
                      **weights)
    terms.update(contrastive_diagnostics(out))
    return terms


def _resume_state(out_dir: Path, resume: str | None, rank: int, run_id: str | None = None) -> dict | None:
    """The checkpoint to continue from: "auto" (the newest in out_dir, of the folder's run `run_id`
    if known), a path, or None (fresh)."""
    if resume == "auto":
        found = load_latest(out_dir, run_id=run_id)
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


# ---- the run folder: one run per folder, locked, its leftovers cleaned, resumes checked ------------
RUN_RECORD = "run.json"  # {"run_id": ...}: the run that owns the folder (each checkpoint records it too)
LOCK_NAME = ".lock"
# What marks a folder as holding a run (besides checkpoints): a fresh run refuses to start there.
RUN_TRACES = ("config.json", "history.json", "summary.json", RUN_RECORD, "loss_curves.png", "tb")
# Temporaries of mcl_fast._io.atomic_write (".NAME.XXXXXXXX.tmp") that a killed run leaves behind.
TEMPORARIES = (".ckpt_*.pt.*.tmp", ".config.json.*.tmp", ".history.json.*.tmp", ".summary.json.*.tmp",
               f".{RUN_RECORD}.*.tmp")

# Keys a resume may change with --resume-with-changes. They decide when the run stops, what it logs,
# how often and how many checkpoints it keeps, its label, or how the same computation executes
# (device, compile, channels_last: same math, kernels' rounding aside). Every other key changes the
# run itself (model, data, batch, loss, optimiser, schedule, seed, precision) and is refused.
SAFE_ON_RESUME = ("name", "train.max_steps", "train.log_every", "train.tensorboard", "train.progress",
                  "train.plot", "train.collapse_warning", "train.device", "train.compile", "train.channels_last",
                  "checkpoint.every_steps", "checkpoint.keep")
NOT_COMPARED = ("output",)  # where the run lives, not what it is: a moved folder resumes as well
_ABSENT = "(absent)"


class RunFolderError(ConfigError):
    """The output folder cannot take this run as asked; nothing in it was changed."""


class ConfigChanged(RunFolderError):
    """A resume whose config differs from the saved run's (listed in the message)."""


def run_traces(out_dir: Path) -> list[str]:
    """Names of what an earlier run left in out_dir: checkpoints, config.json, history, ..."""
    names = [p.name for p in list_checkpoints(out_dir)]
    return names + [name for name in RUN_TRACES if (out_dir / name).exists()]


def read_run_id(out_dir: Path) -> str | None:
    """The id in out_dir/run.json (None if there is none: a new folder, or an earlier version's run)."""
    try:
        return json.loads((out_dir / RUN_RECORD).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def lock_run_folder(out_dir: Path) -> int | None:
    """Create out_dir and hold the lock on out_dir/.lock (a descriptor; released when it is closed, or
    the process dies); RunFolderError if another process holds it, None where flock is missing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return lock_folder(out_dir, LOCK_NAME)
    except FolderBusy:
        raise RunFolderError(f"another `mcl-fast pretrain` is running in {out_dir} (it holds {out_dir / LOCK_NAME}): "
                             "wait for it to end, or choose another output=") from None
    except OSError as e:  # a filesystem without flock: run unlocked rather than not at all
        warnings.warn(f"cannot lock {out_dir / LOCK_NAME} ({e.strerror}): two runs in this folder would not be stopped")
        return None


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Delete the temporary files a killed run left in out_dir. Call it holding the folder's lock:
    then no other pretrain can be writing them."""
    stale = sorted({p for pattern in TEMPORARIES for p in out_dir.glob(pattern)})
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def move_aside(out_dir: Path) -> Path:
    """Move everything in out_dir (but the lock) into a new sibling folder OUT.replaced-<time>; nothing is deleted."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in itertools.count():
        aside = out_dir.with_name(f"{out_dir.name}.replaced-{stamp}{f'-{i}' if i else ''}")
        try:
            aside.mkdir()
            break
        except FileExistsError:
            continue
    for entry in out_dir.iterdir():
        if entry.name != LOCK_NAME:
            os.rename(entry, aside / entry.name)
    fsync_path(aside)
    fsync_path(out_dir)
    return aside


def _over(base: dict, config: dict) -> dict:
    """config deep-merged over base, accepting any key (a saved config may hold keys since removed)."""
    out = copy.deepcopy(base)
    for key, value in config.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict) and key not in _FREE
        out[key] = _over(out[key], value) if nested else copy.deepcopy(value)
    return out


def _comparable(config: dict) -> dict:
    """The flat {key: value} a resume compares: the config over DEFAULTS (keys added since a
    checkpoint was written take their defaults), empty kwargs dicts and NOT_COMPARED left out."""
    return {k: v for k, v in flatten(_over(DEFAULTS, config)).items() if v != {} and k not in NOT_COMPARED}


def config_changes(saved: dict, new: dict) -> list[tuple[str, object, object]]:
    """(key, saved value, new value) of every key that differs, sorted by key."""
    a, b = _comparable(saved), _comparable(new)
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(a.keys() | b.keys())
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _change_lines(changes) -> str:
    show = lambda v: v if v is _ABSENT else json.dumps(v)  # noqa: E731
    return "\n".join(f"  {key}: {show(old)} -> {show(new)}" for key, old, new in changes)


def check_resume_config(saved: dict, new: dict, allow_changes: bool, source) -> list[tuple]:
    """The safe changes a resume applies; RunFolderError listing the differences if any change
    alters the run, or if safe ones are made without allow_changes (--resume-with-changes)."""
    changes = config_changes(upgrade_config(saved, f"{source}: the saved config"), new)
    altering = [c for c in changes if c[0] not in SAFE_ON_RESUME]
    if altering:
        raise ConfigChanged(
            f"--resume with a config that changes the run saved in {source}:\n{_change_lines(altering)}\n"
            "resume with the saved values, or start a new run in another output= (or here with --overwrite, "
            f"which moves this run aside); only {', '.join(SAFE_ON_RESUME)} may change "
            "(with --resume-with-changes)")
    if changes and not allow_changes:
        raise ConfigChanged(f"--resume with changed settings (safe ones) against {source}:\n{_change_lines(changes)}\n"
                             "pass --resume-with-changes to apply them, or resume with the saved values")
    return changes


def _resume_mode(resume: str | None) -> str | None:
    """resume as asked, except that a torchrun elastic restart always picks up the last checkpoint."""
    if resume is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        return "auto"
    return resume


def _is_inside(path: str, folder: Path) -> bool:
    return Path(path).resolve().parent == folder.resolve()


def _log(rank: int, message: str) -> None:
    if rank == 0:
        print(f"[mcl-fast] {message}", file=sys.stderr)


class RunFolder:
    """The output folder of one pretraining run, held (locked on rank 0) while the run lasts.

    `open` decides, before anything is written, what the run may do there: start fresh (the folder
    holds no other run, or `overwrite` moves that run aside), or resume (the checkpoint's config
    matches, see SAFE_ON_RESUME). Then rank 0 removes a killed run's temporaries and writes run.json
    and config.json. `loaded` is the checkpoint state to continue from (None: fresh), `run_id` the
    id every checkpoint of this run records."""

    def __init__(self, out_dir: Path, lock, loaded: dict | None, run_id: str):
        self.out_dir, self.lock, self.loaded, self.run_id = out_dir, lock, loaded, run_id

    @classmethod
    def open(cls, config: dict, resume: str | None, rank: int, *, overwrite: bool = False,
             allow_changes: bool = False) -> "RunFolder":
        out_dir = Path(config["output"])
        resume = _resume_mode(resume)
        lock = lock_run_folder(out_dir) if rank == 0 else None
        try:
            loaded, run_id, move = cls._decide(config, out_dir, resume, rank, overwrite, allow_changes)
            dist.barrier()  # every rank has looked at the folder before rank 0 changes it
            if rank == 0:
                cls._prepare(config, out_dir, run_id, move)
        except BaseException:
            if lock is not None:
                os.close(lock)
            raise
        return cls(out_dir, lock, loaded, run_id)

    @staticmethod
    def _decide(config, out_dir, resume, rank, overwrite, allow_changes) -> tuple[dict | None, str, bool]:
        """(checkpoint state or None, run id, whether to move an earlier run aside); raises RunFolderError."""
        folder_run = read_run_id(out_dir)
        try:
            loaded = _resume_state(out_dir, resume, rank, run_id=folder_run)
        except (FileNotFoundError, ValueError) as e:  # --resume-from a missing, unreadable or damaged file
            raise RunFolderError(f"--resume-from: {e}") from None
        if loaded is None:
            if resume == "auto" and list_checkpoints(out_dir):
                raise RunFolderError(f"--resume: none of the checkpoints in {out_dir} can be loaded (see the warnings "
                                     "above): move them away, or start a new run with --overwrite")
            move = resume is None and _occupied(out_dir, overwrite)
            return None, uuid.uuid4().hex, move  # a new run (only rank 0's id is written: it saves the checkpoints)
        changes = check_resume_config(loaded["config"], config, allow_changes, resume if resume != "auto" else out_dir)
        if changes:
            _log(rank, f"resuming with changes:\n{_change_lines(changes)}")
        run_id = loaded.get(RUN_ID) or uuid.uuid4().hex  # an earlier version's checkpoint: a new id from here on
        move = False
        if resume != "auto" and not _is_inside(resume, out_dir) and folder_run != run_id:
            move = _occupied(out_dir, overwrite)  # another run's folder: the checkpoint must not join it
        return loaded, run_id, move

    @staticmethod
    def _prepare(config: dict, out_dir: Path, run_id: str, move: bool) -> None:
        """Rank 0, the decision made: move an earlier run aside, clean, write run.json and config.json."""
        if move:
            _log(0, f"--overwrite: moved the earlier run in {out_dir} to {move_aside(out_dir)}")
        removed = remove_stale_temporaries(out_dir)
        if removed:
            _log(0, f"removed {len(removed)} temporary file(s) a killed run left in {out_dir}")
        atomic_write_json(out_dir / RUN_RECORD, {"run_id": run_id})
        atomic_write_json(out_dir / "config.json", config)

    def close(self) -> None:
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _occupied(out_dir: Path, overwrite: bool) -> bool:
    """Whether out_dir holds an earlier run that `overwrite` will move aside; RunFolderError without it."""
    traces = run_traces(out_dir)
    if traces and not overwrite:
        shown = ", ".join(traces[:6]) + (f" and {len(traces) - 6} more" if len(traces) > 6 else "")
        raise RunFolderError(f"{out_dir} holds another run ({shown}): continue it with --resume, choose another "
                             "output=, or pass --overwrite to move it aside (to a new folder beside it) and start "
                             "afresh")
    return bool(traces)


class Pretraining:
    """The state of one pretraining run and what happens after each step (log, checkpoint).

    Built by `train`; `state_dict(epoch, batch)` is the checkpoint (collective under DDP).
    """

    def __init__(self, config, runtime, model, optimizer, scheduler, steps_per_epoch, max_steps, out_dir,
                 step=0, history=None, on_step=None, run_id=None):
        self.config, self.runtime, self.model = config, runtime, model
        self.run_id = run_id  # recorded in each checkpoint: pruning deletes only this run's
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
                "rng": rngs, "config": self.config, "history": self.log.history, "world_size": self.runtime.world,
                RUN_ID: self.run_id}

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
                                        mal_weight=mal_weight(self.config, self.epoch), **criterion.epoch_weights(self.epoch))
            done = train_one_epoch(ddp, compute, _seek(loader, in_epoch), self.optimizer, self.runtime,
                                   scheduler=self.scheduler, steps=self.steps_per_epoch, start=in_epoch,
                                   grad_clip=o["grad_clip"], on_step=self.on_step)
            if done == self.steps_per_epoch:
                self.epoch += 1


def train(config: dict, resume: str | None = None, on_step=None, *, overwrite: bool = False,
          allow_changes: bool = False) -> dict:
    """Run pretraining as configured; returns a summary dict (steps, final losses, paths).

    resume: None (fresh), "auto" (the newest checkpoint in the output folder) or a checkpoint path.
    on_step: called with the global step after each step's checkpoint (tests use it).
    overwrite: a fresh run moves an earlier run in the output folder aside (else: RunFolderError).
    allow_changes: a resume may change the SAFE_ON_RESUME keys (else: RunFolderError listing them).
    """
    config = upgrade_config(config, "the config given to train()")  # a dict built by an earlier version's code
    runtime = setup_runtime(config["train"]["device"], config["train"]["amp"], config["train"]["channels_last"])
    with RunFolder.open(config, resume, runtime.rank, overwrite=overwrite, allow_changes=allow_changes) as folder:
        return _train(config, runtime, folder, on_step)


def _train(config: dict, runtime: Runtime, folder: RunFolder, on_step) -> dict:
    """train() in its run folder (locked, checked, config.json written)."""
    t_cfg, o_cfg = config["train"], config["optim"]
    out_dir = folder.out_dir
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
    loaded = folder.loaded
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
                      step=step, history=history, on_step=on_step, run_id=folder.run_id)
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
                        help="continue from the latest checkpoint in the output folder (fresh start if none); "
                             "the config must match the saved one")
    parser.add_argument("--resume-from", default=None, metavar="CKPT", help="continue from this checkpoint file")
    parser.add_argument("--resume-with-changes", action="store_true",
                        help="let a resume change the safe keys (" + ", ".join(SAFE_ON_RESUME) + ")")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an output folder that holds another run, moving that run aside to "
                             "OUTPUT.replaced-<time> (never deleted)")
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
    if args.overwrite and args.resume:
        print("mcl-fast pretrain: --overwrite starts a new run; it cannot go with --resume", file=sys.stderr)
        return 2
    try:
        summary = train(config, resume=args.resume_from or ("auto" if args.resume else None),
                        overwrite=args.overwrite, allow_changes=args.resume_with_changes)
    except ConfigError as e:
        print(f"mcl-fast pretrain: {e}", file=sys.stderr)
        return 2
    if dist.get_rank() == 0:
        print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("mcl-fast pretrain", run, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
