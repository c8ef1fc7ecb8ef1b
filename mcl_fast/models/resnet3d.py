"""Video ResNets: R3D-18, R(2+1)D-18 (Tran et al. 2018), the paper's R(2+1)D-50 and the 2D R2D-50.

Shapes: input (B, 3, T, H, W). The stem halves H and W (R3D/R(2+1)D-18: once; ResNet-50s: twice,
conv + max-pool); stages 2-4 halve H, W; the temporal strides depend on the variant.

- `r2plus1d_50`: the authors' released P3D-A ResNet-50. Stem 4x7x7 with temporal stride 4
  (16 frames -> 4 at once), then ResNet-50 bottlenecks whose 3x3 conv is 1x3x3 -> 3x1x1 at the
  same width with nothing between them, and no later temporal stride. 16x224^2 -> last stage
  (B, 2048, 4, 7, 7): 27.3 M parameters, 20.4 G multiply-adds (paper, Table 3). Because the
  spatial conv feeds the temporal one directly, an ImageNet ResNet-50 inflates into it exactly
  (models/inflate.py). Needs clip_len >= 4.
- `r2plus1d_50_t16`: the layout this project used first: 3x7x7 stem at temporal stride 1, a BN
  and ReLU between the 1x3x3 and 3x1x1 convs, temporal stride 2 in layer3 and layer4 (16 frames
  kept through the stem, layer1 and layer2): the same 27.3 M parameters at ~2.8x the multiply-adds.
- `r2d_50`: ResNet-50 on single frames (every kernel 1xkxk, no temporal stride): the paper's R2D
  of Table 1. Each frame goes through the 2D network on its own; pooling averages over frames.
"""
from __future__ import annotations

from torch import nn

from .base import VideoBackbone, init_weights


def _bn(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels)


class Conv2Plus1D(nn.Sequential):
    """A k x k x k conv factorised into 1 x k x k (spatial) -> BN -> ReLU -> k x 1 x 1 (temporal).

    `mid` is the width between the two: Tran et al. widen it so the parameter count matches the
    full 3D conv; the P3D-style split used by the paper's R(2+1)D-50 keeps it equal to `cout`.
    """

    def __init__(self, cin: int, cout: int, mid: int, stride: int = 1, t_stride: int | None = None):
        t_stride = stride if t_stride is None else t_stride
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            _bn(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), stride=(t_stride, 1, 1), padding=(1, 0, 0), bias=False),
        )


def conv3d_full(cin: int, cout: int, mid: int = 0, stride: int = 1, t_stride: int | None = None) -> nn.Conv3d:
    t_stride = stride if t_stride is None else t_stride
    return nn.Conv3d(cin, cout, 3, stride=(t_stride, stride, stride), padding=1, bias=False)


def conv2plus1d_tran(cin: int, cout: int, mid: int = 0, stride: int = 1, t_stride: int | None = None):
    # Tran et al.'s widening: mid = floor(3^3 cin cout / (3^2 cin + 3 cout)).
    mid = (cin * cout * 27) // (cin * 9 + 3 * cout)
    return Conv2Plus1D(cin, cout, mid, stride, t_stride)


def conv2plus1d_p3d(cin: int, cout: int, mid: int = 0, stride: int = 1, t_stride: int | None = None):
    return Conv2Plus1D(cin, cout, cout, stride, t_stride)


class SpatialTemporal(nn.Sequential):
    """The release's P3D-A split: 1 x 3 x 3 (spatial, carries the spatial stride) -> 3 x 1 x 1
    (temporal), same width, no BN or ReLU between (the block's BN and ReLU follow the pair).

    Children `0` (spatial) and `1` (temporal): a 2D 3x3 conv inflates into `0`, `1` starts as
    the identity.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, t_stride: int = 1):
        super().__init__(
            nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            nn.Conv3d(cout, cout, (3, 1, 1), stride=(t_stride, 1, 1), padding=(1, 0, 0), bias=False),
        )


def conv_p3d_a(cin: int, cout: int, mid: int = 0, stride: int = 1, t_stride: int | None = None):
    return SpatialTemporal(cin, cout, stride, 1 if t_stride is None else t_stride)


def conv_spatial(cin: int, cout: int, mid: int = 0, stride: int = 1, t_stride: int | None = None) -> nn.Conv3d:
    """1 x 3 x 3: a 2D 3x3 conv applied to every frame (R2D). No temporal stride."""
    if t_stride not in (None, 1):
        raise ValueError("a spatial-only conv has no temporal stride")
    return nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)


def _shortcut(cin: int, cout: int, stride: int, t_stride: int):
    """The projection shortcut (1x1x1 conv + BN) where a block changes shape, else None (identity)."""
    if stride == 1 and t_stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv3d(cin, cout, 1, stride=(t_stride, stride, stride), bias=False), _bn(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, conv, stride: int = 1, t_stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = conv(cin, width, stride=stride, t_stride=t_stride)
        self.bn1 = _bn(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(width, cout)
        self.bn2 = _bn(cout)
        self.downsample = _shortcut(cin, cout, stride, t_stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1x1 reduce -> BN -> ReLU -> `conv` (the 3x3 stage) -> BN -> ReLU -> 1x1x1 expand (x4) -> BN,
    plus the shortcut, then ReLU. Spatial stride on the 3x3 stage (torchvision's ResNet v1.5)."""

    expansion = 4

    def __init__(self, cin: int, width: int, conv, stride: int = 1, t_stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv3d(cin, width, 1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = conv(width, width, stride=stride, t_stride=t_stride)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv3d(width, cout, 1, bias=False)
        self.bn3 = _bn(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride, t_stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _stem_r2plus1d(t_stride: int) -> nn.Sequential:
    """Tran et al.'s factorised stem: 1x7x7 (45 channels) -> BN -> ReLU -> 3x1x1 -> BN -> ReLU."""
    return nn.Sequential(
        nn.Conv3d(3, 45, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False), _bn(45),
        nn.ReLU(inplace=True),
        nn.Conv3d(45, 64, (3, 1, 1), stride=(t_stride, 1, 1), padding=(1, 0, 0), bias=False),
        _bn(64), nn.ReLU(inplace=True))


def _stem_r3d(t_stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(3, 64, (3, 7, 7), stride=(t_stride, 2, 2), padding=(1, 3, 3), bias=False),
        _bn(64), nn.ReLU(inplace=True))


def _resnet50_stem(kernel_t: int, t_stride: int, pad_t: int) -> nn.Sequential:
    """ResNet-50's 7x7/2 conv with a temporal extent kernel_t, BN, ReLU, then the 3x3/2 spatial max-pool.
    Children: 0 conv, 1 BN, 2 ReLU, 3 max-pool (a 2D checkpoint's conv1/bn1 go to 0/1)."""
    return nn.Sequential(
        nn.Conv3d(3, 64, (kernel_t, 7, 7), stride=(t_stride, 2, 2), padding=(pad_t, 3, 3), bias=False),
        _bn(64), nn.ReLU(inplace=True),
        nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))


_STEMS = {
    "r2plus1d": _stem_r2plus1d,
    "r3d": _stem_r3d,
    # The first R(2+1)D-50 layout: ResNet-50's stem inflated to 3x7x7.
    "resnet50": lambda t_stride: _resnet50_stem(3, t_stride, 1),
    # The release's P3D-A stem: 4x7x7 at temporal stride 4 without temporal padding (16 -> 4 frames).
    "p3d_a": lambda t_stride: _resnet50_stem(4, t_stride, 0),
    # R2D: ResNet-50's stem on every frame.
    "resnet50_2d": lambda t_stride: _resnet50_stem(1, t_stride, 0),
}


class VideoResNet(VideoBackbone):
    """ResNet over clips. `block` BasicBlock/Bottleneck, `layers` blocks per stage, `conv` the 3x3 factory.

    `stem` one of `_STEMS`; `t_strides` is the temporal stride of the stem and of stages 2, 3, 4.
    """

    def __init__(self, block, layers, conv, stem: str, t_strides=(1, 2, 2, 2), name: str = "video_resnet"):
        super().__init__()
        self.name = name
        self.stem = _STEMS[stem](t_strides[0])
        self._cin = 64
        self.layer1 = self._make_layer(block, conv, 64, layers[0], 1, 1)
        self.layer2 = self._make_layer(block, conv, 128, layers[1], 2, t_strides[1])
        self.layer3 = self._make_layer(block, conv, 256, layers[2], 2, t_strides[2])
        self.layer4 = self._make_layer(block, conv, 512, layers[3], 2, t_strides[3])
        self.feature_dim = 512 * block.expansion
        last = f"layer4.{layers[3] - 1}"
        if block is Bottleneck:  # the last 1x1x1 conv, before its BN (the release's layer4.2.conv3)
            self.mal_layer = f"{last}.conv3"
        elif isinstance(self.layer4[-1].conv2, Conv2Plus1D):
            self.mal_layer = f"{last}.conv2.3"  # the temporal conv of the (2+1)D pair
        else:
            self.mal_layer = f"{last}.conv2"
        init_weights(self)
        # Zero-init the last BN of each residual branch: every block starts as the identity
        # (Goyal et al.), which steadies the first epochs of from-scratch contrastive training.
        # Not in the last block: its last BN follows the conv the MAL taps, and a zero scale there
        # makes d score / d feat exactly 0, so the normalised MAL maps blow the scale up (grad ~ 1/γ).
        for m in self.modules():
            if m is self.layer4[-1]:
                continue
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
        self._install_tap()

    def _make_layer(self, block, conv, width, blocks, stride, t_stride):
        layers = [block(self._cin, width, conv, stride, t_stride)]
        self._cin = width * block.expansion
        layers += [block(self._cin, width, conv) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x):
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def r3d_18() -> VideoResNet:
    return VideoResNet(BasicBlock, (2, 2, 2, 2), conv3d_full, "r3d", name="r3d_18")


def r2plus1d_18() -> VideoResNet:
    return VideoResNet(BasicBlock, (2, 2, 2, 2), conv2plus1d_tran, "r2plus1d", name="r2plus1d_18")


def r2plus1d_50() -> VideoResNet:
    """The paper's R(2+1)D-50 as the authors released it (P3D-A ResNet-50), see the module docstring.

    27.3 M parameters; 16x224^2 -> (B, 2048, 4, 7, 7); needs clip_len >= 4 (the stem's 4 frames).
    """
    return VideoResNet(Bottleneck, (3, 4, 6, 3), conv_p3d_a, "p3d_a", t_strides=(4, 1, 1, 1), name="r2plus1d_50")


def r2plus1d_50_t16() -> VideoResNet:
    """The first R(2+1)D-50 layout of this project (kept for comparison and old checkpoints).

    3x7x7 stem at temporal stride 1, BN + ReLU inside each (2+1)D pair, temporal stride 2 in
    layer3 and layer4: 27.3 M parameters, ~57 G multiply-adds at 16x224^2.
    """
    return VideoResNet(Bottleneck, (3, 4, 6, 3), conv2plus1d_p3d, "resnet50", t_strides=(1, 1, 2, 2),
                       name="r2plus1d_50_t16")


def r2d_50() -> VideoResNet:
    """R2D (Table 1): ResNet-50 on every frame independently; 23.5 M parameters, 4.1 G multiply-adds
    per 224^2 frame; input (B, 3, T, H, W) with any T (the paper: T = 1), last stage (B, 2048, T, H/32, W/32)."""
    net = VideoResNet(Bottleneck, (3, 4, 6, 3), conv_spatial, "resnet50_2d", t_strides=(1, 1, 1, 1), name="r2d_50")
    net.temporal = False
    return net


__all__ = ["VideoResNet", "BasicBlock", "Bottleneck", "Conv2Plus1D", "SpatialTemporal", "r3d_18", "r2plus1d_18",
           "r2plus1d_50", "r2plus1d_50_t16", "r2d_50"]
