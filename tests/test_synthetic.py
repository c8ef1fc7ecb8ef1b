"""Synthetic videos: exact frame counts, boxes inside the frame, both codecs decode, ground truth holds."""
from __future__ import annotations

import av
import numpy as np
import pytest

from mcl_fast.data.synthetic import make_video, read_frames, render_frames, write_video


def _decoded_info(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        keys = [frame.key_frame for frame in container.decode(stream)]
    return codec, keys


@pytest.mark.parametrize("fixture, codec", [("synthetic_mp4", "h264"), ("synthetic_webm", "vp9")])
def test_written_video_decodes_with_exact_frame_count(request, fixture, codec):
    video = request.getfixturevalue(fixture)
    got_codec, keys = _decoded_info(video.path)
    assert got_codec == codec
    assert len(keys) == video.num_frames == 32
    # gop=8: keyframes exactly every 8 frames.
    assert [i for i, k in enumerate(keys) if k] == [0, 8, 16, 24]
    frames = read_frames(video.path)
    assert frames.shape == (32, video.height, video.width, 3) and frames.dtype == np.uint8


@pytest.mark.parametrize("fixture", ["synthetic_mp4", "synthetic_webm"])
def test_encoding_is_near_lossless(request, fixture):
    video = request.getfixturevalue(fixture)
    seed = 1 if fixture == "synthetic_mp4" else 2  # as conftest renders them
    rendered, boxes = render_frames(seed=seed, num_frames=32, height=64, width=80, object_size=14, speed=2.0)
    np.testing.assert_array_equal(boxes, video.boxes)
    decoded = read_frames(video.path)
    assert np.abs(decoded.astype(np.int16) - rendered).mean() < 4.0


def test_boxes_inside_frames_and_object_moves_at_speed():
    frames, boxes = render_frames(num_frames=40, height=64, width=96, num_objects=3, object_size=12,
                                  speed=2.0, seed=5)
    assert boxes.shape == (40, 3, 4) and boxes.dtype == np.int64
    y0, x0, h, w = (boxes[..., i] for i in range(4))
    assert (y0 >= 0).all() and (x0 >= 0).all() and (h == 12).all() and (w == 12).all()
    assert (y0 + h <= 64).all() and (x0 + w <= 96).all()
    step = np.hypot(*np.diff(boxes[..., :2], axis=0).transpose(2, 0, 1).astype(float))
    # Rounding to whole pixels and bounces perturb single steps; the mean step is the speed.
    assert abs(step.mean() - 2.0) < 0.3


def test_object_pixels_follow_the_box():
    """Without a pan, frame t -> t+1 changes only where the object was or is (its boxes, +1 px for
    the sub-pixel edge), and the box holds the same texture in every frame."""
    frames, boxes = render_frames(num_frames=12, height=64, width=80, object_size=16, speed=2.5, seed=7)
    for t in range(11):
        changed = np.any(frames[t] != frames[t + 1], axis=-1)
        allowed = np.zeros_like(changed)
        for y, x, h, w in (boxes[t, 0], boxes[t + 1, 0]):
            allowed[max(0, y - 1):y + h + 1, max(0, x - 1):x + w + 1] = True
        assert changed.any() and not (changed & ~allowed).any()
    interiors = [frames[t, y + 1:y + h - 1, x + 1:x + w - 1].astype(float) for t, (y, x, h, w) in enumerate(boxes[:, 0])]
    for patch in interiors[1:]:
        assert np.corrcoef(patch.ravel(), interiors[0].ravel())[0, 1] > 0.8


def test_subpixel_motion_is_smooth():
    """The object moves `speed` px every frame (sub-pixel rendering), not 2, 3, 2, 3 px: the
    flow inside it is nearly constant from frame to frame."""
    from mcl_fast.motion import compute_flow

    frames, boxes = render_frames(num_frames=8, height=64, width=96, object_size=20, speed=2.5, seed=4)
    box_steps = np.hypot(*np.diff(boxes[:, 0, :2], axis=0).T.astype(float))
    assert np.ptp(box_steps) >= 0.9  # the whole-pixel boxes jitter (2 or 3 px) ...
    flow = compute_flow(frames, "farneback")
    _, same_boxes, positions = render_frames(num_frames=8, height=64, width=96, object_size=20, speed=2.5, seed=4,
                                             return_positions=True)
    np.testing.assert_array_equal(same_boxes[..., :2], np.rint(positions).astype(np.int64))
    np.testing.assert_allclose(np.hypot(*np.diff(positions[:, 0], axis=0).T), 2.5)  # exact true speed
    speeds = [np.median(np.linalg.norm(flow[t, y + 4:y + h - 4, x + 4:x + w - 4], axis=-1))
              for t, (y, x, h, w) in enumerate(boxes[:-1, 0])]
    assert np.ptp(speeds) < 0.5 and abs(np.mean(speeds) - 2.5) < 0.5, speeds  # ... the motion does not


def test_active_window_and_static_background():
    frames, boxes = render_frames(num_frames=30, height=64, width=80, active=(10, 20), seed=8)
    moved = np.any(np.diff(boxes[:, 0, :2], axis=0) != 0, axis=1)  # moved[t]: frame t -> t+1
    assert not moved[:10].any() and not moved[20:].any() and moved[10:20].sum() >= 8
    # No pan: frames without object motion are identical.
    np.testing.assert_array_equal(frames[0], frames[9])
    np.testing.assert_array_equal(frames[21], frames[29])


def test_pan_translates_background():
    frames, _ = render_frames(num_frames=3, height=64, width=80, num_objects=1, object_size=4,
                              pan=(0.0, 3.0), seed=9)
    # Content moves +3 px in x per frame (object is tiny; compare a band that avoids it).
    a, b = frames[0].astype(int), frames[1].astype(int)
    diff_shifted = np.abs(b[:, 3:] - a[:, :-3])
    diff_static = np.abs(b - a)
    assert np.median(diff_shifted) <= 1 and np.median(diff_static) > 3


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 63, 80, 3), np.uint8))
    with pytest.raises(ValueError, match="extension"):
        write_video(tmp_path / "x.avi2", np.zeros((2, 64, 80, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 64, 80, 3), np.float32))
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_make_video_result(tmp_path):
    video = make_video(tmp_path / "v.webm", num_frames=6, height=32, width=48, object_size=8, fps=10)
    assert video.path.exists() and (video.num_frames, video.height, video.width, video.fps) == (6, 32, 48, 10.0)
    assert video.boxes.shape == (6, 1, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["v.webm"]  # no temporary file left


def test_read_frames_short_side_and_errors(tmp_path, carphone_path):
    frames = read_frames(carphone_path, max_frames=5, short_side=72)
    assert frames.shape == (5, 72, 88, 3)
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not_a_video.mp4"):
        read_frames(bad)


def test_sample_video_errors():
    from mcl_fast.data.samples import sample_video

    with pytest.raises(ValueError, match="bikes.mp4"):
        sample_video("nope.mp4")
