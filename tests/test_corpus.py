"""The corpus (tests/corpus.py) through every tool: prepare, transcode, both loaders and feature
extraction give each file the same verdict; honest files are read frame by frame correctly."""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mcl_fast.video_io import VideoError, check_video
from videotools import decode_all, psnr, reference_view

CLIP = dict(clip_len=4, stride=3, size=16)  # span 10: the 1- and 2-frame files are short videos


@pytest.fixture(scope="module")
def tools(video_corpus, tmp_path_factory):
    """The corpus prepared into a store and transcoded to VP9, and the verdict video_io gives."""
    from mcl_fast.data.transcode import transcode_dataset
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    out = tmp_path_factory.mktemp("corpus_tools")
    reasons = {}
    for rel in video_corpus.bad:
        with pytest.raises(VideoError) as info:
            check_video(video_corpus.root / rel)
        reasons[rel] = info.value.reason
    prepared = prepare(video_corpus.root, out / "store", flow="farneback", size=32, workers=0, progress=False)
    transcoded = transcode_dataset(video_corpus.root, out / "vp9", codec="vp9", gop=8, short_side=48, workers=1,
                                   progress=False)
    return SimpleNamespace(reasons=reasons, prepared=prepared, transcoded=transcoded, vp9=out / "vp9",
                           store=MotionStore(out / "store"))


def test_prepare_transcode_and_features_give_each_file_the_same_verdict(video_corpus, tools):
    from mcl_fast.eval.features import ClipSettings, eval_clips

    assert tools.store.videos == sorted(video_corpus.good)  # every honest file is accepted
    for rel, n in video_corpus.good.items():
        assert tools.store.info(rel)["num_frames"] == n
    assert {e["path"]: e["reason"] for e in tools.store.errors} == tools.reasons  # errors.json
    assert sorted(tools.transcoded.done) == sorted(video_corpus.good)
    assert tools.transcoded.errors == tools.reasons
    settings = ClipSettings(num_clips=2, clip_len=4, stride=2, crop_size=16)
    for rel in video_corpus.good:
        assert eval_clips(video_corpus.root / rel, settings).shape == (2, 3, 4, 16, 16)
    for rel, reason in tools.reasons.items():
        with pytest.raises(VideoError) as info:
            eval_clips(video_corpus.root / rel, settings)
        assert info.value.reason == reason
    for word in ("empty file", "not a video file", "without a readable index", "truncated", "corrupt"):
        assert any(word in r for r in tools.reasons.values()), word


@pytest.mark.parametrize("dali", [False, True])
def test_loaders_refuse_a_rejected_video_with_prepares_reason(video_corpus, tools, dali):
    from mcl_fast.data import MotionFocusedLoader, TorchVideoLoader

    if dali:
        pytest.importorskip("nvidia.dali")
    rejected = ["bad/mkv_cut_60.mkv", "bad/text.mp4", "bad/mp4_cut_70.mp4"]
    with pytest.raises(ValueError) as info:
        if dali:
            MotionFocusedLoader(rejected, tools.store, 1, device="cpu", **CLIP)
        else:
            TorchVideoLoader(rejected, tools.store, 1, num_workers=0, **CLIP)
    message = str(info.value)
    assert "3 videos rejected by `mcl-fast prepare`" in message and "errors.json" in message
    for rel in rejected:
        assert f"{rel} ({tools.reasons[rel]})" in message


def _check_torch_batches(loader, corpus, files) -> int:
    """Compare every sample with the plain crop of a sequential decode (augment=False): equal.
    Returns the number of samples compared."""
    from mcl_fast.data.augment import apply_view
    from mcl_fast.data.plan import ViewAug

    compared, decoded = 0, {}
    for batch in loader:
        for b, idx in enumerate(batch["index"].tolist()):
            rel = loader.videos[idx]
            frames = batch["frames"][0][b].numpy()
            if not set(frames.tolist()) <= set(corpus.comparable(rel)):
                continue  # a frame with concealed pixels (see Corpus.concealed)
            full = decoded.setdefault(rel, decode_all(files(rel)))
            want = apply_view(full[frames], batch["boxes"][0][b].tolist(), ViewAug(), CLIP["size"])
            assert torch.equal(batch["views"][0][b], want), (rel, frames)
            compared += 1
    return compared


def test_torch_loader_reads_every_honest_file_frame_by_frame(video_corpus, tools):
    from mcl_fast.data import TorchVideoLoader

    kw = dict(augment=False, sampling="random", return_meta=True, num_workers=0, drop_last=False, **CLIP)  # every file
    with pytest.warns(UserWarning, match=r"2 of \d+ videos are shorter than a clip \(10 frames\)"):
        loader = TorchVideoLoader(tools.store.videos, tools.store, 4, **kw)
    assert sorted(loader.short_videos) == ["one_frame.mp4", "two_frames.mp4"]
    compared = 0
    for epoch in range(3):
        loader.set_epoch(epoch)
        compared += _check_torch_batches(loader, video_corpus, lambda rel: video_corpus.root / rel)
    assert compared >= 2 * len(video_corpus.good) and not loader.failures and loader.num_replaced == 0
    # the VP9 copies `transcode` wrote: checked against the store by their sources' fingerprints
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        copies = TorchVideoLoader(tools.store.videos, tools.store, 4, video_root=tools.vp9, min_frames=10, **kw)
    notes = [str(w.message) for w in caught]
    assert notes == [f"dropped 2 of {len(video_corpus.good)} videos shorter than min_frames=10 frames "
                     "(listed in loader.dropped_videos)"]  # and no "cannot be checked": transcode_sources.json
    assert sorted(copies.dropped_videos) == ["one_frame.mp4", "two_frames.mp4"] and not copies.short_videos
    assert len(copies.videos) == len(video_corpus.good) - 2
    assert _check_torch_batches(copies, video_corpus, copies.paths) >= len(copies.videos) - 1


def test_dali_cpu_loader_reads_the_files_its_decoder_reads(video_corpus, tools):
    """DALI's CPU decoder reads VP9 and MJPEG: the VP9 copies of every honest file, and the
    corpus's own VP9/MJPEG files; each clip is compared frame by frame with a sequential decode."""
    pytest.importorskip("nvidia.dali")
    from mcl_fast.data import MotionFocusedLoader
    from mcl_fast.data.augment import denormalize

    direct = ["audio_longer_vp9.webm", "mjpeg.avi", "odd_97x61.webm"]
    for videos, root in ((tools.store.videos, tools.vp9), (direct, None)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the short-video notice
            loader = MotionFocusedLoader(videos, tools.store, 4, device="cpu", augment=False, sampling="random",
                                         return_meta=True, num_threads=1, video_root=root, drop_last=False, **CLIP)
        seen = set()
        for batch in loader:
            q = denormalize(batch["views"][0]).numpy()
            for b, idx in enumerate(batch["index"].tolist()):
                path = loader.paths(loader.videos[idx])
                full, f = decode_all(path), batch["frames"][0][b].numpy()
                ref = reference_view(full[f], batch["boxes"][0][b].tolist(), CLIP["size"])
                for t in range(len(f)):
                    right = psnr(q[b][:, t], ref[:, t])
                    assert right >= 35, (path, f, t)
                    for other in {max(0, f[t] - 1), min(len(full) - 1, f[t] + 1)} - {f[t]}:
                        wrong = reference_view(full[[other]], batch["boxes"][0][b].tolist(), CLIP["size"])[:, 0]
                        assert right > psnr(q[b][:, t], wrong), (path, f, t, other)  # not a neighbour
                seen.add(idx)
        assert seen == set(range(len(videos))) and not loader.failures
