"""The torch loader's CPU path: every output format equals the plain torch ops, batches rendered
into reused buffers are never overwritten while held, and a batch renders with one thread."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from mcl_fast.data import TorchVideoLoader
from mcl_fast.data.augment import apply_view, render_view
from mcl_fast.data.output import OutputFormat
from plan_reference import draw_view_aug
from mcl_fast.data.synthetic import make_video
from mcl_fast.data.torch_loader import BatchBuffers

CLIP = dict(clip_len=4, stride=2, size=24, drop_last=False)
FORMATS = [OutputFormat(), OutputFormat(normalize=None), OutputFormat(normalize=None, dtype="uint8"),
           OutputFormat(layout="NTCHW", dtype="float16"), OutputFormat(layout="NTHWC", dtype="bfloat16"),
           OutputFormat(normalize=((0.5,) * 3, (0.25, 0.5, 0.75)))]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four small H.264 videos and their motion store."""
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    root = tmp_path_factory.mktemp("loader_cpu")
    for i in range(4):
        make_video(root / "videos" / f"v{i}.mp4", num_frames=24, height=48, width=64, object_size=12, gop=8,
                   seed=40 + i)
    prepare(str(root / "videos"), str(root / "store"), flow="farneback", size=64, workers=1, progress=False)
    store = MotionStore(root / "store")
    return SimpleNamespace(store=store, names=list(store.videos))


@pytest.mark.parametrize("output", FORMATS, ids=lambda o: f"{o.normalize!s:.8}-{o.dtype}-{o.layout}")
def test_every_output_format_equals_the_format_applied_to_the_pixels(output):
    """The fused path (colour and normalisation as one affine, flip in the layout copy) against
    OutputFormat.apply on render_view's 0..255 pixels, flipped and not, with and without colour."""
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (5, 40, 52, 3), dtype=np.uint8)
    for _ in range(6):
        aug = draw_view_aug(rng, 20)
        got = apply_view(frames, (3, 5, 30, 41), aug, 20, output)
        want = output.apply(render_view(frames, (3, 5, 30, 41), aug, 20))
        assert got.shape == want.shape == output.sample_shape(5, 20) and got.dtype == want.dtype
        # uint8: a value within float rounding of .5 may round either way
        tol = {"uint8": 1, "float16": 2e-3, "bfloat16": 2e-2}.get(output.dtype, 1e-4)
        assert (got.float() - want.float()).abs().max() <= tol


def test_render_view_flips_as_the_last_step():
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (3, 30, 30, 3), dtype=np.uint8)
    aug = draw_view_aug(rng, 16)
    aug.flip = False
    plain = render_view(frames, (0, 0, 30, 30), aug, 16)
    aug.flip = True
    assert torch.equal(render_view(frames, (0, 0, 30, 30), aug, 16), plain.flip(-1))


def test_held_batches_are_never_overwritten_and_dropped_ones_are_reused(dataset):
    """num_workers=0 renders into a few reused buffers. Whatever still refers to a batch (the dict,
    a view tensor, a slice of one, a NumPy array on it) keeps it as it was; buffers nobody holds
    are reused."""
    loader = TorchVideoLoader(dataset.names * 4, dataset.store, 2, num_workers=0, seed=0, **CLIP)
    held, copies, ptrs = [], [], []
    for i, batch in enumerate(loader):
        view = batch["views"][0]
        ptrs.append(view.data_ptr())
        if i < 4:  # held four ways; the later batches are dropped at once
            held.append([batch, view, view[1:], view.numpy()][i])
            copies.append(view.clone())
        del batch, view
    assert len(ptrs) == 8
    for kept, copy in zip(held, copies):
        got = kept["views"][0] if isinstance(kept, dict) else torch.as_tensor(kept)
        assert torch.equal(got, copy[-got.shape[0]:]), "a held batch was overwritten"
    assert not set(ptrs[4:]) & set(ptrs[:4]), "a held batch's buffer was rendered into"
    # the loop's variable holds the last batch while the next renders: two sets take turns
    assert len(set(ptrs[4:])) == 2, "buffers nobody holds were not reused"


def test_in_use_counts_references_and_views():
    buffers = BatchBuffers(OutputFormat(), shared=False, keep=2)
    views = buffers.take(2, [(3, 2, 4, 4)])
    assert BatchBuffers.in_use(buffers.pool[0])  # `views` refers to it
    first = views[0].data_ptr()
    del views
    assert not BatchBuffers.in_use(buffers.pool[0])
    again = buffers.take(2, [(3, 2, 4, 4)])
    assert again[0].data_ptr() == first
    part = again[0][0]
    del again
    assert BatchBuffers.in_use(buffers.pool[0])  # a view of it
    assert buffers.take(2, [(3, 2, 4, 4)])[0].data_ptr() != first
    del part


def _record_threads(batch):
    batch["threads"] = torch.tensor([torch.get_num_threads(), cv2.getNumThreads()])
    return batch


@pytest.mark.parametrize("threads", [1, None])
def test_a_batch_renders_with_render_threads_and_the_process_gets_its_setting_back(dataset, threads):
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    try:
        loader = TorchVideoLoader(dataset.names, dataset.store, 2, num_workers=0, seed=0, render_threads=threads,
                                  batch_transform=_record_threads, **CLIP)
        seen = next(iter(loader))["threads"].tolist()
        assert seen == ([1, 1] if threads == 1 else [2, 2])
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
    with pytest.raises(ValueError, match="render_threads"):
        TorchVideoLoader(dataset.names, dataset.store, 2, num_workers=0, render_threads=0, **CLIP)
