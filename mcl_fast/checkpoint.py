"""Training checkpoints: atomic, the last `keep` retained, loaded with weights_only=True.

A checkpoint is `OUT/ckpt_<step:08d>.pt`, a dict of tensors and plain Python values only
(so `torch.load(weights_only=True)` reads it): model (both encoders, queue, pointer), optimizer,
scaler, scheduler, step, epoch, loader position, RNG states, config, history. It is written to a
temporary file in the same folder, fsynced and renamed over the final name, so a SIGKILL at any
moment leaves either the previous checkpoint or the new one, never a torn file.
"""
from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write

_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """torch.save to a temp file beside `path`, fsync, os.replace: readers never see a partial file."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / f"ckpt_{step:08d}.pt"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Finished checkpoints in `out_dir`, oldest first (temp files are ignored)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out_dir.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict, out_dir: str | os.PathLike, step: int, keep: int = 2) -> Path:
    """Write `state` as OUT/ckpt_<step>.pt atomically, then delete all but the newest `keep`."""
    path = atomic_torch_save(state, checkpoint_path(out_dir, step))
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        try:
            old.unlink()
        except FileNotFoundError:
            pass
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True; a bad file raises ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not an mcl_fast training checkpoint (no 'model' entry)")
    return state


def load_latest(out_dir: str | os.PathLike, map_location="cpu") -> tuple[Path, dict] | None:
    """The newest readable checkpoint in `out_dir` (older ones are tried if it cannot be read)."""
    for path in reversed(list_checkpoints(out_dir)):
        try:
            return path, load_checkpoint(path, map_location)
        except ValueError as e:
            warnings.warn(f"skipping unreadable checkpoint: {e}")
    return None


# -- RNG states as tensors and lists (weights_only-safe) ------------------------------------------
def rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, as lists and uint8 tensors."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state(),
        # The current device's only: a run may resume with a different number of visible GPUs.
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])


# -- evaluation -----------------------------------------------------------------------------------
def _strip(prefix: str, sd: dict) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def load_backbone(checkpoint_path: str | os.PathLike, map_location="cpu"):
    """The query encoder's backbone of a pretraining checkpoint: (nn.Module in eval mode, config dict).

    Accepts a training checkpoint (`ckpt_*.pt`) or a file holding {"model": state, "config": cfg}.
    """
    from .models import build_backbone

    state = load_checkpoint(checkpoint_path, map_location)
    config = state.get("config") or {}
    model_cfg = config.get("model", {})
    name = model_cfg.get("backbone")
    if not name:
        raise ValueError(f"{checkpoint_path}: its config names no backbone (config.model.backbone)")
    backbone = build_backbone(name, **model_cfg.get("backbone_kwargs", {}))
    sd = {k.replace("_orig_mod.", ""): v for k, v in state["model"].items()}
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    sd = _strip("encoder_q.backbone.", sd)
    if not sd:
        raise ValueError(f"{checkpoint_path}: no 'encoder_q.backbone.*' weights in its model state")
    missing, unexpected = backbone.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{checkpoint_path}: backbone {name} does not match the checkpoint "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return backbone.eval(), config
