"""3D Grad-CAM: output shape, the Figure-4 PNG, and that it highlights the moving object."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mcl_fast.data.synthetic import render_frames
from mcl_fast.eval.features import normalize_clips
from mcl_fast.eval.gradcam import cam_to_image, grad_cam_3d, gradcam_video, resolve_layer, save_gradcam_figure
from mcl_fast.models import build_backbone

SIDE = 24


class MotionNet(nn.Module):
    """A tiny 3D CNN: a temporal conv sees frame pairs, a spatial conv, global average pool, 2 logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 8, (2, 3, 3), padding=(0, 1, 1))
        self.conv2 = nn.Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1))
        self.fc = nn.Linear(8, 2)
        self.mal_layer = "conv2"

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3, 4)))


def motion_clips(seeds):
    """Clips of 4 frames (SIDE² px): odd seeds have a moving object (label 1), even ones a still one."""
    xs, ys, boxes = [], [], []
    for seed in seeds:
        moving = seed % 2
        frames, b = render_frames(num_frames=4, height=SIDE, width=SIDE, object_size=6, speed=3.0,
                                  active=None if moving else (0, 0), seed=seed)
        xs.append(normalize_clips(frames))
        ys.append(moving)
        boxes.append(b[:, 0])
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys), boxes


@pytest.fixture(scope="module")
def trained_motion_net():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster on the shared 2-core machine
    try:
        torch.manual_seed(0)
        x, y, _ = motion_clips(range(100, 140))
        net = MotionNet()
        opt = torch.optim.Adam(net.parameters(), 2e-2)
        for _ in range(250):
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert (net(x).argmax(1) == y).float().mean() >= 0.9, "the motion detector did not train"
        yield net
    finally:
        torch.set_num_threads(threads)


def test_gradcam_highlights_moving_object(trained_motion_net):
    x, y, boxes = motion_clips([s for s in range(501, 541, 2)])  # held-out moving clips
    assert (trained_motion_net(x).argmax(1) == y).float().mean() >= 0.7  # it generalises
    ratios = []
    for clip, box in zip(x, boxes):
        cam = grad_cam_3d(trained_motion_net, clip, target=1)
        assert cam.shape == (3, SIDE, SIDE) and cam.dtype == np.float32
        assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
        image = cam_to_image(cam, SIDE, SIDE)
        inside = np.zeros((SIDE, SIDE), bool)
        for y0, x0, h, w in box:  # the object's path over the clip
            inside[y0:y0 + h, x0:x0 + w] = True
        ratios.append(image[inside].mean() / max(image[~inside].mean(), 1e-6))
    # Per-pixel Grad-CAM mass on the object's path beats the background on most clips.
    assert np.median(ratios) > 1.5, ratios
    assert np.mean(np.array(ratios) > 1.0) >= 0.9, ratios  # untrained: ~0.4-0.55, median 0.7-1.2


def test_gradcam_shape_on_backbone_and_layer_choice():
    torch.manual_seed(0)
    net = build_backbone("tiny")
    clip = torch.randn(3, 8, 32, 32)
    name, _ = resolve_layer(net)
    assert name == net.mal_layer
    cam = grad_cam_3d(net, clip)  # the embedding norm
    feat = net(clip[None], return_features=True)[1]
    assert cam.shape == tuple(feat.shape[2:])
    assert net.training  # the mode is restored
    plain = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, padding=1))
    assert resolve_layer(plain)[0] == "2"  # the last Conv3d when no mal_layer is named
    with pytest.raises(ValueError, match="no layer named"):
        grad_cam_3d(net, clip, layer="nope")
    with pytest.raises(ValueError, match="out of range"):
        grad_cam_3d(net, clip, target=99)


def test_gradcam_video_writes_figure(tmp_path, synthetic_mp4):
    import matplotlib.image as mpimg

    net = build_backbone("tiny")
    out = gradcam_video(net, synthetic_mp4.path, tmp_path / "fig" / "cam.png", clip_len=8, stride=2, crop_size=56)
    png = mpimg.imread(out["png"])
    assert png.ndim == 3 and png.shape[1] > png.shape[0] > 100  # three panels side by side
    assert out["cam"].ndim == 3
    direct = save_gradcam_figure(tmp_path / "b.png", np.zeros((20, 30, 3), np.uint8), np.ones((5, 5)),
                                 np.ones((2, 4, 4)))
    assert direct.is_file() and not list(tmp_path.glob(".b*"))  # no temporary file left behind
