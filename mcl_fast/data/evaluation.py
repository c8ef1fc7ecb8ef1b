"""The loaders' modes over plain labelled video files: evaluation and fine-tuning's training.

Evaluation (evaluation_loader), the standard multi-clip protocol (the paper's linear probe,
sec. 4.2, and fine-tuning's test): clip starts evenly spaced from frame 0 to the last full clip,
each clip cropped to the centre box that "short side resized to resize_to, then a crop_size²
centre crop" keeps, no flip, no colour; the same clips every pass. A sample is one video; its k
clips are the batch's k views, so `batch["views"][c][b]` is clip c of video `batch["index"][b]`.

Fine-tuning's training (finetune_loader): per epoch one clip of each video with a uniformly random
start, a box of the centre box's size at a uniformly random position (what "short side resized to
resize_to, then a random crop_size² crop" keeps) and a horizontal flip half the time, no colour;
shuffled and sharded over the process group like pretraining's loader, every draw a function of
(seed, epoch, position). `batch["views"][0]` holds the clips and `batch["label"]` their classes.

The videos need no motion store: `ProbedVideos` is a store-like source of plain files (a split's
test list, say) whose frame count and size are read the first time a process plans each file, so
nothing is opened at construction: for evaluation from a complete decode (video_io.check_video: the
exact count, and the verdict every tool gives; each video is read once anyway), for training from
its packets (video_io.frame_index, the index the seeking reader keeps; no frame decoded), as every
loading process meets every video there, epoch after epoch. Batches hold a zero `motion` target.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from ..sampling import clip_frame_indices, clip_span, random_clip_start
from ..video_io import VideoError, check_video, frame_index, probe
from .plan import Clips
from .views import NONE, WEAK, ViewSpec


def uniform_clip_starts(num_frames: int, num_clips: int, clip_len: int, stride: int) -> np.ndarray:
    """(num_clips,) int64 starts evenly spaced from 0 to the last full clip (0 when the video is short)."""
    last = max(0, num_frames - clip_span(clip_len, stride))
    return np.floor(np.linspace(0, last, num_clips) + 0.5).astype(np.int64)  # half rounds up


def crop_side(height: int, width: int, crop_size: int, resize_to: int) -> int:
    """Source pixels that crop_size pixels of the frame resized to a short side of resize_to span."""
    side = int(round(crop_size * min(height, width) / resize_to))
    return max(1, min(side, height, width))


def centre_box(height: int, width: int, crop_size: int, resize_to: int) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) in source pixels: what resizing the short side to resize_to and cropping the
    centre crop_size² keeps."""
    side = crop_side(height, width, crop_size, resize_to)
    return (height - side) // 2, (width - side) // 2, side, side


class ProbedVideos:
    """A store-like source of video files without motion maps (planner.Planner's duck-typed store).

    videos: the files' paths (their keys). info(video) -> {"num_frames", "height", "width"} at first
    use (cached per process): exact_counts=True from a full decode, False from the packet index and
    the stream's header (~30x cheaper on a 250-frame video; a file whose packets outnumber its
    decodable frames fails at the read of a missing frame instead, and is replaced then).
    problem(video) -> why the file cannot be read, or None (the loaders replace and report such a
    file, like any bad file).
    """

    has_maps = False  # the planner gives a zero motion target instead of reading maps
    verify = False  # no stored maps whose checksums could be checked

    def __init__(self, paths: Sequence, exact_counts: bool = True):
        self.videos = sorted({str(p) for p in paths})
        self.exact_counts = bool(exact_counts)
        self._info: dict[str, dict] = {}
        self._problems: dict[str, str] = {}

    def __getstate__(self) -> dict:
        return {"videos": self.videos, "exact_counts": self.exact_counts}  # a worker probes the files it opens

    def __setstate__(self, state: dict) -> None:
        self.videos, self.exact_counts, self._info, self._problems = state["videos"], state["exact_counts"], {}, {}

    def video_path(self, video: str) -> str:
        return video

    def problem(self, video: str) -> str | None:
        if video not in self._info and video not in self._problems:
            try:
                self._info[video] = self._measure(video)
            except VideoError as err:
                self._problems[video] = err.reason
        return self._problems.get(video)

    def _measure(self, video: str) -> dict:
        """info(video), or VideoError naming why the file cannot be read."""
        if self.exact_counts:
            meta = check_video(video)
            return {"num_frames": int(meta["decoded"]), "height": int(meta["height"]), "width": int(meta["width"])}
        meta, count = probe(video), len(frame_index(video))
        if count == 0 or min(meta["height"], meta["width"]) <= 0:
            raise VideoError(video, "no video packets" if count == 0 else "no frame size in its header")
        return {"num_frames": count, "height": int(meta["height"]), "width": int(meta["width"])}

    def info(self, video: str) -> dict:
        reason = self.problem(video)
        if reason is not None:
            raise VideoError(video, reason)
        return self._info[video]


class UniformClips:
    """A loader clip sampler (options.clip_sampler): num_clips uniformly spaced clips, each with the
    centre box (centre_box); deterministic (the generator is not used)."""

    def __init__(self, num_clips: int, clip_len: int, stride: int, crop_size: int, resize_to: int):
        self.num_clips, self.clip_len, self.stride = int(num_clips), int(clip_len), int(stride)
        self.crop_size, self.resize_to = int(crop_size), int(resize_to)

    def __call__(self, maps, info: dict, rng) -> Clips:
        n = int(info["num_frames"])
        starts = uniform_clip_starts(n, self.num_clips, self.clip_len, self.stride)
        box = centre_box(int(info["height"]), int(info["width"]), self.crop_size, self.resize_to)
        return Clips(frames=tuple(clip_frame_indices(s, self.clip_len, self.stride, n) for s in starts),
                     boxes=(box,) * self.num_clips)


class RandomClip:
    """A loader clip sampler (options.clip_sampler) of fine-tuning's training: one clip with a
    uniformly random start (sampling.random_clip_start) and a box of centre_box's size at a
    uniformly random position. Draws, in order: the start, the box's top row, its left column."""

    def __init__(self, clip_len: int, stride: int, crop_size: int, resize_to: int):
        self.clip_len, self.stride = int(clip_len), int(stride)
        self.crop_size, self.resize_to = int(crop_size), int(resize_to)

    def __call__(self, maps, info: dict, rng) -> Clips:
        n, height, width = int(info["num_frames"]), int(info["height"]), int(info["width"])
        start = random_clip_start(n, self.clip_len, self.stride, rng)
        side = crop_side(height, width, self.crop_size, self.resize_to)
        y0, x0 = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
        return Clips(frames=(clip_frame_indices(start, self.clip_len, self.stride, n),), boxes=((y0, x0, side, side),))


def evaluation_views(num_clips: int) -> list[ViewSpec]:
    """One view per clip, centre crop, no augmentation (view c is clip c)."""
    return [ViewSpec(clip=c, crop="center", aug=NONE) for c in range(num_clips)]


def evaluation_loader(paths: Sequence, *, num_clips: int, clip_len: int, stride: int, crop_size: int,
                      resize_to: int, batch_size: int, labels=None, decoder: str = "pyav", device: str = "cpu",
                      num_workers: int = 0):
    """A loader in evaluation mode over video files (module docstring): each video once, in order,
    in batches of batch_size videos, views = its num_clips clips (3, clip_len, crop_size²) each,
    ImageNet-normalised float32.

    decoder: "pyav" (TorchVideoLoader, num_workers processes, tensors on `device`) or "dali"
    (MotionFocusedLoader: NVDEC when device is cuda, else DALI's CPU decoder, VP8/VP9/MJPEG).
    The loader runs on this process alone (one shard), whatever the process group.
    """
    if len(paths) == 0:
        raise ValueError("the evaluation loader needs at least one video")
    options = dict(clip_len=clip_len, stride=stride, size=crop_size, augment=False,
                   clip_sampler=UniformClips(num_clips, clip_len, stride, crop_size, resize_to),
                   views=evaluation_views(num_clips), labels=labels, shuffle=False, drop_last=False,
                   shard_id=0, num_shards=1, verify=False)
    source, videos = ProbedVideos(paths), [str(p) for p in paths]
    with warnings.catch_warnings():  # under torchrun each rank evaluates its own list: one shard is meant
        warnings.filterwarnings("ignore", message="shard_id=0, num_shards=1 differ", category=UserWarning)
        return _build(videos, source, batch_size, options, decoder, device, num_workers, "evaluation")


def finetune_loader(paths: Sequence, labels, *, clip_len: int, stride: int, crop_size: int, resize_to: int,
                    batch_size: int, seed: int = 0, decoder: str = "pyav", device: str = "cpu", num_workers: int = 0,
                    pin_memory: bool = False):
    """A loader in fine-tuning's training mode over video files (module docstring): views = [the
    clips (B, 3, clip_len, crop_size²) ImageNet-normalised float32], label (B,) int64 (labels:
    class indices aligned with paths), index (B,) the videos.

    Each pass is the next epoch (set_epoch pins it): every video once, in an order drawn from
    (seed, epoch), split over torch.distributed's process group when one is initialised (every rank
    passes the same paths and seed); drop_last=False, so the last batch may be smaller and the
    shards are padded to equal counts with a few videos of the epoch's start. decoder, device,
    num_workers: as evaluation_loader's; pin_memory: TorchVideoLoader's (page-locked batches).
    """
    if len(paths) == 0:
        raise ValueError("the fine-tuning loader needs at least one video")
    # the sampler gives every box, so the view's crop rule never draws one; WEAK: flip only
    options = dict(clip_len=clip_len, stride=stride, size=crop_size, augment=True,
                   clip_sampler=RandomClip(clip_len, stride, crop_size, resize_to),
                   views=[ViewSpec(crop="random", aug=WEAK)], labels=labels, seed=seed, shuffle=True,
                   drop_last=False, verify=False)
    source = ProbedVideos(paths, exact_counts=False)  # each loading process meets every video: no full decode
    return _build([str(p) for p in paths], source, batch_size, options, decoder, device, num_workers, "fine-tuning",
                  pin_memory=pin_memory)


def _build(videos, source, batch_size: int, options: dict, decoder: str, device: str, num_workers: int, mode: str,
           **torch_options):
    """The loader of a mode (its name, for messages) for its decoder; torch_options:
    TorchVideoLoader's own (unused by DALI)."""
    if decoder == "dali":
        from .loader import MotionFocusedLoader
        from .nvdec import refuse_unsupported

        on_gpu = str(device) != "cpu"
        if on_gpu:  # every file NVDEC cannot decode named now, before any decoding (and without a GPU)
            refuse_unsupported(videos, f"{mode} with decoder='dali' on the GPU")
        return MotionFocusedLoader(videos, source, batch_size, device="cuda" if on_gpu else "cpu", **options)
    if decoder != "pyav":
        raise ValueError(f"decoder must be 'pyav' or 'dali', got {decoder!r}")
    from .torch_loader import TorchVideoLoader

    return TorchVideoLoader(videos, source, batch_size, num_workers=num_workers, device=device, **torch_options,
                            **options)
