"""The loaders' construction-time checks of a video list against its motion store.

Every video must be a store key whose file exists; with `verify`, each file's container header
must agree with the store (frame count where the container declares one, frame size up to a
uniform resize, codec for DALI's CPU decoder) and its content fingerprint must be the one the
maps were made from (or, for a copy written by `mcl-fast transcode`, come from that source).
Videos shorter than a clip are counted and reported once (`short_video_policy`).
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..video_io import TRUNCATION_TOLERANCE, VIDEO_EXTENSIONS, VideoError, file_fingerprint, probe
from .transcode import confined_relpath, read_sources
from .nvdec import FIX_HINT as NVDEC_FIX_HINT, nvdec_size_problem

log = logging.getLogger("mcl_fast.data")

PROBE_THREADS = 16  # threads opening containers at construction (I/O bound; bounded for file servers)
PROBE_CHUNK = 4096  # paths submitted to the pool at once
PROGRESS_MIN = 1000  # show a progress bar when checking more videos than this


def notice(message: str) -> None:
    """A one-line note to the user, shown once: a UserWarning (shown once per place); the log gets
    it at INFO level (a WARNING record would print it a second time where logging is not set up)."""
    log.info(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def list_problem(what: str, items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} {what}: {shown}{more}"


class VideoPaths:
    """Where each store key's file is: store.video_path(v), or under video_root.

    With video_root (e.g. the output of `mcl-fast transcode`), a key "a/b.mp4" maps to
    video_root/a/b.mp4 if it exists, else to the same stem with another video extension
    (a/b.webm after a VP9 transcode). A key above the store's root ("../v/a.mp4") maps where
    transcode writes it, video_root/__up__/v/a.mp4: nothing is looked up outside video_root.

    No file is stat'ed per video: without video_root the store knows the path; with it, each
    folder is listed once (the first time one of its videos is asked for) and the names looked
    up in that listing, so a dataset costs one listing per folder instead of up to
    1 + len(VIDEO_EXTENSIONS) stats per video. A file added to a folder after its listing is not
    seen by this object (the loader's files are fixed for a run).
    """

    def __init__(self, store, video_root=None):
        self.store, self.root = store, (Path(video_root) if video_root is not None else None)
        self._listings: dict[str, frozenset] = {}  # folder -> the names in it (one os.listdir each)

    def __call__(self, video: str) -> str:
        if self.root is None:
            return str(self.store.video_path(video))
        path = self.root / confined_relpath(video)
        names = self._listing(path.parent)
        if path.name in names:
            return str(path)
        for ext in VIDEO_EXTENSIONS:
            alt = path.with_suffix(ext)
            if alt.name in names:
                return str(alt)
        return str(path)

    def __getstate__(self) -> dict:
        # a DataLoader worker lists the folders it reads again (one listdir each) rather than
        # receiving every name under video_root in its pickled loader
        return {**self.__dict__, "_listings": {}}

    def _listing(self, folder: Path) -> frozenset:
        key = str(folder)
        names = self._listings.get(key)
        if names is None:
            try:
                names = frozenset(os.listdir(folder))
            except OSError:  # no such folder (its videos are reported missing by the checks)
                names = frozenset()
            self._listings[key] = names
        return names


# ------------------------------------------------------------------------------ store keys


def check_keys(videos: Sequence[str], store) -> None:
    """ValueError unless every video is a key of the store, saying what to do about the others:
    a video `prepare` rejected (its reason, and where the list of them is), a file path given
    instead of a key, or a video never prepared."""
    if len(videos) == 0:
        raise ValueError("the video list is empty")
    # the store's own lookup where it has one (no set of every name built per loader)
    contains = store.__contains__ if hasattr(type(store), "__contains__") else set(store.videos).__contains__
    missing = [v for v in videos if not contains(v)]
    if not missing:
        return
    known = set(store.videos)  # only to explain the missing ones
    where = getattr(store, "path", store)
    rejected = {e["path"]: e["reason"] for e in getattr(store, "errors", [])}
    root = str(getattr(store, "root", ""))
    problems = []
    refused = [f"{v} ({rejected[v]})" for v in missing if v in rejected]
    if refused:
        problems.append(list_problem("videos rejected by `mcl-fast prepare`", refused)
                        + f" (the list with reasons: {os.path.join(str(where), 'errors.json')})")
    paths = [v for v in missing if v not in rejected and _looks_like_a_path(v, root, known)]
    if paths:
        problems.append(list_problem("file paths given instead of store keys", paths)
                        + ": pass `store.videos` keys and `video_root=` (the folder the files are in)")
    others = [v for v in missing if v not in rejected and v not in paths]
    if others:
        problems.append(list_problem("missing", others) + " (run `mcl-fast prepare` on them)")
    raise ValueError(f"videos not in the motion store {where}: " + "; ".join(problems))


def _looks_like_a_path(video: str, root: str, known: set) -> bool:
    if os.path.isabs(video) or os.path.exists(video):
        return True
    return bool(root) and os.path.relpath(os.path.abspath(video), root).replace(os.sep, "/") in known


# ---------------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileScan:
    """What the construction check learned about one file: whether it exists, its container
    header (video_io.probe; None when not asked or unreadable) and its content fingerprint
    (None when not asked)."""

    exists: bool
    header: dict | None = None
    fingerprint: str | None = None


def _scan_one(path: str, verify: bool, fingerprint: bool, expected: str | None = None) -> FileScan:
    """expected: the store's fingerprint of the file, when a match makes the header read needless
    (the file the maps were made from: its frame count and size are the store's)."""
    if not os.path.isfile(path):
        return FileScan(False)
    if not verify:
        return FileScan(True)
    try:
        fp = file_fingerprint(path) if fingerprint else None
    except OSError:
        fp = None
    if expected is not None and fp == expected:
        return FileScan(True, None, fp)
    try:
        header = probe(path)
    except VideoError:
        header = None  # an unreadable file is replaced at training time (and reported)
    return FileScan(True, header, fp)


def scan_files(paths: Sequence[str], verify: bool, progress: bool | None = None,
               fingerprints: bool = False, expected: str | None = None) -> list[FileScan]:
    """A FileScan per path, in order, from a bounded thread pool.

    Opening a container and reading its header is mostly waiting on the file system, which
    threads overlap (PROBE_THREADS of them, bounded so a shared file server is not flooded). A tqdm
    bar is shown when there are more than PROGRESS_MIN files (progress=None) or when progress=True.
    expected: one file's store fingerprint, whose match skips its header read (_scan_one).
    """
    if len(paths) == 1 and not progress:  # a file checked when first planned: no pool, no bar to set up
        return [_scan_one(paths[0], verify, fingerprints, expected)]
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    show = len(paths) > PROGRESS_MIN if progress is None else progress
    threads = max(1, min(PROBE_THREADS, len(paths)))
    with ThreadPoolExecutor(threads, thread_name_prefix="mcl-probe") as pool, \
            tqdm(total=len(paths), unit="video", desc="checking videos" if verify else "finding videos",
                 disable=not show, dynamic_ncols=True) as bar:
        out = []
        # map() keeps the input order; one chunk at a time bounds the futures alive at once.
        for i in range(0, len(paths), PROBE_CHUNK):
            for result in pool.map(lambda p: _scan_one(p, verify, fingerprints), paths[i:i + PROBE_CHUNK]):
                out.append(result)
                bar.update(1)
    return out


def uniform_scale(src_hw, file_hw, tolerance: float = 2.0) -> bool:
    """True when file_hw is src_hw resized with one scale factor, up to `tolerance` pixels per side
    (transcode rounds each side, then makes it even)."""
    (sh, sw), (fh, fw) = src_hw, file_hw
    for s in (fh / sh, fw / sw):
        if abs(sh * s - fh) <= tolerance and abs(sw * s - fw) <= tolerance:
            return True
    return False


def _source_fingerprints(files: list[str], video_root, sources: dict | None = None) -> dict[str, tuple[str, str]]:
    """{file: (fingerprint it had when written, fingerprint of its source)} for the files under
    video_root that `mcl-fast transcode` wrote (its transcode_sources.json; `sources`: read_sources'
    answer, read once by a caller checking one file at a time)."""
    if video_root is None:
        return {}
    root = Path(video_root)
    sources = read_sources(root) if sources is None else sources
    out = {}
    for f in files:
        rel = os.path.relpath(f, root).replace(os.sep, "/")
        if rel in sources:
            out[f] = (sources[rel]["fingerprint"], sources[rel]["source_fingerprint"])
    return out


def check_fingerprints(videos: Sequence[str], files: list[str], scanned: list[FileScan], store,
                       video_root=None, sources: dict | None = None) -> list[str]:
    """ValueError naming the files that are not what the store's maps were made from: the file's
    fingerprint differs from the store's, or (a transcoded copy) its source's does, or the copy
    changed after `mcl-fast transcode` wrote it. Returns the videos that cannot be checked (no
    fingerprint in the store, or a copy without transcode_sources.json)."""
    copies = _source_fingerprints(files, video_root, sources)
    stale, unknown = [], []
    for v, f, scan in zip(videos, files, scanned):
        want = store.info(v).get("fingerprint")
        if want is None or scan.fingerprint is None:
            unknown.append(v)
        elif scan.fingerprint == want:
            continue
        elif f in copies:
            written, source = copies[f]
            if written != scan.fingerprint:
                stale.append(f"{f} (changed since `mcl-fast transcode` wrote it)")
            elif source != want:
                stale.append(f"{f} (transcoded from other footage than the store's {v})")
        elif video_root is not None:
            unknown.append(v)  # a copy of unknown origin: another file by nature, nothing to compare
        else:
            stale.append(f"{f} (not the file the maps were made from)")
    if stale:
        raise ValueError("the motion store does not match the videos: "
                         + list_problem("files with other content than the maps were made from", stale)
                         + f"; recompute their maps with `{_repair_command(store)}` (the store's own videos and "
                           "settings), or pass check_fingerprints=False to use them anyway")
    return unknown


def _repair_command(store) -> str:
    from mcl_fast.motion.store import repair_command

    return repair_command(getattr(store, "path", "STORE"))


def check_videos(videos: Sequence[str], store, paths: Callable[[str], str], verify: bool, codecs=None,
                 progress: bool | None = None, video_root=None, fingerprints: bool = True,
                 nvdec: bool = False) -> dict:
    """Check of the video list against the store; raises ValueError naming videos.

    Every video is a store key (check_keys), then check_files. Returns {video: (H, W)} of the
    files whose size differs from the store's (their boxes are scaled to file pixels).
    """
    check_keys(videos, store)
    return check_files(videos, store, paths, verify, codecs, progress, video_root, fingerprints, nvdec)


def check_files(videos: Sequence[str], store, paths: Callable[[str], str], verify: bool, codecs=None,
                progress: bool | None = None, video_root=None, fingerprints: bool = True,
                nvdec: bool = False, notify: bool = True, sources: dict | None = None,
                unknown: list | None = None, trust_fingerprint: bool = False) -> dict:
    """Check of store keys' files; raises ValueError naming videos.

    Always: the file exists. With verify: the file's
    content fingerprint is the one the maps were made from (check_fingerprints; unless
    fingerprints=False; with notify, a one-line notice counts the videos that cannot be checked so), the
    container's frame count, where it declares one, matches the store's num_frames, its codec is
    one of `codecs` (when given), and its frame size is the store's (source) size or that size
    uniformly scaled (a `--short-side` transcode); another aspect ratio is an error; with nvdec
    (device="gpu"), its frames are not below NVDEC's minimum size for its codec (data.nvdec). Files
    are checked by a bounded thread pool (scan_files). Returns {video: (H, W)} of the files whose size
    differs from the store's (their boxes are scaled to file pixels). unknown: a list that gets
    the videos whose fingerprint could not be compared (for a caller that says so itself).
    trust_fingerprint: one video whose fingerprint matches the store's skips its header read.

    The loaders call it on one file at a time when this process first plans it (base.FileVerdicts),
    and with verify="eager" on their shard of the first epoch at construction.
    """
    files = [paths(v) for v in videos]
    # One file checked as it is first planned, against the store's own file (no copy under
    # video_root, no codec or NVDEC rule): a matching fingerprint makes it the file the store's
    # frame count and size were read from, so its header is not read (the decode opens it next).
    expected = None
    if len(videos) == 1 and trust_fingerprint and verify and fingerprints and video_root is None \
            and codecs is None and not nvdec:
        expected = store.info(videos[0]).get("fingerprint")
    scanned = scan_files(files, verify, progress, fingerprints=verify and fingerprints, expected=expected)
    absent = [f for f, scan in zip(files, scanned) if not scan.exists]
    if absent:
        raise ValueError("video files not found: " + list_problem("missing", absent))
    if not verify:
        return {}
    if fingerprints:
        unchecked = check_fingerprints(videos, files, scanned, store, video_root, sources)
        if unknown is not None:
            unknown.extend(unchecked)
        if unchecked and notify:
            notice(f"{len(unchecked)} of {len(videos)} videos have no fingerprint to check against the store (a store "
                   "written before fingerprints, or files under video_root without transcode_sources.json): "
                   "checked by frame count and size only")
    mismatched, wrong_codec, wrong_shape, resized, too_small = [], [], [], {}, []
    for v, scan in zip(videos, scanned):
        meta = scan.header
        if meta is None:
            continue
        if codecs is not None and meta["codec"] not in codecs:
            wrong_codec.append(f"{v} ({meta['codec']})")
        small = nvdec_size_problem(meta["codec"], meta["height"], meta["width"]) if nvdec else None
        if small:
            too_small.append(f"{v} ({small})")
        info = store.info(v)
        src_hw, file_hw = (int(info["height"]), int(info["width"])), (meta["height"], meta["width"])
        if file_hw != src_hw and min(file_hw) > 0:
            if uniform_scale(src_hw, file_hw):
                resized[v] = file_hw
            else:
                wrong_shape.append(f"{v} (file {file_hw[0]}x{file_hw[1]}, store {src_hw[0]}x{src_hw[1]})")
        stored = int(info["num_frames"])
        if meta["num_frames"] > 0 and abs(meta["num_frames"] - stored) > TRUNCATION_TOLERANCE:
            mismatched.append(f"{v} (file {meta['num_frames']} frames, store {stored})")
    if wrong_codec:
        raise ValueError("DALI's CPU decoder reads " + "/".join(sorted(codecs)) + " only: "
                         + list_problem("videos in another codec", wrong_codec)
                         + "; re-encode them (`mcl-fast transcode --codec vp9`) or use device='gpu'")
    if too_small:
        raise ValueError("NVDEC cannot decode frames this small for device='gpu': "
                         + list_problem("videos too small", too_small) + "; " + NVDEC_FIX_HINT)
    if mismatched:
        raise ValueError("the motion store does not match the videos: "
                         + list_problem("with a different frame count", mismatched)
                         + "; rebuild the store for these files")
    if wrong_shape:
        raise ValueError("the motion store does not match the videos: "
                         + list_problem("with another aspect ratio than the store's source frames", wrong_shape)
                         + " (crop boxes cannot be mapped onto them); rebuild the store for these files")
    return resized


# ---------------------------------------------------------------------------- short videos


def short_video_policy(videos: Sequence[str], store, span: int, min_frames: int | None,
                       lengths=None) -> tuple[np.ndarray, np.ndarray]:
    """(keep, short): (N,) bool masks over `videos`. A video shorter than a clip's `span` frames is
    kept and padded by repeating its last frame (`short`); with min_frames, videos shorter than
    min_frames frames are dropped instead (not in `keep`). Says so once. lengths: (N,) frame
    counts of `videos` when the caller has them (the store's num_frames column), else read from
    store.info. Array operations only: linear in the videos."""
    if lengths is None:
        lengths = [int(store.info(v)["num_frames"]) for v in videos]
    length = np.asarray(lengths, np.int64)
    keep = np.ones(len(length), bool) if min_frames is None else length >= min_frames
    short = keep & (length < span)
    kept, dropped, shorter = int(keep.sum()), int(len(keep) - keep.sum()), int(short.sum())
    if dropped:
        notice(f"dropped {dropped} of {len(videos)} videos shorter than min_frames={min_frames} frames "
               "(listed in loader.dropped_videos)")
    if shorter:
        notice(f"{shorter} of {kept} videos are shorter than a clip ({span} frames): their last frame "
               "repeats to fill it (listed in loader.short_videos; min_frames=N drops videos under N frames)")
    if not kept:
        raise ValueError(f"min_frames={min_frames} drops all {len(videos)} videos")
    return keep, short
