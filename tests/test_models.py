"""Backbones: parameter counts (paper Table 3), shapes, the MAL feature tap, channels_last_3d."""
import copy

import pytest
import torch
from torch import nn

from mcl_fast.models import BACKBONES, build_backbone, count_parameters


@pytest.mark.parametrize("name, millions", [("r2plus1d_50", 27.3), ("s3d", 7.9)])
def test_parameter_counts_match_the_paper(name, millions):
    with torch.device("meta"):  # counting only: no memory, no init cost
        model = build_backbone(name)
    n = count_parameters(model) / 1e6
    assert abs(n - millions) / millions < 0.03, f"{name}: {n:.2f} M parameters, paper {millions} M"


@pytest.mark.parametrize("name, dim, clip, tapped", [
    ("tiny", 32, (4, 32), (32, 4, 8, 8)),
    ("r3d_18", 512, (4, 32), (512, 1, 2, 2)),
    ("r2plus1d_18", 512, (4, 32), (512, 1, 2, 2)),
    ("s3d", 1024, (8, 64), (1024, 1, 2, 2)),
    ("r2plus1d_50", 2048, (4, 32), (2048, 1, 1, 1)),
])
def test_forward_shapes_and_feature_tap(name, dim, clip, tapped):
    torch.manual_seed(0)
    # The big ones run on the meta device: shapes and the tap only, no weights to initialise.
    device = "cpu" if name == "tiny" else "meta"
    with torch.device(device):
        model = build_backbone(name).eval()
    assert model.feature_dim == dim
    assert set(BACKBONES) >= {name}
    layer = model.get_submodule(model.mal_layer)
    x = torch.randn(2, 3, clip[0], clip[1], clip[1], device=device)
    seen = {}
    handle = layer.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    with torch.no_grad():
        pooled, feat = model(x, return_features=True)
        plain = model(x)
    handle.remove()
    assert pooled.shape == (2, dim) and feat.shape == (2, *tapped)
    assert feat is seen["out"], "return_features must hand back the mal_layer's own output"
    assert plain.shape == pooled.shape
    if device == "cpu":
        torch.testing.assert_close(pooled, plain)
    if name != "s3d":  # S3D taps its last Inception block (four parallel convs, concatenated)
        assert isinstance(layer, nn.Conv3d)


def test_r2plus1d_50_last_stage_is_the_authors_shape():
    # 16 x 112 x 112 -> (2048, 4, 4, 4): time / 4 (as 16 x 224 -> 4 x 7 x 7), space / 32
    with torch.device("meta"):
        model = build_backbone("r2plus1d_50")
        _, feat = model(torch.empty(1, 3, 16, 112, 112), return_features=True)
    assert model.mal_layer == "layer4.2.conv3"
    assert tuple(feat.shape) == (1, 2048, 4, 4, 4)


def test_deepcopy_taps_its_own_layer():
    model = build_backbone("tiny").eval()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        _, f_model = model(x, return_features=True)
        _, f_twin = twin(x, return_features=True)
    assert not torch.allclose(f_model, f_twin)
    assert model._tapped is None and twin._tapped is None


def test_channels_last_3d_gives_the_same_output():
    torch.manual_seed(0)
    model = build_backbone("tiny", width=8).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last_3d)
        out = model(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_bad_input_and_name():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet9000")
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        build_backbone("tiny")(torch.randn(2, 4, 16, 16))


@pytest.mark.parametrize("name", ["r2plus1d_18", "r3d_18"])
def test_the_mal_tap_has_a_gradient_at_initialisation_and_training_keeps_it_tame(name):
    """Zero-initialising the BN right after the tapped conv made d score / d feat exactly 0, and the
    normalised MAL maps then grew that BN's scale as 1/gamma (to ~100 in a few steps)."""
    from mcl_fast.losses import motion_alignment_loss

    torch.manual_seed(0)
    net = build_backbone(name)
    x = torch.randn(2, 3, 4, 32, 32)
    motion = torch.rand(2, 4, 8, 8)
    pooled, feat = net(x, return_features=True)
    (g,) = torch.autograd.grad(pooled.pow(2).sum(), feat)
    assert g.abs().sum() > 0
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9)
    last_bn = [m for m in net.layer4[-1].modules() if isinstance(m, torch.nn.BatchNorm3d)][-1]
    for _ in range(3):
        pooled, feat = net(x, return_features=True)
        q = torch.nn.functional.normalize(pooled, dim=1)
        k = torch.nn.functional.normalize(pooled.detach().flip(0), dim=1)
        loss = motion_alignment_loss(feat, (q * k).sum(-1), motion)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and last_bn.weight.abs().max() < 5
