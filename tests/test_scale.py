"""Costs that must grow linearly with the dataset, checked by counting operations, not by timing."""
from __future__ import annotations

from mcl_fast.data.checks import short_video_policy


class CountingName(str):
    """A video name that counts the hashes and comparisons made with it."""

    calls = 0

    def __hash__(self):
        CountingName.calls += 1
        return str.__hash__(self)

    def __eq__(self, other):
        CountingName.calls += 1
        return str.__eq__(self, other)


class FrameCounts:
    def __init__(self, frames: dict):
        self.frames = frames

    def info(self, video):
        return {"num_frames": self.frames[video]}


def _calls_for(n: int) -> int:
    videos = [CountingName(f"v{i:06d}.mp4") for i in range(n)]
    store = FrameCounts({v: (10 if i % 4 == 0 else 100) for i, v in enumerate(videos)})  # a quarter dropped
    CountingName.calls = 0
    kept, short, dropped, _ = short_video_policy(videos, store, span=31, min_frames=33)
    assert len(dropped) == n // 4 and len(kept) == n - n // 4 and not short
    return CountingName.calls


def test_the_short_video_filter_is_linear_in_the_videos():
    small, large = _calls_for(400), _calls_for(4000)
    # linear: 10x the videos, ~10x the hashing (the per-video set of dropped videos made it ~100x)
    assert large <= 12 * max(small, 1), (small, large)


def test_a_prepare_with_nothing_to_do_writes_nothing(tmp_path, synthetic_mp4):
    import os
    import shutil

    from mcl_fast.motion.prepare import prepare

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(synthetic_mp4.path, videos / "a.mp4")
    store = tmp_path / "store"
    prepare(str(videos), str(store), flow="farneback", size=32, workers=0, progress=False)
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in store.iterdir()}
    prepare(str(videos), str(store), flow="farneback", size=32, workers=0, progress=False)
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in store.iterdir()}
    written = {name for name in after if name != ".lock" and after[name] != before.get(name)}
    assert not written, f"a no-op prepare rewrote {sorted(written)}"
    assert os.path.exists(store / "index.json") and os.path.exists(store / "errors.json")
