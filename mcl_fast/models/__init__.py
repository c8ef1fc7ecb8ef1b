"""Backbones and heads. `build_backbone(name)`: input (B, 3, T, H, W) -> pooled features (B, D).

Every backbone has `feature_dim` (D), `mal_layer` (the dotted name of the conv the motion
alignment loss hooks), `temporal` (False for the 2D ones) and
`forward(x, return_features=True) -> (pooled, feature_map)`. `mcl-fast models` lists them with
their parameters and multiply-adds (models/info.py); `build_backbone(name, init=PATH)` starts
one from a 2D ResNet-50 checkpoint (models/inflate.py).
"""
from __future__ import annotations

from torch import nn

from .base import VideoBackbone, count_parameters
from .heads import MLPHead
from .resnet3d import VideoResNet, r2d_50, r2plus1d_18, r2plus1d_50, r2plus1d_50_t16, r3d_18
from .s3d import S3D, i2d
from .tiny import TinyNet

BACKBONES = {
    "r2plus1d_50": r2plus1d_50,
    "r2plus1d_50_t16": r2plus1d_50_t16,
    "s3d": S3D,
    "r2d_50": r2d_50,
    "i2d": i2d,
    "r2plus1d_18": r2plus1d_18,
    "r3d_18": r3d_18,
    "tiny": TinyNet,
}


# The 2D backbones: they see every frame on its own (`temporal` False), so the paper uses them on
# single frames (clip_len 1) and only the S term of the motion alignment loss applies (Table 1).
FRAME_BACKBONES = frozenset({"r2d_50", "i2d"})


def build_backbone(name: str, init: str | None = None, **kwargs) -> VideoBackbone:
    """Build a backbone by name (see `BACKBONES`), optionally initialised from a 2D checkpoint.

    init: path of a 2D ResNet-50 checkpoint (torchvision, MoCo v1/v2, `encoder.`/`backbone.`
    prefixes) inflated into the backbone as the authors' release does (models/inflate.py); the
    report of used / skipped / missing keys goes to stderr (rank 0). kwargs go to the constructor
    (only `tiny` takes any: `width`, `norm`).
    """
    try:
        factory = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
    model = factory(**kwargs)
    if init:
        import sys

        import torch.distributed as tdist

        from .inflate import load_2d_checkpoint

        report = load_2d_checkpoint(model, init)
        model.init_report = report
        if not (tdist.is_available() and tdist.is_initialized() and tdist.get_rank() != 0):
            print(f"[mcl-fast] {report.summary()}", file=sys.stderr)
    return model


def check_mal_terms(backbone: str, terms, error: type[Exception] = ValueError) -> None:
    """Raise `error` if the motion alignment loss terms do not suit the backbone.

    A 2D backbone (R2D, I2D) sees single frames: its gradient maps have no time axis worth
    aligning, so only the S term applies (the paper, Table 1). Pass terms=() when the MAL is off.
    """
    extra = sorted(set(terms) - {"s"})
    if backbone in FRAME_BACKBONES and extra:
        raise error(f"model.backbone={backbone} is a 2D network (single frames): the motion alignment loss "
                    f"can use only its S term, not {extra}; set loss.terms=[\"s\"] or loss.mal=false")


def to_channels_last_3d(module: nn.Module) -> nn.Module:
    """Convert a backbone's conv weights to channels_last_3d (NDHWC), the layout cuDNN prefers."""
    import torch

    return module.to(memory_format=torch.channels_last_3d)


def check_model_config(model: dict, loss: dict, error: type[Exception] = ValueError) -> None:
    """Config-time checks of a training config's `model` section (raising `error`), before any weights exist:
    the MAL terms suit the backbone (`check_mal_terms`), and `model.init`, if set, fits the backbone
    (a dry run of the inflation on the meta device: the file is read, nothing is allocated for the
    network; the real load happens in `build_backbone`)."""
    check_mal_terms(model["backbone"], loss["terms"] if loss.get("mal", True) else (), error)
    if model.get("init"):
        import torch

        from .inflate import InitError, load_2d_checkpoint

        with torch.device("meta"):
            net = BACKBONES[model["backbone"]](**model.get("backbone_kwargs", {}))
        try:
            load_2d_checkpoint(net, model["init"])
        except InitError as e:
            raise error(str(e)) from None


__all__ = ["build_backbone", "BACKBONES", "FRAME_BACKBONES", "check_mal_terms", "check_model_config",
           "VideoBackbone", "MLPHead", "VideoResNet", "S3D", "TinyNet", "count_parameters", "to_channels_last_3d"]
