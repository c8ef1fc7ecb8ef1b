"""The sampling plan shared by both loaders (mcl_fast.data.plan): pure NumPy, no video needed."""
from __future__ import annotations

import numpy as np
import pytest

from mcl_fast import sampling
from mcl_fast.data import plan as P
from mcl_fast.data.official import SAMPLING as RELEASE
from mcl_fast.data.planner import Planner

import plan_reference as R


class FakeStore:
    """A store of synthetic maps: motion only in rows 4..8, cols 10..14 and frames 20..39."""

    def __init__(self, n=48, h=16, w=20, height=64, width=80, names=("a.webm", "b.webm", "c.webm")):
        self.videos = list(names)
        maps = np.full((n, h, w), 0.01, np.float32)
        maps[20:40, 4:8, 10:14] = 1.0
        self._maps = maps
        self._info = {"num_frames": n, "height": height, "width": width, "map_height": h, "map_width": w, "fps": 25.0}

    def read(self, v):
        return self._maps

    def info(self, v):
        return dict(self._info)

    def video_path(self, v):
        return f"/videos/{v}"


# ------------------------------------------------------------------------------ epoch order


@pytest.mark.parametrize("n,shards", [(10, 2), (11, 3), (7, 1), (5, 5)])
def test_shards_partition_an_epoch(n, shards):
    parts = [P.epoch_order(n, seed=3, epoch=1, shard_id=s, num_shards=shards) for s in range(shards)]
    positions = np.concatenate([p for p, _ in parts])
    indices = np.concatenate([i for _, i in parts])
    assert len(set(positions.tolist())) == len(positions)  # disjoint slices of the padded order
    assert set(indices.tolist()) == set(range(n))  # together they cover every video
    per = -(-n // shards)
    assert all(len(p) == per for p, _ in parts)  # equal shard sizes (DDP)
    assert len(indices) - n == per * shards - n  # only the padding repeats
    dropped = [P.epoch_order(n, seed=3, epoch=1, shard_id=s, num_shards=shards, drop_last=True)[1]
               for s in range(shards)]
    flat = np.concatenate(dropped)
    assert len(flat) == n - n % shards and len(set(flat.tolist())) == len(flat)  # nothing repeats


def test_epoch_order_is_seeded_and_changes_with_epoch():
    a = P.epoch_order(50, seed=1, epoch=0)[1]
    assert np.array_equal(a, P.epoch_order(50, seed=1, epoch=0)[1])
    assert not np.array_equal(a, P.epoch_order(50, seed=1, epoch=1)[1])
    assert not np.array_equal(a, P.epoch_order(50, seed=2, epoch=0)[1])
    assert np.array_equal(P.epoch_order(5, seed=1, epoch=0, shuffle=False)[1], np.arange(5))
    with pytest.raises(ValueError, match="shard_id"):
        P.epoch_order(5, seed=0, epoch=0, shard_id=2, num_shards=2)


def test_num_batches():
    assert P.num_batches(10, 4, drop_last=False) == 3
    assert P.num_batches(10, 4, drop_last=True) == 2
    assert P.num_batches(8, 4, drop_last=False) == 2


# ------------------------------------------------------------------------------ colour maths


def _apply(m, t, rgb):
    return np.asarray(rgb, np.float64) @ m.T.astype(np.float64) + t


def test_color_affine_components():
    m, t = R.color_affine()
    assert np.allclose(m, np.eye(3), atol=1e-6) and np.allclose(t, 0, atol=1e-4)
    rgb = np.array([[200.0, 100.0, 50.0], [10.0, 20.0, 30.0]])
    m, t = R.color_affine(brightness=1.3)
    assert np.allclose(_apply(m, t, rgb), rgb * 1.3, atol=1e-3)
    m, t = R.color_affine(contrast=0.5)
    assert np.allclose(_apply(m, t, rgb), (rgb - 128) * 0.5 + 128, atol=1e-3)
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    for m, t in (R.color_affine(grayscale=True), R.color_affine(saturation=0.0)):
        out = _apply(m, t, rgb)
        assert np.allclose(out, grey[:, None].repeat(3, 1), atol=1e-3)  # Y in every channel
    m, t = R.color_affine(hue=0.13)  # a hue turn keeps the grey value (Y) and the chroma length
    out = _apply(m, t, rgb)
    assert np.allclose(out @ np.array([0.299, 0.587, 0.114]), grey, atol=1e-3)
    assert not np.allclose(out, rgb, atol=1.0)
    m, t = R.color_affine(hue=0.5)
    m2, t2 = R.color_affine(hue=-0.5)
    assert np.allclose(m, m2, atol=1e-5)
    # order matters only through the contrast centre: brightness then contrast != contrast then brightness
    a = _apply(*R.color_affine(brightness=1.4, contrast=0.6, order=(0, 1, 2, 3)), rgb)
    b = _apply(*R.color_affine(brightness=1.4, contrast=0.6, order=(1, 0, 2, 3)), rgb)
    assert np.allclose(a, ((rgb * 1.4) - 128) * 0.6 + 128, atol=1e-3)
    assert np.allclose(b, ((rgb - 128) * 0.6 + 128) * 1.4, atol=1e-3)


def test_draw_view_aug_rates_and_identity():
    rng = np.random.default_rng(0)
    draws = [R.draw_view_aug(rng, 112) for _ in range(3000)]
    flip = np.mean([a.flip for a in draws])
    blur = np.mean([a.blur_window > 1 for a in draws])
    grey = np.mean([np.allclose(a.color_matrix[0], a.color_matrix[1]) and np.allclose(a.color_matrix[1], a.color_matrix[2])
                    for a in draws])
    coloured = np.mean([not a.identity_color for a in draws])
    assert abs(flip - 0.5) < 0.04 and abs(blur - 0.5) < 0.04 and abs(grey - 0.2) < 0.03
    assert abs(coloured - (1 - 0.2 * 0.8)) < 0.03  # identity only without jitter (0.2) and without greyscale (0.8)
    sigmas = [a.blur_sigma for a in draws if a.blur_window > 1]
    assert 0.1 <= min(sigmas) and max(sigmas) <= 2.0
    assert all(a.blur_window % 2 == 1 and a.blur_window <= 13 for a in draws)
    off = R.draw_view_aug(np.random.default_rng(0), 112, augment=False)
    assert not off.flip and off.identity_color and off.blur_window == 1
    # the same generator state gives the same augmentation
    assert R.draw_view_aug(np.random.default_rng(5), 64).flip == R.draw_view_aug(np.random.default_rng(5), 64).flip


def test_blur_window_fits_small_images():
    assert R.blur_window(2.0, 224) == 13
    assert R.blur_window(2.0, 8) == 7  # reflect padding needs window // 2 < side
    assert R.blur_window(0.1, 224) == 3


# ---------------------------------------------------------------------------------- samplers


def test_motion_sampler_matches_the_reference():
    store = FakeStore()
    maps, info = store.read("a"), store.info("a")
    sampler = R.per_sample(clip_len=8, stride=2)
    for seed in range(5):
        got = sampler(maps, info, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        m_t = maps.mean(axis=(1, 2))
        start = sampling.sample_clip_start(m_t, 8, 2, rng)
        frames = sampling.clip_frame_indices(start, 8, 2, 48)
        m_s = maps[frames].mean(axis=0)
        box_q = sampling.sample_crop_box(m_s, rng, frame_size=(64, 80))
        box_k = sampling.sample_crop_box(m_s, rng, frame_size=(64, 80))
        assert np.array_equal(got.query_frames, frames) and np.array_equal(got.key_frames, frames)
        assert got.query_box == box_q and got.key_box == box_k
        assert 20 - 14 <= start <= 39  # the clip overlaps the moving frames (above-median score)


def test_motion_sampler_boxes_cover_the_motion():
    store = FakeStore()
    sampler = R.per_sample(clip_len=8, stride=2)
    hits = 0
    for seed in range(20):
        c = sampler(store.read("a"), store.info("a"), np.random.default_rng(seed))
        y0, x0, h, w = c.query_box  # the hot cells are rows 16..32, cols 40..56 in frame pixels
        hits += y0 <= 16 and x0 <= 40 and y0 + h >= 32 and x0 + w >= 56
    assert hits >= 16


def test_random_and_two_clip_sampling():
    store = FakeStore()
    maps, info = store.read("a"), store.info("a")
    rnd = R.per_sample(8, 2, sampling="random")(maps, info, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    start = sampling.random_clip_start(48, 8, 2, rng)
    assert np.array_equal(rnd.query_frames, sampling.clip_frame_indices(start, 8, 2, 48))
    assert rnd.query_box == sampling.random_crop_box(rng, 64, 80)
    two = [R.per_sample(8, 2, two_clips=True)(maps, info, np.random.default_rng(s)) for s in range(10)]
    assert any(not np.array_equal(c.query_frames, c.key_frames) for c in two)
    with pytest.raises(ValueError, match="sampling must be one of 'motion', 'temporal', 'spatial', 'random'"):
        P.MotionSampler(sampling="optical")
    with pytest.raises(ValueError, match="preset"):
        P.MotionSampler(preset="nope")


def test_motion_sampler_is_configuration_only():
    """The loaders plan in batches (planner.py); the per-sample steps live in tests/plan_reference.py."""
    sampler = P.MotionSampler(8, 2, sampling="spatial", preset=RELEASE, two_clips=True)
    assert not callable(sampler)
    assert not any(hasattr(sampler, m) for m in ("propose", "select", "finish", "draw_clips", "random_crop_choice"))
    assert sampler.config == RELEASE and (sampler.motion_crop, sampler.motion_clip) == (True, False)


def _moving_maps(n=48, h=16, w=20, corner=True):
    """Motion only in frames 20..39: in the top-left 4x4 cells (corner) or spread evenly over the
    frame with the same per-frame mean (flat), so T-motion is the same and only S-motion differs."""
    maps = np.full((n, h, w), 0.01, np.float32)
    if corner:
        maps[20:40, :4, :4] = 1.0
    else:
        maps[20:40] = maps[20].mean() + (1.0 - 0.01) * 16 / (h * w)
    return maps


def _corner_share(box, side=16):
    """Fraction of the frame's top-left side x side pixels (the corner motion) inside box."""
    y0, x0, h, w = box
    return max(0, min(y0 + h, side) - y0) * max(0, min(x0 + w, side) - x0) / side ** 2


def _clip_score_of(maps, start, clip_len=8, stride=2):
    starts, scores = sampling.clip_scores(maps.mean(axis=(1, 2)), clip_len, stride)
    return scores[list(starts).index(start)], np.median(scores)


def test_temporal_sampling_motion_clip_and_random_crop():
    info = FakeStore().info("a")
    corner, flat = _moving_maps(corner=True), _moving_maps(corner=False)
    assert np.allclose(corner.mean(axis=(1, 2)), flat.mean(axis=(1, 2)), atol=1e-6)
    ta = R.per_sample(8, 2, sampling="temporal")
    assert ta.sampler.motion_clip and not ta.sampler.motion_crop
    hits = 0
    for seed in range(40):
        got = ta(corner, info, np.random.default_rng(seed))
        start = int(got.query_frames[0])
        score, median = _clip_score_of(corner, start)
        assert score > median  # the clip is always motion-focused (paper preset: motion_prob 1)
        assert np.array_equal(got.query_frames, got.key_frames)
        # the reference: sample_clip_start, then two random-resized crops with the preset's scale/ratio
        rng = np.random.default_rng(seed)
        want = sampling.sample_clip_start(corner.mean(axis=(1, 2)), 8, 2, rng)
        assert start == want
        assert got.query_box == sampling.random_crop_box(rng, 64, 80, (0.3, 1.0), (0.5, 2.0))
        assert got.key_box == sampling.random_crop_box(rng, 64, 80, (0.3, 1.0), (0.5, 2.0))
        # boxes ignore S-motion: a flat map with the same T-motion gives the same plan ...
        same = ta(flat, info, np.random.default_rng(seed))
        assert np.array_equal(same.query_frames, got.query_frames)
        assert (same.query_box, same.key_box) == (got.query_box, got.key_box)
        # ... and so does "random" (a uniform clip draws as many numbers as a motion-focused one)
        rnd = R.per_sample(8, 2, sampling="random")(corner, info, np.random.default_rng(seed))
        assert (rnd.query_box, rnd.key_box) == (got.query_box, got.key_box)
        hits += _corner_share(got.query_box) >= 0.75  # the hot cells are frame rows 0..16, cols 0..16
    motion_hits = sum(_corner_share(R.per_sample(8, 2)(corner, info, np.random.default_rng(s)).query_box) >= 0.75
                      for s in range(40))
    assert hits <= 12 and motion_hits >= 30  # the motion-focused crop finds the corner, the random one rarely
    # the official preset: the same scale/ratio as its motion crops, and sometimes a uniform clip
    official = R.per_sample(8, 2, sampling="temporal", preset=RELEASE)
    boxes = [official(corner, info, np.random.default_rng(s)).query_box for s in range(200)]
    area = np.array([b[2] * b[3] for b in boxes]) / (64 * 80)
    aspect = np.array([b[3] / b[2] for b in boxes])
    assert area.min() < 0.3 and aspect.min() > 0.7 and aspect.max() < 1.4
    cold = sum(_clip_score_of(corner, int(official(corner, info, np.random.default_rng(s)).query_frames[0]))[0]
               <= np.median(sampling.clip_scores(corner.mean(axis=(1, 2)), 8, 2)[1]) for s in range(200))
    assert 0 < cold < 60  # uniform with p 0.3, half of those below the median: ~15 %


def test_spatial_sampling_random_clip_and_motion_crop():
    info = FakeStore().info("a")
    maps = _moving_maps(corner=True)
    maps[:, :4, :4] += 0.5  # the corner moves in every frame (more in 20..39), so every clip has S-motion there
    sa = R.per_sample(8, 2, sampling="spatial")
    assert sa.sampler.motion_crop and not sa.sampler.motion_clip
    starts, hits = [], 0
    for seed in range(680):
        got = sa(maps, info, np.random.default_rng(seed))
        start = int(got.query_frames[0])
        starts.append(start)
        assert np.array_equal(got.query_frames, got.key_frames)
        if seed < 20:  # the reference: random_clip_start, then sample_crop_box on that clip's S-motion
            rng = np.random.default_rng(seed)
            want = sampling.random_clip_start(48, 8, 2, rng)
            frames = sampling.clip_frame_indices(want, 8, 2, 48)
            m_s = maps[frames].mean(axis=0)
            assert start == want
            assert got.query_box == sampling.sample_crop_box(m_s, rng, frame_size=(64, 80))
            assert got.key_box == sampling.sample_crop_box(m_s, rng, frame_size=(64, 80))
            rnd = R.per_sample(8, 2, sampling="random")(maps, info, np.random.default_rng(seed))
            assert np.array_equal(rnd.query_frames, got.query_frames)  # the same uniform clip as "random"
        hits += _corner_share(got.query_box) >= 0.75
    counts = np.bincount(starts, minlength=34)
    assert len(counts) == 34 and counts.min() >= 5 and counts.max() <= 40  # 34 starts, ~20 each: uniform
    cold = sum(_clip_score_of(maps, s)[0] <= _clip_score_of(maps, s)[1] for s in starts)
    assert 0.35 < cold / len(starts) < 0.65  # about half the clips score at or below the median
    assert hits >= 0.8 * len(starts)  # the boxes follow the motion


@pytest.mark.parametrize("mode", ["temporal", "spatial"])
def test_ablation_modes_in_the_planner_with_batched_hooks(mode):
    """The GPU path's hooks (batched select / clip scores) give the same plans in both new modes."""
    store = FakeStore(n=30)
    calls = []

    def score(m_ts):
        calls.append(len(m_ts))
        return [sampling.clip_scores(m, 8, 2) for m in m_ts]

    for two_clips in (False, True):
        sampler = P.MotionSampler(8, 2, sampling=mode, two_clips=two_clips)
        select = lambda ps: [R.select(sampler, x) for x in ps]  # noqa: E731
        single = [_planner(store, sampler=sampler).plan(4, i, i % 3) for i in range(6)]
        batched = _planner(store, sampler=sampler, select=select, score=score).plan_batch(
            4, range(6), [i % 3 for i in range(6)])
        for a, b in zip(single, batched):
            assert np.array_equal(a.query.frames, b.query.frames) and np.array_equal(a.key.frames, b.key.frames)
            assert (a.query.box, a.key.box) == (b.query.box, b.key.box) and np.array_equal(a.motion, b.motion)
        direct = R.choose(sampler, store.read("a.webm"), store.info("a.webm"), P.sample_rng(7, 4, 0))
        assert np.array_equal(single[0].query.frames, direct.query_frames) and single[0].query.box == direct.query_box
    assert calls == ([6, 6] if mode == "temporal" else [])  # scores only where the clip is motion-focused
    if mode == "temporal":
        with pytest.raises(ValueError, match="motion-focused crop"):
            R.propose(P.MotionSampler(8, 2, sampling=mode), store.read("a"), store.info("a"), np.random.default_rng(0))


def test_short_video_frames_are_clamped():
    store = FakeStore(n=10)
    c = R.per_sample(16, 2)(store.read("a"), store.info("a"), np.random.default_rng(0))
    assert c.query_frames.max() == 9 and c.query_frames.min() == 0 and len(c.query_frames) == 16


def test_validate_choice_names_the_problem():
    info = {"num_frames": 10, "height": 64, "width": 80}
    good = P.Choice(np.arange(4), (0, 0, 64, 80), np.arange(4), (1, 1, 10, 10))
    assert P.validate_choice(good, info, 4, "v").key_box == (1, 1, 10, 10)
    with pytest.raises(ValueError, match=r"v\.mp4.*outside \[0, 9\]"):
        P.validate_choice(P.Choice(np.arange(4) + 8, (0, 0, 8, 8), np.arange(4), (0, 0, 8, 8)), info, 4, "v.mp4")
    with pytest.raises(ValueError, match="box"):
        P.validate_choice(P.Choice(np.arange(4), (0, 70, 8, 20), np.arange(4), (0, 0, 8, 8)), info, 4, "v")
    with pytest.raises(ValueError, match="shape"):
        P.validate_choice(P.Choice(np.arange(3), (0, 0, 8, 8), np.arange(4), (0, 0, 8, 8)), info, 4, "v")


# ------------------------------------------------------------------------------------ motion


def test_crop_motion_crops_resizes_and_flips():
    rng = np.random.default_rng(0)
    maps = rng.random((12, 16, 20)).astype(np.float32)
    frames = np.array([1, 3, 5, 7])
    box = (16, 20, 32, 40)  # frame 64x80 -> map cells rows 4..12, cols 5..15
    out = P.crop_motion(maps, frames, box, (64, 80), (4, 8, 10), flip=False)
    assert out.shape == (4, 8, 10) and out.dtype == np.float32
    assert np.allclose(out, maps[frames, 4:12, 5:15])
    flipped = P.crop_motion(maps, frames, box, (64, 80), (4, 8, 10), flip=True)
    assert np.allclose(flipped, out[:, :, ::-1])
    pooled = P.crop_motion(maps, frames, box, (64, 80), (4, 4, 5), flip=False)
    assert np.allclose(pooled, maps[frames, 4:12, 5:15].reshape(4, 4, 2, 5, 2).mean(axis=(2, 4)), atol=1e-6)


# ----------------------------------------------------------------------------------- planner


def _planner(store, **kw):
    args = dict(clip_len=8, size=32, sampler=P.MotionSampler(8, 2), augment=True, motion_size=(8, 2, 2), seed=7)
    args.update(kw)
    return Planner(store, store.videos, **args)


def test_planner_is_deterministic_per_position():
    store = FakeStore()
    a = _planner(store).plan(epoch=2, position=5, index=1)
    b = _planner(store).plan_batch(2, [4, 5], [0, 1])[1]  # in a batch, after another sample
    assert a.index == b.index == 1 and a.path == "/videos/b.webm"
    assert np.array_equal(a.query.frames, b.query.frames) and a.query.box == b.query.box
    assert a.query.aug.flip == b.query.aug.flip and np.array_equal(a.key.aug.color_matrix, b.key.aug.color_matrix)
    assert np.array_equal(a.motion, b.motion)
    c = _planner(store).plan(epoch=3, position=5, index=1)
    assert (c.query.box, c.key.box) != (a.query.box, a.key.box)
    # motion is the query's crop, flipped with it
    ref = P.crop_motion(store.read("b"), a.query.frames, a.query.box, (64, 80), (8, 2, 2), a.query.aug.flip)
    assert np.array_equal(a.motion, ref)


def test_planner_replaces_bad_videos_and_lists_them():
    store = FakeStore()
    bad = {"/videos/b.webm": "corrupt: test"}
    planner = _planner(store, is_bad=bad.get)
    plans = [planner.plan(0, pos, 1) for pos in range(6)]
    assert all(p.index != 1 for p in plans)
    assert all(p.failures and set(p.failures) == {("/videos/b.webm", "corrupt: test")} for p in plans)
    again = _planner(store, is_bad=bad.get).plan(0, 3, 1)
    assert again.index == plans[3].index  # the replacement is deterministic
    every = {p: "broken" for p in ("/videos/a.webm", "/videos/b.webm", "/videos/c.webm")}
    with pytest.raises(RuntimeError, match="failed to decode"):
        _planner(store, is_bad=every.get).plan(0, 0, 0)


def test_planner_uses_a_user_sampler_and_batched_selection():
    store = FakeStore()

    def fixed(maps, info, rng):
        return P.Choice(np.arange(8), (0, 0, 32, 32), np.arange(8) + 1, (8, 8, 16, 16))

    p = _planner(store, sampler=fixed).plan(0, 0, 0)
    assert np.array_equal(p.key.frames, np.arange(8) + 1) and p.key.box == (8, 8, 16, 16)
    with pytest.raises(ValueError, match="outside"):
        _planner(store, sampler=lambda m, i, r: P.Choice(np.arange(8) + 45, (0, 0, 8, 8), np.arange(8),
                                                         (0, 0, 8, 8))).plan(0, 0, 0)
    # a batched selector returning the NumPy choice reproduces the per-sample plans exactly
    sampler = P.MotionSampler(8, 2)
    batched = _planner(store, select=lambda ps: [R.select(sampler, x) for x in ps]).plan_batch(1, [0, 1, 2], [0, 1, 2])
    single = [_planner(store).plan(1, i, i) for i in range(3)]
    assert [(b.query.box, b.key.box) for b in batched] == [(s.query.box, s.key.box) for s in single]


@pytest.mark.parametrize("cells", [False, True])
def test_user_sampler_boxes_and_augs_equal_the_per_sample_reference(cells):
    """A user sampler's plan (its clips, some boxes left out) is finished by the batched steps with
    B = 1: the boxes each view's crop rule draws and every view's augmentation equal the per-sample
    reference's, draw for draw."""
    from mcl_fast.data.views import PAPER, WEAK, ViewSpec, resolve_views

    store = RandomStore(cells)
    specs = [ViewSpec(crop="motion"), ViewSpec(clip=1, crop="random", size=16, aug=WEAK), ViewSpec(crop="same"),
             ViewSpec(clip=1, crop="motion", scale=(0.5, 1.0)), ViewSpec(crop="center", aug=PAPER),
             ViewSpec(clip=1, crop="full")]
    layout = resolve_views(specs, clip_len=8, stride=2, size=32, motion_crop=True, scale=(0.3, 1.0),
                           ratio=(0.5, 2.0), augment=True)
    given = {0: None, 1: (2, 3, 20, 30)}  # epoch -> view 1's box from the sampler (None: drawn)

    def user(maps, info, rng):
        starts = rng.integers(0, max(1, info["num_frames"] - 15), 2)
        frames = tuple(np.minimum(s + 2 * np.arange(8), info["num_frames"] - 1) for s in starts)
        boxes = None if user.box is None else (None, user.box, None, None, None, None)
        return P.Clips(frames=frames, boxes=boxes)

    for epoch, box in given.items():
        user.box = box
        planner = _planner(store, sampler=user, layout=layout)
        for pos, idx in ((0, 0), (3, 1), (5, 2), (8, 3)):
            plan = planner.plan(epoch, pos, idx)
            rng = P.sample_rng(7, epoch, pos)
            video = store.videos[idx]
            maps, info = store.read(video), store.info(video)
            if cells:
                info["cells_per_pixel"] = P.cells_per_pixel(store, video)
            clips = user(maps, info, rng)
            boxes = []
            for j, v in enumerate(layout.views):
                b = clips.boxes[j] if clips.boxes is not None and clips.boxes[j] is not None else R.missing_box(
                    rng, v, maps, clips.frames[v.clip], info, boxes, sampling.get_preset("paper"))
                boxes.append(tuple(b))
            augs = [R.draw_view_aug(rng, v.size, v.aug is not None, v.aug or PAPER) for v in layout.views]
            assert [v.box for v in plan.views] == boxes
            for got, want in zip((v.aug for v in plan.views), augs):
                assert (got.flip, got.blur_window, got.blur_sigma) == (want.flip, want.blur_window, want.blur_sigma)
                assert np.array_equal(got.color_matrix, want.color_matrix)
                assert np.array_equal(got.color_offset, want.color_offset)
            assert np.array_equal(plan.motion, P.crop_motion(maps, clips.frames[0], boxes[0], (info["height"],
                                  info["width"]), (8, 2, 2), augs[0].flip, info.get("cells_per_pixel")))


def test_planner_maps_boxes_with_the_stores_cells_per_pixel():
    class AlignedStore(FakeStore):  # a 16x20 map covering only 60x76 of the 64x80 frame
        def cells_per_pixel(self, v):
            return (16 / 60, 20 / 76)

    store = AlignedStore()
    sampler = P.MotionSampler(8, 2)
    plan = _planner(store).plan(0, 2, 1)
    rng = P.sample_rng(7, 0, 2)
    info = dict(store.info("b.webm"), cells_per_pixel=(16 / 60, 20 / 76))
    proposal = R.propose(sampler, store.read("b.webm"), info, rng)
    want = sampling.boxes_to_map(proposal["candidates"][0], (64, 80), (16, 20), cell_scale=(16 / 60, 20 / 76))
    assert np.array_equal(proposal["judged"][0], want)
    assert not np.array_equal(want, sampling.boxes_to_map(proposal["candidates"][0], (64, 80), (16, 20)))
    assert plan.query.box == tuple(int(v) for v in proposal["candidates"][0][R.select(sampler, proposal)[0]])
    ref = P.crop_motion(store.read("b"), plan.query.frames, plan.query.box, (64, 80), (8, 2, 2), plan.query.aug.flip,
                        cell_scale=(16 / 60, 20 / 76))
    assert np.array_equal(plan.motion, ref)


def test_scale_box_to_a_resized_file():
    assert P.scale_box((10, 20, 30, 40), (96, 128), (96, 128)) == (10, 20, 30, 40)
    assert P.scale_box((10, 20, 30, 40), (96, 128), (48, 64)) == (5, 10, 15, 20)
    assert P.scale_box((11, 21, 31, 41), (96, 128), (48, 64)) == (6, 11, 15, 20)  # edges 5.5->6, 21->21 (rows 6..21)
    assert P.scale_box((0, 0, 96, 128), (96, 128), (48, 64)) == (0, 0, 48, 64)
    assert P.scale_box((95, 127, 1, 1), (96, 128), (12, 16)) == (11, 15, 1, 1)  # never empty, never outside
    assert P.scale_box((0, 0, 240, 320), (240, 320), (128, 170)) == (0, 0, 128, 170)  # per-axis ratios


def test_planner_scales_boxes_to_the_files_pixels_and_keeps_motion_in_the_stores():
    store = FakeStore()
    src = _planner(store).plan(1, 3, 2)
    half = _planner(store, file_hw=lambda v: (32, 40)).plan(1, 3, 2)
    assert np.array_equal(half.query.frames, src.query.frames) and np.array_equal(half.motion, src.motion)
    for a, b in ((src.query.box, half.query.box), (src.key.box, half.key.box)):
        assert b == P.scale_box(a, (64, 80), (32, 40))
        assert abs(b[0] - a[0] / 2) <= 0.5 and abs(b[0] + b[2] - (a[0] + a[2]) / 2) <= 0.5
        assert abs(b[1] - a[1] / 2) <= 0.5 and abs(b[1] + b[3] - (a[1] + a[3]) / 2) <= 0.5


def test_batched_clip_scores_give_the_same_plans():
    """The GPU path's hook: clip scores computed outside (here by the reference) change nothing."""
    store = FakeStore(n=30)
    calls = []

    def score(m_ts):
        calls.append(len(m_ts))
        assert all(m.dtype == np.float32 and m.shape == (30,) for m in m_ts)
        return [sampling.clip_scores(m, 8, 2) for m in m_ts]

    for preset, two_clips in (("paper", False), (RELEASE, True)):
        sampler = P.MotionSampler(8, 2, preset=preset, two_clips=two_clips)
        select = lambda ps: [R.select(sampler, x) for x in ps]  # noqa: E731
        single = [_planner(store, sampler=sampler).plan(4, i, i % 3) for i in range(6)]
        batched = _planner(store, sampler=sampler, select=select, score=score).plan_batch(
            4, range(6), [i % 3 for i in range(6)])
        for a, b in zip(single, batched):
            assert np.array_equal(a.query.frames, b.query.frames) and np.array_equal(a.key.frames, b.key.frames)
            assert (a.query.box, a.key.box) == (b.query.box, b.key.box) and np.array_equal(a.motion, b.motion)
    assert calls == [6, 6]  # one call per batch


# ------------------------------------------------------- the batched planner equals the per-sample one


class RandomStore:
    """Quantised random maps with a hot blob, a static video and a short one; cells_per_pixel optional."""

    def __init__(self, cells=False):
        rng = np.random.default_rng(123)
        self.videos = ["a.webm", "b.webm", "c.webm", "d.webm"]
        shapes = {"a.webm": (60, 16, 20, 64, 80), "b.webm": (45, 12, 16, 48, 64), "c.webm": (9, 16, 20, 64, 80),
                  "d.webm": (80, 16, 20, 64, 80)}
        self._maps, self._info, self.cells = {}, {}, cells
        for v in self.videos:
            n, h, w, height, width = shapes[v]
            m = rng.random((n, h, w)).astype(np.float32) ** 4
            m[n // 3: n // 2, 2:6, 3:9] += 3.0
            if v == "d.webm":
                m[:] = 0.0  # static: no clip above the median, no hot pixel
            q = np.rint(m / max(m.max(), 1e-9) * 255).astype(np.uint8)
            self._maps[v] = q.astype(np.float32) * np.float32(0.7 / 255)
            self._info[v] = {"num_frames": n, "height": height, "width": width, "map_height": h, "map_width": w}

    def read(self, v):
        return self._maps[v]

    def info(self, v):
        return dict(self._info[v])

    def video_path(self, v):
        return "/videos/" + v

    def __getattr__(self, name):
        if name == "cells_per_pixel" and self.cells:
            return lambda v: (self._info[v]["map_height"] / (self._info[v]["height"] - 4),
                              self._info[v]["map_width"] / (self._info[v]["width"] - 4))
        raise AttributeError(name)


def _draw_view_aug_before(rng, size, augment=True):
    """plan.draw_view_aug as it was before view specs (the paper's constants), transcribed."""
    u = rng.random(4)
    b, c, s = rng.uniform(1 - 0.4, 1 + 0.4, 3)
    h = rng.uniform(-0.1, 0.1)
    order = rng.permutation(4)
    sigma = float(rng.uniform(0.1, 2.0))
    if not augment:
        return P.ViewAug()
    jitter, gray, blur, flip = u[0] < 0.8, u[1] < 0.2, u[2] < 0.5, u[3] < 0.5
    if jitter or gray:
        matrix, offset = R.color_affine(b, c, s, h, gray, order) if jitter else R.color_affine(grayscale=True)
    else:
        matrix, offset = np.eye(3, dtype=np.float32), np.zeros(3, np.float32)
    return P.ViewAug(flip=bool(flip), color_matrix=matrix, color_offset=offset,
                     blur_sigma=sigma if blur else 0.0, blur_window=R.blur_window(sigma, size) if blur else 1)


def _torch_crop_motion(maps, frames, box, frame_hw, out_size, flip, cell_scale):
    """The motion target with torch's adaptive_avg_pool3d (an independent resampling)."""
    import torch
    import torch.nn.functional as F

    y0, x0, h, w = P.map_cells(np.asarray([box]), frame_hw, maps.shape[1:], cell_scale)[0]
    tube = maps[np.minimum(np.asarray(frames), len(maps) - 1), y0:y0 + h, x0:x0 + w]
    pooled = F.adaptive_avg_pool3d(torch.from_numpy(np.ascontiguousarray(tube))[None, None], out_size)[0, 0].numpy()
    return pooled[:, :, ::-1] if flip else pooled


def _plan_before(store, sampler, seed, epoch, position, index, augment, size=32, motion_size=(8, 2, 2)):
    """One sample as the per-sample planner made it before batching: the sampler's Choice from the
    sample's generator, then the query's and the key's augmentation, then the motion target."""
    rng = P.sample_rng(seed, epoch, position)
    video = store.videos[index]
    maps, info = store.read(video), store.info(video)
    cells = P.cells_per_pixel(store, video)
    if cells is not None:
        info["cells_per_pixel"] = cells
    choice = sampler(maps, info, rng)
    q_aug, k_aug = _draw_view_aug_before(rng, size, augment), _draw_view_aug_before(rng, size, augment)
    motion = _torch_crop_motion(maps, choice.query_frames, choice.query_box, (info["height"], info["width"]),
                                motion_size, q_aug.flip, cells)
    return choice, q_aug, k_aug, motion


@pytest.mark.parametrize("cells", [False, True])
@pytest.mark.parametrize("mode", ["motion", "random", "temporal", "spatial"])
def test_batched_plans_equal_the_per_sample_planner(mode, cells):
    """The plans of the batched planner are the earlier planner's, draw for draw: frames, boxes,
    flips, colour matrices and blur bit for bit; the motion target within float rounding of torch's
    adaptive average pooling."""
    store = RandomStore(cells)
    cases = [("paper", False, True), (RELEASE, True, True), ("paper", True, False), (RELEASE, False, True)]
    for preset, two_clips, augment in cases:
        sampler = P.MotionSampler(8, 2, mode, preset, two_clips)
        planner = _planner(store, sampler=sampler, augment=augment)
        for epoch in range(2):
            positions = np.arange(30) + 40 * epoch
            indices = (positions * 7 + epoch) % 4
            for plan, pos, idx in zip(planner.plan_batch(epoch, positions, indices), positions, indices):
                choice, q_aug, k_aug, motion = _plan_before(store, R.per_sample(8, 2, mode, preset, two_clips), 7,
                                                            epoch, pos, idx, augment)
                assert np.array_equal(plan.query.frames, choice.query_frames)
                assert np.array_equal(plan.key.frames, choice.key_frames)
                assert (plan.query.box, plan.key.box) == (choice.query_box, choice.key_box)
                for got, want in ((plan.query.aug, q_aug), (plan.key.aug, k_aug)):
                    assert got.flip == want.flip and got.blur_window == want.blur_window
                    assert got.blur_sigma == want.blur_sigma
                    assert np.array_equal(got.color_matrix, want.color_matrix)
                    assert np.array_equal(got.color_offset, want.color_offset)
                np.testing.assert_allclose(plan.motion, motion, rtol=2e-6, atol=1e-7)
