"""Initialise a backbone from a 2D checkpoint (a ResNet-50 from ImageNet / MoCo v1/v2, as the authors' release
does, or `TinyNet2d` from the image-level MoCo stage, mcl_fast.image_moco).

The paper starts from "MoCo on ImageNet"; the release inflates a MoCo v2 ResNet-50 into its P3D-A
ResNet-50 (`r2plus1d_50`). Each 2D conv weight (O, I, kh, kw) goes into one temporal slot of the
3D kernel (O, I, kt, kh, kw), the others zero: slot (kt - 1) // 2, the centre for odd kt and slot 1
of the 4x7x7 stem as the release has it (mode "centre", the default; INFLATE_MODES below also has
I3D's "repeat" and a temporal "difference", which `tiny` takes as its `inflate` argument).
The 3x1x1 temporal convs the 2D network lacks start as the identity (1 on the centre tap of
channel c -> c, 0 elsewhere). BN parameters and running
statistics are copied. With that, the inflated `r2plus1d_50` is the 2D network applied to frames
1, 5, 9, ... (the stem's slot at temporal stride 4; the identity temporal convs never mix in their
zero padding), so on a clip of identical frames it reproduces the 2D features, and `r2d_50` is the
2D network itself. The same rules inflate `TinyNet2d` into `tiny` (3x3 kernels in the centre of the
3x3x3 ones, BN copied; it has no temporal-only convs): in eval mode the inflated `tiny` is the 2D
network on every frame. A backbone names the key that locates it in a checkpoint (`init_anchor`,
default the ResNet's `layer1.0.conv1.weight`).

Checkpoint layouts read (torch.load with weights_only=True, never pickle):
- a torchvision ResNet-50 `state_dict` (keys `conv1.weight`, `layer1.0.conv1.weight`, ..., `fc.*`);
- MoCo v1/v2's `{"state_dict": ...}` with keys `module.encoder_q.*` (the query encoder is taken;
  `module.encoder_k.*` and the queue are skipped);
- a state dict whose keys carry a plain prefix such as `encoder.`, `backbone.` or `module.`,
  possibly inside `{"state_dict": ...}` or `{"model": ...}`.
The classifier / projection head (`fc.*`) is skipped. A checkpoint that fits nothing, or whose
weights do not fit the backbone's shapes, is refused with an error naming the file and the key.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

# The key every torchvision-style ResNet has; its prefix in a checkpoint tells where the network sits.
_ANCHOR = "layer1.0.conv1.weight"
_HEAD_PREFIXES = ("fc.",)
# Where several networks share a checkpoint (MoCo: encoder_q and encoder_k), the one to take.
_PREFERRED = ("encoder_q.", "base_encoder.")


class InitError(ValueError):
    """A checkpoint that cannot initialise the backbone (message names the file and the problem)."""


@dataclass
class InitReport:
    """What `load_2d_checkpoint` did. Keys of `used`, `skipped` are the checkpoint's (prefix removed for
    `used`); `inflated`, `missing` are the backbone's."""

    path: str
    backbone: str
    prefix: str = ""
    used: list[str] = field(default_factory=list)       # checkpoint weights loaded into the backbone
    inflated: list[str] = field(default_factory=list)   # temporal convs set to the identity
    skipped: list[str] = field(default_factory=list)    # heads and entries outside the chosen network
    missing: list[str] = field(default_factory=list)    # backbone entries left at their initialisation

    def summary(self) -> str:
        def first(keys):
            return f" ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})" if keys else ""

        return (f"model.init {self.path} -> {self.backbone}: prefix {self.prefix or '(none)'!r}; "
                f"used {len(self.used)}, temporal identity {len(self.inflated)}, "
                f"skipped {len(self.skipped)}{first(self.skipped)}, missing {len(self.missing)}{first(self.missing)}")

    def to_dict(self) -> dict:
        return dict(path=self.path, backbone=self.backbone, prefix=self.prefix, used=self.used,
                    inflated=self.inflated, skipped=self.skipped, missing=self.missing)


def _tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: a bare state dict, or the one under "state_dict" / "model"."""
    path = Path(path)
    if not path.is_file():
        raise InitError(f"model.init: {path} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or holding objects weights_only refuses
        raise InitError(f"model.init: {path} cannot be read as a weights-only torch checkpoint: {e}") from None
    if _tensor_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                tensors = {k: v for k, v in inner.items() if isinstance(v, torch.Tensor)}
                if tensors:
                    return tensors
        raise InitError(f"model.init: {path} holds no state dict (top-level keys: {sorted(obj)[:8]})")
    raise InitError(f"model.init: {path} holds a {type(obj).__name__}, not a state dict")


def find_prefix(keys, path="checkpoint", anchor: str = _ANCHOR) -> str:
    """The prefix in front of the network's keys (`""`, `module.encoder_q.`, `backbone.`, ...), found by
    the key `anchor` (default: a ResNet's)."""
    prefixes = sorted({k[: -len(anchor)] for k in keys if k.endswith(anchor)
                       and (len(k) == len(anchor) or k[-len(anchor) - 1] == ".")})
    if not prefixes:
        sample = sorted(keys)[:5]
        what = "2D ResNet" if anchor == _ANCHOR else "network of this backbone"
        raise InitError(f"model.init: {path} holds no {what} (no key ending in {anchor!r}; "
                        f"its first keys: {sample})")
    if len(prefixes) > 1:
        preferred = [p for p in prefixes if p.endswith(_PREFERRED)]
        if len(preferred) != 1:
            raise InitError(f"model.init: {path} holds several ResNets (prefixes {prefixes}); "
                            f"cannot tell which to load")
        return preferred[0]
    return prefixes[0]


def _backbone_key(key: str, targets) -> str | None:
    """The backbone's name for a torchvision ResNet key, or None if it has no such entry."""
    key = re.sub(r"^conv1\.", "stem.0.", key)  # the stem is a Sequential: conv, BN, ReLU, max-pool
    key = re.sub(r"^bn1\.", "stem.1.", key)
    if key in targets:
        return key
    spatial = re.sub(r"\.conv2\.weight$", ".conv2.0.weight", key)  # the 3x3 conv's spatial half
    return spatial if spatial in targets else None


# How a 2D kernel fills the temporal taps of a 3D one (`inflate_weight`'s `mode`). Every mode gives
# the 2D network's response on a clip of identical frames (away from the clip's temporal zero padding):
# - "centre": the kernel in slot (kt - 1) // 2, zeros elsewhere (the release): the inflated network
#   starts frame-wise and sees no motion until training fills the other taps;
# - "repeat": the kernel / kt in every slot (I3D's "repeat and divide"): a temporal average, motion
#   shows only as blur;
# - "difference" (odd kt): the kernel in the centre plus -W/2 in the slot before it and +W/2 in the
#   one after it, i.e. W applied to x_t + (x_{t+1} - x_{t-1}) / 2: a central temporal difference at
#   the frame term's scale, so a moving edge answers from the first step while a static one is the
#   2D response. It costs nothing (same shapes); the measurement for `tiny` is BENCHMARKS.md's
#   "The demo's recipe".
INFLATE_MODES = ("centre", "repeat", "difference")


def inflate_weight(w2d: torch.Tensor, shape, mode: str = "centre") -> torch.Tensor:
    """(O, I, kh, kw) -> (O, I, kt, kh, kw) by `mode` (INFLATE_MODES; default "centre": the 2D kernel
    in temporal slot (kt - 1) // 2, zeros elsewhere).

    Tensors of the target's shape (BN parameters, a 3D checkpoint) pass unchanged; anything else
    raises ValueError, as does "difference" on an even or single-tap kernel (no centre to difference around).
    """
    if mode not in INFLATE_MODES:
        raise ValueError(f"unknown inflation mode {mode!r}; choose one of {INFLATE_MODES}")
    shape = tuple(shape)
    if tuple(w2d.shape) == shape:
        return w2d
    if w2d.dim() != 4 or len(shape) != 5 or tuple(w2d.shape) != shape[:2] + shape[3:]:
        raise ValueError(f"shape {tuple(w2d.shape)} does not inflate to {shape}")
    kt, centre = shape[2], (shape[2] - 1) // 2
    if mode == "repeat":
        return (w2d / kt).unsqueeze(2).expand(shape).clone()
    out = w2d.new_zeros(shape)
    out[:, :, centre] = w2d
    if mode == "difference":
        if kt < 3 or kt % 2 == 0:
            raise ValueError(f"inflation mode 'difference' needs an odd temporal kernel of 3 or more taps, got {kt}")
        out[:, :, centre - 1] = -0.5 * w2d
        out[:, :, centre + 1] = 0.5 * w2d
    return out


def _temporal_identity(conv: nn.Conv3d) -> bool:
    """Set a k x 1 x 1 conv (k > 1, cin == cout, centre-padded) to the identity; False if it is not one."""
    kt, kh, kw = conv.kernel_size
    if (kh, kw) != (1, 1) or kt < 2 or conv.in_channels != conv.out_channels or conv.groups != 1:
        return False
    if conv.padding[0] != (kt - 1) // 2 or conv.dilation[0] != 1:
        return False
    with torch.no_grad():
        conv.weight.zero_()
        idx = torch.arange(conv.out_channels)
        conv.weight[idx, idx, (kt - 1) // 2, 0, 0] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()
    return True


def load_2d_checkpoint(backbone: nn.Module, path: str | os.PathLike, mode: str | None = None) -> InitReport:
    """Initialise `backbone` (in place) from the 2D checkpoint at `path` (a ResNet-50, or the 2D
    counterpart whose keys the backbone's `init_anchor` finds); returns the report.

    mode: how 2D kernels fill the temporal taps (INFLATE_MODES); None takes the backbone's
    `init_inflate` attribute (`tiny`'s `inflate` argument, i.e. model.backbone_kwargs.inflate),
    default "centre".

    Raises InitError when the file cannot be read, holds no ResNet, fits none of the backbone's
    entries, or holds a weight whose shape does not fit (another depth or width) or a backbone
    weight the model has no place for.
    """
    name = getattr(backbone, "name", type(backbone).__name__)
    mode = mode or getattr(backbone, "init_inflate", "centre")
    if mode not in INFLATE_MODES:
        raise InitError(f"model.init: unknown inflation mode {mode!r} for {name}; choose one of {INFLATE_MODES}")
    sd = read_state_dict(path)
    prefix = find_prefix(sd.keys(), path, getattr(backbone, "init_anchor", _ANCHOR))
    report = InitReport(path=str(path), backbone=name, prefix=prefix)
    targets = backbone.state_dict()
    new_state, unplaced = {}, []
    for key, value in sd.items():
        if not key.startswith(prefix):
            report.skipped.append(key)  # another network (MoCo's key encoder), the queue, ...
            continue
        short = key[len(prefix):]
        if short.startswith(_HEAD_PREFIXES):
            report.skipped.append(key)
            continue
        target = _backbone_key(short, targets)
        if target is None:
            unplaced.append(short)
            continue
        try:
            new_state[target] = inflate_weight(value, targets[target].shape, mode).to(targets[target].dtype)
        except ValueError as e:
            raise InitError(f"model.init: {path}: {short} {tuple(value.shape)} does not fit {name}'s {target} "
                            f"{tuple(targets[target].shape)} ({e}): not a checkpoint of this network") from None
        report.used.append(short)
    if not report.used:
        raise InitError(f"model.init: {path} fits nothing in {name}: none of its {len(sd)} entries "
                        f"(prefix {prefix!r}) names one of the backbone's; expected its 2D counterpart "
                        f"(a ResNet-50 with torchvision's names: conv1, bn1, layer1.0.conv1, ...)")
    if unplaced:
        raise InitError(f"model.init: {path} holds {len(unplaced)} network entries {name} has no place for "
                        f"(first: {unplaced[:3]}): a different architecture or depth")
    with torch.no_grad():
        for key, value in new_state.items():
            targets[key].copy_(value)  # state_dict() tensors share storage with the parameters/buffers
    loaded = set(new_state)
    for mod_name, module in backbone.named_modules():
        key = f"{mod_name}.weight"
        if isinstance(module, nn.Conv3d) and key not in loaded and _temporal_identity(module):
            report.inflated.append(key)
            loaded.add(key)
    report.missing = [k for k in targets if k not in loaded and not k.endswith("num_batches_tracked")]
    return report


__all__ = ["INFLATE_MODES", "InitError", "InitReport", "load_2d_checkpoint", "inflate_weight", "read_state_dict",
           "find_prefix"]
