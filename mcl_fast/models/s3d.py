"""S3D (Xie et al. 2018, "Rethinking spatiotemporal feature learning"), without gating, and I2D.

S3D: the separable Inception-V1 used by CoCLR and the paper's Table 3 (7.9 M parameters, 1024-d
features). Input (B, 3, T, H, W); for 16x224x224 the last stage is (B, 1024, 2, 7, 7).

I2D (the paper's Table 1): the same Inception-V1 (TF-slim's, with BN, which S3D separates) in 2D:
every kernel 1 x k x k, no temporal conv, pooling or stride, so each frame goes through the 2D
network on its own; for T x 224^2 the last stage is (B, 1024, T, 7, 7).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import VideoBackbone, init_weights


class BasicConv3d(nn.Sequential):
    """conv (no bias) -> BN (eps 1e-3, as the TF original) -> ReLU."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__(nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
                         nn.BatchNorm3d(cout, eps=1e-3), nn.ReLU(inplace=True))


class SepConv3d(nn.Sequential):
    """k x k x k separated into 1 x k x k then k x 1 x 1, each with BN and ReLU.

    temporal=False keeps the 1 x k x k part only (I2D)."""

    def __init__(self, cin, cout, k, stride=1, padding=0, temporal=True):
        layers = [BasicConv3d(cin, cout, (1, k, k), (1, stride, stride), (0, padding, padding))]
        if temporal:
            layers.append(BasicConv3d(cout, cout, (k, 1, 1), (stride, 1, 1), (padding, 0, 0)))
        super().__init__(*layers)


def _pool(k, stride, padding, temporal):
    """k^3 max-pool, or 1 x k x k (spatial only) when temporal is False."""
    if temporal:
        return nn.MaxPool3d(k, stride=stride, padding=padding)
    return nn.MaxPool3d((1, k, k), stride=(1, stride, stride), padding=(0, padding, padding))


class Mixed(nn.Module):
    """Inception block: 1x1 | 1x1 -> sep3 | 1x1 -> sep3 | maxpool3 -> 1x1, concatenated on channels."""

    def __init__(self, cin, b0, b1, b2, b3, temporal=True):
        super().__init__()
        self.branch0 = BasicConv3d(cin, b0, 1)
        self.branch1 = nn.Sequential(BasicConv3d(cin, b1[0], 1), SepConv3d(b1[0], b1[1], 3, padding=1,
                                                                           temporal=temporal))
        self.branch2 = nn.Sequential(BasicConv3d(cin, b2[0], 1), SepConv3d(b2[0], b2[1], 3, padding=1,
                                                                           temporal=temporal))
        self.branch3 = nn.Sequential(_pool(3, 1, 1, temporal), BasicConv3d(cin, b3, 1))
        self.out_channels = b0 + b1[1] + b2[1] + b3

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class S3D(VideoBackbone):
    """S3D features up to Mixed_5c. The MAL taps Mixed_5c's output (the concatenated branches):
    S3D's last stage ends in four parallel convs, not one, so the block output is its "last conv".

    temporal=False builds I2D: the same network without any temporal conv, pooling or stride.
    """

    def __init__(self, temporal: bool = True):
        super().__init__()
        t = temporal
        self.features = nn.Sequential(
            SepConv3d(3, 64, 7, stride=2, padding=3, temporal=t),           # Conv_1a
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),   # MaxPool_2a
            BasicConv3d(64, 64, 1),                                         # Conv_2b
            SepConv3d(64, 192, 3, padding=1, temporal=t),                   # Conv_2c
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),   # MaxPool_3a
            Mixed(192, 64, (96, 128), (16, 32), 32, t),                     # Mixed_3b
            Mixed(256, 128, (128, 192), (32, 96), 64, t),                   # Mixed_3c
            _pool(3, 2, 1, t),                                              # MaxPool_4a
            Mixed(480, 192, (96, 208), (16, 48), 64, t),                    # Mixed_4b
            Mixed(512, 160, (112, 224), (24, 64), 64, t),                   # Mixed_4c
            Mixed(512, 128, (128, 256), (24, 64), 64, t),                   # Mixed_4d
            Mixed(512, 112, (144, 288), (32, 64), 64, t),                   # Mixed_4e
            Mixed(528, 256, (160, 320), (32, 128), 128, t),                 # Mixed_4f
            _pool(2, 2, 0, t),                                              # MaxPool_5a
            Mixed(832, 256, (160, 320), (32, 128), 128, t),                 # Mixed_5b
            Mixed(832, 384, (192, 384), (48, 128), 128, t),                 # Mixed_5c
        )
        self.feature_dim = 1024
        self.mal_layer = "features.15"
        self.name = "s3d" if temporal else "i2d"
        self.temporal = temporal
        init_weights(self)
        self._install_tap()

    def forward_features(self, x):
        return self.features(x)


def i2d() -> S3D:
    """I2D (Table 1): Inception-V1 on every frame; input (B, 3, T, H, W), any T (the paper: T = 1)."""
    return S3D(temporal=False)
