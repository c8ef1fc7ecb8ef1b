"""A tiny 3D CNN for tests and the CPU demo: three convs, ~20 k parameters, and its 2D counterpart.

Input (B, 3, T, H, W) -> (B, 32, T, H/4, W/4) -> pooled (B, 32). `norm=False` builds it without
BatchNorm, which makes a distributed run exactly equal to one process on the global batch.

`TinyNet2d` is the same network on images, (B, 3, H, W) -> (B, 32), with the same parameter names
(`features.0.weight`, ...): the image-level MoCo stage (mcl_fast.image_moco) trains it, and
models/inflate.py turns its checkpoint into a `TinyNet` (by default 2D kernels in the centre temporal
slot, which then computes the 2D network on every frame; `inflate="difference"` or `"repeat"`
fill the side taps too: inflate.INFLATE_MODES).
"""
from __future__ import annotations

from torch import nn

from .base import VideoBackbone, init_weights


def tiny_layers(width: int, norm: bool, dims: int) -> list[nn.Module]:
    """The three conv-BN-ReLU blocks, 3D (`dims=3`, no temporal stride) or 2D (`dims=2`)."""
    conv_cls, bn_cls = (nn.Conv3d, nn.BatchNorm3d) if dims == 3 else (nn.Conv2d, nn.BatchNorm2d)

    def block(cin, cout, stride):
        conv = conv_cls(cin, cout, 3, stride=(1, stride, stride) if dims == 3 else stride, padding=1, bias=not norm)
        # Not in-place: without BN the ReLU would overwrite the tapped conv output.
        return [conv, bn_cls(cout) if norm else nn.Identity(), nn.ReLU()]

    return [*block(3, width // 2, 2), *block(width // 2, width, 2), *block(width, 2 * width, 1)]


class TinyNet(VideoBackbone):
    # The key whose prefix locates this network in a 2D checkpoint (models/inflate.py).
    init_anchor = "features.0.weight"

    def __init__(self, width: int = 16, norm: bool = True, inflate: str = "centre"):
        super().__init__()
        # How model.init fills the temporal taps from a TinyNet2d checkpoint (models/inflate.py,
        # INFLATE_MODES); only read by load_2d_checkpoint, no effect on a randomly initialised net.
        self.init_inflate = inflate
        self.features = nn.Sequential(*tiny_layers(width, norm, dims=3))
        self.feature_dim = 2 * width
        self.mal_layer = "features.6"  # the last conv, before its BN
        self.name = "tiny"
        init_weights(self)
        self._install_tap()

    def forward_features(self, x):
        return self.features(x)


class TinyNet2d(nn.Module):
    """`TinyNet` on images: (B, 3, H, W) -> pooled (B, 2 width); `forward_features` (B, 2 width, H/4, W/4)."""

    def __init__(self, width: int = 16, norm: bool = True):
        super().__init__()
        self.features = nn.Sequential(*tiny_layers(width, norm, dims=2))
        self.feature_dim = 2 * width
        self.name = "tiny2d"
        for m in self.modules():  # as models.base.init_weights does for the 3D convs
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x):
        return self.features(x)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"TinyNet2d expects (B, 3, H, W), got {tuple(x.shape)}")
        return self.features(x).mean(dim=(2, 3))
