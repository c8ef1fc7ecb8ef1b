"""Both loaders as a drop-in: output formats, views as data, labels, contrastive-safe defaults and
one behaviour for user samplers. DALI runs in CPU mode on VP9; the torch loader on the same files."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from mcl_fast.data import NONE, WEAK, Augmentation, MotionFocusedLoader, TorchVideoLoader, ViewSpec  # noqa: E402
from mcl_fast.data.plan import Choice, Clips  # noqa: E402
from videotools import decode_all, labelled_store, psnr, reference_view, same_field  # noqa: E402

CLIP = dict(clip_len=4, stride=2, size=16, verify=False)
VIDEOS = [("walk", 24), ("walk", 20), ("jump", 24), ("jump", 28), ("jump", 22)]
IMAGENET = (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Five VP9 videos in two class folders, their store and a UCF101-style split."""
    root = tmp_path_factory.mktemp("views")
    store, _, split = labelled_store(root, [(cls, f"{cls[0]}{i}", n) for i, (cls, n) in enumerate(VIDEOS)], seed=50)
    return SimpleNamespace(root=root, store=store, names=list(store.videos), split=split, decoded={})


def make(kind, ds, batch_size=2, **kw):
    args = dict(CLIP, seed=3)
    args.update(kw)
    if kind in ("dali", "dali-graph"):
        ld = MotionFocusedLoader(ds.names, ds.store, batch_size, device="cpu", num_threads=1, **args)
        ld.host_views = kind == "dali"  # "dali-graph": DALI's whole graph (the GPU's) on the CPU
        return ld
    return TorchVideoLoader(ds.names, ds.store, batch_size, num_workers=0, **args)


def frames_of(ds, idx):
    path = ds.store.video_path(ds.names[idx])
    if path not in ds.decoded:
        ds.decoded[path] = decode_all(path)
    return ds.decoded[path]


# ------------------------------------------------------------------------------- output formats

FORMATS = [(norm, dtype, layout) for norm in ("imagenet", "custom", None) for dtype in ("float32", "float16", "bfloat16")
           for layout in ("NCTHW", "NTCHW", "NTHWC")] + [(None, "uint8", layout) for layout in ("NCTHW", "NTCHW", "NTHWC")]
TOLERANCE = {"float32": 2e-3, "float16": 0.15, "bfloat16": 1.05, "uint8": 0.51}  # in 0..255 pixel units
CUSTOM = ((0.5, 0.4, 0.3), (0.25, 0.5, 0.2))


def expected(pixels: torch.Tensor, norm, dtype, layout) -> torch.Tensor:
    """The documented transform of (B, 3, T, S, S) 0..255 pixels, independently of OutputFormat."""
    x = pixels.double()
    if norm is not None:
        mean, std = IMAGENET if norm == "imagenet" else (np.array(CUSTOM[0]), np.array(CUSTOM[1]))
        x = (x / 255 - torch.tensor(mean).view(1, 3, 1, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1, 1)
    elif dtype == "uint8":
        x = x.round()
    else:
        x = x / 255
    return {"NCTHW": x, "NTCHW": x.permute(0, 2, 1, 3, 4), "NTHWC": x.permute(0, 2, 3, 4, 1)}[layout]


def scale_of(norm, dtype, layout) -> torch.Tensor:
    """Per-element 0..255 pixels per unit of the output (to compare in pixel units)."""
    if norm is None:
        s = torch.full((3,), 1.0 if dtype == "uint8" else 255.0, dtype=torch.float64)
    else:
        s = torch.tensor(IMAGENET[1] if norm == "imagenet" else CUSTOM[1]) * 255
    return s.view(1, 3, 1, 1, 1) if layout == "NCTHW" else s.view(1, 1, 3, 1, 1) if layout == "NTCHW" else s


def _near_a_tie(pixels: torch.Tensor, layout: str, eps: float = 1e-3) -> torch.Tensor:
    """Where (B, 3, T, S, S) pixels are within eps of k + 0.5, in `layout`: the loaders compute each
    format's pixels with its own affine (colour and normalisation folded), so float rounding there
    decides the uint8 value; everywhere else the rounding must agree."""
    tie = ((pixels - pixels.floor()) - 0.5).abs() < eps
    return {"NCTHW": tie, "NTCHW": tie.permute(0, 2, 1, 3, 4), "NTHWC": tie.permute(0, 2, 3, 4, 1)}[layout]


@pytest.mark.parametrize("kind", ["dali", "dali-graph", "torch"])
def test_every_output_format_is_the_default_up_to_its_transform(dataset, kind, monkeypatch):
    default = next(iter(make(kind, dataset)))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1, 1) for v in IMAGENET)
    pixels = [(view.double() * std + mean) * 255 for view in default["views"]]  # query, key (B, 3, T, S, S)
    dali_types = []
    if kind == "dali-graph":  # what leaves the DALI pipeline: the conversion happens inside it
        from mcl_fast.data import pipeline

        real = pipeline.to_torch
        monkeypatch.setattr(pipeline, "to_torch", lambda t, *a: (dali_types.append((str(t.dtype), t.layout())),
                                                                  real(t, *a))[1])
    elif kind == "dali":  # the CPU mode: uint8 resized crops leave the pipeline, the host converts
        from mcl_fast.data import loader

        real_finish = loader.finish_views
        monkeypatch.setattr(loader, "finish_views", lambda outs, *a: (
            dali_types.extend((str(t.dtype), t.layout()) for t in outs), real_finish(outs, *a))[1])
    for norm, dtype, layout in FORMATS:
        dali_types.clear()
        batch = next(iter(make(kind, dataset, normalize=CUSTOM if norm == "custom" else norm, dtype=dtype,
                               layout=layout)))
        assert batch["views"][0].dtype == getattr(torch, dtype), (norm, dtype, layout)
        assert len(batch["views"]) == 2
        for view, got in enumerate(batch["views"]):
            want = expected(pixels[view], norm, dtype, layout)
            assert got.shape == want.shape, (norm, dtype, layout)
            err = (got.double() - want).abs() * scale_of(norm, dtype, layout)
            if dtype == "uint8":  # a pixel within float rounding of k + 0.5 may round to either side
                err = torch.where(_near_a_tie(pixels[view], layout) & (err <= 1.0), torch.zeros_like(err), err)
            assert err.max() <= TOLERANCE[dtype], (norm, dtype, layout, float(err.max()))
        if kind == "dali-graph":
            dali_layout = {"NCTHW": "CFHW", "NTCHW": "FCHW", "NTHWC": "FHWC"}[layout]
            dali_dtype = {"float32": "FLOAT", "float16": "FLOAT16", "bfloat16": "FLOAT", "uint8": "UINT8"}[dtype]
            assert dali_types and all(t == (f"DALIDataType.{dali_dtype}", dali_layout) for t in dali_types), dali_types
        elif kind == "dali":
            assert dali_types and all(t == ("DALIDataType.UINT8", "FHWC") for t in dali_types), dali_types
    with pytest.raises(ValueError, match="uint8.*normalize=None"):
        make(kind, dataset, dtype="uint8")
    with pytest.raises(ValueError, match="layout must be one of"):
        make(kind, dataset, layout="NCHW")


# ------------------------------------------------------------------------------------------ views


def test_coclr_strong_and_weak_views(dataset):
    views = [ViewSpec(), ViewSpec(aug=WEAK)]
    ld = make("torch", dataset, views=views)
    plans = [p for e in range(4) for p in ld.planner.plan_batch(e, range(150), np.arange(150) % 5)]
    strong, weak = [p.views[0].aug for p in plans], [p.views[1].aug for p in plans]
    assert all(a.identity_color and a.blur_window == 1 for a in weak)  # never jitter, greyscale or blur
    assert 0.42 < np.mean([a.flip for a in weak]) < 0.58  # but flipped half the time
    grey = np.mean([np.allclose(a.color_matrix[0], a.color_matrix[1]) for a in strong])
    assert 0.15 < grey < 0.25 and 0.43 < np.mean([a.blur_window > 1 for a in strong]) < 0.57
    assert 0.78 < np.mean([not a.identity_color for a in strong]) < 0.9
    for kind in ("dali", "torch"):  # the weak view's pixels are the plain crop of the decoded frames
        batch = next(iter(make(kind, dataset, views=views, return_meta=True)))
        assert set(batch) == {"views", "motion", "index", "boxes", "flips", "frames"}  # the one layout
        assert all(len(batch[key]) == 2 for key in ("views", "boxes", "flips", "frames"))  # per view
        weak_px = (batch["views"][1] * torch.tensor(IMAGENET[1]).view(1, 3, 1, 1, 1).float()
                   + torch.tensor(IMAGENET[0]).view(1, 3, 1, 1, 1).float()) * 255
        for b, idx in enumerate(batch["index"].tolist()):
            ref = reference_view(frames_of(dataset, idx)[batch["frames"][1][b].numpy()], batch["boxes"][1][b].tolist(), 16)
            if batch["flips"][1][b]:
                ref = ref[..., ::-1]
            assert psnr(weak_px[b].numpy(), ref) >= 35, (kind, idx)


def test_three_clips_with_their_own_lengths_and_sizes(dataset):
    views = [ViewSpec(clip=0), ViewSpec(clip=1, aug=WEAK), ViewSpec(clip=2, clip_len=2, stride=1, size=24, crop="full")]
    batches = {}
    for kind in ("dali", "torch"):
        batch = next(iter(make(kind, dataset, views=views, augment=False, return_meta=True)))
        batches[kind] = batch
        assert [tuple(v.shape) for v in batch["views"]] == [(2, 3, 4, 16, 16), (2, 3, 4, 16, 16), (2, 3, 2, 24, 24)]
        assert [tuple(f.shape) for f in batch["frames"]] == [(2, 4), (2, 4), (2, 2)]  # each view's clip's frames
        assert (batch["boxes"][2] == torch.tensor([0, 0, 48, 64])).all()  # "full": the whole frame
        for b, idx in enumerate(batch["index"].tolist()):
            frames = frames_of(dataset, idx)
            for k, v in enumerate(views):
                ref = reference_view(frames[batch["frames"][k][b].numpy()], batch["boxes"][k][b].tolist(), v.size or 16)
                got = (batch["views"][k][b] * torch.tensor(IMAGENET[1]).view(3, 1, 1, 1).float()
                       + torch.tensor(IMAGENET[0]).view(3, 1, 1, 1).float()) * 255
                assert psnr(got.numpy(), ref) >= 35, (kind, idx, k)
    a, b = batches["dali"], batches["torch"]
    for key in ("index", "boxes", "flips", "motion", "frames"):
        assert same_field(a[key], b[key]), key
    assert a["motion"].shape == (2, 4, 1, 1)  # (clip_len, size // 16, size // 16) of view 0
    # with augmentation on: each view gets its own settings; the clips are sampled independently
    ld = make("torch", dataset, views=views)
    plans = ld.planner.plan_batch(0, range(300), np.arange(300) % 5)
    assert any(not np.array_equal(p.clips[0], p.clips[1]) for p in plans)
    weak = [p.views[1].aug for p in plans]
    assert all(a.identity_color and a.blur_window == 1 for a in weak) and 0.4 < np.mean([a.flip for a in weak]) < 0.6
    for k in (0, 2):  # the paper's augmentation
        augs = [p.views[k].aug for p in plans]
        assert 0.4 < np.mean([a.blur_window > 1 for a in augs]) < 0.6
        assert 0.12 < np.mean([np.allclose(a.color_matrix[0], a.color_matrix[1]) for a in augs]) < 0.28
    assert all(len(p.views[2].frames) == 2 and p.views[2].box == (0, 0, 48, 64) for p in plans)
    with pytest.raises(ValueError, match="clip 1 disagree on"):
        make("torch", dataset, views=[ViewSpec(clip=0), ViewSpec(clip=1, clip_len=2), ViewSpec(clip=1, clip_len=3)])
    with pytest.raises(ValueError, match="number the clips 0, 1"):
        make("torch", dataset, views=[ViewSpec(clip=0), ViewSpec(clip=2)])
    with pytest.raises(ValueError, match="two_clips"):
        make("torch", dataset, views=[ViewSpec()], two_clips=True)


@pytest.mark.parametrize("kind", ["dali", "torch"])
def test_single_plain_view_with_split_labels(dataset, kind):
    ld = make(kind, dataset, batch_size=2, views=[ViewSpec(crop="center", aug=NONE)], labels=dataset.split,
              sampling="random", return_meta=True)
    assert ld.classes == ["jump", "walk"] and len(ld) == 2  # 5 videos, full batches of 2
    by_video = {line.split()[0]: int(line.split()[1]) - 1 for line in dataset.split.read_text().splitlines()}
    seen = 0
    for epoch in range(2):
        ld.set_epoch(epoch)
        for batch in ld:
            assert len(batch["views"]) == 1 and batch["views"][0].shape == (2, 3, 4, 16, 16)
            assert (batch["boxes"][0] == torch.tensor([0, 8, 48, 48])).all()  # the centred square
            assert not batch["flips"][0].any()
            assert batch["label"].dtype == torch.int64
            assert batch["label"].tolist() == [by_video[dataset.names[i]] for i in batch["index"].tolist()]
            seen += 2
    assert seen == 8


def test_labels_sequences_and_dropped_videos(dataset):
    labels = [10 + i for i in range(5)]
    ld = make("torch", dataset, batch_size=1, labels=labels, min_frames=21)  # drops the 20-frame video
    assert ld.dropped_videos == ["walk/w1.webm"] and len(ld.videos) == 4
    for batch in ld:
        assert batch["label"].tolist() == [labels[dataset.names.index(ld.videos[i])] for i in batch["index"].tolist()]
    with pytest.raises(ValueError, match="one label per video"):
        make("torch", dataset, labels=[1, 2])
    with pytest.raises(ValueError, match="class indices"):
        make("torch", dataset, labels=["a"] * 5)
    other = dataset.root / "other.csv"
    other.write_text("path,label\njump/j2.webm,0\n")
    with pytest.raises(ValueError, match="no entry for 4 of 5 videos"):
        make("torch", dataset, labels=other)


# ---------------------------------------------------------------------- contrastive-safe defaults


@pytest.mark.parametrize("kind", ["dali", "torch"])
def test_full_batches_by_default_and_the_sampler_alias(dataset, kind):
    ld = make(kind, dataset, batch_size=2, sampling="random")
    assert ld.drop_last and len(ld) == 2 and len(ld.sampler) == 5
    by_alias = []
    for epoch in range(2):
        ld.sampler.set_epoch(epoch)  # a loop written for DistributedSampler
        assert ld.epoch == ld.sampler.epoch == epoch
        by_alias.append([b["index"].tolist() for b in ld])
    assert all(len(i) == 2 for epoch in by_alias for i in epoch)  # no partial batch to break a queue
    ld2 = make(kind, dataset, batch_size=2, sampling="random")
    for epoch in range(2):
        ld2.set_epoch(epoch)
        assert [b["index"].tolist() for b in ld2] == by_alias[epoch]
        assert list(ld2.sampler) == ld2.epoch_samples()[1].tolist()
    with pytest.raises(ValueError, match="an epoch would have no batch"):
        make(kind, dataset, batch_size=6)
    assert len(make(kind, dataset, batch_size=2, drop_last=False)) == 3
    with pytest.raises(TypeError, match="unexpected option.*batchsize"):
        make(kind, dataset, batchsize=2)


# --------------------------------------------------------------------------------- user samplers


def _fixed(distinct: bool):
    def sampler(maps, info, rng):
        n = info["num_frames"]
        q = np.arange(0, 8, 2)
        k = np.minimum(q + (9 if distinct else 0), n - 1)
        return Choice(q, (0, 0, 40, 48), k, (8, 16, 32, 32))
    return sampler


@pytest.mark.parametrize("distinct", [True, False])
def test_user_sampler_key_frames_are_used_by_both_loaders(dataset, distinct):
    out = {}
    for kind in ("dali", "torch"):
        out[kind] = batch = next(iter(make(kind, dataset, clip_sampler=_fixed(distinct), augment=False, return_meta=True)))
        assert (batch["frames"][0] == torch.tensor([0, 2, 4, 6])).all()
        key_frames = torch.tensor([9, 11, 13, 15]) if distinct else torch.tensor([0, 2, 4, 6])
        assert (batch["frames"][1] == key_frames).all() and (batch["boxes"][1] == torch.tensor([8, 16, 32, 32])).all()
        for b, idx in enumerate(batch["index"].tolist()):
            ref = reference_view(frames_of(dataset, idx)[key_frames.numpy()], (8, 16, 32, 32), 16)
            got = (batch["views"][1][b] * torch.tensor(IMAGENET[1]).view(3, 1, 1, 1).float()
                   + torch.tensor(IMAGENET[0]).view(3, 1, 1, 1).float()) * 255
            assert psnr(got.numpy(), ref) >= 35, (kind, idx)  # the key shows the key frames
    assert set(out["dali"]) == set(out["torch"]) == {"views", "motion", "index", "frames", "boxes", "flips"}
    for key in out["dali"]:
        if key == "views":
            assert all(psnr(a.numpy(), b.numpy()) >= 35 for a, b in zip(out["dali"][key], out["torch"][key]))
        else:
            assert same_field(out["dali"][key], out["torch"][key]), key
    with pytest.raises(ValueError, match="different query and key frames.*one clip"):
        next(iter(make("torch", dataset, clip_sampler=_fixed(True), views=[ViewSpec(), ViewSpec()])))


def test_a_sampler_returns_clips_boxes_and_motion_for_any_views(dataset):
    """The official preset's shape: three clips, four views (query and key 1 from the query clip),
    a (4, 7, 7) motion target from the sampler."""
    views = [ViewSpec(clip=0), ViewSpec(clip=0), ViewSpec(clip=1), ViewSpec(clip=2)]
    seen_info = []

    def official_like(maps, info, rng):
        seen_info.append(info)
        starts = rng.choice(info["num_frames"] - 6, 3, replace=False)
        frames = tuple(np.arange(s, s + 8, 2) for s in starts)
        target = np.arange(4 * 7 * 7, dtype=np.float32).reshape(4, 7, 7)
        return Clips(frames=frames, boxes=((0, 0, 32, 32), None, (4, 4, 20, 20), None), motion=target)

    ld = make("torch", dataset, clip_sampler=official_like, views=views, motion_size=(4, 7, 7), return_meta=True)
    assert seen_info == [] and ld.layout.num_clips == 3
    plans = ld.planner.plan_batch(0, range(10), np.arange(10) % 5)
    info = seen_info[0]
    assert info["clips"] == ((4, 2), (4, 2), (4, 2)) and info["video"] in dataset.names
    for p in plans:
        assert [v.clip for v in p.views] == [0, 0, 1, 2]
        assert np.array_equal(p.views[1].frames, p.clips[0]) and np.array_equal(p.views[3].frames, p.clips[2])
        assert p.views[0].box == (0, 0, 32, 32) and p.views[2].box == (4, 4, 20, 20)
        assert p.views[1].box != p.views[0].box  # drawn by the loader (the view's crop rule)
        target = np.arange(4 * 7 * 7, dtype=np.float32).reshape(4, 7, 7)
        assert np.array_equal(p.motion, target[:, :, ::-1] if p.views[0].aug.flip else target)
    batch = next(iter(ld))
    assert len(batch["views"]) == 4 and batch["motion"].shape == (2, 4, 7, 7)
    with pytest.raises(ValueError, match="returned 2 clips; the views spec has 3"):
        make("torch", dataset, views=views, motion_size=(4, 7, 7),
             clip_sampler=lambda m, i, r: Clips(frames=(np.arange(4), np.arange(4)))).planner.plan(0, 0, 0)
    with pytest.raises(ValueError, match=r"motion target of shape \(2, 2\)"):
        make("torch", dataset, views=views, motion_size=(4, 7, 7),
             clip_sampler=lambda m, i, r: Clips(frames=(np.arange(4),) * 3, motion=np.zeros((2, 2)))).planner.plan(0, 0, 0)


def test_augmentation_settings_are_checked():
    with pytest.raises(ValueError, match="jitter_p must be a probability"):
        Augmentation(jitter_p=1.5)
    with pytest.raises(ValueError, match="crop must be one of"):
        ViewSpec(crop="corner")
    with pytest.raises(ValueError, match="views\\[0\\] cannot use crop='same'"):
        from mcl_fast.data.views import resolve_views

        resolve_views([ViewSpec(crop="same")], clip_len=4, stride=2, size=16, motion_crop=True, scale=(0.3, 1),
                      ratio=(0.5, 2), augment=True)


def test_views_from_plain_data_as_a_json_config_gives_them(dataset):
    spec = {"crop": "random", "scale": [0.6, 1.0], "aug": {"jitter_p": 0.0, "grayscale_p": 0.0, "blur_sigma": [0.5, 1]}}
    view = ViewSpec.from_dict(spec)
    assert view == ViewSpec(crop="random", scale=(0.6, 1.0), aug=Augmentation(jitter_p=0.0, grayscale_p=0.0,
                                                                               blur_sigma=(0.5, 1.0)))
    with pytest.raises(ValueError, match="ViewSpec has no field 'scales'"):
        ViewSpec.from_dict({"scales": [0.5, 1]})
    with pytest.raises(ValueError, match="Augmentation has no field 'jitter'"):
        ViewSpec.from_dict({"aug": {"jitter": 0.5}})
    with pytest.raises(TypeError, match="a view is a ViewSpec or a dict"):
        ViewSpec.from_dict([0.5, 1])
    # the loaders take dicts too: the same plans as with the ViewSpec objects
    a = make("torch", dataset, views=[{}, spec]).planner.plan_batch(0, range(5), np.arange(5))
    b = make("torch", dataset, views=[ViewSpec(), view]).planner.plan_batch(0, range(5), np.arange(5))
    assert [p.views[1].box for p in a] == [p.views[1].box for p in b]


def test_pretraining_takes_two_views_from_its_config(dataset, tmp_path):
    """data.views reaches the loader (as dicts) and its two views train as query and key."""
    import json

    from mcl_fast.train import ConfigError, build_loader, load_config, train

    views = [{"aug": {"jitter_p": 0.0, "grayscale_p": 0.0}}, {"crop": "random", "scale": [0.6, 1.0], "size": 24}]
    over = ["model.backbone_kwargs.width=8", "model.hidden=16", "model.dim=8", "data.loader=torch",
            f"data.store={dataset.store.path}", "data.videos=null", "data.batch_size=2", "data.clip_len=4",
            "data.size=32", "data.num_workers=0", f"data.views={json.dumps(views)}", "optim.epochs=1",
            "train.max_steps=2", "train.tensorboard=false", "train.progress=false", "train.plot=false",
            "checkpoint.every_steps=0", f"output={tmp_path / 'run'}"]
    config = load_config("demo_cpu", over)
    batch = next(iter(build_loader(config, torch.device("cpu"), 0, 1)))
    assert [v.shape for v in batch["views"]] == [(2, 3, 4, 32, 32), (2, 3, 4, 24, 24)] and "query" not in batch
    assert set(batch) == {"views", "motion", "index"}
    summary = train(config)
    assert summary["step"] == 2 and summary["nce"] > 0
    three = json.dumps(views + [{}])
    with pytest.raises(ConfigError, match="exactly two views"):
        load_config("demo_cpu", over[:-8] + [f"data.views={three}"])
    with pytest.raises(ConfigError, match="MoCo's two views: \"pair\" or two view dicts, got 'clip'"):
        load_config("demo_cpu", over[:-8] + ['data.views="clip"'])
    load_config("demo_cpu", over[:-8] + ['data.views="pair"'])
    typo = json.dumps([{}, {"crops": "random"}])
    with pytest.raises(ConfigError, match="views: ViewSpec has no field 'crops'"):
        load_config("demo_cpu", over[:-8] + [f"data.views={typo}"])
