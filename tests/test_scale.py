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
    kept, short, dropped = short_video_policy(videos, store, span=31, min_frames=33)
    assert len(dropped) == n // 4 and len(kept) == n - n // 4 and not short
    return CountingName.calls


def test_the_short_video_filter_is_linear_in_the_videos():
    small, large = _calls_for(400), _calls_for(4000)
    # linear: 10x the videos, ~10x the hashing (the per-video set of dropped videos made it ~100x)
    assert large <= 12 * max(small, 1), (small, large)
