"""The planner: (epoch, position, dataset index) -> SamplePlan, a whole batch at a time.

For the built-in MotionSampler the per-sample work is only the generator draws (in the order the
per-sample reference draws them: clip starts, then each view's box candidates, then each view's
augmentation); everything else runs once per batch in NumPy (batchplan.py): seeding, candidate
boxes, their map cells, the S-motion percentiles and box selection, the colour matrices and the
motion targets. Clip scores (T-motion above the median) are computed once per video and clip
length and cached. The plans equal, draw for draw, those of the per-sample reference
(tests/plan_reference.py and the NumPy oracle mcl_fast.sampling; tests/test_plan.py checks it).

A user sampler (any other callable) is called per sample with the video's maps; the boxes it
leaves out and every view's augmentation are then drawn by the same batched steps, with B = 1.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from mcl_fast import sampling as reference
from mcl_fast._cache import LRU

from .batchplan import SampleStreams, adaptive_avg_pool, color_affines, uniform_is_affine
from .plan import (CONTRAST_CENTER, Choice, Clips, MotionSampler, SamplePlan, ViewAug, ViewPlan,
                   cells_per_pixel, crop_motion, jitter_ranges, sample_rng, scale_box, validate_clips)
from .video_rows import StoreVideos
from .views import NONE, ResolvedView, ViewLayout, default_views, resolve_views

_IDENTITY = ViewAug()

# Per-process, per-video caches are bounded (least recently used dropped first): a process sees
# every video of the dataset over a long run, so an unbounded cache grows with the dataset times
# the processes. A dropped entry is recomputed from the store when its video comes back.
VIDEO_CACHE_SIZE = 16384  # videos whose store fields and hot clip starts a planner keeps (~1-30 KB each)
# Frames of a quantised video's maps made float32 at a time for its T-motion: the clip scores of a
# 12,000-frame video then need 256 frames' float32 maps (~3 MB at 56x56), not all of them (~150 MB).
MOTION_T_CHUNK = 256


def default_layout(sampler, *, clip_len: int, size: int) -> ViewLayout:
    """The views a loader uses without views=: the query/key pair from one clip (the MotionSampler
    without two_clips) or from two clips (two_clips, and any user sampler: the key is cut from the
    key frames it returns, which are decoded once when they equal the query's)."""
    builtin = type(sampler) is MotionSampler
    two = sampler.two_clips if builtin else True
    stride = getattr(sampler, "stride", 1)
    config = getattr(sampler, "config", reference.get_preset("paper"))
    return resolve_views(default_views(two), clip_len=clip_len, stride=stride, size=size,
                         motion_crop=builtin and sampler.motion_crop, scale=config.scale, ratio=config.ratio,
                         augment=True)


class _VideoInfo:
    """What planning needs of one video, read from the store once."""

    __slots__ = ("num_frames", "height", "width", "map_hw", "cells", "cell_scale", "level", "info")

    def __init__(self, store, video: str):
        info = dict(store.info(video))
        scale = cells_per_pixel(store, video)
        if scale is not None:
            info["cells_per_pixel"] = scale
        self.info = info
        self.num_frames, self.height, self.width = int(info["num_frames"]), int(info["height"]), int(info["width"])
        self.cell_scale = scale
        self.map_hw = None  # known once the maps are read
        self.cells = None  # (sy, sx) map cells per source pixel, once map_hw is known
        self.level = None  # a quantised store's float32 value of one level (maps = level * uint8 maps)
        if hasattr(store, "read_quantized") and hasattr(store, "scale"):
            self.level = np.float32(float(store.scale(video)) / 255.0)  # as motion.store.dequantize

    def set_map_hw(self, map_hw) -> None:
        if self.map_hw is None:
            self.map_hw = (int(map_hw[0]), int(map_hw[1]))
            self.cells = self.cell_scale if self.cell_scale is not None else (
                self.map_hw[0] / self.height, self.map_hw[1] / self.width)


class Planner:
    """Turns (epoch, position, dataset index) into a SamplePlan, reading the motion store.

    store: a MotionStore (duck-typed: read(v), info(v), video_path(v); cells_per_pixel(v),
    read_quantized(v) and scale(v) used when present). videos: store keys. layout: the resolved
    views (views.resolve_views; default: default_layout). path_of(video) -> file path (default
    store.video_path). file_hw(video) -> (H, W) of the file to decode, or None when it is the
    store's source size; boxes are chosen in source pixels and scaled to the file's (scale_box)
    when they differ. sampler: a MotionSampler (its sampling mode and preset drive the built-in,
    batched path) or a user callable sampler(maps, info, rng) -> Choice or Clips (see
    plan.Clips; info also holds "video", the store key, and "clips", the (clip_len, stride) of
    each clip). is_bad(path) -> reason or None: the caller's decode check; a bad video is replaced
    by another (drawn from the sample's own generator, so the replacement is deterministic) and
    listed in the plan's `failures`.
    select, score: optional batched steps (the GPU loader's kernels) that replace NumPy ones for
    the MotionSampler, given once here; either gives the same plans (ignored for user samplers).
    select(proposals) -> (B, V) chosen candidate indices, where proposal b is a dict with "m_s"
    (V, h, w) the S-motion of each motion-cropped view's clip and "judged" (V, K, 4) the map
    cells of its candidates; score([m_t (N,) float32 per sample]) -> [(starts, scores)], equal to
    reference.clip_scores(m_t, clip_len, stride), called once per batch for the samples whose
    clip scores are not cached yet.
    """

    MAX_ATTEMPTS = 16

    def __init__(self, store, videos: Sequence[str], *, clip_len: int, size: int, sampler: Callable,
                 augment: bool, motion_size, seed: int, layout: ViewLayout | None = None,
                 is_bad: Callable[[str], str | None] | None = None,
                 path_of: Callable[[str], str] | None = None,
                 file_hw: Callable[[str], tuple[int, int] | None] | None = None,
                 select: Callable | None = None, score: Callable | None = None):
        # the loader's StoreVideos as they are (store rows, not a copy of the names); else a list
        self.store, self.videos = store, (videos if isinstance(videos, StoreVideos) else list(videos))
        self.clip_len, self.size, self.sampler, self.augment = int(clip_len), int(size), sampler, bool(augment)
        self.layout = layout if layout is not None else default_layout(sampler, clip_len=clip_len, size=size)
        if not self.augment:
            self.layout = without_augmentation(self.layout)
        self.motion_size, self.seed = tuple(int(s) for s in motion_size), int(seed)
        self.is_bad = is_bad or (lambda path: None)
        self.path_of = path_of or (lambda video: str(store.video_path(video)))
        self.file_hw = file_hw or (lambda video: None)
        self.builtin = type(sampler) is MotionSampler
        self.has_maps = getattr(store, "has_maps", True)  # False: evaluation.ProbedVideos, plain files
        if self.builtin and not self.has_maps:
            raise ValueError(f"the MotionSampler (sampling={sampler.sampling!r}) reads motion maps, which a "
                             f"{type(store).__name__} has none of: pass a clip_sampler")
        self.select, self.score = select, score
        # the clip and crop knobs: the MotionSampler's, a user sampler's `config` if it has one, else the paper's
        self.config = getattr(sampler, "config", reference.get_preset("paper"))
        self._streams = SampleStreams()
        self._merged = uniform_is_affine()
        self._info = LRU(VIDEO_CACHE_SIZE)  # video -> _VideoInfo
        # (video, clip_len, stride) -> (starts scoring above the median (k,), number of starts)
        self._hot = LRU(VIDEO_CACHE_SIZE * max(1, len(set(self.layout.clips))))

    # -- public ------------------------------------------------------------------------------
    def plan(self, epoch: int, position: int, index: int) -> SamplePlan:
        """The plan of the sample at `position` of `epoch` (dataset index `index`), after any
        replacements."""
        return self.plan_batch(epoch, [position], [index])[0]

    def plan_batch(self, epoch: int, positions, indices) -> list[SamplePlan]:
        """Plans of a batch (len(positions) samples)."""
        resolved = [self._resolve(epoch, int(p), int(i)) for p, i in zip(positions, indices)]
        if not resolved:
            return []
        if not self.builtin:
            return [self._plan_user(epoch, *r) for r in resolved]
        return self._plan_builtin(epoch, resolved)

    # -- replacement of bad videos -----------------------------------------------------------
    def _resolve(self, epoch: int, position: int, index: int):
        """Replace a bad video by another, deterministically. Returns (position, index, rng,
        failures); rng is None for the first attempt (the batch's streams give its generator)."""
        path = self._path(self.videos[index])
        reason = self.is_bad(path)
        if reason is None:
            return position, index, None, []
        failures = [(path, reason)]
        for attempt in range(1, self.MAX_ATTEMPTS):
            rng = sample_rng(self.seed, epoch, position, attempt)
            index = int(rng.integers(len(self.videos)))
            path = self.path_of(self.videos[index])
            reason = self.is_bad(path)
            if reason is None:
                return position, index, rng, failures
            failures.append((path, reason))
        raise RuntimeError(f"{self.MAX_ATTEMPTS} videos in a row failed to decode; the last: "
                           f"{failures[-1][0]}: {failures[-1][1]}")

    # -- store access ------------------------------------------------------------------------
    def _path(self, video: str) -> str:
        # not cached: path_of is a lookup without a file-system call (checks.VideoPaths), and the
        # loader's verdicts learn which video a path is from it, just before is_bad(path)
        return self.path_of(video)

    def _video(self, video: str) -> _VideoInfo:
        entry = self._info.get(video)
        if entry is None:
            entry = _VideoInfo(self.store, video)
            self._info.put(video, entry)
        return entry

    def _maps(self, video: str, entry: _VideoInfo, frames=None) -> np.ndarray:
        """(N or len(frames), h, w) float32 maps of `video` (all frames, or those listed)."""
        if entry.level is not None:
            q = np.asarray(self.store.read_quantized(video))
            if frames is not None:
                q = q[np.minimum(frames, len(q) - 1)]
            maps = np.multiply(q, entry.level, dtype=np.float32)  # dequantize(): float32 q * level
        else:
            maps = self.store.read(video)
            if frames is not None:
                maps = maps[np.minimum(frames, len(maps) - 1)]
        entry.set_map_hw(maps.shape[1:])
        return maps

    def _motion_t(self, video: str, entry: _VideoInfo) -> np.ndarray:
        """(N,) float32 T-motion of the video's dequantised maps, bit for bit MotionSampler.motion_t of
        them (each frame's mean is its own reduction), converting MOTION_T_CHUNK frames to float32 at
        a time from the store's memory-mapped uint8 maps."""
        if entry.level is None:
            return MotionSampler.motion_t(self._maps(video, entry))
        q = np.asarray(self.store.read_quantized(video))
        entry.set_map_hw(q.shape[1:])
        out = np.empty(len(q), np.float32)
        for at in range(0, len(q), MOTION_T_CHUNK):
            part = np.multiply(q[at:at + MOTION_T_CHUNK], entry.level, dtype=np.float32)  # dequantize()
            out[at:at + len(part)] = MotionSampler.motion_t(part)
        return out

    def _hot_starts(self, video: str, entry: _VideoInfo, clip_len: int, stride: int, score=None):
        key = (video, clip_len, stride)
        found = self._hot.get(key)
        if found is None:
            m_t = self._motion_t(video, entry)
            starts, scores = score([m_t])[0] if score is not None else reference.clip_scores(m_t, clip_len, stride)
            scores = np.asarray(scores)
            hot = np.asarray(starts)[scores > np.median(scores)]
            found = (hot.astype(np.int32 if len(hot) and hot.max() < 2**31 else np.int64), len(starts))
            self._hot.put(key, found)
        return found

    # -- the built-in sampler, batched ---------------------------------------------------------
    def _plan_builtin(self, epoch: int, resolved) -> list[SamplePlan]:
        sampler, layout = self.sampler, self.layout
        select, score = self.select, self.score
        cfg = self.config
        views, clips = layout.views, layout.clips
        b = len(resolved)
        names = [self.videos[idx] for _, idx, _, _ in resolved]
        entries = [self._video(v) for v in names]
        if sampler.motion_clip:  # clip scores of the videos not seen yet
            self._fill_scores(names, entries, score)
        fresh = [i for i, r in enumerate(resolved) if r[2] is None]
        self._streams.prepare(self.seed, epoch, [resolved[i][0] for i in fresh])
        stream_of = {i: k for k, i in enumerate(fresh)}

        # 1. per sample: only the generator draws, in the references' order, into arrays
        draws = _Draws(b, views, cfg.num_candidates, raw=self._merged)
        for i, (_, _, own_rng, _) in enumerate(resolved):
            rng = own_rng if own_rng is not None else self._streams.generator(stream_of[i])
            entry = entries[i]
            for c, (clip_len, stride) in enumerate(clips):
                draws.starts[i, c] = self._draw_start(rng, names[i], entry, clip_len, stride, cfg)
            draws.draw(rng, i)
        draws.finish()

        # 2. per batch: frames, maps, boxes, selection, augmentation, motion targets
        n = np.array([e.num_frames for e in entries], np.int64)
        frames = [np.minimum(draws.starts[:, c, None] + stride * np.arange(clip_len, dtype=np.int64), n[:, None] - 1)
                  for c, (clip_len, stride) in enumerate(clips)]
        needed = {0} | {v.clip for v in views if v.crop == "motion"}  # clip 0: the motion target
        clip_maps = {c: self._clip_maps(names, entries, frames[c]) for c in sorted(needed)}
        boxes = self._boxes(views, draws, entries, clip_maps, select)  # (V, B, 4) source pixels
        augs = view_augs(views, draws)
        motions = self._motions(clip_maps[0], boxes[0], entries, [a[0].flip for a in augs])
        plans = []
        box_lists = boxes.tolist()
        for i, (_, idx, _, failures) in enumerate(resolved):
            video, entry = names[i], entries[i]
            frame_hw = (entry.height, entry.width)
            file_hw = self.file_hw(video)
            resized = file_hw is not None and tuple(file_hw) != frame_hw
            clip_frames = tuple(f[i] for f in frames)
            view_plans = tuple(ViewPlan(clip_frames[v.clip], scale_box(box_lists[k][i], frame_hw, file_hw) if resized
                                        else tuple(box_lists[k][i]), augs[i][k], v.clip, v.size)
                               for k, v in enumerate(views))
            plans.append(SamplePlan(index=idx, video=video, path=self._path(video), views=view_plans,
                                    clips=clip_frames, motion=motions[i], failures=tuple(failures),
                                    motion_flipped=bool(augs[i][0].flip)))
        return plans

    def _fill_scores(self, names, entries, score) -> None:
        """Cache the hot clip starts of the batch's new videos: computed here, or by `score` (the
        GPU scorer, which takes the sampler's clip shape) for the samples whose video is new."""
        sampler = self.sampler
        missing = []
        for i, (video, entry) in enumerate(zip(names, entries)):
            for clip_len, stride in sorted(set(self.layout.clips)):
                if (video, clip_len, stride) in self._hot:
                    continue
                if score is not None and (clip_len, stride) == (sampler.clip_len, sampler.stride):
                    missing.append(i)
                else:
                    self._hot_starts(video, entry, clip_len, stride)
        if missing:
            m_ts = [self._motion_t(names[i], entries[i]) for i in missing]
            for i, (starts, scores) in zip(missing, score(m_ts)):
                key = (names[i], sampler.clip_len, sampler.stride)
                if key not in self._hot:
                    scores = np.asarray(scores)
                    self._hot.put(key, (np.asarray(starts)[scores > np.median(scores)].astype(np.int64), len(starts)))

    def _draw_start(self, rng, video: str, entry: _VideoInfo, clip_len: int, stride: int, cfg) -> int:
        """One clip start: sample_clip_start (motion-focused clip) or random_clip_start, same draws."""
        if not self.sampler.motion_clip:
            return reference.random_clip_start(entry.num_frames, clip_len, stride, rng)
        # Not sample_clip_start itself (the GPU kernels' oracle): that scores every clip and takes the
        # median on each call, the planner once per video (cached hot starts); the draws are its own.
        hot, count = self._hot_starts(video, entry, clip_len, stride)
        if (cfg.motion_prob >= 1.0 or rng.random() < cfg.motion_prob) and len(hot):
            return int(hot[rng.integers(len(hot))])
        return int(rng.integers(count))

    def _clip_maps(self, names, entries, frames: np.ndarray) -> "_ClipMaps":
        """The maps of each sample's clip frames (B, T), as the store keeps them (see _ClipMaps)."""
        if all(e.level is not None for e in entries):
            stores = [np.asarray(self.store.read_quantized(video)) for video in names]  # memory-mapped, no copy
            groups = {}
            for shape, members in _groups_by_shape([q[0] for q in stores]).items():
                stack = np.empty((len(members), frames.shape[1]) + shape, np.uint8)  # gathered straight into place
                for row, i in enumerate(members):
                    entries[i].set_map_hw(shape)
                    np.take(stores[i], np.minimum(frames[i], len(stores[i]) - 1), axis=0, out=stack[row])
                groups[shape] = (members, stack)
            return _ClipMaps(groups, np.array([e.level for e in entries], np.float32), len(names))
        maps = [self._maps(names[i], entries[i], frames[i]) for i in range(len(names))]
        return _ClipMaps({shape: (members, np.stack([maps[i] for i in members]))
                          for shape, members in _groups_by_shape(maps).items()}, None, len(names))

    def _boxes(self, views, draws: "_Draws", entries, clip_maps, select, given=None) -> np.ndarray:
        """(V, B, 4) int64 boxes (y0, x0, h, w) in source pixels; given: {view: box} that a user
        sampler chose (B = 1), kept as they are."""
        b = len(entries)
        heights = np.array([e.height for e in entries], np.int64)
        widths = np.array([e.width for e in entries], np.int64)
        out = np.zeros((len(views), b, 4), np.int64)
        candidates = {j: reference.boxes_from_draws(*draws.boxes[j], heights[:, None], widths[:, None])
                      for j in draws.boxes}  # (B, m, 4)
        motion_views = [j for j, v in enumerate(views) if v.crop == "motion" and j in draws.boxes]
        chosen = self._select(views, motion_views, candidates, clip_maps, entries, select) if motion_views else {}
        rows = np.arange(b)
        side = np.minimum(heights, widths)
        for j, v in enumerate(views):
            if given and j in given:
                out[j] = given[j]
            elif v.crop == "motion":
                out[j] = candidates[j][rows, chosen[j]]
            elif v.crop == "random":
                out[j] = candidates[j][:, 0]
            elif v.crop == "center":
                out[j] = np.stack([(heights - side) // 2, (widths - side) // 2, side, side], axis=1)
            elif v.crop == "full":
                out[j] = np.stack([np.zeros(b, np.int64), np.zeros(b, np.int64), heights, widths], axis=1)
            else:  # "same"
                out[j] = out[0]
        return out

    def _select(self, views, motion_views, candidates, clip_maps, entries, select) -> dict:
        """{view: (B,) chosen candidate index} of the motion-cropped views: each view's candidates
        judged on its clip's S-motion (the mean map over the clip's frames)."""
        cfg = self.config
        b = len(entries)
        clips_used = sorted({views[j].clip for j in motion_views})
        m_s = {c: clip_maps[c].mean_over_frames() for c in clips_used}  # clip -> [(h, w) float32 per sample]
        # per sample: its map size and cells per pixel, (B, 1) to broadcast over its K candidates
        map_h, map_w, sy, sx = (np.array(col)[:, None] for col in
                                zip(*((e.map_hw[0], e.map_hw[1], e.cells[0], e.cells[1]) for e in entries)))
        judged = {j: reference.boxes_to_map(candidates[j], None, (map_h, map_w), (sy, sx)) for j in motion_views}
        if select is not None:  # the caller's batched step (the GPU kernel), on per-sample proposals
            proposals = [{"m_s": np.stack([m_s[views[j].clip][i] for j in motion_views]),
                          "judged": np.stack([judged[j][i] for j in motion_views])} for i in range(b)]
            picks = np.asarray(select(proposals)).reshape(b, len(motion_views))
            return {j: picks[:, col] for col, j in enumerate(motion_views)}
        out = {j: np.zeros(b, np.int64) for j in motion_views}
        for members in _groups_by_shape(m_s[clips_used[0]]).values():  # one batched selection per map shape
            maps = np.stack([m_s[c][i] for c in clips_used for i in members])  # (C * G, h, w)
            g = len(members)
            map_index = np.concatenate([clips_used.index(views[j].clip) * g + np.arange(g) for j in motion_views])
            sets = np.concatenate([judged[j][members] for j in motion_views])
            picks = reference.select_box_index_batch(maps, sets, cfg.percentile, cfg.coverage, map_index=map_index)
            for col, j in enumerate(motion_views):
                out[j][members] = picks[col * g:(col + 1) * g]
        return out

    def _motions(self, maps: "_ClipMaps", query_boxes: np.ndarray, entries, flips) -> list[np.ndarray]:
        """crop_motion of each sample on its query clip's maps (already gathered): the map cells of
        all query boxes in one boxes_to_map call, then the pooling per sample."""
        heights = np.array([e.height for e in entries], np.int64)
        widths = np.array([e.width for e in entries], np.int64)
        map_h, map_w, sy, sx = (np.array(col) for col in
                                zip(*((e.map_hw[0], e.map_hw[1], e.cells[0], e.cells[1]) for e in entries)))
        cells = reference.boxes_to_map(query_boxes, (heights, widths), (map_h, map_w), (sy, sx))
        out = []
        for i, ((y0, x0, h, w), flip) in enumerate(zip(cells.tolist(), flips)):
            pooled = maps.pool(i, (y0, x0, h, w), self.motion_size)
            out.append(np.ascontiguousarray(pooled[:, :, ::-1]) if flip else pooled)
        return out

    # -- user samplers -------------------------------------------------------------------------
    def _plan_user(self, epoch: int, position: int, index: int, rng, failures) -> SamplePlan:
        """A user sampler's plan: its Choice or Clips, then the boxes it left out and every view's
        augmentation by the batched steps with B = 1 (the same draws as the built-in path)."""
        layout = self.layout
        rng = rng if rng is not None else sample_rng(self.seed, epoch, position)
        video = self.videos[index]
        entry = self._video(video)
        maps = self._maps(video, entry) if self.has_maps else None
        info = dict(entry.info, video=video, clips=layout.clips)
        choice = self.sampler(maps, info, rng)
        clips = validate_clips(_as_clips(choice, layout, video), info, [t for t, _ in layout.clips],
                               len(layout.views), self.motion_size, video)
        frame_hw = (entry.height, entry.width)
        given = {j: b for j, b in enumerate(clips.boxes or ()) if b is not None}
        draws = _Draws(1, layout.views, self.config.num_candidates, raw=self._merged, given=given)
        draws.draw(rng, 0)
        draws.finish()
        needed = {layout.views[j].clip for j in draws.boxes if layout.views[j].crop == "motion"}
        clip_maps = {c: self._clip_maps([video], [entry], np.asarray(clips.frames[c])[None]) for c in needed}
        boxes = [tuple(b) for b in self._boxes(layout.views, draws, [entry], clip_maps, self.select, given)[:, 0].tolist()]
        augs = view_augs(layout.views, draws)[0]
        flipped = augs[0].flip
        if clips.motion is not None:
            flipped = flipped and clips.motion_flip  # the sampler may leave its target unmirrored
            motion = np.ascontiguousarray(clips.motion[:, :, ::-1] if flipped else clips.motion)
        elif maps is None:  # a source without maps: the batch keeps its layout, with a zero target
            motion = np.zeros(self.motion_size, np.float32)
        else:
            motion = crop_motion(maps, clips.frames[0], boxes[0], frame_hw, self.motion_size, augs[0].flip,
                                 entry.cell_scale)
        file_hw = self.file_hw(video) or frame_hw
        views = tuple(ViewPlan(clips.frames[v.clip], scale_box(boxes[j], frame_hw, file_hw), augs[j], v.clip, v.size)
                      for j, v in enumerate(layout.views))
        return SamplePlan(index=index, video=video, path=self.path_of(video), views=views,
                          clips=tuple(clips.frames), motion=motion, failures=tuple(failures), extras=clips.extras,
                          motion_flipped=bool(flipped))


# ------------------------------------------------------------------------------------ helpers

_NO_AUG = NONE  # the draws of a view without augmentation use these ranges (then ignored)


def without_augmentation(layout: ViewLayout) -> ViewLayout:
    """The layout with no augmentation on any view (augment=False): crops only."""
    return ViewLayout(views=tuple(ResolvedView(clip=v.clip, crop=v.crop, size=v.size, scale=v.scale, ratio=v.ratio,
                                               aug=None) for v in layout.views), clips=layout.clips)


def _uniform_from(low, high, u):
    """Generator.uniform(low, high) from its doubles u: numpy computes low + (high - low) * u."""
    return low + (high - low) * u


class _Draws:
    """The generator draws of a batch, per sample in the references' order (draw), then turned
    into values for the whole batch (finish).

    starts (B, C) clip starts; boxes {view: (area, log_aspect, y_u, x_u), each (B, m)} for the
    views with drawn boxes (m = K candidates for "motion", 1 for "random"); aug (B, V, 9): u (4),
    jitter factors (3), hue, blur sigma; orders (B, V, 4). raw=True (uniform_is_affine): all
    consecutive doubles come from one random() call and are mapped in finish(); otherwise each
    uniform is its own call, as in the references. given: views whose boxes are not drawn (a user
    sampler chose them).
    """

    def __init__(self, b: int, views, num_candidates: int, raw: bool, given=()):
        self.views, self.raw = views, raw
        self.starts = np.zeros((b, len({v.clip for v in views})), np.int64)
        self.counts = [0 if j in given else num_candidates if v.crop == "motion" else 1 if v.crop == "random" else 0
                       for j, v in enumerate(views)]
        self.box_views = [j for j, m in enumerate(self.counts) if m]
        self.box_u = {j: np.zeros((b, 4, self.counts[j])) for j in self.box_views}
        self.aug = np.zeros((b, len(views), 9))
        self.orders = np.zeros((b, len(views), 4), np.int64)
        self._doubles = 4 * sum(self.counts) + 8
        self.doubles = np.zeros((b, self._doubles)) if raw else None
        self.augs = [v.aug if v.aug is not None else _NO_AUG for v in views]
        self.boxes: dict = {}

    def draw(self, rng, i: int) -> None:
        views, aug, orders = self.views, self.aug[i], self.orders[i]
        if self.raw:
            self.doubles[i] = rng.random(self._doubles)  # split into boxes and view 0's draws in finish()
            last = len(views) - 1
            for j in range(len(views)):
                orders[j] = rng.permutation(4)
                if j < last:
                    tail = rng.random(9)
                    aug[j, 8] = tail[0]
                    aug[j + 1, :8] = tail[1:]
                else:
                    aug[j, 8] = rng.random()
            return
        for j in self.box_views:  # one uniform call per draw, exactly as draw_boxes / random_crop_box
            v, m = views[j], self.counts[j]
            box = self.box_u[j][i]
            box[0] = rng.uniform(v.scale[0], v.scale[1], m)
            box[1] = rng.uniform(np.log(v.ratio[0]), np.log(v.ratio[1]), m)
            box[2], box[3] = rng.random(m), rng.random(m)
        for j, a in enumerate(self.augs):  # as draw_view_aug
            low, high = jitter_ranges(a)
            aug[j, :4] = rng.random(4)
            if low[0] == low[1] == low[2] and high[0] == high[1] == high[2]:
                aug[j, 4:7] = rng.uniform(float(low[0]), float(high[0]), 3)
            else:
                aug[j, 4:7] = rng.uniform(low, high, 3)
            aug[j, 7] = rng.uniform(-a.hue, a.hue)
            orders[j] = rng.permutation(4)
            aug[j, 8] = rng.uniform(*a.blur_sigma)

    def finish(self) -> None:
        """Map raw doubles to values (uniform's formula), the whole batch at once."""
        if self.raw:
            at = 0
            for j in self.box_views:
                m = 4 * self.counts[j]
                self.box_u[j] = self.doubles[:, at:at + m].reshape(-1, 4, self.counts[j])
                at += m
            self.aug[:, 0, :8] = self.doubles[:, at:]
        for j in self.box_views:
            v, u = self.views[j], self.box_u[j]
            if self.raw:
                area = _uniform_from(v.scale[0], v.scale[1], u[:, 0])
                log_aspect = _uniform_from(float(np.log(v.ratio[0])), float(np.log(v.ratio[1])), u[:, 1])
            else:
                area, log_aspect = u[:, 0], u[:, 1]
            self.boxes[j] = (area, log_aspect, u[:, 2], u[:, 3])
        if not self.raw:
            return
        for j, a in enumerate(self.augs):
            low, high = jitter_ranges(a)
            self.aug[:, j, 4:7] = low + (high - low) * self.aug[:, j, 4:7]
            self.aug[:, j, 7] = _uniform_from(-a.hue, a.hue, self.aug[:, j, 7])
            self.aug[:, j, 8] = _uniform_from(a.blur_sigma[0], a.blur_sigma[1], self.aug[:, j, 8])


def view_augs(views, draws: "_Draws") -> list[list[ViewAug]]:
    """(B, V) ViewAugs: each view's augmentation decided on its draws (views.Augmentation), the colour matrices of the whole
    batch in one color_affines call."""
    values, orders = draws.aug, draws.orders  # (B, V, 9): u (4), factors (3), hue, sigma
    b, nv = values.shape[:2]
    out = [[_IDENTITY] * nv for _ in range(b)]
    rows, cols, jitter_rows, gray_rows = [], [], [], []
    for j, v in enumerate(views):
        if v.aug is None:
            continue
        jitter, gray = values[:, j, 0] < v.aug.jitter_p, values[:, j, 1] < v.aug.grayscale_p
        for i in np.flatnonzero(jitter | gray):
            rows.append(i)
            cols.append(j)
            jitter_rows.append(bool(jitter[i]))
            gray_rows.append(bool(gray[i]))
    colour = {}
    if rows:
        rows_a, cols_a, jit = np.array(rows), np.array(cols), np.array(jitter_rows)
        picked = values[rows_a, cols_a]
        # greyscale alone is color_affine(grayscale=True): factors 1, hue 0, the identity order
        factors = np.where(jit[:, None], picked[:, 4:8], np.array([1.0, 1.0, 1.0, 0.0]))
        order = np.where(jit[:, None], orders[rows_a, cols_a], np.arange(4))
        matrices, offsets = color_affines(factors[:, 0], factors[:, 1], factors[:, 2], factors[:, 3],
                                           np.array(gray_rows), order, CONTRAST_CENTER)
        colour = {(i, j): r for r, (i, j) in enumerate(zip(rows, cols))}
    eye, zero = np.eye(3, dtype=np.float32), np.zeros(3, np.float32)
    for j, v in enumerate(views):
        if v.aug is None:
            continue
        blur, flip = values[:, j, 2] < v.aug.blur_p, values[:, j, 3] < v.aug.flip_p
        sigma = values[:, j, 8]
        window = _blur_windows(sigma, v.size)
        for i in range(b):
            r = colour.get((i, j))
            out[i][j] = ViewAug(flip=bool(flip[i]), color_matrix=eye if r is None else matrices[r],
                                color_offset=zero if r is None else offsets[r],
                                blur_sigma=float(sigma[i]) if blur[i] else 0.0,
                                blur_window=int(window[i]) if blur[i] else 1)
    return out


def _blur_windows(sigma: np.ndarray, size: int) -> np.ndarray:
    """Odd Gaussian windows covering +-3 sigma, smaller than the image (reflect padding needs it), per sigma."""
    window = 2 * np.ceil(3.0 * sigma).astype(np.int64) + 1
    return np.maximum(1, np.minimum(window, size - 1 if size % 2 == 0 else size))


def _groups_by_shape(arrays) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.shape, []).append(i)
    return groups


class _ClipMaps:
    """The maps of one clip of every sample of a batch, as the store keeps them: uint8 levels,
    dequantised as the store does (float32 level * scale[i], scale = max / 255), or float32 maps
    when scale is None. groups: {map shape: (sample indices, (G, T, h, w) stack)}."""

    def __init__(self, groups: dict, scale: np.ndarray | None, count: int):
        self.groups, self.scale = groups, scale
        self.where = [None] * count  # sample -> (stack, row)
        for members, stack in groups.values():
            for row, i in enumerate(members):
                self.where[i] = (stack, row)

    def __len__(self) -> int:
        return len(self.where)

    def mean_over_frames(self) -> list[np.ndarray]:
        """[(h, w)] float32: maps[frames].mean(axis=0) of the dequantised maps, bit for bit (the same
        float32 products summed frame after frame, then divided by T), one map shape at a time."""
        out: list = [None] * len(self.where)
        for members, stack in self.groups.values():
            if self.scale is None:
                means = stack.mean(axis=1)
            else:
                maps = np.multiply(stack, self.scale[members].reshape(-1, 1, 1, 1), dtype=np.float32)
                means = np.add.reduce(maps, axis=1) / np.float32(stack.shape[1])  # what mean(axis=0) does per map
            for row, i in enumerate(members):
                out[i] = means[row]
        return out

    def pool(self, i: int, cells, out_size) -> np.ndarray:
        """The motion target of sample i: its maps under cells (y0, x0, h, w), adaptive-average
        pooled to out_size (batchplan.adaptive_avg_pool; the dequantising scale applied after)."""
        y0, x0, h, w = cells
        stack, row = self.where[i]
        return adaptive_avg_pool(stack[row, :, y0:y0 + h, x0:x0 + w], out_size,
                                 None if self.scale is None else self.scale[i])


def _as_clips(choice, layout: ViewLayout, video: str) -> Clips:
    """A sampler's Choice (query/key) or Clips as Clips of the layout."""
    if isinstance(choice, Clips):
        return choice
    if not isinstance(choice, Choice):
        raise TypeError(f"{video}: a sampler must return plan.Choice or plan.Clips, got {type(choice).__name__}")
    if len(layout.views) != 2:
        raise ValueError(f"{video}: the sampler returned a Choice (query and key) but the views spec has "
                         f"{len(layout.views)} views: return plan.Clips")
    q_clip, k_clip = layout.views[0].clip, layout.views[1].clip
    boxes = (choice.query_box, choice.key_box)
    if q_clip == k_clip:
        if not np.array_equal(np.asarray(choice.query_frames), np.asarray(choice.key_frames)):
            raise ValueError(f"{video}: the sampler returned different query and key frames, but both views are cut "
                             "from one clip; give the key its own clip (two_clips=True, or views with clip=1)")
        return Clips(frames=(choice.query_frames,), boxes=boxes)
    return Clips(frames=(choice.query_frames, choice.key_frames), boxes=boxes)

