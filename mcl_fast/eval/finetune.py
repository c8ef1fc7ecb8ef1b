"""Supervised fine-tuning (paper sec. 4.2, Table 4): the pretrained backbone + a linear layer.

Training: one random clip per video and epoch from the loaders' fine-tuning mode
(mcl_fast.data.evaluation.finetune_loader: clip_len frames at stride, uniform start, the box a
random crop_size² crop of the frames resized to a short side of crop·256/224 keeps, a random
horizontal flip, ImageNet normalisation); cross-entropy, SGD with momentum. The loop, the
per-iteration warm-up + cosine schedule, mixed precision, channels-last and DDP are
pretraining's (`mcl_fast.engine`): `train_one_epoch` with `classification_loss`. Testing:
num_test_clips clips spread uniformly over each video (the loaders' evaluation mode, centre
crop), the softmax averaged over them, top-1. Distributed with torchrun
like pretraining (NCCL on GPU, gloo on CPU); amp "auto" is bf16 on GPU, fp32 on CPU.

The result is written as a checkpoint that `mcl_fast.checkpoint.load_backbone` reads (the
backbone under ``encoder_q.backbone.``), plus the classifier under ``head`` and the class names.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import InitVar, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .features import ClipSettings


class VideoClassifier(nn.Module):
    """backbone (B, 3, T, H, W) -> (B, D), then dropout and a linear layer -> (B, num_classes) logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        return self.fc(self.dropout(self.backbone(x)))


@dataclass
class FinetuneConfig:
    """Fine-tuning's settings, checked at construction as pretraining's config is (mcl_fast.config):
    ConfigError naming the field, what it must be and what it is."""
    epochs: int = 30
    batch_size: int = 8  # per process
    lr: float = 0.05  # at batch_size × world; scaled linearly with the global batch
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    dropout: float = 0.5
    num_test_clips: int = 10
    amp: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU), "bf16", "fp16" (with a GradScaler) or "off"
    num_workers: int = 0
    seed: int = 0
    # An earlier version's option (decoded training videos kept in memory), accepted and ignored
    # so that the configs and scripts that set it still run: the loaders decode each clip's frames.
    cache_videos: InitVar[bool | None] = None

    def __post_init__(self, cache_videos):
        from ..config import BOOL, check_dataclass, check_value, dataclass_schema, integer, number, one_of
        from ..engine import AMP_MODES

        if cache_videos is not None:
            check_value("cache_videos", BOOL, cache_videos, "fine-tuning config")
            warnings.warn("fine-tuning config: cache_videos is no longer an option and is ignored (the training "
                          "clips come from the loaders, which decode only each clip's frames); leave it out",
                          UserWarning, stacklevel=3)

        names = [f.name for f in fields(self)]
        check_dataclass(self, dataclass_schema(type(self), names, refined={  # the ranges annotations cannot say
            "epochs": integer(1), "batch_size": integer(1), "lr": number(0, open_low=True),
            "momentum": number(0, 1), "weight_decay": number(0), "warmup_epochs": number(0),
            "dropout": number(0, 1, open_high=True), "num_test_clips": integer(1), "amp": one_of(*AMP_MODES),
            "num_workers": integer(0), "seed": integer(0)}), "fine-tuning config")


def classification_loss(model, batch: dict) -> dict:
    """`compute_loss` of engine.train_one_epoch for a classifier on a finetune_loader batch
    (views[0] (B, 3, T, S, S), label (B,)): cross-entropy (float32) and top-1 (%)."""
    logits = model(batch["views"][0])
    loss = nn.functional.cross_entropy(logits.float(), batch["label"])
    return {"loss": loss, "top1": (logits.detach().argmax(1) == batch["label"]).float().mean() * 100}


def classifier_probabilities(model: nn.Module, paths, settings: ClipSettings, num_classes: int, *,
                             batch_size: int = 40, num_workers: int = 0, device="cpu",
                             progress: bool = True) -> tuple[np.ndarray, dict[int, str]]:
    """(probs (N, num_classes) float32, {index: reason} of the videos that could not be read).

    A video's probabilities are the softmax averaged over its settings.num_clips centre-cropped
    clips (the loaders' evaluation mode); the rows of failed videos are zero. A failed video is
    reported on stderr; one bad file neither stops the test nor kills a DataLoader worker.
    """
    from tqdm import tqdm

    from .features import batch_clips, clip_loader, close_loader

    model.eval()
    probs = np.zeros((len(paths), num_classes), np.float32)
    seen = np.zeros(len(paths), bool)
    failed: dict[int, str] = {}
    use_cuda = torch.device(device).type == "cuda"
    todo = list(range(len(paths)))
    with torch.inference_mode(), tqdm(total=len(paths), desc="test", unit="video", disable=not progress) as bar:
        while todo:  # once, unless the loader ran out of readable replacements (a list of bad files)
            loader = clip_loader([paths[i] for i in todo], settings,
                                 videos_per_batch=max(1, batch_size // settings.num_clips), num_workers=num_workers)
            try:
                for batch in loader:
                    clips, local = batch_clips(batch)
                    b, k = clips.shape[:2]
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_cuda):
                        logits = model(clips.flatten(0, 1).to(device))
                    if logits.shape[-1] != num_classes:
                        raise ValueError(f"the model gives {logits.shape[-1]} logits, expected {num_classes} classes")
                    index = np.asarray(todo)[local.numpy()]
                    probs[index] = logits.float().softmax(-1).reshape(b, k, -1).mean(1).cpu().numpy()
                    bar.update(int((~seen[np.unique(index)]).sum()))
                    seen[index] = True
            except RuntimeError:
                if not loader.failures:
                    raise
            finally:
                close_loader(loader)
            new = {i: loader.failures[str(paths[i])] for i in todo if str(paths[i]) in loader.failures}
            failed.update(new)
            left = [i for i in todo if not seen[i] and i not in failed]
            if left and not new and len(left) == len(todo):
                raise RuntimeError(f"the evaluation loader read none of {len(left)} videos (first: {paths[left[0]]})")
            todo = left
    for i, reason in sorted(failed.items()):
        print(f"warning: skipping test video {paths[i]}: {reason}", file=sys.stderr)
    return probs, failed


def evaluate_classifier(model: nn.Module, paths, labels, settings: ClipSettings, *, batch_size: int = 40,
                        num_workers: int = 0, device="cpu", progress: bool = True,
                        num_classes: int | None = None) -> dict:
    """Top-1 with the softmax averaged over settings.num_clips uniform centre-cropped clips per video.

    Under torchrun (mcl_fast.dist initialised) every rank evaluates the strided shard
    paths[rank::world] and the per-video probabilities are all-gathered, so all ranks return
    the same result and none idles in a barrier. A video that fails to decode is reported on
    stderr, listed in "skipped" and left out of top-1 (its prediction is -1).
    num_classes: the model's output width (default: model.fc.out_features).

    Returns {"top1", "predictions" (N,) list, "skipped" list of paths, "num_evaluated"}.
    """
    from .. import dist

    labels = np.asarray(labels, np.int64)
    if len(labels) != len(paths):
        raise ValueError(f"{len(paths)} test videos but {len(labels)} labels")
    num_classes = num_classes or getattr(getattr(model, "fc", None), "out_features", None)
    if num_classes is None:
        raise ValueError("num_classes is needed for a model without an `fc` layer")
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = list(range(rank, len(paths), world))
    probs, failed = classifier_probabilities(model, [paths[i] for i in mine], settings, num_classes,
                                             batch_size=batch_size, num_workers=num_workers, device=device,
                                             progress=progress and rank == 0)
    # Rank r's row j is video r + j * world; the last column marks a decoded video (padding rows
    # and failed videos hold 0), so every rank sends the same (rows, num_classes + 1) shape.
    rows = -(-len(paths) // world)
    local = np.zeros((rows, num_classes + 1), np.float32)
    local[:len(mine), :num_classes] = probs
    local[:len(mine), num_classes] = [0.0 if j in failed else 1.0 for j in range(len(mine))]
    gathered = dist.concat_all_gather(torch.from_numpy(local).to(device)).cpu().numpy()
    gathered = gathered.reshape(world, rows, num_classes + 1).transpose(1, 0, 2).reshape(rows * world, -1)
    gathered = gathered[:len(paths)]  # row r + j * world is video r + j * world: input order again
    valid = gathered[:, num_classes] > 0.5
    if not valid.any():
        raise ValueError(f"none of the {len(paths)} test videos could be decoded (first: {paths[0]})")
    pred = np.where(valid, gathered[:, :num_classes].argmax(1), -1)
    return {"top1": float(np.mean(pred[valid] == labels[valid])), "predictions": pred.tolist(),
            "skipped": [str(paths[i]) for i in np.flatnonzero(~valid)], "num_evaluated": int(valid.sum())}


def finetune(backbone: nn.Module, backbone_config: dict, train_split, test_split, videos_root, *,
             train_settings: ClipSettings, test_settings: ClipSettings | None = None,
             config: FinetuneConfig | None = None, out: str | Path | None = None, device: str = "auto",
             progress: bool = True) -> dict:
    """Fine-tune `backbone` on train_split, test on test_split; returns {"top1", "history", ...}.

    Under torchrun every process trains on its shard (the loader shards by rank); rank 0 writes `out`
    (a checkpoint, see the module docstring) before the test, every rank tests a shard of the
    test videos (evaluate_classifier), and `out` is rewritten with the test top-1.
    """
    from tqdm import tqdm

    from .. import dist
    from ..checkpoint import atomic_torch_save
    from ..engine import MetricWindow, WarmupCosine, check_finite, setup_runtime, train_one_epoch

    cfg = config or FinetuneConfig()
    test_settings = test_settings or ClipSettings(num_clips=cfg.num_test_clips, clip_len=train_settings.clip_len,
                                                  stride=train_settings.stride, crop_size=train_settings.crop_size,
                                                  short_side=train_settings.short_side)
    runtime = setup_runtime(device, cfg.amp)
    dev, rank, world = runtime.device, runtime.rank, runtime.world
    torch.manual_seed(cfg.seed)
    root = Path(videos_root)
    num_classes = len(train_split.classes)
    model, train_model = runtime.prepare(VideoClassifier(backbone, num_classes, cfg.dropout))

    loader = train_loader(train_split, root, train_settings, cfg, pin_memory=dev.type == "cuda")
    lr = cfg.lr * cfg.batch_size * world / 8  # linear scaling from the reference batch of 8
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = WarmupCosine(opt, lr, cfg.epochs * len(loader), int(cfg.warmup_epochs * len(loader)))
    history = []
    try:
        for epoch in range(cfg.epochs):
            loader.set_epoch(epoch)
            train_model.train()
            window = MetricWindow()
            with tqdm(total=len(loader), desc=f"finetune {epoch + 1}/{cfg.epochs}", unit="batch",
                      disable=not progress or rank != 0) as bar:
                def on_step(info, bar=bar):
                    window.update(info.metrics, info.samples, info.data_s)
                    bar.update(1)

                train_one_epoch(train_model, classification_loss, loader, opt, runtime, scheduler=scheduler,
                                steps=len(loader), on_step=on_step)
                means = window.means()  # over the epoch's steps and the ranks
                check_finite(means, f"in fine-tuning epoch {epoch + 1} (lower --lr)")
                bar.set_postfix(loss=f"{means['loss']:.3f}", top1=f"{means['top1']:.1f}")
            history.append({"epoch": epoch + 1, "loss": means["loss"], "train_top1": means["top1"] / 100})
    finally:
        loader.close()  # its worker processes now: the test starts its own

    result = {"history": history, "num_classes": num_classes, "world_size": world}
    state = {
        "model": {f"encoder_q.backbone.{k}": v.detach().cpu() for k, v in model.backbone.state_dict().items()},
        "head": {k: v.detach().cpu() for k, v in model.fc.state_dict().items()},
        "classes": list(train_split.classes),
        "config": backbone_config,
        "finetune": {"top1": None, "epochs": cfg.epochs, "lr": lr, "history": history},
    }
    if rank == 0 and out is not None:
        # Written before testing: a slow or failing test must never cost the fine-tuned weights.
        result["checkpoint"] = str(atomic_torch_save(state, out))
    for buf in model.buffers():  # BN running statistics: rank 0's (the saved ones) everywhere
        dist.broadcast(buf, 0)
    test_paths = [root / p for p in test_split.paths]
    result.update(evaluate_classifier(model, test_paths, test_split.labels, test_settings, device=dev,
                                      num_workers=cfg.num_workers, progress=progress, num_classes=num_classes))
    if rank == 0 and out is not None:
        state["finetune"].update(top1=result["top1"], skipped=result["skipped"])
        atomic_torch_save(state, out)  # the same weights, now with their test result
    dist.barrier()
    return result


def train_loader(split, videos_root, settings: ClipSettings, cfg: FinetuneConfig, pin_memory: bool = False):
    """The loaders' fine-tuning mode (data.evaluation.finetune_loader) over a split's videos, with
    its labels, the clip settings' shape and the config's batch size, workers and seed."""
    from ..data.evaluation import finetune_loader

    root = Path(videos_root)
    return finetune_loader([root / p for p in split.paths], split.labels, clip_len=settings.clip_len,
                           stride=settings.stride, crop_size=settings.crop_size, resize_to=settings.resize_to,
                           batch_size=cfg.batch_size, seed=cfg.seed, num_workers=cfg.num_workers,
                           pin_memory=pin_memory)


def load_classifier(checkpoint_path, map_location="cpu"):
    """(backbone, head nn.Linear or None, classes list or None, config) of any mcl_fast checkpoint."""
    from ..checkpoint import load_backbone, load_checkpoint

    backbone, config = load_backbone(checkpoint_path, map_location)
    state = load_checkpoint(checkpoint_path, map_location)
    if "head" not in state:
        return backbone, None, None, config
    weight = state["head"]["weight"]
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict(state["head"])
    return backbone, head.eval(), state.get("classes"), config
