"""The loaders' modes over plain files (mcl_fast.data.evaluation): evaluation (uniform clips, centre
boxes) and fine-tuning's training (a random clip, a random box of the centre box's size, a flip)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mcl_fast.data.evaluation import ProbedVideos, centre_box, evaluation_loader, finetune_loader, uniform_clip_starts
from mcl_fast.data.output import IMAGENET_MEAN, IMAGENET_STD
from mcl_fast.data.plan import MotionSampler
from mcl_fast.data.planner import Planner
from mcl_fast.data.torch_loader import TorchVideoLoader
from mcl_fast.eval.features import ClipSettings, batch_clips, clip_loader, decode_resized, normalize_clips
from mcl_fast.sampling import clip_frame_indices

SETTINGS = ClipSettings(num_clips=3, clip_len=4, stride=2, crop_size=48)


def test_plans_are_uniform_clips_of_the_centre_box_without_augmentation(synthetic_mp4):
    loader = clip_loader([synthetic_mp4.path], SETTINGS)
    n, h, w = 32, 64, 80  # the fixture's video
    starts = uniform_clip_starts(n, 3, 4, 2)
    assert starts.tolist() == [0, 13, 25]  # 0 .. the last full clip (32 - 7), halves rounded up
    box = centre_box(h, w, 48, SETTINGS.resize_to)
    assert SETTINGS.resize_to == 55 and box == (4, 12, 56, 56)  # 48 of 55 resized pixels: 56 of the 64 source ones
    for epoch in (0, 3):  # the same clips every pass
        plan = loader.planner.plan(epoch, 0, 0)
        assert len(plan.views) == 3
        for c, view in enumerate(plan.views):
            np.testing.assert_array_equal(view.frames, clip_frame_indices(starts[c], 4, 2, n))
            assert view.clip == c and tuple(view.box) == box and not view.aug.flip and view.aug.identity_color
        assert plan.motion.shape == loader.motion_size and not plan.motion.any()  # no maps: a zero target


def test_clips_match_resize_then_centre_crop_up_to_interpolation(synthetic_mp4):
    """The loader's centre box resized to the crop is the old protocol's short-side resize then
    centre crop, frame-aligned (the bound the DALI clips are held to)."""
    (clips, index), = [batch_clips(b) for b in clip_loader([synthetic_mp4.path], SETTINGS)]
    assert index.tolist() == [0] and clips.shape == (1, 3, 3, 4, 48, 48) and clips.dtype == torch.float32
    frames = decode_resized(synthetic_mp4.path, SETTINGS.resize_to, SETTINGS.crop_size)
    idx = np.stack([clip_frame_indices(s, 4, 2, len(frames)) for s in uniform_clip_starts(len(frames), 3, 4, 2)])
    ref = normalize_clips(frames[idx])
    got = clips[0].numpy()
    aligned = np.abs(got - ref).mean()
    assert aligned < 0.2 and aligned < np.abs(got[:, :, 1:] - ref[:, :, :-1]).mean()


def test_videos_come_in_order_with_labels_and_a_bad_file_is_reported(synthetic_mp4, synthetic_webm, tmp_path):
    missing = tmp_path / "gone.mp4"
    paths = [synthetic_webm.path, missing, synthetic_mp4.path, synthetic_mp4.path]
    loader = evaluation_loader(paths, num_clips=2, clip_len=4, stride=2, crop_size=32, resize_to=40, batch_size=2,
                               labels=[3, 1, 4, 1])  # constructing opens no file: `missing` is not noticed yet
    assert not loader.failures
    with pytest.warns(RuntimeWarning, match="gone.mp4: file not found"):
        batches = list(loader)
    assert len(batches) == 2 and all(len(b["views"]) == 2 for b in batches)
    index = torch.cat([b["index"] for b in batches]).tolist()
    label = torch.cat([b["label"] for b in batches]).tolist()
    assert index[0] == 0 and index[2:] == [2, 3] and index[1] != 1  # the missing file's slot holds another video
    assert label == [[3, 1, 4, 1][i] for i in index]
    assert loader.failures == {str(missing): "file not found"}
    torch.testing.assert_close(batches[1]["views"][0][0], batches[1]["views"][0][1], rtol=0, atol=0)  # same file


def test_a_source_without_maps_needs_a_clip_sampler(synthetic_mp4):
    source = ProbedVideos([synthetic_mp4.path])
    with pytest.raises(ValueError, match="reads motion maps"):
        Planner(source, source.videos, clip_len=4, size=32, sampler=MotionSampler(4, 2), augment=False,
                motion_size=(4, 2, 2), seed=0)
    with pytest.raises(ValueError, match="min_frames"):
        TorchVideoLoader(source.videos, source, 1, num_workers=0, clip_len=4, min_frames=8,
                         clip_sampler=lambda maps, info, rng: None)
    with pytest.raises(ValueError, match="decoder must be"):
        evaluation_loader([synthetic_mp4.path], num_clips=1, clip_len=4, stride=2, crop_size=32, resize_to=40,
                          batch_size=1, decoder="opencv")


def _decode_with_pyav(path) -> np.ndarray:
    """Every frame of a file by a plain PyAV decode (none of the library's readers): (N, H, W, 3) uint8."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_finetune_clips_are_the_planned_frames_under_the_planned_box(synthetic_mp4, synthetic_webm):
    """Each training clip is exactly the frames an independent decode numbers as planned, cut to the
    planned box and flipped when planned; the plans are uniform clips (any start up to the last full
    clip) and boxes of the centre box's size anywhere in the frame, flipped or not, never recoloured."""
    paths = [synthetic_mp4.path, synthetic_webm.path]
    # resize_to = the short side (64): the box is 48² source pixels shown at 48², so no resampling blurs the check
    loader = finetune_loader(paths, [7, 9], clip_len=4, stride=3, crop_size=48, resize_to=64, batch_size=2, seed=5)
    decoded = [_decode_with_pyav(p) for p in paths]
    n, h, w = decoded[0].shape[:3]
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    starts, corners, flips = set(), set(), set()
    for epoch in range(8):
        loader.set_epoch(epoch)
        (batch,) = list(loader)
        assert batch["label"].tolist() == [[7, 9][i] for i in batch["index"].tolist()]
        plans = loader.planner.plan_batch(epoch, *loader.epoch_samples(epoch))
        for b, plan in enumerate(plans):
            view = plan.views[0]
            frames, (y0, x0, bh, bw) = np.asarray(view.frames), view.box
            assert plan.index == int(batch["index"][b]) and view.aug.identity_color and view.aug.blur_sigma == 0
            assert 0 <= frames[0] <= n - 10 and frames.tolist() == list(range(frames[0], frames[0] + 10, 3))
            assert (bh, bw) == centre_box(h, w, 48, 64)[2:] and 0 <= y0 <= h - 48 and 0 <= x0 <= w - 48
            clip = decoded[plan.index][frames, y0:y0 + 48, x0:x0 + 48]
            clip = clip[:, :, ::-1] if view.aug.flip else clip
            expected = np.moveaxis((clip / np.float32(255) - mean) / std, -1, 0)  # (3, T, 48, 48)
            torch.testing.assert_close(batch["views"][0][b], torch.from_numpy(expected.astype(np.float32)),
                                       rtol=0, atol=1e-5)
            starts.add(int(frames[0]))
            corners.add((y0, x0))
            flips.add(view.aug.flip)
    assert len(starts) > 5 and len(corners) > 5 and flips == {False, True}


def test_training_mode_reads_frame_counts_from_packets_and_replaces_a_bad_file(synthetic_mp4, synthetic_webm,
                                                                               tmp_path, monkeypatch):
    """Every loading process meets every training video: their counts and sizes come from the packet
    index and the header, the same as a full decode gives for a sound file, without decoding one."""
    import copy

    from mcl_fast.data import evaluation

    paths = [str(synthetic_mp4.path), str(synthetic_webm.path)]
    expected = {p: ProbedVideos(paths).info(p) for p in paths}  # full decodes
    assert expected[paths[0]] == {"num_frames": 32, "height": 64, "width": 80}

    def no_full_decode(path):
        raise AssertionError(f"{path} was decoded completely")

    monkeypatch.setattr(evaluation, "check_video", no_full_decode)
    packets = ProbedVideos(paths, exact_counts=False)
    assert {p: packets.info(p) for p in paths} == expected
    worker = copy.copy(packets)  # what a DataLoader worker gets: the setting, no verdicts
    assert worker.exact_counts is False and worker.info(paths[1]) == expected[paths[1]]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(synthetic_mp4.path.read_bytes()[:2000])
    missing = tmp_path / "gone.mp4"
    assert packets.problem(str(missing)) == "file not found" and packets.problem(str(broken))
    loader = finetune_loader([synthetic_mp4.path, missing], [0, 1], clip_len=4, stride=2, crop_size=32,
                             resize_to=40, batch_size=2)
    with pytest.warns(RuntimeWarning, match="gone.mp4: file not found"):
        (batch,) = list(loader)
    assert batch["index"].tolist() == [0, 0] and batch["label"].tolist() == [0, 0]
    assert loader.failures == {str(missing): "file not found"}


def test_the_main_process_decodes_with_the_render_threads(synthetic_mp4, monkeypatch):
    """With num_workers=0 PyAV decodes on render_threads threads (default 1: FFmpeg's frame threads
    cost ~1.6 ms more CPU per 8-frame 48x64 clip), None leaving FFmpeg's choice."""
    from mcl_fast.data import torch_loader
    from mcl_fast.data.evaluation import UniformClips, evaluation_views
    from mcl_fast.video_io import container, read_frames

    seen = []

    def read(path, indices, num_frames=None):
        seen.append(getattr(container._decoding, "count", None))  # what open_video gives the stream
        return read_frames(path, indices, num_frames)

    monkeypatch.setitem(torch_loader.DECODERS, "pyav", read)
    source = ProbedVideos([synthetic_mp4.path])
    for threads in (1, None, 2):
        loader = TorchVideoLoader(source.videos, source, 1, num_workers=0, render_threads=threads, clip_len=4,
                                  size=32, augment=False, clip_sampler=UniformClips(1, 4, 2, 32, 40),
                                  views=evaluation_views(1), verify=False)
        list(loader)
        assert seen[-1] == threads
