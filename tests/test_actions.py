"""The synthetic action dataset's scene modes: per video, one shared scene, a pool across classes."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import mcl_fast.data.synthetic as synthetic
from mcl_fast.eval.actions import SHAPE_CLASSES, make_action_dataset, pool_scene, render_action

SMALL = dict(num_frames=8, height=24, width=32, object_size=6, progress=False)


def rendered(monkeypatch, root, classes=("horizontal", "circle"), videos_per_class=3, **kwargs) -> dict:
    """{file name: frames (N, H, W, 3) uint8} of make_action_dataset, its writer replaced by a recorder."""
    got = {}
    monkeypatch.setattr(synthetic, "write_video", lambda path, frames, **_: got.__setitem__(Path(path).name, frames))
    make_action_dataset(root, classes=classes, videos_per_class=videos_per_class, **{**SMALL, **kwargs})
    return got


def digest(videos: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(videos):
        h.update(name.encode())
        h.update(videos[name].tobytes())
    return h.hexdigest()


# sha256 of the frames the code before scene_pool rendered (same names, same settings).
BEFORE = {
    "own scene": ({}, "ea187c35b41b0c065429c33b1b76906857d9343c8fd8b6bb3717af08fc2c9349"),
    "one scene": ({"scene_seed": 0}, "c2f0547ed1b56602eef1d2cb1554f5f3e4f4458c81df89045dcbad12af71fbf9"),
    "one scene, own object": ({"scene_seed": 3, "shared_object": False, "seed": 2},
                              "3559b101ec4a9a09553177a9e3f44f7b22ab6e786b01065ce88d4a53d0b78369"),
}


@pytest.mark.parametrize("mode", sorted(BEFORE))
def test_the_existing_scene_modes_render_the_same_bytes(monkeypatch, tmp_path, mode):
    kwargs, expected = BEFORE[mode]
    assert digest(rendered(monkeypatch, tmp_path, **kwargs)) == expected


def test_pool_scenes_do_not_depend_on_the_class():
    """The ablation's draw (4 classes x 80 videos, a pool of 64): every class uses most of the pool,
    and the class/scene table is no further from independence than chance allows."""
    k, per_class = 64, 80
    table = np.zeros((4, k), int)
    for ci in range(4):
        for i in range(per_class):
            table[ci, pool_scene(ci * 1009 + i, k)] += 1  # make_action_dataset's video seeds (seed 0)
    assert all((row > 0).sum() >= 40 for row in table)  # 80 draws from 64 cover ~46 on average
    expected = table.sum(0, keepdims=True) * table.sum(1, keepdims=True) / table.sum()
    chi2 = ((table - expected) ** 2 / np.where(expected > 0, expected, 1)).sum()
    assert chi2 < 3 * 63 * 3  # the statistic's mean is ~(4 - 1)(64 - 1) = 189 under independence


def test_make_action_dataset_renders_each_video_in_its_pool_scene(monkeypatch, tmp_path):
    import mcl_fast.eval.actions as actions

    calls = []
    original = actions.render_action
    monkeypatch.setattr(actions, "render_action", lambda cls, **kw: calls.append((cls, kw)) or original(cls, **kw))
    rendered(monkeypatch, tmp_path, classes=SHAPE_CLASSES[:4], videos_per_class=8, scene_pool=4)
    assert len(calls) == 32
    assert all(kw["scene_seed"] == pool_scene(kw["seed"], 4) for _, kw in calls)
    per_class = {cls: {kw["scene_seed"] for c, kw in calls if c == cls} for cls in SHAPE_CLASSES[:4]}
    assert all(len(scenes) >= 2 for scenes in per_class.values()), per_class  # scenes cross classes
    assert len(set().union(*per_class.values())) == 4


def test_videos_of_one_scene_share_its_background_exactly():
    """Two classes, one pool scene, no pan: the pixels outside both objects' boxes are the same in
    every frame; another scene differs there."""
    kw = dict(num_frames=12, height=32, width=40, object_size=6, pan_max=0.0)
    a, boxes_a = render_action("horizontal", scene_seed=5, seed=1, **kw)
    b, boxes_b = render_action("circle", scene_seed=5, seed=2, **kw)
    c, boxes_c = render_action("circle", scene_seed=6, seed=2, **kw)
    away = ~(box_mask(boxes_a, a.shape[1:3]) | box_mask(boxes_b, a.shape[1:3]) | box_mask(boxes_c, a.shape[1:3]))
    assert away.mean() > 0.5
    assert np.array_equal(a[:, away], b[:, away])
    assert not np.array_equal(b[:, away], c[:, away])
    assert not np.array_equal(a, b)  # the objects' motion differs


def box_mask(boxes: np.ndarray, shape) -> np.ndarray:
    """(H, W) bool: every pixel some frame's object box (y0, x0, h, w) covers."""
    mask = np.zeros(shape, bool)
    for y, x, h, w in boxes:
        mask[y:y + h, x:x + w] = True
    return mask


def test_scene_pool_and_a_scene_seed_are_refused_together(tmp_path):
    with pytest.raises(ValueError, match="scene_pool=4.*scene_seed None"):
        make_action_dataset(tmp_path, scene_pool=4, scene_seed=0, **SMALL)
    with pytest.raises(ValueError, match="scene_pool must be >= 1"):
        pool_scene(0, 0)


def test_a_folder_rendered_with_other_settings_is_refused_and_kept(tmp_path):
    """Kept videos are reused: asking a used folder for other scenes would silently mix two
    datasets, so it is refused by name and nothing in it changes; more videos may be asked."""
    make_action_dataset(tmp_path, classes=("horizontal",), videos_per_class=2, scene_seed=0, **SMALL)
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    with pytest.raises(ValueError, match=r"other settings: scene_pool None there, 4 asked, scene_seed 0 there, None"):
        make_action_dataset(tmp_path, classes=("horizontal",), videos_per_class=2, scene_pool=4, **SMALL)
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before
    # the same settings, spelled with a default written out, and more videos: accepted
    make_action_dataset(tmp_path, classes=("horizontal",), videos_per_class=3, scene_seed=0, pan_max=1.0, **SMALL)
    assert (tmp_path / "horizontal" / "horizontal_002.mp4").is_file()
