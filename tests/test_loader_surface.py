"""The loaders' public surface in someone else's training loop (issue 19): sharding by the process
group, one seed on every rank, fresh epochs without set_epoch, one batch layout, the option names
users bring from torch, views="clip" and batch_transform.

This file is also the torchrun worker: `torchrun --standalone --nproc-per-node 2 tests/test_loader_surface.py
STORE OUT` writes each rank's dataset indices per epoch (no shard arguments, no set_epoch) and the
errors a per-rank seed and a per-rank video list give.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(clip_len=4, stride=2, size=32, verify=False)
NUM_VIDEOS = 4


def make(kind: str, store, batch_size: int = 1, **options):
    """A loader of `kind` ("torch": PyAV, no workers unless num_workers=; "dali": DALI's CPU decoder)."""
    from mcl_fast.data import MotionFocusedLoader, TorchVideoLoader

    options = {**TINY, **options}
    if kind == "dali":
        pytest.importorskip("nvidia.dali")
        return MotionFocusedLoader(store.videos, store, batch_size, device="cpu", num_threads=1, **options)
    return TorchVideoLoader(store.videos, store, batch_size, **{"num_workers": 0, **options})


def make_store(root: Path):
    """NUM_VIDEOS VP9 clips (both loaders read them on a CPU) and their Farneback store."""
    from mcl_fast.data.synthetic import make_video
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    for i in range(NUM_VIDEOS):
        make_video(root / "videos" / f"v{i}.webm", num_frames=24 + 2 * i, height=48, width=64, object_size=12, gop=8,
                   seed=90 + i)
    prepare(str(root / "videos"), str(root / "store"), flow="farneback", size=48, workers=1, progress=False)
    return MotionStore(root / "store")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("surface"))


# ----------------------------------------------------------------------------- torchrun worker


def _indices_per_epoch(loader, epochs: int = 2) -> list[list[int]]:
    """The dataset indices of `epochs` passes, without set_epoch (as a loop that never calls it)."""
    return [[i for batch in loader for i in batch["index"].tolist()] for _ in range(epochs)]


def worker(store_path: str, out_dir: str) -> None:
    """Each rank: indices per epoch for both loaders with no shard arguments, and what seed=rank gives."""
    import torch.distributed as dist

    from mcl_fast.motion.store import MotionStore

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    store = MotionStore(store_path)
    got: dict = {"rank": rank}
    for kind in ("torch", "dali"):
        try:
            loader = make(kind, store, sampling="random")
        except pytest.skip.Exception:
            continue
        got[kind] = {"shard": [loader.shard_id, loader.num_shards], "indices": _indices_per_epoch(loader)}
    try:
        next(iter(make("torch", store, seed=7 + rank)))  # VideoMAE's habit: args.seed + rank
        got["seed_error"] = None
    except ValueError as err:
        got["seed_error"] = str(err)
    from mcl_fast.data import TorchVideoLoader

    try:  # a rank-local video list: rank 1 leaves one out
        next(iter(TorchVideoLoader(store.videos[:NUM_VIDEOS - rank], store, 1, num_workers=0, **TINY)))
        got["videos_error"] = None
    except ValueError as err:
        got["videos_error"] = str(err)
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(got))
    dist.destroy_process_group()


def run_torchrun(script: Path, *args, timeout: int = 240) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 script args` (gloo on the CPU); raises on failure."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.timeout(300)
def test_under_torchrun_the_loaders_shard_by_the_process_group_and_check_the_seed(store, tmp_path):
    run_torchrun(Path(__file__).resolve(), store.path, tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    kinds = [k for k in ("torch", "dali") if k in ranks[0]]
    assert "torch" in kinds
    for kind in kinds:
        assert [r[kind]["shard"] for r in ranks] == [[0, 2], [1, 2]], kind
        for epoch in range(2):
            a, b = (r[kind]["indices"][epoch] for r in ranks)
            assert len(a) == len(b) == NUM_VIDEOS // 2 and not set(a) & set(b), (kind, epoch, a, b)  # disjoint
            assert sorted(a + b) == list(range(NUM_VIDEOS)), (kind, epoch)  # together: the dataset
        orders = [ranks[0][kind]["indices"][e] + ranks[1][kind]["indices"][e] for e in range(2)]
        assert orders[0] != orders[1], kind  # the second pass is another epoch (no set_epoch called)
    for r in ranks:  # each rank's error names both ranks' seeds; then the video lists
        assert r["seed_error"] and "rank 0: seed=7" in r["seed_error"] and "rank 1: seed=8" in r["seed_error"]
        assert r["videos_error"] and "different video lists (rank 0: 4 videos, rank 1: 3 videos" in r["videos_error"]


def test_shards_follow_an_initialised_group_and_explicit_values_win(store, tmp_path, monkeypatch):
    """One process standing in for rank 1 of 2 (the group's answers patched): no shard arguments
    take the group's; explicit ones win, with a warning when they contradict it."""
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    loader = make("torch", store)
    assert (loader.shard_id, loader.num_shards, len(loader)) == (1, 2, NUM_VIDEOS // 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make("torch", store, shard_id=1, num_shards=2).shard_id == 1  # agrees: no warning
    with pytest.warns(UserWarning, match=r"shard_id=0, num_shards=1 differ from .*rank 1 of 2"):
        loader = make("torch", store, shard_id=0, num_shards=1)
    assert (loader.shard_id, loader.num_shards) == (0, 1)


def test_ranks_augment_differently_with_one_seed(store):
    """The same video on two ranks (drop_last=False pads rank 1 with video 0) gets its own clip,
    crop and flip on each: a sample's randomness comes from its position, which differs per rank."""
    from mcl_fast.data import TorchVideoLoader

    options = dict(TINY, num_workers=0, shuffle=False, drop_last=False, return_meta=True, num_shards=2)
    by_rank = [next(iter(TorchVideoLoader(store.videos[:3], store, 2, shard_id=r, **options))) for r in range(2)]
    assert [b["index"].tolist() for b in by_rank] == [[0, 1], [2, 0]]
    rank0, rank1 = by_rank  # video 0: sample 0 of rank 0, sample 1 of rank 1
    same_clip = torch.equal(rank0["frames"][0][0], rank1["frames"][0][1])
    assert not (same_clip and torch.equal(rank0["boxes"][0][0], rank1["boxes"][0][1]))


def test_without_a_group_the_loader_reads_everything(store):
    loader = make("torch", store)
    assert (loader.shard_id, loader.num_shards, len(loader)) == (0, 1, NUM_VIDEOS)


# ------------------------------------------------------------------------------------- epochs


def _pass(loader) -> list[dict]:
    return [{k: [t.clone() for t in v] if isinstance(v, list) else v.clone() for k, v in b.items()} for b in loader]


def _same(a: list[dict], b: list[dict]) -> bool:
    from videotools import same_field

    return len(a) == len(b) and all(x.keys() == y.keys() and all(same_field(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


@pytest.mark.parametrize("kind,workers", [("torch", 0), ("torch", 2), ("dali", 0)])
def test_each_pass_is_a_new_epoch_and_set_epoch_reproduces_it(store, kind, workers):
    options = dict(return_meta=True, seed=3, shuffle=False)  # one order: the clips and crops must change
    if kind == "torch":
        options["num_workers"] = workers
    loader = make(kind, store, 2, **options)
    passes = [_pass(loader) for _ in range(3)]
    for a, b in ((passes[0], passes[1]), (passes[1], passes[2])):
        assert [x["index"].tolist() for x in a] == [y["index"].tolist() for y in b]  # shuffle=False: same videos
        assert any(not torch.equal(x["frames"][0], y["frames"][0]) for x, y in zip(a, b))  # other clips
        assert any(not torch.equal(x["boxes"][0], y["boxes"][0]) for x, y in zip(a, b))  # other crops
    assert loader.epoch == 2
    fresh = make(kind, store, 2, **options)
    for epoch in (2, 0, 1):
        fresh.set_epoch(epoch)
        assert _same(_pass(fresh), passes[epoch]), epoch  # set_epoch(e) gives pass e exactly, views included
    fresh.set_epoch(1)
    assert _same(_pass(fresh), passes[1]) and _same(_pass(fresh), passes[2])  # then counting goes on from there
    if kind == "torch":
        loader.close()
        fresh.close()


def test_an_abandoned_pass_counts_and_resume_is_set_epoch_then_skip(store):
    loader = make("torch", store, 1, return_meta=True)
    full = [_pass(loader) for _ in range(2)]
    first = _pass([next(iter(loader))])  # epoch 2, abandoned after one batch
    assert loader.epoch == 2
    after = _pass(loader)
    assert loader.epoch == 3 and not _same(after[:1], first)  # the next pass is epoch 3, not epoch 2 again
    loader.set_epoch(2)
    assert _same(_pass(loader)[:1], first)
    loader.set_epoch(1)
    loader.skip(2)  # resume: pin the epoch, then skip within it
    assert _same(_pass(loader), full[1][2:]) and loader.epoch == 1
    assert len(_pass(loader)) == NUM_VIDEOS and loader.epoch == 2  # the skip applied to one pass only


def test_the_sampler_attribute_follows_the_loader(store):
    loader = make("torch", store)
    order0 = list(loader.sampler)
    assert [i for b in loader for i in b["index"].tolist()] == order0
    loader.sampler.set_epoch(5)  # DistributedSampler's call
    assert loader.epoch == 5 and list(loader.sampler) == [i for b in loader for i in b["index"].tolist()]


@pytest.mark.parametrize("persistent", [True, False])
def test_persistent_workers_and_the_dataloader_options(store, persistent):
    from mcl_fast.data import TorchVideoLoader

    loader = TorchVideoLoader(store.videos, store, 2, num_workers=2, persistent_workers=persistent, pin_memory=False,
                              prefetch_factor=1, timeout=120, worker_init_fn=_note_worker, **TINY)
    epochs = [[b["index"].tolist() for b in loader] for _ in range(2)]
    assert len(epochs[0]) == 2 and epochs[0] != epochs[1]
    data = loader._dataloader()
    assert data.persistent_workers is persistent and data.timeout == 120 and data.prefetch_factor == 1
    loader.close()


def _note_worker(worker_id: int) -> None:
    """A user's worker_init_fn (module level: picklable); runs after the loader's own set-up."""
    import faulthandler

    assert faulthandler.is_enabled()  # the loader's own set-up ran first
    os.environ["MCL_TEST_WORKER"] = str(worker_id)


# ------------------------------------------------------------------------------------- layout

VIEW_CONFIGS = {
    "default pair": (None, ("query", "key")),
    "pair": ("pair", ("query", "key")),
    "clip": ("clip", ("clip",)),
    "three views": ("three", ("view0", "view1", "view2")),
}


def _views(name):
    from mcl_fast.data import WEAK, ViewSpec

    spec = VIEW_CONFIGS[name][0]
    return [ViewSpec(), ViewSpec(aug=WEAK), ViewSpec(clip=1, clip_len=2, size=16)] if spec == "three" else spec


@pytest.mark.parametrize("kind", ["torch", "dali"])
@pytest.mark.parametrize("config", list(VIEW_CONFIGS))
def test_one_batch_layout_for_both_loaders_and_every_view_configuration(store, kind, config):
    names = VIEW_CONFIGS[config][1]
    for meta in (False, True):
        loader = make(kind, store, 2, views=_views(config), return_meta=meta)
        assert loader.view_names == names
        batch = next(iter(loader))
        want = {"views", "motion", "index"} | ({"frames", "boxes", "flips"} if meta else set())
        assert set(batch) == want, (config, meta)
        assert isinstance(batch["views"], list) and len(batch["views"]) == len(names)
        for view in batch["views"]:
            assert view.dim() == 5 and view.shape[:2] == (2, 3) and view.dtype == torch.float32
        assert batch["index"].shape == (2,) and batch["motion"].dim() == 4
        if meta:
            for key, shape in (("frames", None), ("boxes", (2, 4)), ("flips", (2,))):
                assert isinstance(batch[key], list) and len(batch[key]) == len(names), key
                for v, t in enumerate(batch[key]):
                    assert t.shape == (shape or (2, batch["views"][v].shape[2])), (key, v)


def test_clip_preset_is_one_view_with_crops_and_flip_only(store):
    loader = make("torch", store, views="clip")
    plans = loader.planner.plan_batch(0, range(200), np.arange(200) % NUM_VIDEOS)
    augs = [p.views[0].aug for p in plans]
    assert all(a.identity_color and a.blur_window == 1 for a in augs)  # no colour, no blur
    assert 0.4 < np.mean([a.flip for a in augs]) < 0.6  # flipped half the time
    assert len({p.views[0].box for p in plans}) > 20  # cropped
    with pytest.raises(ValueError, match="views must be one of 'pair', 'clip'"):
        make("torch", store, views="mae")


# ------------------------------------------------------------------------------ option names


def test_names_users_bring_from_torch(store):
    from mcl_fast.data import TorchVideoLoader

    with pytest.raises(TypeError, match="clip sampler is clip_sampler=") as err:
        make("torch", store, sampler=object())
    for name in ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "timeout", "worker_init_fn",
                 "clip_sampler", "seed", "batch_transform"):
        assert name in str(err.value), name  # the error lists every accepted option
    assert make("torch", store, clip_sampler=None).clip_sampler is not None
    for device, want in (("cuda", "cuda"), ("gpu", "cuda"), ("cuda:1", "cuda:1"), ("cpu", "cpu")):
        assert make("torch", store, device=device).device == torch.device(want)
    with pytest.raises(TypeError, match="videos must be a sequence of store keys.*'some/folder'"):
        TorchVideoLoader("some/folder", store, 1, num_workers=0, **TINY)
    with pytest.raises(TypeError, match="batch_transform must be picklable"):
        make("torch", store, num_workers=2, batch_transform=lambda b: b)


def test_the_dali_loader_takes_cuda_and_gpu():
    pytest.importorskip("nvidia.dali")
    from mcl_fast.data.loader import dali_device

    assert dali_device("cuda", None) == dali_device("gpu", None) == ("gpu", None)
    assert dali_device("cuda:1", None) == ("gpu", 1) and dali_device("cpu", 3) == ("cpu", 3)
    with pytest.raises(ValueError, match="device must be 'cuda'"):
        dali_device("tpu", None)
    with pytest.raises(ValueError, match="name different GPUs"):
        dali_device("cuda:1", 0)


def test_the_short_video_notice_is_shown_once(store, caplog):
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        make("torch", store, clip_len=16)  # a clip spans 31 frames: every video is short
    shown = [w for w in caught if "shorter than a clip" in str(w.message)]
    assert len(shown) == 1
    assert not [r for r in caplog.records if "shorter than a clip" in r.getMessage() and r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- batch_transform


class AddTotal:
    """A picklable batch_transform: adds the sum of the first view."""

    def __call__(self, batch):
        batch["total"] = batch["views"][0].sum()
        batch["pid"] = torch.tensor(os.getpid())
        return batch


def test_batch_transform_runs_in_the_worker(store):
    loader = make("torch", store, 2, num_workers=1, batch_transform=AddTotal())
    batch = next(iter(loader))
    assert torch.allclose(batch["total"], batch["views"][0].sum()) and int(batch["pid"]) != os.getpid()
    loader.close()
    with pytest.raises(TypeError, match="batch_transform must return the batch dict"):
        next(iter(make("torch", store, batch_transform=lambda b: None)))


@pytest.mark.parametrize("kind,workers", [("torch", 0), ("torch", 2), ("dali", 0)])
def test_videomae_batches_from_the_loader_itself(store, kind, workers):
    """views="clip" + MotionTubeMask: (float32 (B, 3, T, H, W), bool (B, N)), N = T/2 * H/16 * W/16."""
    from mcl_fast.data.masking import MotionTubeMask

    options = dict(views="clip", batch_transform=MotionTubeMask(ratio=0.5, mode="motion"), seed=1)
    if kind == "torch":
        options["num_workers"] = workers
    loader = make(kind, store, 2, **options)
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        clip, mask = batch["views"][0], batch["mask"]
        assert clip.dtype == torch.float32 and clip.shape == (2, 3, 4, 32, 32)
        assert mask.dtype == torch.bool and mask.shape == (2, 4 // 2 * 32 // 16 * 32 // 16)
        assert (mask.view(2, 2, 4).sum(-1) == 2).all()  # half of each step's 4 patches, a tube
    if kind == "torch":
        loader.close()
    reference = make("torch", store, 2, **{**options, "num_workers": 0})
    for a, b in zip(batches, reference):  # the same mask in a worker, the main process or after DALI
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["index"], b["index"])
    pickle.dumps(options["batch_transform"])


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
