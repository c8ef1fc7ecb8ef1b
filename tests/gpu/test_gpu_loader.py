"""MotionFocusedLoader's GPU path (NVDEC + GPU operators + batched sampling kernels) against its
CPU path on the same VP9 videos, and the batched GPU sampling steps against the NumPy ones.
Skips without CuPy, DALI or a CUDA device."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mcl_fast._backend import has_gpu

pytest.importorskip("cupy")
pytest.importorskip("nvidia.dali")
if not has_gpu():
    pytest.skip("no CUDA device visible to CuPy", allow_module_level=True)

import torch  # noqa: E402

from mcl_fast import sampling as ref  # noqa: E402
from mcl_fast.data import MotionFocusedLoader  # noqa: E402
from mcl_fast.data.augment import denormalize  # noqa: E402
from mcl_fast.data.loader import _gpu_box_selector, _gpu_clip_scorer  # noqa: E402
from mcl_fast.data.official import SAMPLING as RELEASE  # noqa: E402
from mcl_fast.data.plan import MotionSampler  # noqa: E402
from mcl_fast.data.synthetic import make_video  # noqa: E402
from mcl_fast.motion.store import dequantize, quantize_maps  # noqa: E402

import plan_reference as R  # noqa: E402  (tests/: the per-sample reference)

CLIP = dict(clip_len=8, stride=2, size=32)


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed={seed}")
    return np.random.default_rng(seed)


def _random_maps(rng, n: int, h: int, w: int) -> np.ndarray:
    """Store-like maps: sparse blobs, quantised to uint8 levels (many ties), sometimes all zero."""
    kind = rng.integers(3)
    if kind == 0:
        return np.zeros((n, h, w), np.float32)  # no hot pixels: the first candidate
    maps = rng.random((n, h, w)).astype(np.float32) ** 4
    if kind == 1:
        y, x = rng.integers(h), rng.integers(w)
        maps[:, max(0, y - 3):y + 3, max(0, x - 3):x + 3] += 5.0
    q, scale = quantize_maps(maps)
    return dequantize(q, scale).astype(np.float32)


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_gpu_box_selector_picks_the_numpy_boxes(rng, preset):
    sampler = MotionSampler(8, 2, preset=RELEASE if preset == "official" else preset)
    select = _gpu_box_selector(sampler)
    proposals = []
    for i in range(24):  # two map shapes in one batch: two kernel groups
        h, w, height, width = (16, 20, 64, 80) if i % 3 else (12, 16, 48, 64)
        info = {"num_frames": 30, "height": height, "width": width}
        if i % 2:
            info["cells_per_pixel"] = (h / (height - 4), w / (width - 4))
        proposals.append(R.propose(sampler, _random_maps(rng, 30, h, w), info, rng))
    got = np.asarray(select(proposals))
    want = np.stack([R.select(sampler, p) for p in proposals])
    assert got.shape == (24, 2)
    assert np.array_equal(got, want)


def test_gpu_clip_scorer_is_bit_equal_to_numpy(rng):
    sampler = MotionSampler(8, 2)
    score = _gpu_clip_scorer(sampler)
    m_ts = [_random_maps(rng, n, 4, 5).mean(axis=(1, 2)).astype(np.float32) for n in (30, 30, 12, 48, 30, 9)]
    for (starts, scores), m_t in zip(score(m_ts), m_ts):  # 9 and 12 frames: shorter than one clip
        want_starts, want_scores = ref.clip_scores(m_t, 8, 2)
        assert np.array_equal(starts, want_starts) and np.array_equal(scores, want_scores)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three synthetic VP9 videos (NVDEC and DALI's CPU decoder both read VP9; 128x160: NVDEC's VP9
    minimum is 128x128) and their store."""
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    root = tmp_path_factory.mktemp("gpu_loader")
    for i, n in enumerate((32, 40, 36)):
        make_video(root / "videos" / f"g{i}.webm", num_frames=n, height=128, width=160, object_size=28, gop=8,
                   seed=30 + i)
    prepare(str(root / "videos"), str(root / "store"), flow="farneback", size=64, workers=1, progress=False)
    store = MotionStore(root / "store")
    return SimpleNamespace(store=store, names=list(store.videos))


def psnr(a, b) -> float:
    mse = float(((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("augment", [False, True])
def test_gpu_and_cpu_loaders_agree(dataset, augment):
    kw = dict(batch_size=2, seed=11, return_meta=True, num_threads=2, augment=augment, drop_last=False, **CLIP)
    gpu = MotionFocusedLoader(dataset.names, dataset.store, device="gpu", **kw)
    cpu = MotionFocusedLoader(dataset.names, dataset.store, device="cpu", **kw)
    assert len(gpu) == len(cpu) == 2
    for epoch in range(2):
        gpu.set_epoch(epoch)
        cpu.set_epoch(epoch)
        for a, b in zip(gpu, cpu):
            for key, value in a.items():  # every output on the pipeline's device, meta included (per-view lists)
                assert all(v.device.type == "cuda" for v in (value if isinstance(value, list) else [value])), key
            for key in ("index", "frames", "boxes", "flips", "motion"):
                pairs = zip(a[key], b[key]) if isinstance(a[key], list) else [(a[key], b[key])]
                assert all(torch.equal(x.cpu(), y) for x, y in pairs), key
            assert len(a["views"]) == len(b["views"]) == 2  # query, key
            for view, (p, q) in enumerate(zip(a["views"], b["views"])):
                assert p.shape == q.shape == (len(b["index"]), 3, 8, 32, 32)
                x, y = denormalize(p).cpu().numpy(), denormalize(q).numpy()
                for i in range(len(x)):
                    for t in range(x.shape[2]):
                        assert psnr(x[i][:, t], y[i][:, t]) >= 35, (view, i, t)
    assert not gpu.failures and gpu.num_replaced == 0
