"""gpu_check.sh's comparison of a `prepare --device cuda` store with the CPU store of the same clips
(tests/gpu/compare_prepare.py), run here with CPU stores standing in for the GPU's: the same maps
pass with their measured correlation, other footage under the same name fails."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))

import compare_prepare  # noqa: E402


def stand_in_store(tmp_path, name, source):
    """A store prepared on the CPU from `source` copied to videos/object.mp4 (TV-L1 as gpu_check uses)."""
    folder = tmp_path / name / "videos"
    folder.mkdir(parents=True)
    shutil.copy(source, folder / "object.mp4")
    compare_prepare.cpu_store(folder, tmp_path / name / "store", size=64)
    return folder, tmp_path / name / "store"


def test_the_same_maps_pass_other_footage_fails(tmp_path, synthetic_mp4, pan_video, capsys):
    videos, same = stand_in_store(tmp_path, "same", synthetic_mp4.path)
    args = ["--videos", str(videos), "--cpu-store", str(tmp_path / "cpu"), "--size", "64"]
    assert compare_prepare.main(["--gpu-store", str(same), *args]) == 0
    out = capsys.readouterr().out
    assert "object.mp4: corr 1.000" in out and "maps vs CPU store PASS: min corr 1.000 over 1 clips" in out
    _, other = stand_in_store(tmp_path, "other", pan_video.path)
    shutil.rmtree(tmp_path / "cpu")
    assert compare_prepare.main(["--gpu-store", str(other), *args]) == 1
    assert "maps vs CPU store FAIL" in capsys.readouterr().out
