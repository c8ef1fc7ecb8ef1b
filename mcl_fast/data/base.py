"""What both loaders share: options, file checks, views, labels, the planner, epochs and sharding,
failure reports, and the batch dict they hand out.

One batch layout for both loaders and every view configuration (`views` in `loader.view_names`
order, `motion`, `index`, and optional `label`, meta, extras and a batch_transform's keys); each
pass is the next epoch unless set_epoch pins it, and every random choice of a sample comes from
(seed, epoch, position). The batch's keys and shapes, epochs and ranks: docs/loader.md.
"""
from __future__ import annotations

import os
import warnings
import weakref
from typing import Sequence

import numpy as np
import torch

from .._checksum import digest
from ..video_io import VideoError, first_frame_problem, probe
from .checks import VideoPaths, check_files, check_keys, notice, short_video_policy, uniform_scale
from .labels import resolve_labels
from .options import LoaderOptions
from .plan import MotionSampler, SamplePlan, check_sampling, epoch_order, num_batches
from .._cache import LRU
from .planner import Planner, default_layout, without_augmentation
from .presets import loader_variant
from .video_rows import StoreVideos, store_rows
from .views import WEAK, ViewSpec, resolve_views


PLAN_CHUNK = 64  # samples planned per call (the planner's batch work pays off from a few dozen on)
# Files whose verdicts (checked, first frame decodes, size) a process keeps (~0.1 KB each): a
# dropped one is checked again when its video comes back. Large enough for a rank's whole shard.
VERDICT_CACHE_SIZE = 262144
_UNKNOWN = object()


class UnsupportedCodec(ValueError):
    """A video whose codec the chosen decoder cannot read (a setup error, not a bad file)."""


def resolve_store(store):
    """A MotionStore, or the path of one."""
    if isinstance(store, (str, os.PathLike)):
        from mcl_fast.motion.store import MotionStore

        return MotionStore(store)
    needed = ("read", "info", "video_path", "videos") if getattr(store, "has_maps", True) else (
        "info", "video_path", "videos")  # a source without maps (evaluation.ProbedVideos) has nothing to read
    for attr in needed:
        # looked up on the class first: hasattr(store, "videos") would build a MotionStore's O(N) list
        if not hasattr(type(store), attr) and not hasattr(store, attr):
            raise TypeError(f"store must be a MotionStore or its path, got {type(store).__name__} without .{attr}")
    return store


def failure_reason(err: BaseException) -> str:
    """One line saying why reading a video failed: a VideoError's reason, else the error's first line."""
    if isinstance(err, VideoError):
        return err.reason
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first}"[:200]


def check_video_list(videos) -> list[str]:
    """`videos` as a list of store keys; a string (a folder or file name) is refused with a TypeError
    (iterated, it would be a list of its characters)."""
    if isinstance(videos, (str, bytes, os.PathLike)):
        raise TypeError(f"videos must be a sequence of store keys (e.g. store.videos, or a split's paths), got the "
                        f"string {str(videos)!r}; to train on every video of the store pass store.videos")
    return [str(v) for v in videos]


def process_group() -> tuple[int, int] | None:
    """(rank, world size) of torch.distributed's initialised default process group, or None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def resolve_shards(shard_id: int | None, num_shards: int | None) -> tuple[int, int]:
    """This loader's (shard_id, num_shards): the values given, else the process group's (rank, world
    size) like torch's DistributedSampler, else (0, 1). A given value that contradicts an initialised
    group is used, with a warning: every rank then reads a shard it may not mean to."""
    group = process_group()
    if group is None:
        return (0 if shard_id is None else shard_id), (1 if num_shards is None else num_shards)
    rank, world = group
    chosen = (rank if shard_id is None else shard_id, world if num_shards is None else num_shards)
    if chosen != (rank, world):
        warnings.warn(f"shard_id={chosen[0]}, num_shards={chosen[1]} differ from the initialised process group "
                      f"(rank {rank} of {world}); the loader uses the values given. Leave both out to shard by the "
                      "process group", UserWarning, stacklevel=4)
    return chosen


def check_same_setup(seed: int, videos: Sequence[str], shard_id: int, num_shards: int) -> None:
    """Raise ValueError when the ranks of the process group disagree on `seed` (naming every rank's
    seed) or on the video list (naming every rank's count); one all-gather. Either gives each rank
    its own epoch order, so the shards overlap and miss videos without any other error. Skipped
    unless this loader shards by the group (shard_id, num_shards == rank, world > 1): all ranks
    must take part in the collective."""
    group = process_group()
    if group is None or group[1] < 2 or (shard_id, num_shards) != group:
        return
    import torch.distributed as dist

    ranks: list = [None] * group[1]
    dist.all_gather_object(ranks, (int(seed), len(videos), digest("\n".join(videos).encode())))
    if len({seed for seed, _, _ in ranks}) > 1:
        listed = ", ".join(f"rank {r}: seed={s}" for r, (s, _, _) in enumerate(ranks))
        raise ValueError(f"the loaders of the {group[1]} ranks have different seeds ({listed}): the seed fixes each "
                         "epoch's order that the ranks split, so it must be the same on every rank (ranks already "
                         "augment differently: each sample's randomness comes from (seed, epoch, its position)). "
                         "Pass one seed to every rank's loader, not seed + rank")
    if len({(n, d) for _, n, d in ranks}) > 1:
        listed = ", ".join(f"rank {r}: {n} videos" for r, (_, n, _) in enumerate(ranks))
        raise ValueError(f"the loaders of the {group[1]} ranks have different video lists ({listed}; same counts: "
                         "another order or other videos): the ranks split one list, so every rank must pass the same "
                         "videos in the same order (each rank's shard is taken from it)")


class EpochSampler:
    """`loader.sampler`: the epoch order of this shard, shaped like torch's DistributedSampler so
    loops written for it work unchanged: set_epoch(e) (the loader's), len() (samples of this
    shard per epoch), iteration (their dataset indices, in order)."""

    def __init__(self, loader: "LoaderBase"):
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    def __len__(self) -> int:
        return len(self.loader.epoch_samples(0)[0])

    def __iter__(self):
        return iter(self.loader.epoch_samples()[1].tolist())


class FileVerdicts:
    """What the loader knows about its files while planning: which failed and why (`failures`,
    reported once each), which passed their checks, and the sizes of resized copies. The planner
    calls is_bad and file_size; they live here, apart from the loader, so that no reference
    cycle runs through the loader (a dropped TorchVideoLoader stops its workers).

    With `checks` (verify "lazy" or "eager"): a file no check covered yet is checked
    (checks.check_files: probe, fingerprint against the store's, frame count and size) the first
    time this process plans it, just before decoding it; a file that fails is replaced like any
    bad file, reported once with the message the construction check gives. first_frame: also
    decode each file's first frame on first use (the DALI loader: a failure inside its pipeline
    costs a rebuild; the torch loader's own decode replaces a failing file instead). The verdicts
    are LRU caches of VERDICT_CACHE_SIZE files; a worker process starts with none (__getstate__).
    """

    def __init__(self, store, paths, codecs, file_hw: dict, checks: dict | None, first_frame: bool = False):
        self.store, self.paths, self.codecs = store, paths, codecs
        self.checks = checks  # check_files' options (video_root, fingerprints, nvdec), or None: not verified
        self.verified = checks is not None
        self.first_frame = first_frame
        self.file_hw = LRU(VERDICT_CACHE_SIZE)  # video -> (H, W) of a resized file, or None: checked
        for video, hw in file_hw.items():
            self.file_hw.put(video, hw)
        self.failures: dict[str, str] = {}
        self.good = LRU(VERDICT_CACHE_SIZE)  # files that passed is_bad
        self._video_of = LRU(VERDICT_CACHE_SIZE)  # file -> store key, of the files path_of handed out
        self._sources = None  # video_root's transcode records, read once for the lazy checks
        self._told_unknown = False  # the notice about videos without a fingerprint was given

    def __getstate__(self) -> dict:
        # a DataLoader worker checks the files it opens itself: the verdicts of an eager check
        # (one per file of the shard) do not travel in every worker's pickle
        state = self.__dict__.copy()
        state.update(file_hw=LRU(VERDICT_CACHE_SIZE), good=LRU(VERDICT_CACHE_SIZE),
                     _video_of=LRU(VERDICT_CACHE_SIZE), _sources=None)
        return state

    def path_of(self, video: str) -> str:
        """The file of `video` (the planner asks this before is_bad, which then knows the video)."""
        path = self.paths(video)
        self._video_of.put(path, video)
        return path

    def file_size(self, video: str) -> tuple[int, int] | None:
        """(H, W) of `video`'s file when it differs from the store's source size (a resized
        transcode under video_root), else None. The store's own file has the store's size (no
        file opened); a file under video_root: known from its check with verify, otherwise read
        from its container header the first time (cached). A different aspect ratio raises
        ValueError naming the video."""
        known = self.file_hw.get(video, _UNKNOWN)
        if known is not _UNKNOWN:
            return known
        if self.verified:
            self._check(video)  # a verdict dropped from the cache: checked again
            return self.file_hw.get(video)
        if getattr(self.paths, "root", None) is None:
            return None  # the file the store's maps were made from: the store's size
        info, path = self.store.info(video), self.paths(video)
        src_hw = (int(info["height"]), int(info["width"]))
        try:
            meta = probe(path)
        except VideoError:
            return None  # is_bad already let it through; a failing decode replaces it later
        file_hw = (meta["height"], meta["width"])
        if file_hw == src_hw or min(file_hw) <= 0:
            self.file_hw.put(video, None)
        elif uniform_scale(src_hw, file_hw):
            self.file_hw.put(video, file_hw)
        else:
            raise ValueError(f"the motion store does not match {path}: the file is {file_hw[0]}x{file_hw[1]}, the "
                             f"store's source {src_hw[0]}x{src_hw[1]} (another aspect ratio); rebuild the store")
        return self.file_hw.get(video)

    def _check(self, video: str) -> str | None:
        """The construction check of one file (checks.check_files), run the first time this process
        plans a file no check covered. Returns its ValueError's message (the file is replaced and
        reported with it), or None and remembers the file's size."""
        o = self.checks
        if self._sources is None:
            from .transcode import read_sources

            self._sources = read_sources(o["video_root"]) if o["video_root"] is not None else {}
        unknown: list[str] = []
        try:
            resized = check_files([video], self.store, self.paths, True, self.codecs, progress=False,
                                  video_root=o["video_root"], fingerprints=o["fingerprints"], nvdec=o["nvdec"],
                                  notify=False, sources=self._sources, unknown=unknown, trust_fingerprint=True)
        except ValueError as err:
            return str(err)
        if unknown and not self._told_unknown:  # once per process, not once per file
            self._told_unknown = True
            notice(f"{unknown[0]} and maybe other videos have no fingerprint to check against the store (a store "
                   "written before fingerprints, or files under video_root without transcode_sources.json): "
                   "checked by frame count and size only")
        self.file_hw.put(video, resized.get(video))
        return None

    def is_bad(self, path: str) -> str | None:
        """Reason `path` cannot be used, or None. Checked once per file and process: its codec is
        one the decoder reads (else UnsupportedCodec: a setup error), its check (with verify), its
        first frame decodes (first_frame) and its stored maps match their checksums."""
        if path in self.good:
            return None
        if path in self.failures:
            return self.failures[path]
        reason = (self._source_problem(path) or self._codec_problem(path) or self._unchecked_problem(path)
                  or (first_frame_problem(path) if self.first_frame else None) or self._store_problem(path))
        if reason is None:
            self.good.put(path, True)
            return None
        self.report_failure(path, reason)
        return reason

    def _unchecked_problem(self, path: str) -> str | None:
        """The check of a file that no check covered yet (with verify): see _check."""
        video = self._video_of.get(path)
        if not self.verified or video is None or video in self.file_hw:
            return None
        return self._check(video)

    def _store_problem(self, path: str) -> str | None:
        """Why the video's stored maps (flows, magnitudes) cannot be used: their bytes fail the
        checksum the store recorded (MotionStore.check; a store opened with verify=False, or
        another store-like object, is not checked)."""
        video = self._video_of.get(path)
        if video is None or not getattr(self.store, "verify", False):
            return None
        from mcl_fast.motion.store import DamagedVideo, StoreError

        try:
            self.store.check(video)
        except DamagedVideo as err:
            return (f"its stored {err.what} in {err.file} fail their checksum (damaged; `mcl-fast verify` lists "
                    "them all)")
        except StoreError as err:
            return failure_reason(err)
        return None

    def _source_problem(self, path: str) -> str | None:
        """Why a store-like source without maps cannot read the video (its `problem`, e.g.
        evaluation.ProbedVideos' decode at first use), or None."""
        problem, video = getattr(self.store, "problem", None), self._video_of.get(path)
        return problem(video) if problem is not None and video is not None else None

    def _codec_problem(self, path: str) -> str | None:
        if self.codecs is None:
            return None
        try:
            codec = probe(path)["codec"]
        except VideoError as err:
            return err.reason
        if codec not in self.codecs:
            raise UnsupportedCodec(f"{path}: codec {codec} cannot be decoded here (this decoder reads "
                                   f"{', '.join(sorted(self.codecs))}); re-encode with `mcl-fast transcode --codec vp9`"
                                   " or use device='cuda' / TorchVideoLoader")
        return None

    def report_failure(self, path: str, reason: str) -> None:
        """Record that `path` failed (one line: the file and why; reported once per file)."""
        if path not in self.failures:
            self.failures[path] = reason
            self.good.discard(path)
            if torch.utils.data.get_worker_info() is not None:
                return  # a DataLoader worker: the main process reports it (TorchVideoLoader)
            msg = f"skipping video {path}: {reason} (replaced by another sample; reported once)"
            warnings.warn(msg, RuntimeWarning, stacklevel=4)  # one channel: a logging handler would say it twice


class LoaderBase:
    """Options (options.LoaderOptions), planner, epochs, sharding, failure reports, batch dicts."""

    FIRST_FRAME_CHECK = False  # decode each file's first frame before planning it (FileVerdicts.first_frame)

    def __init__(self, videos, store, batch_size: int, options: LoaderOptions, *, codecs=None, nvdec: bool = False):
        """codecs: the codecs the subclass's decoder reads (None: any); nvdec: it decodes with NVDEC
        (the file checks then apply NVDEC's limits)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        o = self.options = options
        self.codecs, self.nvdec = codecs, bool(nvdec)
        check_sampling(o.sampling)  # checked even when a user sampler replaces it: a typo is never silent
        self.store = resolve_store(store)
        self.batch_size, self.clip_len, self.stride, self.size = int(batch_size), o.clip_len, o.stride, int(o.size)
        self.augment, self.seed, self.return_meta, self.two_clips = bool(o.augment), o.seed, o.return_meta, o.two_clips
        self.shard_id, self.num_shards = resolve_shards(o.shard_id, o.num_shards)
        self.drop_last, self.shuffle = bool(o.drop_last), bool(o.shuffle)
        self.output, self.batch_transform = o.output, o.batch_transform
        self.paths = VideoPaths(self.store, o.video_root)
        videos = check_video_list(videos)
        labels, self.classes = resolve_labels(o.labels, videos)
        # the sampler of clips and boxes: the built-in one (sampling, preset), a variant's, or the user's
        self.variant = loader_variant(o.preset)
        if self.variant is not None:
            self.clip_sampler = self.variant.sampler(self.store, o)
        else:
            self.clip_sampler = o.clip_sampler if o.clip_sampler is not None else MotionSampler(
                o.clip_len, o.stride, o.sampling, o.preset, o.two_clips)
        self.layout = self._layout(o)
        # the videos become store rows once (4 bytes each, video_rows): what every process holds and
        # each DataLoader worker receives does not grow with the names; a video the store lacks
        # (row -1) is an error naming it (check_keys)
        rows = store_rows(self.store, videos)
        if len(rows) == 0 or rows.min() < 0:
            check_keys(videos, self.store)
        # Short videos: kept and padded (listed in short_videos), or dropped under min_frames (a
        # variant may default it from the store)
        min_frames = o.min_frames
        if self.variant is not None and min_frames is None:
            min_frames = self.variant.min_frames(self.store)
        self.min_frames = min_frames
        if getattr(self.store, "has_maps", True):
            column = getattr(self.store, "column", None)
            lengths = column("num_frames")[rows] if column is not None else None
            keep, short = short_video_policy(videos, self.store, self.layout.max_span, min_frames, lengths)
        else:  # a source without maps (evaluation.ProbedVideos) learns lengths at first open: all kept
            if min_frames is not None:
                raise ValueError("min_frames needs the videos' frame counts up front: a motion store's, not a "
                                 f"{type(self.store).__name__}, which reads them when a video is first planned")
            keep, short = np.ones(len(rows), bool), np.zeros(len(rows), bool)
        self.videos = StoreVideos(self.store, rows[keep])
        self.short_videos = StoreVideos(self.store, rows[short])
        self.dropped_videos = StoreVideos(self.store, rows[~keep])
        if labels is not None and not keep.all():
            labels = labels[keep]
        self.labels = labels
        self._check_batches()
        first = self.layout.views[0]
        # motion target: T' = the query's clip_len, H' = W' = its size / 16 (7 at 112, 14 at 224);
        # MAL pools it to the feature map's shape anyway. A variant's sampler fixes its own.
        self.motion_size = o.motion_size or (self.layout.clips[first.clip][0], max(1, first.size // 16),
                                             max(1, first.size // 16))
        if self.variant is not None:
            self.motion_size = self.variant.motion_size(self.clip_sampler, o)
        self.num_replaced = 0  # samples whose video failed and was replaced by another
        epoch_order(len(self.videos), seed=self.seed, epoch=0, shard_id=self.shard_id,
                    num_shards=self.num_shards, drop_last=self.drop_last)  # validates the sharding now
        self.verdicts = self._check_shard(o)
        # the planner asks the verdicts, loader.sampler holds a weak reference: no reference cycle
        # keeps a dropped loader (and a TorchVideoLoader's worker processes) alive until the next GC
        self.planner = self._planner()
        self.sampler = EpochSampler(weakref.proxy(self))
        self.epoch = 0  # the epoch of the pass in progress or, before the first, of the next one
        self._epoch_used = False  # a pass has started with self.epoch: the next one moves on (set_epoch resets)
        self._seeds_checked = False
        self._skip = 0

    def _check_shard(self, o: LoaderOptions) -> FileVerdicts:
        """The verdicts, which check each file (checks.check_files) the first time this process plans
        it. With verify="eager" the files of this shard's first epoch are checked here, a failure
        being an error (each file once between the ranks, not every file on every rank); by
        default ("lazy") no file is opened at construction. (H, W) of files whose size differs
        from the store's source frames (resized transcodes) come from these checks; without
        verify they are probed lazily, the first time a video is planned (file_size)."""
        nvdec = self.nvdec
        first_frame = self.FIRST_FRAME_CHECK
        if o.check_mode == "off":
            return FileVerdicts(self.store, self.paths, self.codecs, {}, None, first_frame)
        checks = {"video_root": o.video_root, "fingerprints": o.check_fingerprints, "nvdec": nvdec}
        if o.check_mode == "lazy":
            return FileVerdicts(self.store, self.paths, self.codecs, {}, checks, first_frame)
        positions, indices = epoch_order(len(self.videos), seed=self.seed, epoch=0, shard_id=self.shard_id,
                                         num_shards=self.num_shards, shuffle=self.shuffle, drop_last=self.drop_last)
        # positions past the videos pad the last shard with the first shard's videos (drop_last=False):
        # checked there, so that every file is checked once between the ranks
        shard = [self.videos[i] for i in np.unique(indices[positions < len(self.videos)])]
        file_hw = check_files(shard, self.store, self.paths, True, self.codecs, video_root=o.video_root,
                              fingerprints=o.check_fingerprints, nvdec=nvdec)
        checked = {v: file_hw.get(v) for v in shard}
        return FileVerdicts(self.store, self.paths, self.codecs, checked, checks, first_frame)

    def _planner(self, select=None, score=None) -> Planner:
        """The loader's planner; select, score: a subclass's batched steps (Planner), given once."""
        return Planner(self.store, self.videos, clip_len=self.clip_len, size=self.size, sampler=self.clip_sampler,
                       augment=self.augment, motion_size=self.motion_size, seed=self.seed, layout=self.layout,
                       is_bad=self.verdicts.is_bad, path_of=self.verdicts.path_of, file_hw=self.verdicts.file_size,
                       select=select, score=score)

    def _layout(self, o: LoaderOptions):
        """The resolved views: views= (checked), a variant's own, or the default pair
        (planner.default_layout); sets view_names, the names of the batch's views in order."""
        sampler = self.clip_sampler
        builtin = type(sampler) is MotionSampler
        views = o.views
        if views == "clip":  # one view, crops and flip only (no colour, no blur): masked modelling
            views = [ViewSpec(aug=WEAK)]
        elif views == "pair":
            views = None
        if self.variant is not None:
            layout, self.view_names = self.variant.layout(views, sampler, o)
        elif views is None:
            layout = default_layout(sampler, clip_len=o.clip_len, size=o.size)
            self.view_names = ("query", "key")
        else:
            cfg = sampler.config if builtin else getattr(sampler, "config", MotionSampler().config)
            layout = resolve_views(views, clip_len=o.clip_len, stride=o.stride, size=o.size,
                                   motion_crop=builtin and sampler.motion_crop, scale=cfg.scale, ratio=cfg.ratio,
                                   augment=True)
            self.view_names = ("clip",) if o.views == "clip" else tuple(f"view{i}" for i in range(len(layout.views)))
        return layout if o.augment else without_augmentation(layout)

    def _check_batches(self) -> None:
        """ValueError when an epoch would have no batch (drop_last with too few videos per shard)."""
        if self.num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")
        n = len(self.videos)
        per_shard = n // self.num_shards if self.drop_last else -(-n // self.num_shards)
        if per_shard < self.batch_size and self.drop_last:
            raise ValueError(f"an epoch would have no batch: {n} videos over {self.num_shards} shard(s) leave "
                             f"{per_shard} per shard, fewer than batch_size={self.batch_size} (batch_size is per "
                             "shard), and drop_last=True drops the incomplete batch; lower batch_size or the shard "
                             "count, add videos, or pass drop_last=False")

    # -- epochs ------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Pin the epoch of the next pass (its order, clips, crops, colours) to `epoch`.

        Without it the loader counts epochs itself: a pass is one iteration of the loader that was
        started (its first batch asked for, whether or not it ran to the end); the first pass is
        epoch 0 and each later pass the one after the previous pass's epoch. set_epoch(e) makes the
        next pass epoch e whatever came before, so pass e of a run without set_epoch is exactly
        what set_epoch(e) gives, and a run that calls it every epoch (DistributedSampler's habit,
        the trainer) is unaffected by the counting. An abandoned pass counts too: restarting its
        epoch would hand out the same first batches again.
        """
        self.epoch = int(epoch)
        self._epoch_used = False

    def skip(self, n: int) -> None:
        """Start the next pass at batch n of its epoch, without decoding batches 0..n-1.

        Plans are a function of (seed, epoch, position), so a resumed run gets exactly the batches
        it would have had: call set_epoch(e) then skip(n). Applies to the next pass only; it does
        not choose the epoch (set_epoch does, or the counting).
        """
        if not 0 <= int(n) <= len(self):
            raise ValueError(f"skip({n}): the epoch has {len(self)} batches")
        self._skip = int(n)

    def _begin_pass(self) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
        """Start a pass: check that every rank has the same seed and videos (the first pass of a
        multi-rank job), choose its epoch (set_epoch's, or the next one after a pass) and consume the skip.
        Returns (epoch, its batches from the skip point)."""
        if not self._seeds_checked:
            check_same_setup(self.seed, self.videos, self.shard_id, self.num_shards)
            self._seeds_checked = True
        if self._epoch_used:
            self.epoch += 1
        self._epoch_used = True
        start, self._skip = self._skip, 0
        return self.epoch, self.batches()[start:]

    def finish_batch(self, batch: dict) -> dict:
        """The batch after the user's batch_transform (if any)."""
        if self.batch_transform is None:
            return batch
        out = self.batch_transform(batch)
        if not isinstance(out, dict):
            raise TypeError(f"batch_transform must return the batch dict, got {type(out).__name__}")
        return out

    def epoch_samples(self, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(positions, dataset indices) of this shard in `epoch` (default: the current one)."""
        return epoch_order(len(self.videos), seed=self.seed, epoch=self.epoch if epoch is None else epoch,
                           shard_id=self.shard_id, num_shards=self.num_shards, shuffle=self.shuffle,
                           drop_last=self.drop_last)

    def batches(self, epoch: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        positions, indices = self.epoch_samples(epoch)
        b = self.batch_size
        return [(positions[i:i + b], indices[i:i + b]) for i in range(0, len(positions), b)][:len(self)]

    def __len__(self) -> int:
        """Batches per epoch for this shard (full batches only, unless drop_last=False)."""
        return num_batches(len(self.epoch_samples(0)[0]), self.batch_size, self.drop_last)

    def plan_chunk(self, epoch: int, batches) -> list[list[SamplePlan]]:
        """The plans of several batches in one planner call (split back into batches)."""
        positions = np.concatenate([p for p, _ in batches])
        indices = np.concatenate([i for _, i in batches])
        plans = self.planner.plan_batch(epoch, positions, indices)
        out, at = [], 0
        for p, _ in batches:
            out.append(plans[at:at + len(p)])
            at += len(p)
        return out

    # -- files: delegated to the verdicts (the planner calls them without a loader reference) ---
    @property
    def codecs(self):
        """Codecs the decoder reads (None: any)."""
        return self.verdicts.codecs if "verdicts" in self.__dict__ else self.__dict__.get("_codecs")

    @codecs.setter
    def codecs(self, value) -> None:
        self.__dict__["_codecs"] = value
        if "verdicts" in self.__dict__:
            self.verdicts.codecs = value

    @property
    def failures(self) -> dict[str, str]:
        """path -> reason of the files that failed, each reported once."""
        return self.verdicts.failures

    def file_size(self, video: str) -> tuple[int, int] | None:
        return self.verdicts.file_size(video)

    def is_bad(self, path: str) -> str | None:
        return self.verdicts.is_bad(path)

    def report_failure(self, path: str, reason: str) -> None:
        self.verdicts.report_failure(path, reason)

    def count_replacements(self, plans: Sequence[SamplePlan]) -> None:
        """Count the samples replaced in plans being handed out, and report each bad file once."""
        for plan in plans:
            self.num_replaced += bool(plan.failures)
            for path, reason in plan.failures:
                self.report_failure(path, reason)

    # -- output ------------------------------------------------------------------------------
    def batch_dict(self, views: Sequence[torch.Tensor], plans: Sequence[SamplePlan], device) -> dict:
        """The batch handed out (module docstring): `views`, motion, index, label and (return_meta)
        the plans' per-view frames, boxes and flips; everything on `device`. The batch_transform
        is not applied here (finish_batch)."""
        out = {"views": list(views)}
        out.update(self.plan_fields(plans, device))
        return out

    def plan_fields(self, plans: Sequence[SamplePlan], device) -> dict:
        """motion, index, label (labels=) and (return_meta) frames/boxes/flips of a batch, as torch
        tensors on `device`."""
        out = {"motion": torch.from_numpy(np.stack([p.motion for p in plans])),
               "index": torch.tensor([p.index for p in plans], dtype=torch.int64)}
        if self.labels is not None:
            out["label"] = torch.from_numpy(self.labels[[p.index for p in plans]])
        out.update(extra_fields(plans))
        if self.return_meta:
            out.update(meta_fields(plans))
            if self.variant is not None:
                out.update(self.variant.meta_fields(plans))
        return {k: [t.to(device) for t in v] if isinstance(v, list) else v.to(device) for k, v in out.items()}


def extra_fields(plans: Sequence[SamplePlan]) -> dict:
    """A sampler's per-sample extras (plan.Clips.extras) stacked into CPU tensors (B, ...), by name.
    Every sample must give the same names, dtypes and shapes (ValueError naming the difference)."""
    names = list(plans[0].extras) if plans else []
    out = {}
    for p in plans[1:]:
        if list(p.extras) != names:
            raise ValueError(f"samples of one batch gave different sampler extras: {names} and {list(p.extras)} "
                             f"({p.video})")
    for name in names:
        values = [np.asarray(p.extras[name]) for p in plans]
        if len({(v.dtype, v.shape) for v in values}) > 1:
            raise ValueError(f"sampler extra {name!r} differs in dtype or shape between the samples of a batch: "
                             f"{sorted({(str(v.dtype), v.shape) for v in values})}")
        out[name] = torch.from_numpy(np.stack(values))
    return out


def meta_fields(plans: Sequence[SamplePlan]) -> dict:
    """The plans' per-view frames, boxes and flips: lists with one CPU tensor per view, in view
    order (frames (B, T_v) int64, boxes (B, 4) int64 (y0, x0, h, w) in the decoded file's pixels,
    the store's source pixels unless video_root holds a resized transcode, flips (B,) bool)."""
    views = range(len(plans[0].views)) if plans else ()
    return {"frames": [torch.from_numpy(np.stack([p.views[v].frames for p in plans]).astype(np.int64)) for v in views],
            "boxes": [torch.tensor([p.views[v].box for p in plans], dtype=torch.int64) for v in views],
            "flips": [torch.tensor([p.views[v].aug.flip for p in plans], dtype=torch.bool) for v in views]}
