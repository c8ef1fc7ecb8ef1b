"""preset="official" end to end: the release's store, its sampler's plans against a direct composition
of mcl_fast.sampling_official / motion.official, and both loaders' four views and (4, 7, 7) target
against an independent PyAV decode and mal_target on the stored flows."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mcl_fast.data import TorchVideoLoader, ViewSpec
from mcl_fast.data.augment import denormalize
from mcl_fast.data.official import MIN_FRAMES, NotAnOfficialStore, default_min_frames
from mcl_fast.data.plan import Clips, scale_box
from plan_reference import draw_view_aug
from mcl_fast.data.synthetic import make_video
from mcl_fast.motion.official import crop_resize_flows, mal_target
from mcl_fast.sampling_official import clip_cell_map, official_crop_box, sample_official_clips
from videotools import assert_loaders_agree, decode_all, psnr, reference_view

LENGTHS = (40, 36, 44, 50, 38, 30)  # the last is under the Kinetics rule's 33 frames
CLIP_LEN, STRIDE, SIZE = 16, 2, 32
VIEW_NAMES = ("query", "key", "key2", "key3")  # the batch contract, written out (not imported)
VIEW_CLIPS = (0, 0, 1, 2)  # query and key 1 from the query clip, keys 2 and 3 from the two others


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Six VP9 videos (48x64), their official store (Kinetics window 4; flows at short side 32, so
    43x32 flows: boxes are scaled to them) and a paper store of the first two."""
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    root = tmp_path_factory.mktemp("official")
    for i, n in enumerate(LENGTHS):
        make_video(root / "videos" / f"v{i}.webm", num_frames=n, height=48, width=64, object_size=12, gop=8,
                   seed=70 + i, speed=2.0)
    prepare(str(root / "videos"), str(root / "store"), flow="farneback", size=32, workers=0, progress=False,
            maps="official", window=4)
    prepare([f"v{i}.webm" for i in range(2)], str(root / "paper"), flow="farneback", size=24, workers=0,
            progress=False, root=str(root / "videos"))
    return SimpleNamespace(root=root, store=MotionStore(root / "store"), paper=MotionStore(root / "paper"),
                           decoded={})


def make(kind, store, batch_size=2, **kw):
    args = dict(clip_len=CLIP_LEN, stride=STRIDE, size=SIZE, verify=False, seed=5, preset="official")
    args.update(kw)
    if kind == "dali":
        from mcl_fast.data import MotionFocusedLoader

        return MotionFocusedLoader(store.videos, store, batch_size, device="cpu", num_threads=1, **args)
    return TorchVideoLoader(store.videos, store, batch_size, num_workers=0, **args)


def composed(store, video: str, seed: int, epoch: int, position: int, augment: bool = True):
    """The sample's plan composed directly from the release's functions, in the documented order of
    draws: the three clips, the four crops, the flow-flip coin, then each view's augmentation."""
    rng = np.random.default_rng([seed, epoch, position, 0])
    info = store.info(video)
    n, frame_hw = info["num_frames"], (info["height"], info["width"])
    maps = store.read_quantized(video)  # the uint8 maps as stored
    drawn = sample_official_clips(store.clip_magnitudes(video), rng)
    frames = [np.minimum(int(s) + STRIDE * np.arange(CLIP_LEN), n - 1) for s in drawn.starts]
    boxes = [official_crop_box(clip_cell_map(maps, frames[c]), frame_hw, rng) for c in VIEW_CLIPS]
    follow = rng.random() < 0.5
    augs = [draw_view_aug(rng, SIZE, augment) for _ in VIEW_CLIPS]
    flipped = bool(augs[0].flip and follow)
    flows = store.read_flows(video)
    query_flows = flows[np.minimum(frames[0], len(flows) - 1)]  # the flow at each of the query's frames
    target = mal_target(crop_resize_flows(query_flows, scale_box(boxes[0], frame_hw, flows.shape[1:3]), flip=flipped))
    return SimpleNamespace(frames=frames, boxes=boxes, augs=augs, flipped=flipped, target=target,
                           query_first=drawn.query_first, motion=drawn.motion)


def test_plans_equal_the_direct_composition(official):
    ld = make("torch", official.store)
    assert ld.videos == [f"v{i}.webm" for i in range(5)] and ld.dropped_videos == ["v5.webm"]
    seen = {"flipped": 0, "unfollowed": 0, "first": 0, "motion": 0}
    count = 0
    for epoch in range(2):
        positions = np.arange(20) + 100 * epoch
        indices = (positions * 3 + epoch) % len(ld.videos)
        for plan, pos, idx in zip(ld.planner.plan_batch(epoch, positions, indices), positions, indices):
            want = composed(official.store, ld.videos[idx], 5, epoch, int(pos))
            assert [v.clip for v in plan.views] == list(VIEW_CLIPS)
            for c in range(3):
                np.testing.assert_array_equal(plan.clips[c], want.frames[c])
            assert [v.box for v in plan.views] == want.boxes
            for got, aug in zip(plan.views, want.augs):
                assert got.aug.flip == aug.flip and got.aug.blur_sigma == aug.blur_sigma
                np.testing.assert_array_equal(got.aug.color_matrix, aug.color_matrix)
            assert plan.extras == {"query_first": want.query_first}
            assert plan.motion_flipped == want.flipped
            # chunk sums resized once instead of every flow: float32 rounding apart
            np.testing.assert_allclose(plan.motion, want.target, rtol=1e-5, atol=1e-3)
            assert plan.motion.shape == (4, 7, 7) and plan.motion.max() > 0
            seen["flipped"] += want.flipped
            seen["unfollowed"] += plan.views[0].aug.flip and not want.flipped
            seen["first"] += want.query_first
            seen["motion"] += want.motion
            count += 1
    # every branch ran: mirrored and (the quirk) unmirrored targets of flipped queries, both orders
    assert all(0 < v < count for v in seen.values()), seen
    # an asymmetric target: the flip is visible, so the flip check above can fail
    assert not np.allclose(want.target, want.target[:, :, ::-1])


@pytest.mark.parametrize("kind", ["torch", "dali"])
def test_loaders_give_four_views_of_the_planned_clips_and_the_target(official, kind):
    """augment=False: each view is its clip's frames (decoded independently with PyAV) cut at its box;
    the target is mal_target on the stored flows under the query box."""
    if kind == "dali":
        pytest.importorskip("nvidia.dali")
    store = official.store
    ld = make(kind, store, augment=False, return_meta=True)
    batches = 0
    for batch in ld:
        b = len(batch["index"])
        assert set(batch) == {"views", "motion", "index", "query_first", "frames", "boxes", "flips", "motion_flipped"}
        assert ld.view_names == VIEW_NAMES and all(len(batch[key]) == 4 for key in ("views", "frames", "boxes", "flips"))
        for view in batch["views"]:
            assert view.shape == (b, 3, CLIP_LEN, SIZE, SIZE) and view.dtype == torch.float32
        assert batch["motion"].shape == (b, 4, 7, 7) and batch["motion"].dtype == torch.float32
        assert batch["query_first"].dtype == torch.bool and batch["query_first"].shape == (b,)
        assert not batch["motion_flipped"].any() and not any(f.any() for f in batch["flips"])
        assert torch.equal(batch["frames"][0], batch["frames"][1])  # query and key 1 share the query clip
        for i in range(b):
            video = ld.videos[int(batch["index"][i])]
            path = store.video_path(video)
            if path not in official.decoded:
                official.decoded[path] = decode_all(path)
            frames = official.decoded[path]
            for k, name in enumerate(VIEW_NAMES):
                clip = batch["frames"][k][i].numpy()
                box = tuple(int(v) for v in batch["boxes"][k][i])
                ref = reference_view(frames[clip], box, SIZE)
                assert psnr(denormalize(batch["views"][k][i]).numpy(), ref) >= 35, (kind, name, i)
            flows = store.read_flows(video)
            info = store.info(video)
            q = batch["frames"][0][i].numpy()
            fbox = scale_box(tuple(int(v) for v in batch["boxes"][0][i]), (info["height"], info["width"]),
                             flows.shape[1:3])
            want = mal_target(crop_resize_flows(flows[np.minimum(q, len(flows) - 1)], fbox))
            np.testing.assert_allclose(batch["motion"][i].numpy(), want, rtol=1e-5, atol=1e-3)
        batches += 1
    assert batches == len(ld) == 2


def test_dali_and_torch_loaders_agree_with_augmentation(official):
    pytest.importorskip("nvidia.dali")
    dali, twin = make("dali", official.store, return_meta=True), make("torch", official.store, return_meta=True)
    assert_loaders_agree(dali, twin, ("index", "frames", "boxes", "flips", "motion", "query_first", "motion_flipped"),
                         range(len(VIEW_NAMES)))


def test_a_store_without_official_maps_is_refused_with_the_command(official):
    with pytest.raises(NotAnOfficialStore, match=r"mcl-fast prepare .*--maps official --window 8.*--window 4"):
        make("torch", official.paper)
    pytest.importorskip("nvidia.dali")
    with pytest.raises(NotAnOfficialStore, match="needs an official motion store"):
        make("dali", official.paper)


def test_what_the_preset_fixes_is_checked(official):
    store = official.store
    with pytest.raises(ValueError, match="brings its own clip sampler"):
        make("torch", store, clip_sampler=lambda m, i, r: None)
    with pytest.raises(ValueError, match="two_clips"):
        make("torch", store, two_clips=True)
    with pytest.raises(ValueError, match=r"\(4, 7, 7\) motion target"):
        make("torch", store, motion_size=(16, 2, 2))
    with pytest.raises(ValueError, match="clips \\[0, 0, 1, 2\\]"):
        make("torch", store, views=[ViewSpec(clip=c) for c in (0, 1, 2)])
    with pytest.raises(ValueError, match="clip_len \\* stride == 32"):
        make("torch", store, clip_len=8)
    # views= may change sizes and augmentation
    ld = make("torch", store, views=[ViewSpec(clip=c, size=s) for c, s in zip(VIEW_CLIPS, (32, 32, 16, 16))])
    batch = next(iter(ld))
    assert batch["views"][3].shape[-1] == 16 and batch["views"][0].shape[-1] == 32


def test_min_frames_follows_the_release_per_dataset(official):
    assert default_min_frames(8) == 64 and default_min_frames(4) == 33 and MIN_FRAMES == {8: 64, 4: 33}
    ld = make("torch", official.store)
    assert ld.min_frames == 33 and ld.dropped_videos == ["v5.webm"]
    kept = make("torch", official.store, min_frames=1)  # a 30-frame video: one start, its last frame repeats
    assert kept.dropped_videos == [] and kept.short_videos == ["v5.webm"]
    plan = kept.planner.plan(0, 0, 5)
    assert plan.video == "v5.webm" and all(c.max() == 29 for c in plan.clips)
    assert np.isfinite(plan.motion).all()


def test_sampler_extras_are_batched_under_their_names(official):
    """The user-sampler contract: Clips.extras become batch keys (both loaders share batch_dict);
    motion_flip=False keeps a target unmirrored."""
    store = official.paper

    def sampler(maps, info, rng):
        frames = np.arange(4) * 2
        return Clips(frames=(frames, frames + 1), boxes=((0, 0, 48, 48), None), motion=np.ones((4, 1, 2), np.float32),
                     motion_flip=False, extras={"weight": 0.5, "pair": np.array([info["num_frames"], 7])})

    ld = TorchVideoLoader(store.videos, store, 2, num_workers=0, clip_len=4, stride=2, size=16, verify=False,
                          clip_sampler=sampler, views=[ViewSpec(clip=0), ViewSpec(clip=1)], motion_size=(4, 1, 2))
    batch = next(iter(ld))
    assert batch["weight"].dtype == torch.float64 and batch["weight"].tolist() == [0.5, 0.5]
    assert batch["pair"].shape == (2, 2) and (batch["pair"][:, 1] == 7).all()
    plans = ld.planner.plan_batch(0, range(8), [0] * 8)
    assert any(p.views[0].aug.flip for p in plans) and not any(p.motion_flipped for p in plans)
    bad = TorchVideoLoader(store.videos, store, 2, num_workers=0, clip_len=4, stride=2, size=16, verify=False,
                           clip_sampler=lambda m, i, r: Clips(frames=(np.arange(4),), extras={"motion": 1}),
                           views=[ViewSpec()])
    with pytest.raises(ValueError, match="extras name 'motion' is taken"):
        bad.planner.plan(0, 0, 0)
