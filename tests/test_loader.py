"""MotionFocusedLoader with DALI in CPU mode on VP9 videos (synthetic + a transcoded real clip)."""
from __future__ import annotations

import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from mcl_fast.data import MotionFocusedLoader, TorchVideoLoader  # noqa: E402
from mcl_fast.data.augment import denormalize  # noqa: E402
from mcl_fast.data.plan import Choice, crop_motion  # noqa: E402
from mcl_fast.data.synthetic import make_video  # noqa: E402
from videotools import assert_loaders_agree, decode_all, psnr, reference_view, same_field  # noqa: E402

CLIP = dict(clip_len=8, stride=2, size=32)  # tiny clips: the CI machine has two cores


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, carphone_path):
    """Three synthetic VP9 videos and carphone_pristine.mp4 transcoded to VP9, with their store."""
    from mcl_fast.data.transcode import transcode
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    root = tmp_path_factory.mktemp("loader")
    videos = root / "videos"
    for i, n in enumerate((32, 40, 36)):
        make_video(videos / f"s{i}.webm", num_frames=n, height=64, width=80, object_size=14, gop=8, seed=10 + i)
    transcode(carphone_path, videos / "real" / "carphone.webm", codec="vp9", gop=16)
    prepare(str(videos), str(root / "store"), flow="farneback", size=64, workers=1, progress=False)
    store = MotionStore(root / "store")
    assert len(store.videos) == 4
    return SimpleNamespace(root=root, videos=videos, store=store, names=list(store.videos))


def loader(ds, **kw):
    args = dict(batch_size=2, device="cpu", seed=0, return_meta=True, num_threads=2, drop_last=False, **CLIP)
    args.update(kw)
    return MotionFocusedLoader(ds.names, ds.store, **args)


def test_plain_crops_match_an_independent_decode(dataset):
    ld = loader(dataset, augment=False)
    decoded = {}
    seen = set()
    for batch in ld:
        assert batch["views"][0].shape == (len(batch["index"]), 3, 8, 32, 32) and batch["views"][0].dtype == torch.float32
        assert not batch["flips"][0].any() and not batch["flips"][1].any()
        q, k = denormalize(batch["views"][0]).numpy(), denormalize(batch["views"][1]).numpy()
        for b, idx in enumerate(batch["index"].tolist()):
            path = dataset.store.video_path(dataset.names[idx])
            frames = decoded.setdefault(path, decode_all(path))
            f = batch["frames"][0][b].numpy()
            assert f.min() >= 0 and f.max() < len(frames)
            ref_q = reference_view(frames[f], batch["boxes"][0][b].tolist(), 32)
            ref_k = reference_view(frames[f], batch["boxes"][1][b].tolist(), 32)
            for t in range(8):  # every frame of both views
                assert psnr(q[b][:, t], ref_q[:, t]) >= 35, (path, t)
                assert psnr(k[b][:, t], ref_k[:, t]) >= 35, (path, t)
            seen.add(idx)
    assert seen == set(range(4))


def test_motion_is_cropped_and_flipped_with_the_query(dataset):
    ld = loader(dataset, batch_size=4)
    flips = []
    for epoch in range(2):
        ld.set_epoch(epoch)
        for batch in ld:
            assert batch["motion"].shape == (len(batch["index"]), 8, 2, 2)  # (clip_len, size/16, size/16)
            for b, idx in enumerate(batch["index"].tolist()):
                name = dataset.names[idx]
                info = dataset.store.info(name)
                plain = crop_motion(dataset.store.read(name), batch["frames"][0][b].numpy(), batch["boxes"][0][b].tolist(),
                                    (info["height"], info["width"]), (8, 2, 2), flip=False,
                                    cell_scale=dataset.store.cells_per_pixel(name))
                flip = bool(batch["flips"][0][b])
                want = plain[:, :, ::-1] if flip else plain
                assert np.allclose(batch["motion"][b].numpy(), want)
                flips.append(flip)
    assert any(flips) and not all(flips)  # both cases were checked


def _epoch(ld):
    return [{k: [t.clone() for t in v] if isinstance(v, list) else v.clone() for k, v in batch.items()} for batch in ld]


def test_same_seed_same_batches_and_epochs_differ(dataset):
    a, b = _epoch(loader(dataset, seed=5)), _epoch(loader(dataset, seed=5))
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert same_field(x[key], y[key]), key
    other = loader(dataset, seed=5)
    other.set_epoch(1)
    c = _epoch(other)
    assert any(not torch.equal(x["boxes"][0], y["boxes"][0]) for x, y in zip(a, c))


@pytest.mark.parametrize("num_shards", [2, 3])
def test_shards_partition_the_epoch(dataset, num_shards):
    seen = []
    for shard in range(num_shards):
        ld = loader(dataset, batch_size=1, augment=False, shard_id=shard, num_shards=num_shards)
        ld.set_epoch(3)
        got = [int(i) for batch in ld for i in batch["index"]]
        assert len(got) == len(ld) == -(-4 // num_shards)
        seen.append(got)
    flat = [i for s in seen for i in s]
    assert set(flat) == set(range(4))
    if 4 % num_shards == 0:
        assert len(flat) == 4  # disjoint: every video exactly once
    else:
        assert len(flat) == num_shards * -(-4 // num_shards)  # padded with the epoch's first videos


def test_len_partial_batch_drop_last_and_early_exit(dataset):
    ld = loader(dataset, batch_size=3, augment=False)
    sizes = [len(b["index"]) for b in ld]
    assert sizes == [3, 1] and len(ld) == 2
    ld2 = loader(dataset, batch_size=3, augment=False, drop_last=True)
    assert [len(b["index"]) for b in ld2] == [3] and len(ld2) == 1
    for batch in ld:  # leave an epoch after one batch: the next one starts clean
        break
    assert [len(b["index"]) for b in ld] == [3, 1]


def test_corrupt_and_truncated_files_are_skipped_and_reported_once(dataset, tmp_path):
    import av

    bad_root = tmp_path / "videos"
    shutil.copytree(dataset.videos, bad_root)
    (bad_root / "s1.webm").write_bytes(b"this is not a video" * 50)
    real = bad_root / "real" / "carphone.webm"
    with av.open(str(real)) as c:  # keep the first 8 of 120 frames: opens and starts fine, then ends
        cut = [p.pos for p in c.demux(video=0) if p.pos is not None and p.pos > 0][8]
    real.write_bytes(real.read_bytes()[:cut])
    ld = loader(dataset, video_root=bad_root, augment=False, verify=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(2):
            ld.set_epoch(epoch)
            batches = list(ld)
            assert len(batches) == len(ld)
            got = {dataset.names[i] for batch in batches for i in batch["index"].tolist()}
            assert got <= {"s0.webm", "s2.webm"}
    assert set(ld.failures) == {str(bad_root / "s1.webm"), str(real)}
    assert "not a video" in ld.failures[str(bad_root / "s1.webm")]  # caught by the check before DALI
    # opens fine: DALI failed on it, the batch was rebuilt; the reason is PyAV's, as prepare gives it
    assert ld.failures[str(real)].startswith("truncated: the data ends at 0.27 s of the 4.00 s")
    assert ld.num_replaced >= 2
    for path in ld.failures:  # reported once, in one line: the path and a reason, no DALI traceback
        messages = [str(w.message) for w in caught if path in str(w.message)]
        assert len(messages) == 1 and "skipping video" in messages[0] and "\n" not in messages[0]
        assert "Traceback" not in messages[0] and len(messages[0]) < 300


@pytest.mark.filterwarnings("ignore:.*have no fingerprint")  # copies of unknown origin: a notice
def test_store_video_mismatch_is_an_error_naming_the_videos(dataset, tmp_path):
    with pytest.raises(ValueError, match=r"missing: nope\.webm"):
        MotionFocusedLoader(dataset.names + ["nope.webm"], dataset.store, 2, device="cpu")
    other = tmp_path / "videos"
    shutil.copytree(dataset.videos, other)
    make_video(other / "s2.webm", num_frames=16, height=64, width=80, object_size=14, gop=8, seed=1)  # was 36 frames
    # WebM declares no frame count and this copy has no transcode_sources.json: it cannot be checked
    with pytest.warns(UserWarning, match="1 of 4 videos have no fingerprint"):
        loader(dataset, video_root=other, verify="eager")
    (other / "s2.webm").unlink()
    make_video(other / "s2.mp4", num_frames=36, height=64, width=80, object_size=14, gop=8, seed=1)  # H.264
    with pytest.raises(ValueError, match=r"CPU decoder.*s2\.webm \(h264\)"):
        loader(dataset, video_root=other, verify="eager")
    (other / "s2.mp4").unlink()
    make_video(other / "s2.webm", num_frames=36, height=64, width=64, object_size=14, gop=8, seed=1)  # square
    with pytest.raises(ValueError, match=r"another aspect ratio.*s2\.webm \(file 64x64, store 64x80\)"):
        loader(dataset, video_root=other, verify="eager")
    ld = loader(dataset, video_root=other, verify=False, augment=False)  # found when first planned
    with pytest.raises(ValueError, match=r"s2\.webm.*64x64.*64x80"):
        for _ in ld:
            pass


def test_torch_loader_gives_the_same_frames(dataset):
    dali = loader(dataset, seed=3)
    twin = TorchVideoLoader(dataset.names, dataset.store, 2, seed=3, return_meta=True, num_workers=0,
                            drop_last=False, **CLIP)
    assert len(dali) == len(twin)
    # colour jitter, greyscale, blur and flip included
    assert_loaders_agree(dali, twin, ("index", "frames", "boxes", "flips", "motion"), (0, 1))


def test_sampling_options(dataset):
    from mcl_fast.data.official import NotAnOfficialStore

    with pytest.raises(NotAnOfficialStore, match="--maps official"):  # a paper store (tests/test_official_loader.py)
        loader(dataset, batch_size=4, preset="official")
    for kw in (dict(sampling="random"), dict(two_clips=True)):
        for batch in loader(dataset, batch_size=4, **kw):
            assert batch["views"][0].shape == batch["views"][1].shape == (4, 3, 8, 32, 32)
            assert torch.isfinite(batch["views"][0]).all()
            if kw.get("two_clips"):
                assert batch["frames"][1].shape == (4, 8)

    def fixed(maps, info, rng):
        return Choice(np.arange(8), (0, 0, 32, 40), np.arange(8) + 2, (8, 8, 16, 24))

    batch = next(iter(loader(dataset, batch_size=4, clip_sampler=fixed, two_clips=True, augment=False)))
    assert (batch["frames"][0] == torch.arange(8)).all() and (batch["frames"][1] == torch.arange(8) + 2).all()
    assert (batch["boxes"][1] == torch.tensor([8, 8, 16, 24])).all()
    with pytest.raises(ValueError, match="device"):
        loader(dataset, device="tpu")


def test_resized_transcode_crops_the_same_region_in_its_own_pixels(tmp_path):
    """video_root = `mcl-fast transcode --short-side 48` of a store built on 96x128 videos: the boxes
    are scaled to the 48x64 files and the frames match a PyAV decode of those files at them."""
    from mcl_fast.data.transcode import transcode_dataset
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    src, small = tmp_path / "src", tmp_path / "small"
    for i, n in enumerate((24, 20)):
        make_video(src / f"r{i}.webm", num_frames=n, height=96, width=128, object_size=24, gop=8, seed=40 + i)
    prepare(str(src), str(tmp_path / "store"), flow="farneback", size=48, workers=1, progress=False)
    store = MotionStore(tmp_path / "store")
    report = transcode_dataset(src, small, codec="vp9", gop=8, short_side=48, progress=False)
    assert not report.errors and decode_all(small / "r0.webm").shape[1:3] == (48, 64)
    kw = dict(batch_size=2, device="cpu", seed=4, return_meta=True, num_threads=2, augment=False, **CLIP)
    full = next(iter(MotionFocusedLoader(store.videos, store, **kw)))
    for verify in (True, False):  # sizes from the construction check, or read when first planned
        got = next(iter(MotionFocusedLoader(store.videos, store, video_root=small, verify=verify, **kw)))
        for key in ("index", "frames", "flips", "motion"):
            assert same_field(got[key], full[key]), key
        for view in (0, 1):
            a, b = full["boxes"][view].double(), got["boxes"][view].double()  # (y0, x0, h, w): source, file pixels
            assert (b[:, 2:] >= 1).all() and (b[:, 0] + b[:, 2] <= 48).all() and (b[:, 1] + b[:, 3] <= 64).all()
            assert ((b[:, :2] - a[:, :2] / 2).abs() <= 0.5).all()
            assert ((b[:, :2] + b[:, 2:] - (a[:, :2] + a[:, 2:]) / 2).abs() <= 0.5).all()
    q, k = denormalize(got["views"][0]).numpy(), denormalize(got["views"][1]).numpy()
    for b, idx in enumerate(got["index"].tolist()):
        frames = decode_all(small / store.videos[idx])[got["frames"][0][b].numpy()]
        ref_q = reference_view(frames, got["boxes"][0][b].tolist(), 32)
        ref_k = reference_view(frames, got["boxes"][1][b].tolist(), 32)
        for t in range(8):
            assert psnr(q[b][:, t], ref_q[:, t]) >= 35 and psnr(k[b][:, t], ref_k[:, t]) >= 35, (idx, t)
    twin = next(iter(TorchVideoLoader(store.videos, store, video_root=small, num_workers=0,
                                      **{k: v for k, v in kw.items() if k not in ("device", "num_threads")})))
    assert torch.equal(twin["boxes"][0], got["boxes"][0]) and torch.equal(twin["boxes"][1], got["boxes"][1])


def test_cpu_mode_host_views_match_dalis_own_graph(dataset):
    """The CPU mode stops DALI's graph after the uint8 resize and does colour, blur, flip and the
    output format on the host: the same views as DALI's whole graph (the GPU's) on the CPU."""
    host = loader(dataset, seed=3)
    graph = loader(dataset, seed=3)
    graph.host_views = False
    assert host.host_views and len(host) == len(graph)
    # colour jitter, greyscale, blur and flip included; they differ only in the resize's rounding
    assert_loaders_agree(host, graph, ("index", "frames", "boxes", "flips", "motion"), (0, 1), min_psnr=45.0)


def test_cpu_mode_reuses_batch_buffers_but_never_one_you_hold(dataset):
    """The CPU mode renders into reused batch tensors (torch_loader.BatchBuffers): a batch still
    referenced is never overwritten (all kept: each its own memory, equal to a one-at-a-time pass),
    and batches let go of are written again (the same memory comes back)."""
    kept = list(loader(dataset, seed=5, batch_size=1))
    assert len(kept) == 4 and len({b["views"][0].data_ptr() for b in kept}) == 4
    ptrs = []
    for held, batch in zip(kept, loader(dataset, seed=5, batch_size=1)):
        assert all(torch.equal(x, y) for x, y in zip(held["views"], batch["views"]))
        ptrs.append(batch["views"][0].data_ptr())
    assert len(set(ptrs)) < len(ptrs), "no buffer came back: the test shows nothing"
