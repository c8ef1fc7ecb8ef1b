"""The authors' released code as a loader preset: `preset="official"` (docs/release.md).

A sample is three clips of one video and four views (batch["views"], in this order: loader.view_names):

    query  clip 0 (the query clip), its own official motion crop
    key    clip 0 again, a second, independent official motion crop          (key 1)
    key2   clip 1, the first other clip, its own official motion crop
    key3   clip 2, the second other clip, its own official motion crop

plus `motion`, the (4, 7, 7) motion-alignment target of the query (the query's flows under its
crop, motion.official.mal_target) and `query_first`, True when the query clip comes from the
video's first half and the two others from the second (the order loss's label).

Everything comes from an official store (`mcl-fast prepare --maps official --window 8|4`): the
per-frame (7, 7) maps drive the crops, the clip magnitudes the rank-based temporal sampling, the
stored encoded flows the target. `OfficialSampler` is a clip sampler in the loaders' sense
(clip_sampler(maps, info, rng) -> plan.Clips), so both loaders run it through the planner's
user-sampler path; its draws, in this order, are those of mcl_fast.sampling_official:
sample_official_clips, then official_crop_box for the query, key 1, key 2 and key 3, then the
second flip coin (rng.random() < 0.5: the target is mirrored with a flipped query only then, the
release's quirk); the planner then draws each view's augmentation (planner.view_augs).
"""
from __future__ import annotations

import numpy as np
import torch

from mcl_fast import sampling as reference
from mcl_fast.motion.official import MAL_CHUNKS, crop_resize_flows, mal_target
from mcl_fast.motion.store_official import OFFICIAL_PREPARE
from mcl_fast.sampling_official import (CROP_RATIO, CROP_SCALE, MOTION_PROB, POSITION_TRIES, clip_cell_map,
                                        official_crop_box, sample_official_clips)

from .plan import SAMPLING_MODES, Clips, check_sampling, scale_box
from .synthetic_batches import SyntheticBatches
from .views import PAPER, ViewLayout, ViewSpec, resolve_views

VIEW_NAMES = ("query", "key", "key2", "key3")  # loader.view_names: the names of batch["views"], in order
VIEW_CLIPS = (0, 0, 1, 2)  # the clip each view is cut from
# The release's augmentation is the paper's (MoCo v2): jitter (0.4, 0.4, 0.4, 0.1) p 0.8 in a random
# order, greyscale p 0.2, Gaussian blur sigma U(0.1, 2) p 0.5, flip p 0.5.
AUGMENTATION = PAPER
# The release's sampling numbers (sampling_official.py) as the loaders' SamplingConfig: the planner
# reads the views' crop scale and ratio from it.
SAMPLING = reference.SamplingConfig(motion_prob=MOTION_PROB, scale=CROP_SCALE, ratio=CROP_RATIO,
                                    num_candidates=POSITION_TRIES)
FLOW_FLIP_P = 0.5  # the release mirrors the query's flows with its frames only when a second coin says so
# The release trains on UCF101 videos of >= 64 frames and Kinetics videos of > 32; the store's window
# (8 UCF101, 4 Kinetics) tells which.
MIN_FRAMES = {8: 64, 4: 33}


class NotAnOfficialStore(ValueError):
    """preset="official" on a store without the release's maps, clip magnitudes and flows."""


def check_official_store(store) -> None:
    """NotAnOfficialStore naming the command to run, unless `store` is an official store."""
    if not getattr(store, "official", False):
        where = getattr(store, "path", store)
        raise NotAnOfficialStore(
            f"preset='official' needs an official motion store (the release's 7x7 maps, clip magnitudes and encoded "
            f"flows); {where} holds the paper's maps. Build one with `{OFFICIAL_PREPARE}` (--window 4 for Kinetics)")


def official_views(aug=AUGMENTATION) -> list[ViewSpec]:
    """The preset's four views (query, key 1, key 2, key 3), each with the release's motion crop."""
    return [ViewSpec(clip=c, crop="motion", aug=aug) for c in VIEW_CLIPS]


def check_views(layout: ViewLayout, clip: tuple[int, int]) -> None:
    """ValueError unless the resolved views keep the preset's structure: four views cut from clips
    0, 0, 1, 2, every clip `clip` = (clip_len, stride) (their size and augmentation may change)."""
    clips = tuple(v.clip for v in layout.views)
    if clips != VIEW_CLIPS:
        raise ValueError(f"preset='official' has four views cut from clips {list(VIEW_CLIPS)} (query, key, key2, "
                         f"key3); views= may change their size or augmentation, not that (got clips {list(clips)})")
    if any(tuple(c) != tuple(clip) for c in layout.clips):
        raise ValueError(f"preset='official' samples its three clips alike: the views' (clip_len, stride) must be "
                         f"the loader's {tuple(clip)}, got {list(layout.clips)}")


def default_min_frames(window: int | None) -> int | None:
    """The release's shortest training video for a store's window: 64 frames (8, UCF101), 33 (4, Kinetics)."""
    return MIN_FRAMES.get(window)


def query_target(flows: np.ndarray, frames, box, frame_hw, grid: int) -> np.ndarray:
    """The (4, grid, grid) float32 motion-alignment target of a query clip, unmirrored.

    flows: (F, fh, fw, 2) the video's encoded flows (MotionStore.read_flows); frames (T,) the
    query's source frames (the flow at frame f is flow f, the last frame taking the last flow);
    box (y0, x0, h, w) the query's crop in source pixels (frame_hw), scaled to the flows' pixels
    (plan.scale_box); then mal_target(crop_resize_flows(...)) of motion.official. A video without
    flows (one frame) has a zero target.

    Each chunk's flows are summed before the crop and resize rather than after (both are linear;
    the sums of uint8 are exact): 4 resizes instead of 16 (4.5x faster), the same target up to
    float32 rounding, which the derivatives amplify (within 4e-5 of the target's largest value on
    benchmarks/official_planning.py; tests/test_official_loader.py compares it with the
    composition on every flow).
    """
    t = len(frames)
    if len(flows) == 0:
        return np.zeros((MAL_CHUNKS, grid, grid), np.float32)
    idx = np.minimum(np.asarray(frames, np.int64), len(flows) - 1)
    flow_box = scale_box(box, frame_hw, flows.shape[1:3])
    chunk_sums = flows[idx].reshape(MAL_CHUNKS, t // MAL_CHUNKS, *flows.shape[1:]).sum(axis=1, dtype=np.float32)
    return mal_target(crop_resize_flows(chunk_sums, flow_box), MAL_CHUNKS, grid)


class OfficialSampler:
    """The release's clips, crops and target for one sample: sampler(maps, info, rng) -> plan.Clips.

    store: an official MotionStore; clip_len, stride: the clips (the release: 16 x 2, whose
    clip_len * stride must equal the flows the store's clip magnitudes span); sampling: the
    loaders' modes ("motion": the release; "temporal": the release's clips, random-resized crops of
    its sizes; "spatial": uniform clips (still one per half), its crops; "random": neither).
    maps: (N, 7, 7) the video's official maps (the planner reads them); info: its store info with
    "video". Returns Clips(frames=(query, other 1, other 2), boxes=(query, key 1, key 2, key 3),
    motion=(4, 7, 7) target, motion_flip=the second coin, extras={"query_first": bool}).
    """

    def __init__(self, store, clip_len: int = 16, stride: int = 2, sampling: str = "motion"):
        check_official_store(store)
        check_sampling(sampling)
        self.store, self.clip_len, self.stride, self.sampling = store, int(clip_len), int(stride), sampling
        if self.clip_len * self.stride != store.clip_flows:
            raise ValueError(f"{store.path}: its clip magnitudes span {store.clip_flows} flows (16 frames x stride 2 "
                             f"in the release); preset='official' needs clip_len * stride == {store.clip_flows}, got "
                             f"{self.clip_len} x {self.stride}")
        if self.clip_len % MAL_CHUNKS:
            raise ValueError(f"preset='official' splits the query's {self.clip_len} flows into {MAL_CHUNKS} chunks: "
                             f"clip_len must be a multiple of {MAL_CHUNKS}")
        self.motion_clip, self.motion_crop = SAMPLING_MODES[sampling]
        self.config = SAMPLING
        self.grid = int(store.map_grid)

    @property
    def motion_size(self) -> tuple[int, int, int]:
        """(4, 7, 7): the target's shape."""
        return MAL_CHUNKS, self.grid, self.grid

    def __call__(self, maps: np.ndarray, info: dict, rng: np.random.Generator) -> Clips:
        video, n = info["video"], int(info["num_frames"])
        frame_hw = (int(info["height"]), int(info["width"]))
        drawn = sample_official_clips(self.store.clip_magnitudes(video), rng,
                                      motion_prob=MOTION_PROB if self.motion_clip else 0.0)
        frames = tuple(reference.clip_frame_indices(int(s), self.clip_len, self.stride, n) for s in drawn.starts)
        boxes = []
        for c in VIEW_CLIPS:
            if self.motion_crop:
                boxes.append(official_crop_box(clip_cell_map(maps, frames[c]), frame_hw, rng))
            else:
                boxes.append(reference.random_crop_box(rng, *frame_hw, CROP_SCALE, CROP_RATIO))
        follow_flip = bool(rng.random() < FLOW_FLIP_P)
        target = query_target(self.store.read_flows(video), frames[0], boxes[0], frame_hw, self.grid)
        return Clips(frames=frames, boxes=tuple(boxes), motion=target, motion_flip=follow_flip,
                     extras={"query_first": drawn.query_first})


class OfficialSyntheticBatches(SyntheticBatches):
    """SyntheticBatches with this preset's batch (`data.loader=synthetic`, preset="official"): the
    views key2 and key3 too, query_first (B,) bool, and a motion target defaulting to the release's
    (4, 7, 7), in encoded-flow units (uniform in [0, 100))."""

    def default_motion_size(self, clip_len: int, size: int) -> tuple[int, int, int]:
        return MAL_CHUNKS, 7, 7  # the release's 7x7 map grid

    def extend(self, out: dict, views: list, shape: tuple, g: torch.Generator) -> None:
        out["motion"] = out["motion"] * 100
        views += [torch.randn(shape, generator=g), torch.randn(shape, generator=g)]
        out["query_first"] = torch.rand(shape[0], generator=g) < 0.5


class OfficialVariant:
    """preset="official"'s hooks into the loaders (data/base.py, through data/presets.py): its
    sampler, views, min_frames default, fixed motion target and extra return_meta field."""

    def sampler(self, store, o) -> OfficialSampler:
        """The release's sampler for options `o` (LoaderOptions), after checking what the preset fixes."""
        if o.clip_sampler is not None:
            raise ValueError("preset='official' brings its own clip sampler (three clips, four views, the (4, 7, 7) "
                             "target); a clip_sampler= of your own goes with preset='paper'")
        if o.two_clips:
            raise ValueError("preset='official' already cuts its keys from three clips; two_clips=True is for the "
                             "paper's query/key pair")
        check_official_store(store)
        return OfficialSampler(store, o.clip_len, o.stride, o.sampling)

    def layout(self, views, sampler: OfficialSampler, o) -> tuple[ViewLayout, tuple[str, ...]]:
        """(the resolved views, their names): views= (None: the preset's four) kept to the preset's structure."""
        layout = resolve_views(views if views is not None else official_views(), clip_len=o.clip_len,
                               stride=o.stride, size=o.size, motion_crop=sampler.motion_crop,
                               scale=sampler.config.scale, ratio=sampler.config.ratio, augment=True)
        check_views(layout, (o.clip_len, o.stride))
        return layout, VIEW_NAMES

    def min_frames(self, store) -> int | None:
        """The release's shortest training video for the store's dataset (its window)."""
        return default_min_frames(store.window)

    def motion_size(self, sampler: OfficialSampler, o) -> tuple[int, int, int]:
        """The release's (4, 7, 7) target; ValueError when motion_size= asks for another."""
        if o.motion_size is not None and tuple(o.motion_size) != sampler.motion_size:
            raise ValueError(f"preset='official' gives the release's {sampler.motion_size} motion target; "
                             f"motion_size={tuple(o.motion_size)} cannot change it")
        return sampler.motion_size

    synthetic = OfficialSyntheticBatches  # the trainer's data.loader=synthetic source for this preset
    sampling = SAMPLING  # its SamplingConfig (the demo's sampling figures)

    def meta_fields(self, plans) -> dict:
        """return_meta's extra: motion_flipped (B,) bool, whether each query's target was mirrored."""
        return {"motion_flipped": torch.tensor([p.motion_flipped for p in plans], dtype=torch.bool)}


VARIANT = OfficialVariant()  # what data/presets.loader_variant("official") gives the loaders
