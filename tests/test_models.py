"""Backbones: parameters and multiply-adds (paper Table 3), shapes, the MAL feature tap, channels_last_3d,
the 2D backbones (R2D, I2D) and the `mcl-fast models` command."""
import copy
import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mcl_fast.models import BACKBONES, FRAME_BACKBONES, build_backbone, check_mal_terms, count_parameters
from mcl_fast.models.resnet3d import Bottleneck


def _macs(model, clip) -> int:
    """Multiply-adds of one forward (FlopCounterMode counts a multiply-add as 2 FLOPs)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 3, *clip, device="meta"))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name, millions, gmacs, clip", [
    ("r2plus1d_50", 27.3, 20.4, (16, 224, 224)),  # Table 3: R(2+1)D
    ("s3d", 7.9, 18.4, (16, 224, 224)),           # Table 3: S3D
    ("r2d_50", 23.5, 4.12, (1, 224, 224)),        # Table 3: R-50 on one frame
])
def test_parameters_and_multiply_adds_match_table_3(name, millions, gmacs, clip):
    with torch.device("meta"):  # counting only: no memory, no init cost
        model = build_backbone(name).eval()
    n = count_parameters(model) / 1e6
    assert abs(n - millions) / millions < 0.02, f"{name}: {n:.2f} M parameters, paper {millions} M"
    g = _macs(model, clip) / 1e9
    assert abs(g - gmacs) / gmacs < 0.05, f"{name}: {g:.2f} G multiply-adds, paper {gmacs} G"


def test_r2plus1d_50_is_the_release_p3d_a_layout_and_the_old_one_is_kept():
    with torch.device("meta"):
        new, old = build_backbone("r2plus1d_50").eval(), build_backbone("r2plus1d_50_t16").eval()
        _, feat = new(torch.empty(2, 3, 16, 224, 224), return_features=True)
    assert tuple(feat.shape) == (2, 2048, 4, 7, 7)  # the last stage the MAL works on
    stem = new.stem[0]
    assert (stem.kernel_size, stem.stride, stem.padding) == ((4, 7, 7), (4, 2, 2), (0, 3, 3))
    assert isinstance(new.stem[3], nn.MaxPool3d)
    for block in new.modules():
        if isinstance(block, Bottleneck):
            spatial, temporal = block.conv2  # nothing between the two convs
            assert len(block.conv2) == 2 and spatial.kernel_size == (1, 3, 3) and temporal.kernel_size == (3, 1, 1)
            assert temporal.stride == (1, 1, 1) and block.conv1.stride[0] == block.conv3.stride[0] == 1
            assert isinstance(block.bn2, nn.BatchNorm3d)
    # Same parameters to 0.01 %; the old layout keeps 16 frames through layer2: ~2.8x the multiply-adds.
    assert abs(count_parameters(new) - count_parameters(old)) / count_parameters(new) < 1e-3
    ratio = _macs(old, (16, 224, 224)) / _macs(new, (16, 224, 224))
    assert 2.6 < ratio < 3.0


@pytest.mark.parametrize("name, dim, clip, tapped", [
    ("tiny", 32, (4, 32), (32, 4, 8, 8)),
    ("r3d_18", 512, (4, 32), (512, 1, 2, 2)),
    ("r2plus1d_18", 512, (4, 32), (512, 1, 2, 2)),
    ("s3d", 1024, (8, 64), (1024, 1, 2, 2)),
    ("r2plus1d_50", 2048, (4, 32), (2048, 1, 1, 1)),
    ("r2plus1d_50_t16", 2048, (4, 32), (2048, 1, 1, 1)),
    ("r2d_50", 2048, (3, 32), (2048, 3, 1, 1)),
    ("i2d", 1024, (3, 32), (1024, 3, 1, 1)),
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
    if name not in ("s3d", "i2d"):  # they tap their last Inception block (four parallel convs, concatenated)
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


@pytest.mark.parametrize("name", ["r2plus1d_50", "r2plus1d_50_t16", "r2d_50"])
def test_zero_init_of_every_residual_branch_but_the_one_the_mal_taps(name):
    net = build_backbone(name)
    assert net.mal_layer == "layer4.2.conv3"
    blocks = [m for m in net.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16 and net.get_submodule(net.mal_layer) is blocks[-1].conv3
    assert all(not b.bn3.weight.detach().any() for b in blocks[:-1])
    assert bool((blocks[-1].bn3.weight.detach() == 1).all())  # the BN right after the tapped conv


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


@pytest.mark.parametrize("name", sorted(FRAME_BACKBONES))
def test_2d_backbones_see_each_frame_on_its_own(name):
    """R2D / I2D: changing frame 1 changes only time step 1 of the feature map; frame 0 alone gives
    the same features as inside a clip (no temporal kernel, pooling or stride anywhere)."""
    torch.manual_seed(0)
    net = build_backbone(name).eval()
    assert net.temporal is False
    assert all(m.kernel_size[0] == 1 and m.stride[0] == 1 for m in net.modules() if isinstance(m, nn.Conv3d))
    assert all((m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]) == 1
               for m in net.modules() if isinstance(m, nn.MaxPool3d))
    x = torch.randn(1, 3, 3, 64, 64)
    y = x.clone()
    y[:, :, 1] = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fx, fy, f0 = net.forward_features(x), net.forward_features(y), net.forward_features(x[:, :, :1])
    torch.testing.assert_close(fx[:, :, [0, 2]], fy[:, :, [0, 2]])
    assert not torch.allclose(fx[:, :, 1], fy[:, :, 1])
    # alone or in a clip: the same up to float32 rounding (another conv algorithm for another shape)
    assert float((f0[:, :, 0] - fx[:, :, 0]).abs().max() / fx.abs().max()) < 1e-5


def test_frame_backbones_are_the_2d_ones_and_refuse_temporal_mal_terms():
    with torch.device("meta"):
        assert {n for n in BACKBONES if not build_backbone(n).temporal} == set(FRAME_BACKBONES) == {"r2d_50", "i2d"}
    check_mal_terms("r2d_50", ["s"])
    check_mal_terms("r2plus1d_50", ["s", "t", "st"])
    check_mal_terms("i2d", ())  # MAL off
    for terms in (["s", "t", "st"], ["st"], ["t"]):
        with pytest.raises(ValueError, match=r"i2d is a 2D network .* only its S term"):
            check_mal_terms("i2d", terms)
    from mcl_fast.train import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"r2d_50 is a 2D network .* not \['st', 't'\]"):
        load_config("demo_cpu", ["model.backbone=r2d_50", "data.loader=synthetic"])
    c = load_config("demo_cpu", ["model.backbone=r2d_50", "data.loader=synthetic", "loss.mal=false"])
    assert c["loss"]["terms"] == ["s", "t", "st"]  # the MAL is off: its terms do not matter
    for name, backbone in (("ucf101_r2d", "r2d_50"), ("ucf101_i2d", "i2d")):  # Table 1's 2D settings
        c = load_config(name)
        assert c["model"]["backbone"] == backbone and c["loss"]["terms"] == ["s"] and c["data"]["clip_len"] == 1


def test_models_command_prints_the_table_and_json(capsys):
    from mcl_fast.cli import main

    assert main(["models", "r2plus1d_50", "s3d", "i2d"]) == 0
    out = capsys.readouterr().out
    assert "| r2plus1d_50 | 16×224×224 | 27.31 | 20.23 | 27.3 M / 20.4 G | 2048×4×7×7 | `layer4.2.conv3` |" in out
    assert "| i2d | 1×224×224 |" in out
    assert main(["models", "--json", "--size", "112", "--clip-len", "8", "r2plus1d_50", "r2d_50"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["r2plus1d_50", "r2d_50"]
    assert rows[0]["input"] == [8, 112, 112] and rows[0]["last_stage"] == [2048, 2, 4, 4]
    assert rows[1]["mal_shape"] == [2048, 8, 4, 4] and rows[1]["temporal"] is False
    assert rows[0]["macs"] == pytest.approx(20.23e9 / 8, rel=0.1)  # half the frames, ~a quarter the pixels
    assert main(["models", "resnet9000"]) == 2
    assert main(["models", "--clip-len", "2", "r2plus1d_50"]) == 2  # the 4-frame stem needs 4 frames
    assert "does not take a 2x224^2 clip" in capsys.readouterr().err


@pytest.fixture(scope="module")
def action_store(tmp_path_factory):
    """A tiny labelled action dataset (4 classes x 3 videos of 24 frames, 48x64) and its motion store."""
    from mcl_fast.eval.actions import make_action_dataset
    from mcl_fast.motion.prepare import prepare

    root = tmp_path_factory.mktemp("actions2d")
    train_csv, test_csv = make_action_dataset(root / "videos", videos_per_class=3, num_frames=24, height=48, width=64,
                                              object_size=10, progress=False)
    prepare(str(root / "videos"), str(root / "store"), flow="farneback", size=48, workers=0, progress=False)
    return root, train_csv, test_csv


@pytest.mark.parametrize("name", ["r2d_50", "i2d"])
def test_2d_backbones_pretrain_with_mal_s_and_evaluate(name, action_store, tmp_path):
    """Table 1's setting on CPU at toy sizes: single-frame views from the loader, MoCo + the S term of
    the MAL for two steps, then the linear probe and retrieval on the checkpoint."""
    from mcl_fast.data import TorchVideoLoader
    from mcl_fast.eval.features import ClipSettings
    from mcl_fast.eval.linear import evaluate_checkpoint
    from mcl_fast.motion.store import MotionStore
    from mcl_fast.train import load_config, train

    root, train_csv, test_csv = action_store
    store = MotionStore(root / "store")
    batch = next(iter(TorchVideoLoader(list(store.videos), store, 4, clip_len=1, size=64, num_workers=0)))
    assert [tuple(v.shape) for v in batch["views"]] == [(4, 3, 1, 64, 64)] * 2  # query, key: one frame per view
    assert batch["motion"].shape == (4, 1, 4, 4)
    over = [f"model.backbone={name}", "model.hidden=32", "model.dim=16", "model.queue_size=16",
            "data.loader=torch", f"data.store={root / 'store'}", "data.videos=null", "data.batch_size=4", "data.clip_len=1",
            "data.size=64", "data.num_workers=0", 'loss.terms=["s"]', "optim.epochs=1",
            "train.max_steps=2", "train.tensorboard=false", "train.progress=false", "train.plot=false",
            "checkpoint.every_steps=0", f"output={tmp_path / 'pretrain'}"]
    summary = train(load_config("demo_cpu", over))
    assert summary["step"] == 2 and set(summary) >= {"nce", "mal_s"} and not {"mal_t", "mal_st"} & set(summary)
    assert 0 < summary["mal_s"] < 4 and summary["nce"] > 0
    ckpt = sorted((tmp_path / "pretrain").glob("ckpt_*.pt"))[-1]
    result = evaluate_checkpoint(ckpt, train_csv, test_csv, root / "videos", progress=False, fc_epochs=5, ks=(1,),
                                 settings=ClipSettings(num_clips=2, clip_len=1, crop_size=64))
    assert (result["num_train"], result["num_test"]) == (8, 4)
    assert 0 <= result["svm_top1"] <= 1 and 0 <= result["fc_top1"] <= 1 and 0 <= result["recall"][1] <= 1
