"""What a pretrained MoCo network does on held-out clips: the MAL per term and the InfoNCE.

The ablation's outcome columns (SVM, retrieval) say how good the features are; these say why
(issue 22, item 3): whether the network's gradient maps follow the clips' motion (the MAL v3's
S, T and ST terms, as `mcl_fast.losses` computes them in training) and how well it tells the
videos of a batch apart (the InfoNCE against chance, ln of the number of logits per query).

Everything runs on the real pieces: `train.build_model` / `build_criterion` / `build_loader`, the
store's motion maps as targets. The network is in evaluation mode (BN running statistics), its
forward skips the momentum update and the enqueue, and nothing is stepped: the MAL's maps are
gradients, so autograd runs, but no weight or buffer changes.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch


def held_out_batches(config: dict, videos, *, seed: int = 0, epochs: int = 1, sampling: str = "motion") -> list[dict]:
    """The training loader of `config` over `videos` (paths in config's store), pinned by `seed`:
    `epochs` passes of {"views": [query, key] (B, 3, T, H, W) float32, "motion": (B, T', H', W')}
    CPU tensors (copies: the loader reuses its buffers). The same arguments give the same clips.
    sampling: the loader's sampling mode; "motion" picks clips and crops where the motion is."""
    from ..train import build_loader

    cfg = copy.deepcopy(config)
    cfg["data"].update(videos=[str(v) for v in videos], sampling=sampling, num_workers=0)
    cfg["train"]["seed"] = int(seed)
    loader = build_loader(cfg, torch.device("cpu"), 0, 1)
    batches = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            batches.append({"views": [v.clone() for v in batch["views"][:2]], "motion": batch["motion"].clone()})
    if not batches:
        raise ValueError(f"no held-out batch: {len(videos)} videos for batches of {cfg['data']['batch_size']}")
    return batches


def batch_mechanism(model, criterion, batch: dict) -> dict[str, float]:
    """One batch's InfoNCE ("nce"), its chance level ("chance": ln of the logits per query) and the
    MAL ("mal" and "mal_<term>"), as `criterion` computes them in training; no momentum update,
    no enqueue, in whatever mode the model is."""
    from ..losses import info_nce

    device = next(model.parameters()).device
    query, key = (v.to(device) for v in batch["views"][:2])
    out = model(query, key, return_features=True, update=False)
    mal, parts = criterion.alignment(out, batch["motion"].to(device))
    return {"nce": info_nce(out["logits"]).item(), "chance": math.log(out["logits"].shape[1]), "mal": mal.item(),
            **{f"mal_{name}": value.item() for name, value in parts.items()}}


def held_out_mechanism(model, criterion, batches: list[dict]) -> dict[str, float]:
    """Means of `batch_mechanism` over `batches` with the model in evaluation mode (its mode is
    restored after), plus "below_chance" = chance - nce (> 0: the batch's videos are told apart).
    The global RNG is left as it was (the key encoder's shuffle draws from it)."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            rows = [batch_mechanism(model, criterion, b) for b in batches]
    finally:
        model.train(was_training)
    means = {name: float(np.mean([r[name] for r in rows])) for name in rows[0]}
    means["below_chance"] = means["chance"] - means["nce"]
    return means


def pretrained_model(checkpoint):
    """The MoCo model (query and key encoders, queue) of a pretraining checkpoint, built by its own config."""
    from ..checkpoint import load_checkpoint
    from ..train import build_model

    state = load_checkpoint(checkpoint)
    model = build_model(state["config"])
    model.load_state_dict(state["model"])
    return model


def initial_model(config: dict, seed: int):
    """The model a pretraining run of `config` with train.seed `seed` starts from (the trainer seeds
    torch with it, then builds the model)."""
    from ..train import build_model

    torch.manual_seed(int(seed))
    return build_model(config)


def mal_criterion(config: dict):
    """The training criterion of `config` on a CPU or fp32 runtime (no fp16 gradient scaling)."""
    from ..engine import Runtime
    from ..train import build_criterion

    return build_criterion(config, Runtime(torch.device("cpu")))
