"""Labels for the loaders' `label` output: a sequence aligned with the videos, or a split file.

    labels=[3, 0, 7, ...]                       # one class index per video, in the order of `videos`
    labels="ucfTrainTestlist/trainlist01.txt"   # a split (splits.load_split): matched by path
    labels=load_split("hmdb51:splits:1:train")  # or a parsed splits.Split

A split's entries are matched to the store keys by relative path, or by the path without its
extension (a store prepared from .avi files and a transcoded .webm copy name the same video).
"""
from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Sequence

import numpy as np

from .splits import Split, load_split


def _stem(path: str) -> str:
    return str(PurePosixPath(path.replace(os.sep, "/")).with_suffix(""))


def resolve_labels(labels, videos: Sequence[str]) -> tuple[np.ndarray | None, list[str] | None]:
    """(labels (len(videos),) int64 aligned with videos, class names or None); (None, None) without labels.

    Raises ValueError naming the problem: a sequence of another length, labels that are not
    integers, or videos the split has no entry for.
    """
    if labels is None:
        return None, None
    if isinstance(labels, (str, os.PathLike)):
        labels = load_split(labels)
    if isinstance(labels, Split):
        by_path = {p.replace(os.sep, "/"): y for p, y in labels.entries}
        by_stem = {_stem(p): y for p, y in labels.entries}
        out, missing = [], []
        for v in videos:
            key = str(v).replace(os.sep, "/")
            y = by_path.get(key, by_stem.get(_stem(key)))
            if y is None:
                missing.append(key)
            out.append(-1 if y is None else y)
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ValueError(f"labels: the split {labels.name or ''} has no entry for {len(missing)} of {len(videos)} "
                             f"videos ({shown}); pass the videos of the split (its .paths) or a label per video")
        return np.asarray(out, np.int64), list(labels.classes)
    values = np.asarray(list(labels))
    if values.ndim != 1 or len(values) != len(videos):
        raise ValueError(f"labels must hold one label per video: got {values.shape}, for {len(videos)} videos")
    if values.dtype.kind not in "iub" and not (values.dtype.kind == "f" and np.all(values == np.round(values))):
        raise ValueError("labels must be class indices (integers); map class names to indices first, or pass a "
                         "split file (labels='.../trainlist01.txt')")
    return values.astype(np.int64), None
