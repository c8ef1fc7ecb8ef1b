"""NVDEC's minimum frame sizes: the per-codec rule, and the loader's file scan that names videos
too small for device="gpu" (checked on real small VP9 and H.264 files, no GPU needed)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from mcl_fast.data.checks import check_videos
from mcl_fast.data.nvdec import nvdec_min_size, nvdec_size_problem


@pytest.mark.parametrize("codec, hw, ok", [
    ("vp9", (64, 80), False), ("vp9", (128, 128), True), ("vp9", (127, 200), False),
    ("hevc", (128, 171), False), ("hevc", (144, 144), True), ("av1", (96, 128), False), ("libdav1d", (96, 128), False),
    ("h264", (64, 80), True), ("h264", (16, 48), True), ("h264", (16, 40), False), ("vp8", (64, 80), True),
    ("prores", (8, 8), True),  # NVDEC does not decode it at all: not this check's business
])
def test_nvdec_size_rule(codec, hw, ok):
    problem = nvdec_size_problem(codec, *hw)
    assert (problem is None) == ok, problem
    if problem:
        least = nvdec_min_size(codec)
        assert f"{hw[1]}x{hw[0]}" in problem and f"{least[0]}x{least[1]}" in problem


def _store(videos):
    """A store stand-in holding what check_videos reads: names, sizes and frame counts."""
    info = {v.path.name: {"height": v.height, "width": v.width, "num_frames": v.num_frames} for v in videos}
    return SimpleNamespace(videos=list(info), info=info.__getitem__, path="store")


def test_loader_scan_names_videos_too_small_for_nvdec(synthetic_webm, synthetic_mp4):
    """64x80 VP9 is below NVDEC's 128x128: an error naming the file and the way out; the same
    size in H.264 is fine, and device="cpu" (no nvdec check) accepts both."""
    store = _store([synthetic_webm, synthetic_mp4])
    paths = {synthetic_webm.path.name: str(synthetic_webm.path), synthetic_mp4.path.name: str(synthetic_mp4.path)}
    with pytest.raises(ValueError) as err:
        check_videos(store.videos, store, paths.__getitem__, verify=True, fingerprints=False, nvdec=True)
    msg = str(err.value)
    assert synthetic_webm.path.name in msg and "128x128" in msg and "80x64" in msg
    assert synthetic_mp4.path.name not in msg
    assert "--codec h264" in msg and "device='cpu'" in msg
    assert check_videos([synthetic_mp4.path.name], store, paths.__getitem__, verify=True, fingerprints=False, nvdec=True) == {}
    assert check_videos(store.videos, store, paths.__getitem__, verify=True, fingerprints=False, nvdec=False) == {}
