"""mcl_fast.video_io: the verdict on every corpus file, exact random access, listing, fingerprints."""
from __future__ import annotations

import numpy as np
import pytest

from mcl_fast.video_io import (VIDEO_EXTENSIONS, VideoError, check_video, collect_videos, count_frames,
                               file_fingerprint, first_frame_problem, frame_index, probe, read_frames, scan_folder,
                               truncation_reason)
from videotools import decode_all


def test_every_honest_file_decodes_to_its_frame_count(video_corpus):
    assert len(video_corpus.good) >= 15
    for rel, n in video_corpus.good.items():
        info = check_video(video_corpus.root / rel)
        assert info["decoded"] == n, rel
        assert count_frames(video_corpus.root / rel) == n
        assert first_frame_problem(video_corpus.root / rel) is None


def test_every_bad_file_is_named_with_its_reason(video_corpus):
    for rel, word in video_corpus.bad.items():
        with pytest.raises(VideoError) as info:
            check_video(video_corpus.root / rel)
        assert info.value.path == str(video_corpus.root / rel) and word in info.value.reason, (rel, info.value.reason)
        assert str(video_corpus.root / rel) in str(info.value)  # the message names the file


def test_a_nonconforming_slice_is_concealed_not_fatal(video_corpus):
    """The issue's phone clip: FFmpeg's default concealment decodes it; err_detect=explode did not."""
    import av

    path = video_corpus.root / "nonconforming_idr_slice.mp4"
    assert count_frames(path) == 12
    with av.open(str(path)) as container, pytest.raises(av.InvalidDataError):
        container.streams.video[0].codec_context.options = {"err_detect": "explode"}
        for _ in container.decode(video=0):
            pass


def test_random_access_returns_the_sequentially_numbered_frames(video_corpus):
    """read_frames(path, [i, j, ...]) == the frames a plain sequential decode numbers i, j, ...
    for every honest corpus file (MPEG-PS/TS and AVI included), with and without the frame count."""
    rng = np.random.default_rng(0)
    for rel, n in video_corpus.good.items():
        path = video_corpus.root / rel
        full = decode_all(path)
        assert len(full) == n
        ok = np.array(video_corpus.comparable(rel))
        cases = [[ok[0]], [n - 1], list(ok[:40]), [ok[len(ok) // 2]] * 3 + [ok[0]]]
        cases += [sorted(rng.choice(ok, 4).tolist()) for _ in range(3)]
        cases += [rng.choice(ok, 5).tolist()]  # unordered, repeats
        for idx in cases:
            for known in (n, None):
                got = read_frames(path, idx, num_frames=known)
                assert got.shape == (len(idx),) + full.shape[1:]
                assert np.array_equal(got, full[idx]), (rel, idx, known)


def test_random_access_errors_name_the_file(video_corpus, tmp_path):
    path = video_corpus.root / "two_frames.mp4"
    with pytest.raises(ValueError, match=r"two_frames\.mp4.*outside"):
        read_frames(path, [2], num_frames=2)
    with pytest.raises(ValueError, match=r"two_frames\.mp4.*outside"):
        read_frames(path, [5])
    with pytest.raises(VideoError, match=r"webm_cut_30\.webm: truncated"):  # the same reason as a full decode
        read_frames(video_corpus.root / "bad" / "webm_cut_30.webm", [20], num_frames=40)
    with pytest.raises(VideoError, match="empty file"):
        read_frames(video_corpus.root / "bad" / "empty.mp4", [0])


def test_frame_index_leaves_out_nothing_a_decode_counts(video_corpus):
    for rel, n in video_corpus.good.items():
        index = frame_index(video_corpus.root / rel)
        assert len(index) == n and index.complete, rel
        assert np.all(np.diff(index.pts) > 0) and len(index.keyframe_pts) >= 1


def test_truncation_rule():
    mp4 = {"num_frames": 100, "fps": 25.0, "duration": 4.0, "start": 0.0}
    assert truncation_reason(mp4, 98, None) is None  # TRUNCATION_TOLERANCE: 2 frames
    assert truncation_reason(mp4, 97, None) == "truncated: decoded 97 of 100 frames"
    webm = {"num_frames": 0, "fps": 25.0, "duration": 4.0, "start": 0.0}
    assert truncation_reason(webm, 95, 3.8) is None  # 5 % + 2 frames of slack
    assert "ends at 3.50 s of the 4.00 s" in truncation_reason(webm, 88, 3.5)
    assert truncation_reason(webm, 40, 4.0) is None  # a long audio track: the data reaches the end
    assert truncation_reason({**webm, "start": 1.0}, 95, 4.8) is None  # timestamps starting at 1 s (MPEG-PS)
    assert truncation_reason({**webm, "duration": None}, 5, 0.2) is None  # nothing declared: nothing to compare


def test_probe_reads_the_header_only(video_corpus):
    info = probe(video_corpus.root / "odd_97x61.webm")
    assert (info["height"], info["width"], info["codec"], info["num_frames"]) == (61, 97, "vp9", 0)
    assert probe(video_corpus.root / "mjpeg.avi")["num_frames"] == 16


def test_one_extension_list_and_listing(video_corpus, tmp_path):
    assert {".wmv", ".mpg", ".ts", ".webm", ".avi", ".mkv", ".mov"} <= set(VIDEO_EXTENSIONS)
    found = scan_folder(video_corpus.root)
    assert set(video_corpus.good) | set(video_corpus.bad) == set(found)  # .sources/ is hidden: skipped
    listing = tmp_path / "split.txt"
    listing.write_text("a/x.avi 3\n# comment\n\nb/y.wmv\n")
    root, rels = collect_videos(listing)
    assert root == str(tmp_path) and rels == ["a/x.avi", "b/y.wmv"]


def test_fingerprint_tells_other_footage_of_the_same_length(tmp_path):
    from corpus import write_video

    a = write_video(tmp_path / "a.mp4", "mp4", "libx264", n=12, seed=1)
    b = write_video(tmp_path / "b.mp4", "mp4", "libx264", n=12, seed=2)
    fa = file_fingerprint(a)
    assert fa == file_fingerprint(a) and fa.startswith(f"s3b64k:{a.stat().st_size}:")
    assert fa != file_fingerprint(b)
    data = bytearray(a.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte in the middle range, same size
    (tmp_path / "c.mp4").write_bytes(bytes(data))
    assert file_fingerprint(tmp_path / "c.mp4") != fa


def test_decoder_threads_set_ffmpegs_threads_for_this_thread_only(carphone_path):
    """A loader's worker decodes on its own thread (decoder_threads(1)); elsewhere FFmpeg chooses,
    and the setting neither leaks out of the block nor into other threads."""
    import threading

    from mcl_fast.video_io import read_frames
    from mcl_fast.video_io.container import decoder_threads, open_video

    def count():
        container, stream = open_video(carphone_path)
        try:
            return stream.codec_context.thread_count
        finally:
            container.close()

    default = count()  # 0: FFmpeg's choice
    assert default != 1
    with decoder_threads(1):
        assert count() == 1
        other = []
        thread = threading.Thread(target=lambda: other.append(count()))
        thread.start()
        thread.join()
        assert other == [default]
        single = read_frames(carphone_path, [0, 5, 9])
    assert count() == default
    np.testing.assert_array_equal(single, read_frames(carphone_path, [0, 5, 9]))
