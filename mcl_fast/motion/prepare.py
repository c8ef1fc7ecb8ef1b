"""`mcl-fast prepare`: videos -> optical flow -> motion maps -> a motion store, resumable.

One pass per video with bounded memory: frames stream from the decoder (gray, short side
`size`), the flow of each consecutive pair is turned into a motion map (eq. 1) and block-averaged
(`map_downsample`); only those small maps are kept, then quantised per video (store.py). Worker
processes compute; the main process alone writes the store, so a SIGKILL at any moment leaves a
valid store, and a rerun skips every finished video (and, unless `retry_errors`, every video
recorded as an error). Bad inputs never stop the run: each is recorded with its reason in
STORE/errors.json.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import numpy as np

from .._backend import gpu_twin
from ..video_io import (CRASH_REASON, VideoError, VideoListError, VideoReader, collect_videos, crash_tolerant_map,
                        file_fingerprint, target_size)
from .flow import FLOW_METHODS, PairFlow
from .maps import downsample_mean, motion_map
from .store import ERRORS, StoreError, StoreWriter, VideoMaps

DEVICES = ("cpu", "cuda")


class PrepareError(Exception):
    """prepare could not do its job as asked (base class of InputError and PrepareFailed)."""


class InputError(PrepareError, ValueError):
    """The videos argument or a setting is unusable (as opposed to one bad video)."""


class PrepareFailed(PrepareError):
    """strict=True and some inputs are errors; `.report` is the full PrepareReport (the store
    was still completed for every good video)."""

    def __init__(self, report: "PrepareReport"):
        self.report = report
        super().__init__(report.summary())


@dataclass
class PrepareReport:
    """done: videos prepared by this run; skipped_existing: videos already in the store;
    errors: [{"path", "reason"}] of this run's inputs that are errors (new or from earlier runs)."""

    done: int = 0
    skipped_existing: int = 0
    errors: list = field(default_factory=list)
    store: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        return (f"prepared {self.done}, skipped {self.skipped_existing} already done, "
                f"{len(self.errors)} errors (see {os.path.join(self.store, ERRORS)})")


# ------------------------------------------------------------------------ one video's maps

_FLOW_CACHE: dict[str, PairFlow] = {}


def _pair_flow(method: str) -> PairFlow:
    if method not in _FLOW_CACHE:  # one estimator per process (TV-L1 setup is not free)
        _FLOW_CACHE[method] = PairFlow(method)
    return _FLOW_CACHE[method]


def compute_video_maps(path, *, flow: str = "tvl1", size: int = 128, map_downsample: int = 4) -> VideoMaps:
    """Decode `path` (gray, short side `size`), flow of each consecutive pair, motion map (eq. 1),
    block mean over map_downsample x map_downsample; the last frame repeats the map before it
    (paper 3.1); a single-frame video has one all-zero map (nothing moves). Returns VideoMaps
    quantised per video (|read - exact| <= scale / 510), with the file's fingerprint.

    Memory is bounded by the downsampled maps (a 128x171 flow gives 32x42 float maps).
    Raises VideoError for every unusable input (the verdict of mcl_fast.video_io).
    """
    path = os.fspath(path)
    if flow not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {flow!r}; choose one of {FLOW_METHODS}")
    pair = _pair_flow(flow)
    maps: list[np.ndarray] = []
    with VideoReader(path) as reader:  # VideoError for a missing or unreadable file first
        fingerprint = source_fingerprint(path)
        prev = None
        for frame in reader.frames(size=size, gray=True):
            if prev is not None:
                m = motion_map(pair(prev, frame)[None])
                maps.append(downsample_mean(m, map_downsample)[0])
            prev = frame
        n, fps = reader.decoded, reader.info["fps"]
        height, width = reader.frame_size or (reader.info["height"], reader.info["width"])
    if n == 1:
        return VideoMaps.without_motion(1, still_map_shape(height, width, size, map_downsample), fps=fps,
                                        height=height, width=width, fingerprint=fingerprint)
    maps.append(maps[-1])
    try:
        return VideoMaps.from_maps(np.stack(maps), fps=fps, height=height, width=width, fingerprint=fingerprint)
    except ValueError as e:  # non-finite flow
        raise VideoError(path, f"motion maps unusable: {e}") from None


def still_map_shape(height: int, width: int, size: int, map_downsample: int) -> tuple[int, int]:
    """(map_h, map_w) of a video of height x width frames: what its flow would be block-averaged to."""
    th, tw = target_size(height, width, size)
    return max(1, th // map_downsample), max(1, tw // map_downsample)


def source_fingerprint(path) -> str:
    """The file's content fingerprint (video_io.file_fingerprint), recorded in the store so the
    loaders can tell when a file is no longer the one the maps were made from."""
    try:
        return file_fingerprint(path)
    except OSError as e:
        raise VideoError(path, f"unreadable: {e.strerror or e}") from None


# --------------------------------------------------------------------------------- workers


def _work(task):
    """(abs path, relpath, flow, size, map_downsample) -> (relpath, VideoMaps or None, reason)."""
    path, rel, flow, size, map_downsample = task
    try:
        return rel, compute_video_maps(path, flow=flow, size=size, map_downsample=map_downsample), None
    except VideoError as e:
        return rel, None, e.reason
    except Exception as e:  # one video's failure must not stop the run
        return rel, None, f"internal error: {type(e).__name__}: {e}"


def _crashed(task):
    return task[1], None, CRASH_REASON


def _gpu_compute():
    """The GPU twin of the per-video work (mcl_fast.gpu.video_maps), after checking once that it can run here."""
    try:
        gpu_twin("prepare.require_gpu_stack")()  # fail once, now, rather than once per video
        return gpu_twin("prepare.compute_video_maps")
    except (ImportError, AttributeError) as e:
        raise InputError(f"--device cuda cannot run here: {e}") from None


def _gpu_results(tasks, compute):
    for path, rel, flow, size, map_downsample in tasks:
        try:
            maps = compute(path, flow=flow, size=size, map_downsample=map_downsample)
            maps.fingerprint = source_fingerprint(path)
            yield rel, maps, None
        except VideoError as e:
            yield rel, None, e.reason
        except Exception as e:
            if _is_device_error(e):
                raise  # a sticky CUDA error or out of memory is the machine's, not this video's
            yield rel, None, f"internal error: {type(e).__name__}: {e}"


def _is_device_error(e: Exception) -> bool:
    """CUDA runtime/driver errors and device out-of-memory (CuPy's classes, matched by name so
    this module never imports CuPy)."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"CUDARuntimeError", "CUDADriverError", "OutOfMemoryError", "CompileException"})


def _results(tasks, workers: int, gpu_compute=None):
    if gpu_compute is not None:  # in this process: no GPU work in forked or spawned workers
        return _gpu_results(tasks, gpu_compute)
    if workers <= 0:
        return (_work(t) for t in tasks)
    return crash_tolerant_map(_work, tasks, workers, on_crash=_crashed)


# --------------------------------------------------------------------------------- prepare


def prepare(videos, out, *, flow: str = "tvl1", size: int = 128, workers: int = 1, device: str = "cpu",
            strict: bool = False, map_downsample: int = 4, retry_errors: bool = False, progress: bool = True,
            root=None) -> PrepareReport:
    """Build or resume the motion store `out` from `videos` (a folder, a list/split file, one
    video file, or a list of paths relative to `root`).

    Finished videos are never recomputed; videos recorded as errors are skipped unless
    `retry_errors`. workers: CPU processes (0 computes in this process); device="cuda" computes
    with mcl_fast.gpu.video_maps in this process. progress: a progress bar (stderr) and the
    one-line summary (stdout). strict: raise PrepareFailed at the end (after the store is
    complete for every good video) when any input is an error.
    """
    if flow not in FLOW_METHODS:
        raise InputError(f"unknown flow method {flow!r}; choose one of {', '.join(FLOW_METHODS)}")
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    size, map_downsample, workers = int(size), int(map_downsample), int(workers)
    if map_downsample < 1 or size < 2 * map_downsample:
        raise InputError(f"need map_downsample >= 1 and size >= 2 * map_downsample, got size {size}, "
                         f"map_downsample {map_downsample}")
    if workers < 0:
        raise InputError(f"workers must be >= 0, got {workers}")
    if device == "cuda" and flow != "tvl1":
        # Checked before the store opens: per-video errors would make a rerun skip every video.
        raise InputError(f"--device cuda computes TV-L1 flow only; use --flow tvl1, or --device cpu for {flow}")
    gpu_compute = _gpu_compute() if device == "cuda" else None
    try:
        root, rels = collect_videos(videos, root)
    except VideoListError as e:
        raise InputError(str(e)) from None
    report = PrepareReport(store=os.fspath(out))
    with StoreWriter(out, root=root, flow=flow, size=size, map_downsample=map_downsample) as writer:
        todo = []
        for rel in rels:
            if writer.done(rel):
                report.skipped_existing += 1
            elif not writer.failed(rel) or retry_errors:
                todo.append(rel)
        tasks = [(os.path.join(root, rel), rel, flow, size, map_downsample) for rel in todo]
        bar = None
        if progress and tasks:
            from tqdm import tqdm

            bar = tqdm(total=len(tasks), unit="video", desc="prepare", dynamic_ncols=True, file=sys.stderr)
        new_errors = 0
        results = _results(tasks, min(workers, len(tasks)) if workers > 0 else 0, gpu_compute)
        try:
            for rel, maps, reason in results:
                if maps is not None:
                    writer.add(rel, maps)
                    report.done += 1
                else:
                    writer.add_error(rel, reason)
                    new_errors += 1
                if bar is not None:
                    bar.set_postfix(errors=new_errors, refresh=False)
                    bar.update(1)
        finally:
            if hasattr(results, "close"):
                results.close()  # stop the workers if the loop ended early
            if bar is not None:
                bar.close()
            writer.compact()  # on KeyboardInterrupt too: the journal is folded in either way
        report.errors = [{"path": rel, "reason": writer.errors[rel]} for rel in rels if rel in writer.errors]
    if progress:
        print(report.summary(), flush=True)
    if strict and report.errors:
        raise PrepareFailed(report)
    return report


# ------------------------------------------------------------------------------------- CLI


def add_args(parser) -> None:
    parser.add_argument("--videos", required=True, metavar="DIR_OR_LIST",
                        help="a folder (scanned recursively for video files) or a list/split file "
                             "(one path per line; extra tokens such as UCF101 labels are ignored)")
    parser.add_argument("--out", required=True, metavar="STORE", help="the motion store folder (created or resumed)")
    parser.add_argument("--flow", choices=FLOW_METHODS, default="tvl1", help="optical flow (default tvl1)")
    parser.add_argument("--size", type=int, default=128, help="short side of the frames the flow runs on (default 128)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (default 1; 0 computes in the main process)")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="where to compute flow and maps")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any input is an error")
    parser.add_argument("--map-downsample", type=int, default=4,
                        help="average motion maps over NxN blocks before storing (default 4)")
    parser.add_argument("--retry-errors", action="store_true", help="retry inputs recorded as errors by earlier runs")
    parser.add_argument("--root", default=None,
                        help="folder the listed paths are relative to (default: the list file's folder)")


def run(args) -> int:
    try:
        prepare(args.videos, args.out, flow=args.flow, size=args.size, workers=args.workers, device=args.device,
                strict=args.strict, map_downsample=args.map_downsample, retry_errors=args.retry_errors,
                progress=True, root=args.root)
    except PrepareFailed:
        return 1  # the summary is already printed
    except (PrepareError, StoreError) as e:
        print(f"mcl-fast prepare: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mcl-fast prepare: interrupted; the store is valid and a rerun resumes it", file=sys.stderr)
        return 130
    return 0


__all__ = ["prepare", "compute_video_maps", "PrepareReport", "PrepareError", "InputError", "PrepareFailed", "VideoMaps",
           "add_args", "run"]
