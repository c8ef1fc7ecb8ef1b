"""TorchVideoLoader (PyAV decode + torch ops) on H.264 videos, and its frame reader."""
from __future__ import annotations

import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcl_fast.data import TorchVideoLoader
from mcl_fast.data.augment import apply_view, denormalize
from mcl_fast.data.plan import ViewAug
from plan_reference import color_affine
from mcl_fast.data.synthetic import make_video
from mcl_fast.data.loader import UnsupportedCodec
from mcl_fast.video_io import first_frame_problem, read_frames
from videotools import decode_all, psnr, same_field

CLIP = dict(clip_len=8, stride=2, size=32, drop_last=False)  # every video each epoch (the default drops a partial batch)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three H.264 synthetic videos (keyframe every 8 frames) and their motion store."""
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    root = tmp_path_factory.mktemp("torch_loader")
    videos = root / "videos"
    for i, n in enumerate((32, 40, 36)):
        make_video(videos / f"h{i}.mp4", num_frames=n, height=64, width=80, object_size=14, gop=8, seed=20 + i)
    prepare(str(videos), str(root / "store"), flow="farneback", size=64, workers=1, progress=False)
    store = MotionStore(root / "store")
    return SimpleNamespace(root=root, videos=videos, store=store, names=list(store.videos))


def test_read_frames_at_seeks_and_matches_a_full_decode(dataset):
    path = dataset.store.video_path(dataset.names[1])
    full = decode_all(path)
    rng = np.random.default_rng(0)
    for idx in ([0], [39], [9, 9, 3], list(rng.integers(0, 40, 12)), [17, 19, 21, 23, 25]):
        got = read_frames(path, idx)
        assert got.shape == (len(idx), 64, 80, 3)
        assert np.array_equal(got, full[idx])  # same decoder: bit-exact after the seek
    with pytest.raises(ValueError, match=r"h1\.mp4.*outside"):
        read_frames(path, [40])


def test_rgb24_is_pyavs_to_ndarray_across_frame_sizes(dataset, tmp_path):
    """One swscale context per thread, reused from file to file: it must set itself up again when
    the frame size changes (80x64 -> 48x40 -> 80x64), pixel for pixel what to_ndarray gives."""
    import av

    from mcl_fast.video_io.container import rgb24

    small = tmp_path / "small.mp4"
    make_video(small, num_frames=6, height=40, width=48, object_size=8, gop=4, seed=3)
    for path in (dataset.store.video_path(dataset.names[0]), small, dataset.store.video_path(dataset.names[1])):
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                got, want = rgb24(frame), frame.to_ndarray(format="rgb24")
                assert got.shape == want.shape == (frame.height, frame.width, 3)
                assert np.array_equal(got, want)


def test_first_frame_problem_and_the_codec_check(dataset, tmp_path):
    good = dataset.store.video_path(dataset.names[0])
    assert first_frame_problem(good) is None
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    assert "not a video" in first_frame_problem(junk)
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty" in first_frame_problem(tmp_path / "empty.mp4")
    assert "not found" in first_frame_problem(tmp_path / "missing.mp4")
    ld = TorchVideoLoader(dataset.names, dataset.store, 2, num_workers=0, **CLIP)
    ld.codecs = {"vp9"}  # as a decoder that reads VP9 only
    with pytest.raises(UnsupportedCodec, match="h264"):
        ld.is_bad(good)


def test_apply_view_identity_flip_and_colour():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    box = (2, 4, 16, 16)
    plain = denormalize(apply_view(frames, box, ViewAug(), 16))
    assert plain.shape == (3, 3, 16, 16)
    assert torch.allclose(plain, torch.from_numpy(frames[:, 2:18, 4:20]).permute(3, 0, 1, 2).float(), atol=1e-3)
    flipped = denormalize(apply_view(frames, box, ViewAug(flip=True), 16))
    assert torch.allclose(flipped, plain.flip(-1), atol=1e-4)
    m, t = color_affine(grayscale=True)
    grey = denormalize(apply_view(frames, box, ViewAug(color_matrix=m, color_offset=t), 16))
    assert torch.allclose(grey[0], grey[1], atol=1e-3) and torch.allclose(grey[1], grey[2], atol=1e-3)
    blurred = denormalize(apply_view(frames, box, ViewAug(blur_sigma=1.5, blur_window=9), 16))
    assert blurred.std() < plain.std()  # a low-pass filter lowers the contrast of noise


def test_plain_crops_match_an_independent_decode(dataset):
    ld = TorchVideoLoader(dataset.names, dataset.store, 2, augment=False, return_meta=True, num_workers=0, **CLIP)
    seen = set()
    for batch in ld:
        q = denormalize(batch["views"][0]).numpy()
        for b, idx in enumerate(batch["index"].tolist()):
            frames = decode_all(dataset.store.video_path(dataset.names[idx]))[batch["frames"][0][b].numpy()]
            y0, x0, h, w = batch["boxes"][0][b].tolist()
            crop = torch.from_numpy(frames[:, y0:y0 + h, x0:x0 + w]).permute(0, 3, 1, 2).float()
            ref = F.interpolate(crop, size=(32, 32), mode="bilinear", antialias=True).permute(1, 0, 2, 3).numpy()
            for t in range(8):
                assert psnr(q[b][:, t], ref[:, t]) >= 35
            seen.add(idx)
    assert seen == {0, 1, 2}


def test_workers_give_the_same_batches(dataset):
    kw = dict(seed=4, return_meta=True, **CLIP)
    serial = list(TorchVideoLoader(dataset.names, dataset.store, 2, num_workers=0, **kw))
    parallel = list(TorchVideoLoader(dataset.names, dataset.store, 2, num_workers=2, **kw))
    assert len(serial) == len(parallel) == 2
    for a, b in zip(serial, parallel):
        for key in a:
            assert same_field(a[key], b[key]), key


def _descendants() -> set[str]:
    """Process ids below this one, the forkserver (started first) included: workers start from it."""
    import multiprocessing.forkserver
    import os

    multiprocessing.forkserver.ensure_running()
    found, todo = set(), [str(os.getpid())]
    while todo:
        pid = todo.pop()
        try:
            kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
        except FileNotFoundError:
            continue
        found.update(kids)
        todo.extend(kids)
    return found


def test_corrupt_file_is_skipped_and_reported_once_from_workers(dataset, tmp_path):
    bad_root = tmp_path / "videos"
    shutil.copytree(dataset.videos, bad_root)
    (bad_root / "h0.mp4").write_bytes(b"not a video at all" * 40)
    ld = TorchVideoLoader(dataset.names, dataset.store, 1, num_workers=2, video_root=bad_root, verify=False,
                          return_meta=True, **CLIP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(2):
            ld.set_epoch(epoch)
            got = [int(i) for batch in ld for i in batch["index"]]
            assert len(got) == 3 and 0 not in got
    bad = str(bad_root / "h0.mp4")
    assert list(ld.failures) == [bad] and "not a video" in ld.failures[bad]
    assert ld.num_replaced >= 2  # once per epoch at least
    assert len([w for w in caught if bad in str(w.message)]) == 1


def test_options_are_checked(dataset):
    with pytest.raises(ValueError, match="decoder"):
        TorchVideoLoader(dataset.names, dataset.store, 2, decoder="opencv")
    with pytest.raises(ValueError, match=r"missing: x\.mp4"):
        TorchVideoLoader(["x.mp4"], dataset.store, 2)
    with pytest.raises(ValueError, match="batch_size"):
        TorchVideoLoader(dataset.names, dataset.store, 0)


def test_scan_files_probes_in_order_with_a_progress_bar(dataset, tmp_path, capsys):
    from mcl_fast.data import checks as C

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 20)
    paths = [str(dataset.videos / "h0.mp4"), str(tmp_path / "none.mp4"), str(dataset.videos / "h1.mp4"), str(bad)]
    got = C.scan_files(paths * 3, verify=True, progress=True, fingerprints=True)  # 12 files over the thread pool
    assert [(s.exists, s.header is not None) for s in got] == [(True, True), (False, False), (True, True),
                                                              (True, False)] * 3
    assert [s.header["num_frames"] for s in got[:3] if s.header] == [32, 40] and got[0].header["height"] == 64
    assert got[0].fingerprint == dataset.store.fingerprint("h0.mp4") != got[2].fingerprint
    assert "12/12" in capsys.readouterr().err  # the tqdm bar
    assert [s.exists for s in C.scan_files(paths, verify=False)] == [True, False, True, True]
    assert C.PROGRESS_MIN == 1000 and 1 < C.PROBE_THREADS <= 32


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_resumes_mid_epoch_with_the_same_batches_without_decoding_the_skipped(dataset, workers):
    kw = dict(return_meta=True, num_workers=workers, **CLIP)
    full = list(TorchVideoLoader(dataset.names, dataset.store, 1, **kw))
    ld = TorchVideoLoader(dataset.names, dataset.store, 1, **kw)
    ld.skip(2)
    rng = torch.get_rng_state()
    resumed = list(ld)  # with workers: the first iteration of a DataLoader, which reads its sampler twice
    assert torch.equal(torch.get_rng_state(), rng), "the loader drew from torch's global generator (training's)"
    assert len(full) == 3 and len(resumed) == 1
    for key in ("views", "motion", "index", "frames"):
        assert same_field(resumed[0][key], full[2][key]), key
    assert len(list(ld)) == 3  # the skip applies to one iteration only
    ld.set_epoch(0)  # each pass moves on to the next epoch: a resume pins it, then skips
    ld.skip(1)
    assert [b["index"].tolist() for b in ld] == [b["index"].tolist() for b in full[1:]]  # workers kept: a reset
    ld.close()
    with pytest.raises(ValueError, match="the epoch has 3 batches"):
        ld.skip(4)


@pytest.mark.parametrize("decoder", ["decord", "torchcodec"])
def test_other_decoders_give_pyavs_frames(dataset, decoder):
    from mcl_fast.data.torch_loader import DECODERS, decoder_problem

    problem = decoder_problem(decoder)
    if problem:
        pytest.skip(problem)
    path = dataset.store.video_path(dataset.names[1])
    full = decode_all(path)
    for idx in ([0, 39], [9, 9, 3], [17, 19, 21, 23, 25]):
        assert np.array_equal(DECODERS[decoder](path, idx, 40), full[idx]), (decoder, idx)
    kw = dict(seed=4, return_meta=True, num_workers=0, **CLIP)
    a = list(TorchVideoLoader(dataset.names, dataset.store, 2, **kw))
    b = list(TorchVideoLoader(dataset.names, dataset.store, 2, decoder=decoder, **kw))
    for x, y in zip(a, b):
        for key in x:
            assert same_field(x[key], y[key]), (decoder, key)


def test_workers_persist_across_epochs_until_closed(dataset):
    children = _descendants
    before = children()
    with TorchVideoLoader(dataset.names, dataset.store, 1, num_workers=2, **CLIP) as ld:
        first = [b["index"].tolist() for b in ld]
        workers = children() - before
        ld.set_epoch(1)
        second = [b["index"].tolist() for b in ld]
        assert len(workers) == 2 and children() - before == workers  # the same two processes: caches kept
        assert sum(first, []) == ld.epoch_samples(0)[1].tolist() and sum(second, []) == ld.epoch_samples(1)[1].tolist()
    assert not (children() - before) & workers  # close() stopped them


def test_a_dropped_loader_stops_its_workers(dataset):
    import gc
    import time

    children = _descendants
    before = children()
    gc.disable()  # no collector: the loader must go by reference counting alone (no reference cycle)
    try:
        ld = TorchVideoLoader(dataset.names, dataset.store, 1, num_workers=2, **CLIP)
        assert len(list(ld)) == 3 and len(children() - before) == 2
        del ld
        time.sleep(0.2)
        assert not children() - before
    finally:
        gc.enable()
