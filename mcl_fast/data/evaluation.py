"""The loaders' evaluation mode: k clips spread uniformly over each video, a centre crop, no augmentation.

The standard multi-clip protocol (the paper's linear probe, sec. 4.2, and fine-tuning's test):
clip starts evenly spaced from frame 0 to the last full clip, each clip cropped to the centre box
that "short side resized to resize_to, then a crop_size² centre crop" keeps, no flip, no colour;
the same clips every pass. A sample is one video; its k clips are the batch's k views, so
`batch["views"][c][b]` is clip c of video `batch["index"][b]`.

The videos need no motion store: `ProbedVideos` is a store-like source of plain files (a split's
test list, say) whose frame count and size come from decoding each file completely the first time a
process plans it (video_io.check_video: the exact count, and the verdict every tool gives), so
nothing is opened at construction. Its batches hold a zero `motion` target (no maps exist).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from ..sampling import clip_frame_indices, clip_span
from ..video_io import VideoError, check_video
from .plan import Clips
from .views import NONE, ViewSpec


def uniform_clip_starts(num_frames: int, num_clips: int, clip_len: int, stride: int) -> np.ndarray:
    """(num_clips,) int64 starts evenly spaced from 0 to the last full clip (0 when the video is short)."""
    last = max(0, num_frames - clip_span(clip_len, stride))
    return np.floor(np.linspace(0, last, num_clips) + 0.5).astype(np.int64)  # half rounds up


def centre_box(height: int, width: int, crop_size: int, resize_to: int) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) in source pixels: what resizing the short side to resize_to and cropping the
    centre crop_size² keeps."""
    side = int(round(crop_size * min(height, width) / resize_to))
    side = max(1, min(side, height, width))
    return (height - side) // 2, (width - side) // 2, side, side


class ProbedVideos:
    """A store-like source of video files without motion maps (planner.Planner's duck-typed store).

    videos: the files' paths (their keys). info(video) -> {"num_frames", "height", "width"} from a
    full decode at first use (cached per process); problem(video) -> why the file cannot be read,
    or None (the loaders replace and report such a file, like any bad file).
    """

    has_maps = False  # the planner gives a zero motion target instead of reading maps
    verify = False  # no stored maps whose checksums could be checked

    def __init__(self, paths: Sequence):
        self.videos = sorted({str(p) for p in paths})
        self._info: dict[str, dict] = {}
        self._problems: dict[str, str] = {}

    def __getstate__(self) -> dict:
        return {"videos": self.videos}  # a worker probes the files it opens itself

    def __setstate__(self, state: dict) -> None:
        self.videos, self._info, self._problems = state["videos"], {}, {}

    def video_path(self, video: str) -> str:
        return video

    def problem(self, video: str) -> str | None:
        if video not in self._info and video not in self._problems:
            try:
                meta = check_video(video)
            except VideoError as err:
                self._problems[video] = err.reason
            else:
                self._info[video] = {"num_frames": int(meta["decoded"]), "height": int(meta["height"]),
                                     "width": int(meta["width"])}
        return self._problems.get(video)

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
        return _build(videos, source, batch_size, options, decoder, device, num_workers)


def _build(videos, source, batch_size: int, options: dict, decoder: str, device: str, num_workers: int):
    """evaluation_loader's loader for its decoder."""
    if decoder == "dali":
        from .loader import MotionFocusedLoader
        from .nvdec import refuse_unsupported

        on_gpu = str(device) != "cpu"
        if on_gpu:  # every file NVDEC cannot decode named now, before any decoding (and without a GPU)
            refuse_unsupported(videos, "evaluation with decoder='dali' on the GPU")
        return MotionFocusedLoader(videos, source, batch_size, device="cuda" if on_gpu else "cpu", **options)
    if decoder != "pyav":
        raise ValueError(f"decoder must be 'pyav' or 'dali', got {decoder!r}")
    from .torch_loader import TorchVideoLoader

    return TorchVideoLoader(videos, source, batch_size, num_workers=num_workers, device=device, **options)
