"""Training checkpoints: atomic, checksummed, pruned per run, loaded with weights_only=True.

A checkpoint is `OUT/ckpt_<step:08d>.pt`, a dict of tensors and plain Python values only
(so `torch.load(weights_only=True)` reads it): model (both encoders, queue, pointer), optimizer,
scaler, scheduler, step, epoch, loader position, RNG states, config, history, the run's id. It is
written to a temporary file in the same folder, fsynced and renamed over the final name, so a
SIGKILL at any moment leaves either the previous checkpoint or the new one, never a torn file.

Every checkpoint carries `checksums` (mcl_fast._checksum, xxh3_64): one per tensor, keyed by its
path in the state (``model/encoder_q.backbone.stem.0.weight``, ``optimizer/state/0/momentum_buffer``),
and one per top-level entry over its plain values and its tensors' dtypes and shapes. torch.load
does not check the zip's CRCs, so without them a flipped byte in a tensor loads silently;
`load_checkpoint` checks them on every load and `verify_checkpoint` lists what does not match.
Pruning deletes only checkpoints whose `run_id` is the current run's: a folder never loses the
checkpoints of another run.
"""
from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ._checksum import digest, matches
from ._io import atomic_write, os_error_in

_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
CHECKSUMS = "checksums"  # the state's entry: {"tensors": {path: digest}, "values": {entry: digest}}
RUN_ID = "run_id"        # the state's entry: the id of the run that wrote it (pruning keys on it)


class CheckpointDamaged(ValueError):
    """A checkpoint whose contents do not match the checksums written with it."""


# -- checksums ------------------------------------------------------------------------------------
def _leaves(obj, path: tuple = ()):
    """(path, leaf) of every tensor and plain value in nested dicts, lists and tuples, in a fixed order."""
    if isinstance(obj, dict):
        for key in sorted(obj, key=str):  # sorted: the digest must not depend on insertion order
            yield from _leaves(obj[key], (*path, key))
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _leaves(item, (*path, i))
    else:
        yield path, obj


def key_path(path: tuple) -> str:
    """A tensor's name in messages: its keys joined by '/' (model keys keep their dots)."""
    return "/".join(str(p) for p in path)


def tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """A tensor's raw bytes as a uint8 array (any dtype, bf16 included; a copy only when on GPU or strided)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def _described(state: dict):
    """Per top-level entry: its (path, tensor) pairs and the text its values digest covers (plain
    values, and each tensor's dtype and shape in its place)."""
    for entry in sorted((k for k in state if k != CHECKSUMS), key=str):
        tensors, described = [], []
        for path, leaf in _leaves(state[entry], (entry,)):
            if isinstance(leaf, torch.Tensor):
                tensors.append((key_path(path), leaf))
                leaf = ("tensor", str(leaf.dtype), tuple(leaf.shape))
            described.append(repr((path, leaf)))
        yield str(entry), tensors, "\n".join(described).encode("utf-8")


def state_checksums(state: dict) -> dict:
    """{"tensors": {path: digest of its bytes}, "values": {entry: digest of its plain values,
    dtypes and shapes}} of a checkpoint state (its own checksums entry left out)."""
    tensors, values = {}, {}
    for entry, entry_tensors, text in _described(state):
        tensors.update((name, digest(tensor_bytes(t))) for name, t in entry_tensors)
        values[entry] = digest(text)
    return {"tensors": tensors, "values": values}


def with_checksums(state: dict) -> dict:
    """A shallow copy of `state` with its checksums entry (computed now)."""
    out = {k: v for k, v in state.items() if k != CHECKSUMS}
    out[CHECKSUMS] = state_checksums(out)
    return out


def has_checksums(state: dict) -> bool:
    return isinstance(state.get(CHECKSUMS), dict)


def checksum_problems(state: dict, path) -> list[str]:
    """What in `state` does not match the checksums written with it, one line each naming the
    file and the tensor or entry ([] when all match; a state without checksums also gives [])."""
    if not has_checksums(state):
        return []
    recorded_tensors = state[CHECKSUMS].get("tensors", {})
    recorded_values = state[CHECKSUMS].get("values", {})
    problems, seen = [], set()
    for entry, tensors, text in _described(state):
        for name, t in tensors:
            seen.add(name)
            if name not in recorded_tensors:
                problems.append(f"{path}: tensor {name!r} has no checksum")
            elif not matches(tensor_bytes(t), recorded_tensors[name]):
                problems.append(f"{path}: tensor {name!r} does not match its checksum (the file is damaged)")
        if entry not in recorded_values or not matches(text, recorded_values[entry]):
            problems.append(f"{path}: entry {entry!r} (its plain values, dtypes or shapes) does not match its "
                            "checksum (the file is damaged)")
    problems += [f"{path}: tensor {name!r} is missing" for name in recorded_tensors if name not in seen]
    problems += [f"{path}: entry {entry!r} is missing" for entry in recorded_values if entry not in state]
    return problems


# -- writing --------------------------------------------------------------------------------------
def atomic_torch_save(state: dict, path: str | os.PathLike) -> Path:
    """torch.save(state + its checksums) to a temp file beside `path`, fsync, os.replace: readers
    never see a partial file. A failed write (disk full, ...) leaves no file and raises an OSError
    naming `path` (the system's error names no file)."""
    state = with_checksums(state)
    try:
        return atomic_write(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as e:
        cause = os_error_in(e)
        if cause is None or cause.filename:
            raise
        raise OSError(cause.errno, cause.strerror or os.strerror(cause.errno), str(path)) from e


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / f"ckpt_{step:08d}.pt"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Finished checkpoints in `out_dir`, oldest first (temp files are ignored)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out_dir.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def run_id_of(path: str | os.PathLike) -> str | None:
    """The run id a checkpoint records (None if it has none or cannot be read). Cheap: the tensors
    are memory-mapped, not read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    return state.get(RUN_ID) if isinstance(state, dict) else None


def save_checkpoint(state: dict, out_dir: str | os.PathLike, step: int, keep: int = 2) -> Path:
    """Write `state` as OUT/ckpt_<step>.pt atomically, then delete all but the newest `keep` of the
    checkpoints of its run (state["run_id"]; a state without one prunes nothing). Checkpoints of
    other runs, of earlier versions (no run id) and unreadable files are never deleted."""
    path = atomic_torch_save(state, checkpoint_path(out_dir, step))
    run_id = state.get(RUN_ID)
    if not run_id or keep < 1:
        return path
    ours = [p for p in list_checkpoints(out_dir) if p == path or run_id_of(p) == run_id]
    for old in ours[:-keep]:
        old.unlink(missing_ok=True)
    return path


# -- reading --------------------------------------------------------------------------------------
def _read(path: Path, map_location) -> dict:
    """torch.load(weights_only=True) of an mcl_fast checkpoint; ValueError naming the file otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not an mcl_fast training checkpoint (no 'model' entry)")
    return state


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True and check it against its checksums.

    A file that cannot be read raises ValueError, one whose contents do not match CheckpointDamaged
    (a ValueError), each naming the file (and the damaged tensors). A checkpoint of an earlier
    version, without checksums, loads with a warning."""
    path = Path(path)
    state = _read(path, map_location)
    if not has_checksums(state):
        warnings.warn(f"{path} has no checksums (written by an earlier mcl_fast): loaded without verifying it")
        return state
    problems = checksum_problems(state, path)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointDamaged(f"checkpoint {path} is damaged: "
                                + "; ".join(p.removeprefix(f"{path}: ") for p in problems[:3]) + more)
    return state


def verify_checkpoint(path: str | os.PathLike) -> list[str]:
    """Every problem of a checkpoint file, one line each naming the file (and tensor): unreadable,
    not a checkpoint, a tensor or entry that does not match its checksum, or no checksums at all
    (an earlier version's file, which cannot be verified). [] when the file is sound."""
    path = Path(path)
    try:
        state = _read(path, "cpu")
    except (OSError, ValueError) as e:
        return [str(e)]
    if not has_checksums(state):
        return [f"{path}: has no checksums (written by an earlier mcl_fast): its contents cannot be verified"]
    return checksum_problems(state, path)


def load_latest(out_dir: str | os.PathLike, map_location="cpu", run_id: str | None = None) -> tuple[Path, dict] | None:
    """The newest sound checkpoint in `out_dir` (older ones are tried if it cannot be read or is
    damaged, with a warning); with `run_id`, only that run's checkpoints (and earlier versions'
    without a run id) count."""
    for path in reversed(list_checkpoints(out_dir)):
        try:
            state = load_checkpoint(path, map_location)
        except ValueError as e:
            warnings.warn(f"skipping unreadable checkpoint: {e}")
            continue
        if run_id and state.get(RUN_ID) not in (None, run_id):
            warnings.warn(f"skipping {path}: it belongs to run {state.get(RUN_ID)}, not to this folder's {run_id}")
            continue
        return path, state
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
