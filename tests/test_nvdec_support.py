"""NVDEC's support matrix (video_io.nvdec_support) on files PyAV writes and decodes: 4:4:4 and 10-bit
H.264 are refused, each file named with its reason, 8-bit 4:2:0 is accepted; the loaders, evaluation
and `prepare --device cuda` apply it; a failure only DALI's GPU decoder sees replaces the sample."""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from mcl_fast.data import nvdec
from mcl_fast.video_io import nvdec_support as ns

av = pytest.importorskip("av")


def write_h264(path, pix_fmt: str, frames: int = 4, size=(48, 64)):
    """A small libx264 file in `pix_fmt` (skips when this FFmpeg build cannot write it)."""
    if pix_fmt not in {f.name for f in av.codec.Codec("libx264", "w").video_formats}:
        pytest.skip(f"this PyAV's libx264 does not write {pix_fmt}")
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = *size, pix_fmt
        for _ in range(frames):
            image = av.VideoFrame.from_ndarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(image.reformat(format=pix_fmt)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


@pytest.fixture(scope="module")
def h264_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nvdec_formats")
    return {"444": write_h264(folder / "chroma444.mp4", "yuv444p"),
            "10bit": write_h264(folder / "tenbit.mp4", "yuv420p10le"),
            "420": write_h264(folder / "plain420.mp4", "yuv420p")}


def test_pyav_decodes_all_three(h264_files):
    from mcl_fast.video_io import check_video

    for path in h264_files.values():
        check_video(path)  # the CPU path takes them all: only NVDEC refuses


def test_stream_formats_are_read_from_the_header(h264_files):
    assert ns.stream_format(h264_files["444"]) == ns.StreamFormat("h264", "High 4:4:4 Predictive", "4:4:4", 8, 64, 48)
    assert ns.stream_format(h264_files["10bit"]) == ns.StreamFormat("h264", "High 10", "4:2:0", 10, 64, 48)
    assert ns.stream_format(h264_files["420"]) == ns.StreamFormat("h264", "High", "4:2:0", 8, 64, 48)


def test_the_check_refuses_444_and_10_bit_h264_naming_each_file(h264_files):
    problems = nvdec.nvdec_problems(h264_files.values(), generation=ns.TURING_GA100_HOPPER)
    assert set(problems) == {h264_files["444"], h264_files["10bit"]}  # 8-bit 4:2:0 accepted
    assert "h264 4:4:4 8-bit is not decoded by NVDEC" in problems[h264_files["444"]]
    assert "h264 4:2:0 10-bit is not decoded by NVDEC" in problems[h264_files["10bit"]]
    with pytest.raises(nvdec.NvdecUnsupported) as err:
        nvdec.refuse_unsupported(h264_files.values(), "the test", generation=ns.TURING_GA100_HOPPER)
    message = str(err.value)
    for key in ("444", "10bit"):
        assert f"{h264_files[key]}: {problems[h264_files[key]]}" in message
    assert h264_files["420"] not in message and "mcl-fast transcode" in message
    nvdec.refuse_unsupported([h264_files["420"]], "the test")  # no error


def test_blackwell_decodes_10_bit_h264_but_no_gpu_decodes_444_h264(h264_files):
    problems = nvdec.nvdec_problems(h264_files.values(), generation=ns.BLACKWELL)
    assert set(problems) == {h264_files["444"]}


def fmt(codec, chroma="4:2:0", depth=8, profile=None, size=(320, 240)):
    return ns.StreamFormat(codec, profile, chroma, depth, *size)


@pytest.mark.parametrize("stream, generation, refused", [
    (fmt("hevc", "4:4:4", 10), ns.TURING_GA100_HOPPER, False),
    (fmt("hevc", "4:2:2", 10), ns.TURING_GA100_HOPPER, True),
    (fmt("hevc", "4:2:2", 10), ns.BLACKWELL, False),
    (fmt("vp9", "4:2:0", 10), ns.TURING_GA100_HOPPER, False),
    (fmt("vp9", "4:4:4", 8), ns.BLACKWELL, True),
    (fmt("av1"), ns.TURING_GA100_HOPPER, True),  # H100/H200 have no AV1 decoding
    (fmt("av1", "4:2:0", 10), ns.GA10X_ADA, False),
    (fmt("av1", profile="High"), ns.GA10X_ADA, True),
    (fmt("h264", profile="High 4:4:4 Predictive"), ns.TURING_GA100_HOPPER, True),  # lossless x264
    (fmt("h264", "4:0:0"), ns.TURING_GA100_HOPPER, True),
    (fmt("prores", "4:2:2", 10), ns.BLACKWELL, True),
    (fmt("mjpeg", "4:2:2"), ns.TURING_GA100_HOPPER, False),  # only the size rule, as before
    (fmt("mjpeg", size=(32, 32)), ns.TURING_GA100_HOPPER, True),
    (fmt("vp9", size=(80, 64)), ns.TURING_GA100_HOPPER, True),  # below 128x128
])
def test_support_matrix(stream, generation, refused):
    assert (ns.format_problem(stream, generation) is not None) == refused


def test_generations_from_compute_capability():
    assert ns.nvdec_generation((9, 0)) == ns.nvdec_generation((8, 0)) == ns.TURING_GA100_HOPPER
    assert ns.nvdec_generation((8, 9)) == ns.GA10X_ADA and ns.nvdec_generation((12, 0)) == ns.BLACKWELL
    with pytest.raises(ValueError, match="unknown NVDEC generation"):
        ns.supported_formats("Kepler")


def test_chroma_formats_from_pixel_formats():
    expect = {"yuv420p": ("4:2:0", 8), "yuvj422p": ("4:2:2", 8), "yuv444p10le": ("4:4:4", 10), "nv12": ("4:2:0", 8),
              "gray": ("4:0:0", 8), "gbrp": ("RGB", 8)}
    for name, want in expect.items():
        assert ns.chroma_and_depth(av.VideoFormat(name)) == want, name


def test_a_file_that_does_not_open_is_left_to_the_readers(tmp_path):
    bad = tmp_path / "junk.mp4"
    bad.write_bytes(b"not a video")
    assert ns.stream_problem(str(bad)) is None


def test_gpu_evaluation_refuses_before_decoding(h264_files, monkeypatch):
    from mcl_fast.eval.features import ClipSettings, clip_loader

    monkeypatch.setattr(ns, "nvdec_generation", lambda *a: ns.TURING_GA100_HOPPER)
    with pytest.raises(nvdec.NvdecUnsupported, match="evaluation"):
        clip_loader([h264_files["420"], h264_files["10bit"]], ClipSettings(), decoder="dali", device="cuda")


def test_prepare_on_the_gpu_rejects_the_file_with_the_reason(h264_files, monkeypatch):
    from mcl_fast.gpu import video_maps
    from mcl_fast.video_io import VideoError

    monkeypatch.setattr(video_maps, "require_cupy", lambda: None)
    monkeypatch.setattr(ns, "nvdec_generation", lambda *a: ns.TURING_GA100_HOPPER)
    with pytest.raises(VideoError) as err:
        video_maps.compute_video_maps_gpu(h264_files["444"])
    assert err.value.path == h264_files["444"] and "NVDEC cannot decode it: h264 4:4:4 8-bit" in err.value.reason


# ------------------------------------------------------------------ the GPU loader's recovery


def test_a_dali_only_failure_replaces_the_sample_and_is_reported_once(h264_files, monkeypatch):
    """A batch fails inside DALI, PyAV decodes every file in it: the file NVDEC refuses is marked (with
    why and what to do), the feed restarts at that batch, nothing is raised."""
    from mcl_fast.data.loader import MotionFocusedLoader

    plans = [types.SimpleNamespace(path=p, video=k, clips=[np.arange(3)]) for k, p in h264_files.items()
             if k != "10bit"]
    reported, restarted = {}, []
    fake = types.SimpleNamespace(
        device="gpu", torch_device=types.SimpleNamespace(index=0),
        store=types.SimpleNamespace(info=lambda v: {"num_frames": 4}),
        _feed=types.SimpleNamespace(served={0: plans}, restart=restarted.append),
        report_failure=lambda path, reason: reported.setdefault(path, reason), _build=lambda: None)
    monkeypatch.setattr(ns, "nvdec_generation", lambda *a: ns.TURING_GA100_HOPPER)
    MotionFocusedLoader._recover(fake, 0, RuntimeError("Critical error in pipeline: cuvid failed"))
    assert list(reported) == [h264_files["444"]] and "h264 4:4:4 8-bit" in reported[h264_files["444"]]
    assert "mcl-fast transcode" in reported[h264_files["444"]] and restarted == [0]


def test_a_failure_no_check_explains_is_found_by_decoding_each_file_alone(h264_files, monkeypatch):
    from mcl_fast.data.loader import MotionFocusedLoader
    from mcl_fast.gpu import video_maps

    plans = [types.SimpleNamespace(path=h264_files["420"], video="v", clips=[np.arange(3)])]
    tried = []
    monkeypatch.setattr(video_maps, "nvdec_trial", lambda path, frames, dev: tried.append(path) or "bitstream error")
    reported = {}
    fake = types.SimpleNamespace(
        device="gpu", torch_device=types.SimpleNamespace(index=0),
        store=types.SimpleNamespace(info=lambda v: {"num_frames": 4}),
        _feed=types.SimpleNamespace(served={0: plans}, restart=lambda n: None),
        report_failure=lambda path, reason: reported.setdefault(path, reason), _build=lambda: None)
    MotionFocusedLoader._recover(fake, 0, RuntimeError("DALI error"))
    assert tried == [h264_files["420"]] and "bitstream error" in reported[h264_files["420"]]
    monkeypatch.setattr(video_maps, "nvdec_trial", lambda path, frames, dev: None)
    with pytest.raises(RuntimeError, match="no video in it fails"):
        MotionFocusedLoader._recover(fake, 0, RuntimeError("DALI error"))


def test_the_gpu_loader_names_the_files_at_construction(h264_files, tmp_path, monkeypatch):
    """MotionFocusedLoader(device="gpu", verify="eager") refuses before building anything, naming the
    4:4:4 file and not the 8-bit 4:2:0 one (the GPU itself is stood in for: none here)."""
    import shutil

    import mcl_fast._backend as backend
    from mcl_fast.data import loader as loader_module
    from mcl_fast.motion.prepare import prepare

    videos = tmp_path / "videos"
    videos.mkdir()
    for key in ("444", "420"):
        shutil.copy(h264_files[key], videos / Path(h264_files[key]).name)
    prepare(str(videos), str(tmp_path / "store"), flow="farneback", size=32, workers=0, progress=False)
    monkeypatch.setattr(backend, "has_gpu", lambda: True)
    monkeypatch.setattr(ns, "nvdec_generation", lambda *a: ns.TURING_GA100_HOPPER)
    with pytest.raises(nvdec.NvdecUnsupported) as err:
        loader_module.MotionFocusedLoader(["chroma444.mp4", "plain420.mp4"], tmp_path / "store", 1, device="gpu",
                                          clip_len=2, size=32, verify="eager")
    assert list(err.value.problems) == [str(videos / "chroma444.mp4")]
    assert "MotionFocusedLoader(device='gpu')" in str(err.value) and "4:4:4 8-bit" in str(err.value)
