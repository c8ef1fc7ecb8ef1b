"""What every backbone shares: pooled output, a named feature tap for the motion alignment loss.

A backbone maps a clip (B, 3, T, H, W) to pooled features (B, D). It names one conv layer,
`mal_layer` (the last conv of the last stage, before its BN, as the authors hook it), and
`forward(x, return_features=True)` also returns that layer's output (B, C, T', H', W'), the
tensor the motion alignment loss differentiates the query/key similarity against.

`temporal` is False for the 2D backbones (R2D, I2D): they see every frame on its own (all
kernels 1 x k x k, no temporal stride), so only the spatial (S) term of the MAL applies to them.
"""
from __future__ import annotations

import torch
from torch import nn


class VideoBackbone(nn.Module):
    """Base class: subclasses set `feature_dim`, `mal_layer` and implement `forward_features`."""

    feature_dim: int = 0
    mal_layer: str = ""
    temporal: bool = True  # False: a 2D network applied to each frame (no information crosses frames)

    def _install_tap(self) -> None:
        # A forward hook (not a special code path in every block) so the tapped layer can be any
        # submodule, named by its dotted path like `layer4.2.conv3`. The hook only stores a
        # reference while a forward with return_features=True is running.
        self._tap_active = False
        self._tapped: torch.Tensor | None = None
        # A bound method, not a closure: copy.deepcopy (MoCo's key encoder) rebinds it to the copy.
        self.get_submodule(self.mal_layer).register_forward_hook(self._tap_hook)

    def _tap_hook(self, _module, _inputs, output) -> None:
        if self._tap_active:
            self._tapped = output

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) last stage output
        raise NotImplementedError

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """x (B, 3, T, H, W) -> pooled (B, feature_dim) [, tapped feature map (B, C, T', H', W')]."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects (B, 3, T, H, W), got {tuple(x.shape)}")
        self._tap_active = return_features
        self._tapped = None
        try:
            out = self.forward_features(x)
        finally:
            self._tap_active = False
        pooled = out.mean(dim=(2, 3, 4))
        if not return_features:
            return pooled
        feat, self._tapped = self._tapped, None
        if feat is None:  # pragma: no cover - a wrong mal_layer name fails in _install_tap already
            raise RuntimeError(f"layer {self.mal_layer!r} did not run in the forward")
        return pooled, feat


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU), BN weight 1 / bias 0, as torchvision's video ResNets."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm3d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
