"""Which files are videos, and turning `--videos` (a folder, a list or split file, one video, a
Python list) into paths."""
from __future__ import annotations

import os

# Containers FFmpeg reads that datasets ship in; a folder scan takes these and nothing else.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts",
                    ".flv", ".wmv", ".3gp", ".ogv")


class VideoListError(ValueError):
    """The videos argument itself is unusable (as opposed to one bad video)."""


def is_video_file(name) -> bool:
    return os.path.splitext(os.fspath(name))[1].lower() in VIDEO_EXTENSIONS


def _posix(p: str) -> str:
    return p.replace(os.sep, "/")


def scan_folder(folder) -> list[str]:
    """Video files under `folder` (recursive, hidden files and folders skipped), as sorted
    '/'-separated paths relative to it."""
    folder = os.fspath(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and is_video_file(name):
                found.append(_posix(os.path.relpath(os.path.join(dirpath, name), folder)))
    return sorted(found)


def read_video_list(list_file) -> list[str]:
    """Paths from a list / split file: one per line, the first whitespace-separated token (so
    UCF101's "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1" works); blank lines and lines
    starting with '#' are skipped. Paths containing spaces are not supported."""
    out = []
    try:
        with open(list_file, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    out.append(line.split()[0])
    except OSError as e:
        raise VideoListError(f"cannot read the video list {list_file}: {e}") from None
    if any("\x00" in p for p in out):
        raise VideoListError(f"{list_file} is not a text list of videos (binary data)")
    return out


def _relative(entry: str, root: str) -> str:
    entry = os.path.expanduser(entry)
    rel = os.path.relpath(entry, root) if os.path.isabs(entry) else os.path.normpath(entry)
    return _posix(rel)


def collect_videos(videos, root=None) -> tuple[str, list[str]]:
    """(root, relpaths) for `videos`: a folder (scanned; paths relative to it unless `root`),
    a list file (paths relative to its folder unless `root`), a single video file, or a
    Python list of paths (relative to `root`, default the working directory). Duplicates
    are dropped, the order of a list is kept. Raises VideoListError."""
    if isinstance(videos, (str, os.PathLike)):
        spec = os.fspath(videos)
        if os.path.isdir(spec):
            base = os.path.abspath(root if root is not None else spec)
            entries = [os.path.join(os.path.abspath(spec), p) for p in scan_folder(spec)]
            what = f"folder {spec}"
        elif os.path.isfile(spec):
            base = os.path.abspath(root if root is not None else os.path.dirname(os.path.abspath(spec)))
            entries = [os.path.abspath(spec)] if is_video_file(spec) else read_video_list(spec)
            what = f"list file {spec}"
        else:
            raise VideoListError(f"--videos {spec}: no such folder or list file")
    else:
        base = os.path.abspath(root if root is not None else os.getcwd())
        entries = [os.fspath(v) for v in videos]
        what = "the list of videos"
    rels = list(dict.fromkeys(_relative(e, base) for e in entries))
    if not rels:
        raise VideoListError(f"no videos found in {what} (extensions: {' '.join(VIDEO_EXTENSIONS)})")
    return base, rels
