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


def scan_folder(folder, exclude=()) -> list[str]:
    """Video files under `folder` (recursive, hidden files and folders skipped), as sorted
    '/'-separated paths relative to it.

    Symlinks are followed, but each folder is entered once and each file listed once, both by real
    path: a link loop (`loop -> .`) ends at once, and a folder reached both plainly and through a
    link is listed under its plain path. exclude: folders left out (by real path; e.g. an output
    folder inside `folder`)."""
    top = os.fspath(folder)
    entered = {os.path.realpath(p) for p in exclude}  # an excluded folder counts as already entered
    found: dict[str, tuple[bool, str]] = {}  # a file's real path -> (reached through a link, relpath)
    pending = [""]  # folders to walk: the top, then the symlinked folders, level by level
    while pending:
        linked: list[str] = []
        for rel in pending:
            _walk_plain(top, rel, rel != "", entered, found, linked)
        pending = sorted(linked)
    return sorted(rel for _, rel in found.values())


def _walk_plain(top: str, start: str, via_link: bool, entered: set, found: dict, linked: list) -> None:
    """Walk top/start without following symlinked folders (they go to `linked`, to be walked after
    every plain folder), adding its videos to `found` (a file reached plainly replaces one reached
    through a link). `entered`: real paths of folders walked so far (each is walked once)."""
    stack = [start]
    while stack:
        rel = stack.pop()
        path = os.path.join(top, rel) if rel else top
        real = os.path.realpath(path)
        if real in entered:
            continue
        entered.add(real)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:  # an unreadable folder is skipped, as os.walk does
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            child = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir():
                (linked if entry.is_symlink() else subfolders).append(child)
            elif is_video_file(entry.name):
                link = via_link or entry.is_symlink()
                file_real = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real, entry.name)
                if file_real not in found or (found[file_real][0] and not link):
                    found[file_real] = (link, child)
        stack.extend(reversed(subfolders))


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


def collect_videos(videos, root=None, exclude=()) -> tuple[str, list[str]]:
    """(root, relpaths) for `videos`: a folder (scanned, leaving out the folders in `exclude`;
    paths relative to it unless `root`),
    a list file (paths relative to its folder unless `root`), a single video file, or a
    Python list of paths (relative to `root`, default the working directory). Duplicates
    are dropped, the order of a list is kept. Raises VideoListError."""
    if isinstance(videos, (str, os.PathLike)):
        spec = os.fspath(videos)
        if os.path.isdir(spec):
            base = os.path.abspath(root if root is not None else spec)
            entries = [os.path.join(os.path.abspath(spec), p) for p in scan_folder(spec, exclude)]
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
