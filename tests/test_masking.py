"""Motion-guided token masks (mcl_fast.data.masking) for VideoMAE-style loops."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mcl_fast.data.masking import MotionTubeMask, motion_mask, token_grid, token_motion


def _batch(b=3, t=16, s=224, seed=0):
    g = torch.Generator().manual_seed(seed)
    motion = torch.rand(b, 8, 28, 28, generator=g) * 0.1
    motion[:, :, 4:12, 16:24] += 2.0  # one moving object: tokens rows 2-5, cols 8-11 of the 14x14 grid at 224
    return {"views": [torch.zeros(b, 3, t, s, s)], "motion": motion, "index": torch.arange(b)}


def test_videomae_shape_and_tube_counts():
    batch = MotionTubeMask(ratio=0.9, mode="random")(_batch())
    mask = batch["mask"]
    assert mask.dtype == torch.bool and mask.shape == (3, 8 * 14 * 14)  # N = T/2 * H/16 * W/16
    per_step = mask.view(3, 8, 196)
    assert (per_step.sum(-1) == int(0.9 * 196)).all()  # VideoMAE's count: int(ratio * patches per frame)
    assert (per_step == per_step[:, :1]).all()  # a tube: the same positions at every time step


def test_motion_mode_hides_exactly_the_moving_tokens_first():
    batch = _batch()
    scores = token_motion(batch["motion"], (8, 14, 14)).mean(1).view(3, -1)  # (B, 196)
    hot = scores > 1.0
    assert int(hot[0].sum()) == 16  # the 4x4 tokens under the object
    mask = motion_mask(batch["motion"], (8, 14, 14), ratio=16 / 196 + 1e-9, mode="motion").view(3, 8, 196)
    assert torch.equal(mask[:, 0], hot)  # 16 hidden per step: the moving ones
    mask = motion_mask(batch["motion"], (8, 14, 14), ratio=0.5, mode="motion").view(3, 8, 196)
    for b in range(3):  # every hidden token moves at least as much as every visible one
        assert scores[b][mask[b, 0]].min() >= scores[b][~mask[b, 0]].max()


def test_sample_mode_leans_towards_motion_without_fixing_it():
    batch = _batch(b=64)
    random_mask = MotionTubeMask(ratio=0.25, mode="random")(dict(batch))["mask"].view(64, 8, 196)[:, 0]
    sampled = MotionTubeMask(ratio=0.25, mode="sample")(dict(batch))["mask"].view(64, 8, 196)[:, 0]
    hot = token_motion(batch["motion"], (8, 14, 14)).mean(1).view(64, -1) > 1.0
    assert (sampled & hot).sum() > 3 * (random_mask & hot).sum()
    assert len({tuple(m.nonzero().ravel().tolist()) for m in sampled}) > 32  # still random across samples


def test_masks_are_a_pure_function_of_the_batch():
    batch = _batch()
    transform = MotionTubeMask(ratio=0.75, mode="sample", seed=5)
    clone = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    assert torch.equal(transform(dict(batch))["mask"], transform(clone)["mask"])
    other_index = dict(batch, index=torch.tensor([7, 8, 9]))
    assert not torch.equal(transform(dict(batch))["mask"], transform(other_index)["mask"])
    again = pickle.loads(pickle.dumps(transform))  # a DataLoader worker gets it pickled
    assert torch.equal(again(dict(batch))["mask"], transform(dict(batch))["mask"])


def test_layouts_and_bad_arguments():
    batch = _batch(t=8, s=112)
    ncthw = MotionTubeMask(mode="random")(dict(batch))["mask"]
    ntchw = MotionTubeMask(mode="random", layout="NTCHW")(dict(batch, views=[batch["views"][0].transpose(1, 2)]))["mask"]
    assert ncthw.shape == ntchw.shape == (3, 4 * 7 * 7) and torch.equal(ncthw, ntchw)
    with pytest.raises(ValueError, match="does not split"):
        token_grid(16, 100, 112, 2, 16)
    with pytest.raises(ValueError, match="ratio"):
        motion_mask(batch["motion"], (4, 7, 7), ratio=1.0)
    with pytest.raises(ValueError, match="mode"):
        motion_mask(batch["motion"], (4, 7, 7), ratio=0.5, mode="top")
    static = torch.zeros(2, 4, 7, 7)
    mask = motion_mask(static, (4, 7, 7), ratio=0.5, mode="sample", rngs=[np.random.default_rng(i) for i in range(2)])
    assert (mask.view(2, 4, 49).sum(-1) == 24).all()  # a clip without motion still gets its count
