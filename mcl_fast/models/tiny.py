"""A tiny 3D CNN for tests and the CPU demo: three convs, ~20 k parameters.

Input (B, 3, T, H, W) -> (B, 32, T, H/4, W/4) -> pooled (B, 32). `norm=False` builds it without
BatchNorm, which makes a distributed run exactly equal to one process on the global batch.
"""
from __future__ import annotations

from torch import nn

from .base import VideoBackbone, init_weights


class TinyNet(VideoBackbone):
    def __init__(self, width: int = 16, norm: bool = True):
        super().__init__()

        def block(cin, cout, stride):
            conv = nn.Conv3d(cin, cout, 3, stride=(1, stride, stride), padding=1, bias=not norm)
            # Not in-place: without BN the ReLU would overwrite the tapped conv output.
            return [conv, nn.BatchNorm3d(cout) if norm else nn.Identity(), nn.ReLU()]

        self.features = nn.Sequential(*block(3, width // 2, 2), *block(width // 2, width, 2),
                                      *block(width, 2 * width, 1))
        self.feature_dim = 2 * width
        self.mal_layer = "features.6"  # the last conv, before its BN
        self.name = "tiny"
        init_weights(self)
        self._install_tap()

    def forward_features(self, x):
        return self.features(x)
