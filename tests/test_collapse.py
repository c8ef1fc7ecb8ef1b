"""The MoCo collapse of the CPU runs, reproduced small (docs/collapse.md).

What the runs showed: with a queue, a key encoder that moves fast (momentum 0.99, lr 0.05 on a
20k-parameter network) and clips that hold no instance cue the network can learn (here: every
video shares one scene and colour jitter is on), the instance accuracy against the queue (acc1)
climbs while the accuracy among the step's own keys (batch_acc1) stays at chance: the positive
is the only key the current key encoder made, so it wins by freshness; all embeddings share one
direction that turns with training, and the keys' mean pairwise cosine stays near 1.

The CPU configs now take their negatives from the same step (`model.queue_size: 0`), which has
no fresher key to find. These tests train the collapse setting for 80 steps (~10-20 s each):
  - with the shipped demo_cpu model settings: no shortcut, and the loss stays honest;
  - with the cause flipped back (a queue): the shortcut returns (this is the reproduction);
  - with the same settings on clips that do hold a cue (per-video colours, no colour jitter):
    batch_acc1 rises well above chance, so the fix did not just stop learning.
"""
import math

import numpy as np
import pytest
import torch

from mcl_fast.data.augment import apply_view
from plan_reference import draw_view_aug
from mcl_fast.diagnostics import CollapseMonitor, contrastive_diagnostics
from mcl_fast.eval.actions import SHAPE_CLASSES, render_action
from mcl_fast.losses import MCLLoss
from mcl_fast.sampling import clip_frame_indices, random_clip_start, random_crop_box
from mcl_fast.train import build_model, load_config

BATCH, STEPS, SIZE, CLIP = 16, 80, 32, 4


def _videos(shared_scene: bool, n: int = 48) -> np.ndarray:
    """(n, 24, 32, 40, 3) uint8 action clips; shared_scene: one scene for all (no instance cue)."""
    return np.stack([render_action(SHAPE_CLASSES[i % 4], num_frames=24, height=32, width=40, object_size=6,
                                   pan_max=0.0, active_fraction=1.0, scene_seed=0 if shared_scene else None,
                                   seed=i)[0] for i in range(n)])


def _train(videos: np.ndarray, queue_size: int | None = None, augment: bool = True, seed: int = 0) -> list[dict]:
    """STEPS MoCo steps with the demo_cpu model settings (queue_size overridden if given), the
    issue's optimiser (SGD lr 0.05, momentum 0.9, wd 1e-4) and the loaders' augmentation."""
    config = load_config("demo_cpu", ["model.backbone_kwargs.width=8", "model.dim=32", "model.hidden=32"])
    if queue_size is not None:
        config["model"]["queue_size"] = queue_size
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(config)
    opt = torch.optim.SGD([p for p in model.encoder_q.parameters() if p.requires_grad], lr=0.05, momentum=0.9,
                          weight_decay=1e-4)
    criterion = MCLLoss()
    n, h, w = videos.shape[1:4]
    rows = []
    for _ in range(STEPS):
        views = [], []
        for i in rng.choice(len(videos), BATCH, replace=False):
            clip = torch.from_numpy(videos[i][clip_frame_indices(random_clip_start(n, CLIP, 2, rng), CLIP, 2, n)])
            for view in views:  # query and key: the same frames, their own crop and augmentation
                view.append(apply_view(clip, random_crop_box(rng, h, w), draw_view_aug(rng, SIZE, augment), SIZE))
        out = model(torch.stack(views[0]), torch.stack(views[1]))
        terms = criterion(out)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        terms.update(contrastive_diagnostics(out))
        rows.append({k: float(v.detach()) for k, v in terms.items()})
    return rows


def _late(rows: list[dict]) -> dict:
    """Means over the last quarter of the run."""
    tail = rows[-STEPS // 4:]
    return {k: float(np.mean([r[k] for r in tail])) for k in tail[0]}


@pytest.fixture(scope="module")
def shared_scene():
    return _videos(shared_scene=True)


@pytest.mark.timeout(300)  # ~10-70 s; generous for a loaded machine
def test_shipped_cpu_settings_have_no_shortcut(shared_scene):
    assert load_config("demo_cpu")["model"]["queue_size"] == 0
    late = _late(_train(shared_scene))
    chance = 100 / BATCH
    assert late["acc1"] == pytest.approx(late["batch_acc1"])  # one process: the same keys
    assert late["batch_acc1"] < 3 * chance  # nothing to learn here, and nothing claimed
    assert late["loss"] > 0.9 * math.log(BATCH)


@pytest.mark.timeout(300)  # ~10-70 s; generous for a loaded machine
def test_the_collapse_returns_with_a_queue(shared_scene):
    rows = _train(shared_scene, queue_size=256)
    late = _late(rows)
    chance = 100 / BATCH
    assert late["batch_acc1"] < 3 * chance, late
    assert late["acc1"] > 25, late  # high "instance accuracy" (chance 0.4 %) while no clip is told apart
    assert late["key_cos"] > 0.8, late  # the keys point nearly one way
    found = CollapseMonitor().check({"step": STEPS, **late}, batch=BATCH)
    assert "shortcut" in found


@pytest.mark.timeout(300)  # ~10-70 s; generous for a loaded machine
def test_shipped_cpu_settings_still_learn_where_clips_differ():
    rows = _train(_videos(shared_scene=False), augment=False)
    late = _late(rows)
    assert late["batch_acc1"] > 3 * 100 / BATCH, late
    first = float(np.mean([r["loss"] for r in rows[:10]]))
    assert late["loss"] < first - 0.3, (first, late)
