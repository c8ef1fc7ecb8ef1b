"""The warm start (issue 22, item 1): image-level MoCo on frames -> TinyNet2d -> inflated into `tiny`."""
from __future__ import annotations

import pytest
import torch

from mcl_fast.image_moco import random_crops, train_image_moco
from mcl_fast.models import build_backbone
from mcl_fast.models.inflate import InitError, load_2d_checkpoint
from mcl_fast.models.tiny import TinyNet, TinyNet2d


def random_2d_checkpoint(path, width: int = 16, seed: int = 0):
    """A TinyNet2d with random weights and random BN statistics, saved as the image stage saves it."""
    torch.manual_seed(seed)
    net = TinyNet2d(width=width)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    torch.save({"state_dict": net.state_dict(), "history": [1.0]}, path)
    return net.eval()


def test_inflated_tiny_reproduces_the_2d_network_on_a_static_clip(tmp_path):
    net2d = random_2d_checkpoint(tmp_path / "tiny2d.pt")
    net3d = build_backbone("tiny", init=str(tmp_path / "tiny2d.pt")).eval()
    assert net3d.init_report.missing == [] and len(net3d.init_report.used) == len(net2d.state_dict())
    frame = torch.randn(2, 3, 32, 40)
    static = frame.unsqueeze(2).expand(-1, -1, 6, -1, -1).contiguous()  # (B, 3, T, H, W), T identical frames
    with torch.no_grad():
        pooled3d, tap3d = net3d(static, return_features=True)
        torch.testing.assert_close(pooled3d, net2d(frame), rtol=1e-5, atol=1e-5)
        maps3d, ref = net3d.forward_features(static), net2d.forward_features(frame)
        tap2d = net2d.features[:7](frame)  # the MAL's tap: the last conv's output
        for t in range(static.shape[2]):  # every frame's map is the 2D network's, the tap too
            torch.testing.assert_close(maps3d[:, :, t], ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(tap3d[:, :, t], tap2d, rtol=1e-5, atol=1e-5)


def test_random_tiny_does_not_reproduce_it(tmp_path):
    """The property above is the inflation's, not a coincidence of the architecture."""
    net2d = random_2d_checkpoint(tmp_path / "tiny2d.pt")
    torch.manual_seed(1)
    net3d = TinyNet().eval()
    frame = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        assert not torch.allclose(net3d(frame.unsqueeze(2).expand(-1, -1, 4, -1, -1)), net2d(frame), atol=1e-3)


@pytest.mark.parametrize("mode", ["repeat", "difference"])
def test_every_inflation_mode_reproduces_the_2d_network_on_a_static_clip_away_from_its_ends(tmp_path, mode):
    """The side taps of "repeat" and "difference" cancel or sum to the 2D kernel on identical frames;
    only the frames within the receptive field (3 convs of 3 taps: 3 frames) of the clip's temporal
    zero padding differ."""
    net2d = random_2d_checkpoint(tmp_path / "tiny2d.pt")
    net3d = build_backbone("tiny", init=str(tmp_path / "tiny2d.pt"), inflate=mode).eval()
    frame = torch.randn(2, 3, 32, 40)
    static = frame.unsqueeze(2).expand(-1, -1, 10, -1, -1).contiguous()
    with torch.no_grad():
        maps3d, ref = net3d.forward_features(static), net2d.forward_features(frame)
    for t in range(3, 7):
        torch.testing.assert_close(maps3d[:, :, t], ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(maps3d[:, :, 0], ref, atol=1e-3)  # the padded end: the test can tell


def test_the_difference_inflation_sees_motion_the_centre_one_does_not(tmp_path):
    """On a moving clip the centre inflation is still the 2D network frame by frame (blind to the
    order of frames); "difference" answers to the change between frames from the first step."""
    net2d = random_2d_checkpoint(tmp_path / "tiny2d.pt")
    centre = build_backbone("tiny", init=str(tmp_path / "tiny2d.pt")).eval()
    diff = build_backbone("tiny", init=str(tmp_path / "tiny2d.pt"), inflate="difference").eval()
    frame = torch.randn(1, 3, 32, 40)
    moving = torch.stack([torch.roll(frame, 2 * t, dims=3) for t in range(10)], dim=2)  # a pan, 2 px per frame
    with torch.no_grad():
        per_frame = torch.stack([net2d.forward_features(moving[:, :, t]) for t in range(10)], dim=2)
        torch.testing.assert_close(centre.forward_features(moving), per_frame, rtol=1e-5, atol=1e-5)
        d = diff.forward_features(moving)[:, :, 3:7]
        assert (d - per_frame[:, :, 3:7]).abs().mean() > 0.1 * per_frame[:, :, 3:7].abs().mean()


def test_an_unknown_inflation_mode_is_refused_by_name(tmp_path):
    random_2d_checkpoint(tmp_path / "tiny2d.pt")
    with pytest.raises(InitError, match="unknown inflation mode 'middle'"):
        build_backbone("tiny", init=str(tmp_path / "tiny2d.pt"), inflate="middle")


def test_a_checkpoint_of_another_width_or_network_is_refused(tmp_path):
    random_2d_checkpoint(tmp_path / "wide.pt", width=32)
    with pytest.raises(InitError, match="does not fit tiny"):
        load_2d_checkpoint(TinyNet(width=16), tmp_path / "wide.pt")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)},
               tmp_path / "resnet.pt")
    with pytest.raises(InitError, match="no network of this backbone"):
        load_2d_checkpoint(TinyNet(), tmp_path / "resnet.pt")


def test_the_pretrain_config_takes_the_2d_checkpoint(tmp_path):
    from mcl_fast.train import build_model, load_config

    net2d = random_2d_checkpoint(tmp_path / "tiny2d.pt")
    model = build_model(load_config("demo_cpu", [f"model.init={tmp_path / 'tiny2d.pt'}"]))
    torch.testing.assert_close(model.encoder_q.backbone.features[0].weight[:, :, 1], net2d.features[0].weight)
    assert model.encoder_q.backbone.features[0].weight[:, :, [0, 2]].abs().max() == 0


def smooth_images(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uint8: random smooth colour images (instances a 2D MoCo can tell apart)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    return (255 * torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear")).to(torch.uint8)


def test_random_crops_are_normalised_views_of_the_image():
    images = smooth_images(4)
    crops = random_crops(images, 24, torch.Generator().manual_seed(0), scale=(1.0, 1.0))
    assert crops.shape == (4, 3, 24, 24) and crops.dtype == torch.float32
    # Full-image "crops" (scale 1) are the image resized and flipped at most: same mean colour.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3)
    torch.testing.assert_close(crops.mean((2, 3)) * std + mean, images.float().mean((2, 3)) / 255, atol=0.02, rtol=0)


def test_the_image_stage_reduces_its_loss_and_resumes(tmp_path, monkeypatch):
    frames = smooth_images(64)
    kw = dict(steps=40, batch_size=32, size=24, lr=0.1, save_every=10, progress=False)
    full = train_image_moco(frames, tmp_path / "full.pt", **kw)["history"]
    chance = torch.log(torch.tensor(32.0)).item()
    assert full[0] == pytest.approx(chance, abs=0.3)  # starts at chance, ln(batch)
    assert sum(full[-8:]) / 8 < chance - 1.0, [round(v, 2) for v in full[::4]]

    # Killed after 25 steps: the rerun resumes from the partial of step 20 and ends where the full run did.
    import mcl_fast.image_moco as image_moco

    calls = {"n": 0}
    original = image_moco.random_crops

    def dies_at_step_25(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2 * 25:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(image_moco, "random_crops", dies_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        train_image_moco(frames, tmp_path / "resumed.pt", **kw)
    assert (tmp_path / "resumed.pt.partial").is_file() and not (tmp_path / "resumed.pt").exists()
    monkeypatch.setattr(image_moco, "random_crops", original)
    resumed = train_image_moco(frames, tmp_path / "resumed.pt", **kw)
    assert not (tmp_path / "resumed.pt.partial").exists()
    assert resumed["history"] == pytest.approx(full, abs=1e-5)
    # A finished stage is read back, not retrained.
    assert train_image_moco(frames, tmp_path / "resumed.pt", **kw)["history"] == resumed["history"]


def test_the_demo_reports_what_its_curves_show(tmp_path):
    import json
    import math

    from mcl_fast.demo import learning_summary

    rows = [{"step": 5, "nce": 2.77, "mal": 1.50}, {"step": 10, "nce": 2.40, "mal": 1.30},
            {"step": 15, "nce": 2.10, "mal": 1.20}]
    (tmp_path / "history.json").write_text(json.dumps(rows))
    summary = learning_summary(tmp_path / "history.json", 16)
    assert summary == {"nce_last": 2.10, "chance": pytest.approx(math.log(16)), "mal_first": 1.50, "mal_last": 1.20}
    (tmp_path / "history.json").write_text(json.dumps([{"step": 5, "nce": 2.7}]))  # MAL off: no MAL numbers
    assert set(learning_summary(tmp_path / "history.json", 16)) == {"nce_last", "chance"}


def test_the_demo_image_stage_reads_the_training_list_and_is_cached(tmp_path, monkeypatch):
    import mcl_fast.demo as demo
    from mcl_fast.data.synthetic import make_video

    videos = [make_video(tmp_path / f"v{i}.mp4", num_frames=8, height=32, width=40, object_size=8, seed=i).path
              for i in range(2)]
    (tmp_path / "train.txt").write_text("\n".join(v.name for v in videos) + "\n")  # relative, as make_demo_actions
    monkeypatch.setattr(demo, "IMAGE_STAGE", dict(demo.IMAGE_STAGE, batch_size=4, size=24, progress=False))
    out = demo.image_stage(tmp_path / "train.txt", tmp_path, tmp_path / "image" / "tiny2d.pt", steps=3)
    saved = torch.load(out, weights_only=True)
    assert len(saved["history"]) == 3 and "features.0.weight" in saved["state_dict"]
    mtime = out.stat().st_mtime_ns
    demo.image_stage(tmp_path / "train.txt", tmp_path, out, steps=3)
    assert out.stat().st_mtime_ns == mtime  # cached: not retrained


def test_the_demo_inflates_its_warm_start_as_asked(tmp_path, monkeypatch):
    """`mcl-fast demo --inflate MODE` reaches the pretraining config as model.backbone_kwargs.inflate
    (demo_cpu itself keeps the default), and only when there is a warm start to inflate."""
    import argparse

    import mcl_fast.demo as demo
    import mcl_fast.train as train_mod
    from mcl_fast.models.inflate import INFLATE_MODES

    assert demo.INFLATE_CHOICES == INFLATE_MODES  # the CLI's choices are the inflation's modes
    parser = argparse.ArgumentParser()
    demo.add_args(parser)
    assert parser.parse_args([]).inflate == demo.DEMO_INFLATE
    assert parser.parse_args(["--inflate", "repeat"]).inflate == "repeat"
    random_2d_checkpoint(tmp_path / "tiny2d.pt")
    seen = []
    monkeypatch.setattr(train_mod, "train", lambda config, **kw: seen.append(config["model"]) or {})
    for init in (tmp_path / "tiny2d.pt", None):
        demo.pretrain(tmp_path / "store", tmp_path / "train.txt", tmp_path / "run", init=init, inflate="difference")
    assert seen[0]["backbone_kwargs"] == {"inflate": "difference"} and seen[0]["init"] == str(tmp_path / "tiny2d.pt")
    assert seen[1]["backbone_kwargs"] == {} and seen[1]["init"] is None
    assert train_mod.load_config("demo_cpu")["model"]["backbone_kwargs"] == {}
