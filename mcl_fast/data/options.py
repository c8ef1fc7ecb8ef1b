"""The options both loaders take, in one place so the DALI loader and the torch loader cannot drift.

    MotionFocusedLoader(videos, store, batch_size, device="cuda", **options)
    TorchVideoLoader(videos, store, batch_size, num_workers=4, **options)

`LoaderOptions(**options)` checks every name and value; an unknown name is a TypeError listing
every option the loader accepts (its own and these).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

from .output import OutputFormat
from .views import ViewSpec

VIEW_PRESETS = ("pair", "clip")  # views= by name: the MoCo query/key pair (default), one clip (masked modelling)

VERIFY_MODES = ("lazy", "eager", True, False)  # verify=: checks at first open, at construction (True), none

# Options users bring from torch's DataLoader / DistributedSampler habits, and what to use instead.
MISNAMED = {"sampler": "the loaders order and shard each epoch themselves (loader.sampler is that epoch sampler: "
                       "set_epoch, len, iteration); the clip sampler is clip_sampler=",
            "shuffle_seed": "seed="}


@dataclass(frozen=True)
class LoaderOptions:
    """Options shared by MotionFocusedLoader and TorchVideoLoader.

    clip_len, stride: frames per clip and their spacing (paper: 16, 2). size: output side S.
    augment: each view's augmentation (default views: colour jitter p=0.8 (0.4, 0.4, 0.4, 0.1),
      greyscale p=0.2, blur p=0.5, flip p=0.5, the same on every frame of a view); False gives
      plain crops (no flip either) whatever the views say.
    sampling: "motion" (paper: motion-focused clip and crop), "random" (baseline), "temporal"
      (motion-focused clip, random crop) or "spatial" (random clip, motion-focused crop);
      preset: "paper", or a variant's name (data/presets.py; "official": the authors' release on its
      own store, docs/release.md) whose module brings its sampler, views and batch fields (e.g. batch
      key2, key3, motion (B, 4, 7, 7), query_first (B,)) and its min_frames default by the store's
      window; a sampler of your own, two_clips and other motion sizes are then refused.
      (`loader.sampler` is the epoch sampler, as with a DataLoader; the clip sampler is this one.)
    clip_sampler: a callable clip_sampler(maps, info, rng) -> plan.Choice (query and key) or plan.Clips
      (any views) replacing the clips and boxes of `sampling`; info is the store's info of the
      video plus "video" (its store key) and "clips" ((clip_len, stride) of each clip); a Clips'
      extras become batch keys. Without
      views=, the key is cut from the key frames it returns (decoded once when they equal the
      query's), in both loaders.
    two_clips: the default key from a second clip of the same video.
    views: "pair" (None, the default: the paper's MoCo query/key pair, view_names ("query", "key")),
      "clip" (one view, motion-focused crop and flip only: masked modelling, supervised; view_names
      ("clip",)), or a list of views.ViewSpec (each view's clip, crop rule, size, clip length and
      augmentation) or of dicts of their fields (ViewSpec.from_dict; view_names "view0", ...).
      Every batch holds `views`, a list of tensors in `loader.view_names` order.
    motion_size: (T', H', W') of `motion` (default (clip_len, size // 16, size // 16) of view 0).
    normalize: "imagenet" (default), (mean, std) per channel in [0, 1] units, or None (floats in
      [0, 1]); dtype: "float32", "float16", "bfloat16" or "uint8" (0..255, only with
      normalize=None); layout: "NCTHW", "NTCHW" or "NTHWC" (output.OutputFormat).
    labels: None, a sequence aligned with `videos` (class indices), or a split (a
      splits.load_split spec such as ".../trainlist01.txt", or a splits.Split): adds `label` (B,)
      int64 to each batch.
    seed, shard_id, num_shards, shuffle, drop_last: see plan.epoch_order; drop_last=True (the
      default) keeps every batch full (MoCo queues, shuffle BN); len(loader) is the number of
      batches of this shard; batch_size is per shard. shard_id / num_shards left None: the rank
      and world size of torch.distributed's initialised process group (like DistributedSampler),
      else 0 / 1 (base.resolve_shards): then every rank builds and iterates the loader, as with a
      DistributedSampler (a loader on one rank only, e.g. an evaluation on rank 0, passes
      shard_id=0, num_shards=1). Every rank must pass the same seed and videos: the first pass of
      a loader sharded by the group checks them (one all-gather) and raises naming each rank's.
    batch_transform: None, or a picklable callable batch -> batch run on each batch after it is
      assembled: in the worker process (TorchVideoLoader, CPU tensors) or after the pipeline
      (MotionFocusedLoader, tensors on its device); e.g. masking.MotionTubeMask.
    return_meta: add the decoded frame indices, crop boxes (in the decoded file's pixels) and flips.
    video_root: read the files from here instead of the store's root (a transcoded copy).
    verify: when each file is checked against the store (checks.check_files: it exists, its
      fingerprint is the one the maps were made from, its frame count and size agree): "lazy"
      (the default) the first time this process opens it for decoding, a failing file replaced
      and reported by name; "eager" (or True) the files of this rank's first-epoch shard at
      construction, a failure being an error there (others lazily); False not at all.
    check_fingerprints, min_frames: the fingerprint part of those checks, and the short-video
      policy (checks.short_video_policy), see the loaders' docstrings.
    """

    clip_len: int = 16
    stride: int = 2
    size: int = 224
    augment: bool = True
    sampling: str = "motion"
    preset: str = "paper"
    seed: int = 0
    shard_id: int | None = None
    num_shards: int | None = None
    return_meta: bool = False
    two_clips: bool = False
    clip_sampler: Callable | None = None
    views: Sequence[ViewSpec] | str | None = None
    batch_transform: Callable | None = None
    motion_size: tuple | None = None
    normalize: object = "imagenet"
    dtype: object = "float32"
    layout: str = "NCTHW"
    labels: object = None
    drop_last: bool = True
    shuffle: bool = True
    video_root: object = None
    verify: bool | str = "lazy"
    check_fingerprints: bool = True
    min_frames: int | None = None
    output: OutputFormat = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self):
        for name in ("clip_len", "stride", "seed", "shard_id", "num_shards"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        if self.clip_len < 1 or self.stride < 1:
            raise ValueError(f"clip_len and stride must be >= 1, got {self.clip_len}, {self.stride}")
        if self.clip_sampler is not None and not callable(self.clip_sampler):
            raise TypeError("clip_sampler must be callable: clip_sampler(maps, info, rng) -> plan.Choice or plan.Clips")
        if self.batch_transform is not None and not callable(self.batch_transform):
            raise TypeError(f"batch_transform must be callable (batch dict -> batch dict), got "
                            f"{type(self.batch_transform).__name__}")
        if isinstance(self.views, str):
            if self.views not in VIEW_PRESETS:
                raise ValueError(f"views must be one of {', '.join(map(repr, VIEW_PRESETS))} or a list of ViewSpec, "
                                 f"got {self.views!r}")
            if self.views == "clip" and self.two_clips:
                raise ValueError("two_clips=True describes the query/key pair; views='clip' has one view")
        elif self.views is not None:
            views = tuple(ViewSpec.from_dict(v) for v in self.views)  # dicts: from a JSON config
            if self.two_clips:
                raise ValueError("two_clips=True describes the default views; with views= give each view its clip "
                                 "(ViewSpec(clip=1))")
            object.__setattr__(self, "views", views)
        if self.motion_size is not None:
            motion_size = tuple(int(s) for s in self.motion_size)
            if len(motion_size) != 3 or min(motion_size) < 1:
                raise ValueError(f"motion_size must be (T', H', W') of positive ints, got {self.motion_size}")
            object.__setattr__(self, "motion_size", motion_size)
        if self.verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {', '.join(map(repr, VERIFY_MODES))}, got {self.verify!r}")
        if self.min_frames is not None and int(self.min_frames) < 1:
            raise ValueError(f"min_frames must be >= 1, got {self.min_frames}")
        object.__setattr__(self, "output", OutputFormat(self.normalize, self.dtype, self.layout))

    @classmethod
    def from_kwargs(cls, owner: str, kwargs: dict, own: Sequence[str] = ()) -> "LoaderOptions":
        """LoaderOptions(**kwargs), with a TypeError for an unknown name that names `owner` and every
        option it accepts: `own` (its own keyword arguments) and these."""
        names = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            hints = "".join(f" ({name}: {MISNAMED[name]})" for name in unknown if name in MISNAMED)
            valid = ", ".join(sorted(names | {"videos", "store", "batch_size", *own}))
            raise TypeError(f"{owner} got unexpected option(s) {', '.join(unknown)}{hints}; it accepts: {valid}")
        return cls(**kwargs)

    @property
    def check_mode(self) -> str:
        """"eager", "lazy" or "off": verify= as one word (True is "eager")."""
        return {True: "eager", False: "off"}.get(self.verify, self.verify)

    def replace(self, **changes) -> "LoaderOptions":
        return dataclasses.replace(self, **changes)
