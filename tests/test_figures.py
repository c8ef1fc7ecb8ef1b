"""The demo's pictures and its step-by-step sampler: real PNGs, the same choices as sampling.py."""
from __future__ import annotations

import numpy as np
import pytest

from mcl_fast import sampling
from mcl_fast.demo import choose_tubelet
from mcl_fast.figures import plot_loss_curves, plot_motion_overlay, plot_tubelet

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC and path.stat().st_size > 2000


def test_choose_tubelet_takes_the_reference_decisions():
    rng_maps = np.random.default_rng(0)
    maps = rng_maps.random((60, 12, 16)).astype(np.float32)
    maps[20:40, 3:6, 10:14] += 5.0  # a burst of motion in one corner
    t = choose_tubelet(maps, (96, 128), np.random.default_rng(3), clip_len=8, stride=2, cell_scale=(0.125, 0.125))
    assert t["scores"][t["starts"] == t["start"]][0] > np.median(t["scores"])
    # the same draws through the public reference give the same clip and box
    rng = np.random.default_rng(3)
    m_t = maps.mean(axis=(1, 2))
    assert sampling.sample_clip_start(m_t, 8, 2, rng) == t["start"]
    box = sampling.sample_crop_box(t["m_s"], rng, frame_size=(96, 128), cell_scale=(0.125, 0.125))
    assert box == tuple(int(v) for v in t["boxes"][t["chosen"]])


def test_figures_are_written_as_png(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (4, 48, 64, 3), dtype=np.uint8)
    maps = rng.random((4, 12, 16)).astype(np.float32)
    assert _is_png(plot_motion_overlay(frames, maps, np.arange(4), tmp_path / "overlay.png", title="t"))
    t = choose_tubelet(rng.random((30, 12, 16)).astype(np.float32), (48, 64), rng, clip_len=4, stride=2)
    clip = frames[[0, 1, 2, 3]]
    assert _is_png(plot_tubelet(clip, t["frames"][:4], m_t=t["m_t"], starts=t["starts"], scores=t["scores"],
                                start=t["start"], span=t["span"], m_s=t["m_s"], boxes=t["boxes"],
                                chosen=t["chosen"], path=tmp_path / "tubelet.png"))
    assert _is_png(plot_loss_curves({"loss": list(np.linspace(5, 1, 50)), "mal": [0.5] * 50},
                                    tmp_path / "loss.png"))
    with pytest.raises(ValueError):
        plot_loss_curves({}, tmp_path / "empty.png")
