"""Backbones and heads. `build_backbone(name)`: input (B, 3, T, H, W) -> pooled features (B, D).

Every backbone has `feature_dim` (D), `mal_layer` (the dotted name of the conv the motion
alignment loss hooks) and `forward(x, return_features=True) -> (pooled, feature_map)`.
"""
from __future__ import annotations

from torch import nn

from .base import VideoBackbone, count_parameters
from .heads import MLPHead
from .resnet3d import VideoResNet, r2plus1d_18, r2plus1d_50, r3d_18
from .s3d import S3D
from .tiny import TinyNet

BACKBONES = {
    "r2plus1d_50": r2plus1d_50,
    "s3d": S3D,
    "r2plus1d_18": r2plus1d_18,
    "r3d_18": r3d_18,
    "tiny": TinyNet,
}


def build_backbone(name: str, **kwargs) -> VideoBackbone:
    """Build a backbone by name (`r2plus1d_50`, `s3d`, `r2plus1d_18`, `r3d_18`, `tiny`).

    kwargs go to the constructor (only `tiny` takes any: `width`, `norm`).
    """
    try:
        factory = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
    return factory(**kwargs)


def to_channels_last_3d(module: nn.Module) -> nn.Module:
    """Convert a backbone's conv weights to channels_last_3d (NDHWC), the layout cuDNN prefers."""
    import torch

    return module.to(memory_format=torch.channels_last_3d)


__all__ = ["build_backbone", "BACKBONES", "VideoBackbone", "MLPHead", "VideoResNet", "S3D", "TinyNet",
           "count_parameters", "to_channels_last_3d"]
