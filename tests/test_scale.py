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
    keep, short = short_video_policy(videos, store, span=31, min_frames=33)
    assert (~keep).sum() == n // 4 and keep.sum() == n - n // 4 and not short.any()
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


def test_what_a_worker_receives_grows_by_a_few_bytes_per_video(tmp_path, monkeypatch):
    """A DataLoader worker gets the loader pickled: the store by its path, the videos as int32 rows.
    The files need not exist: the default checks open a file when it is first planned."""
    import os
    import pickle
    import warnings

    import numpy as np

    from mcl_fast.data import TorchVideoLoader
    from mcl_fast.motion.store import MotionStore, StoreWriter, VideoMaps

    maps = VideoMaps.from_maps(np.ones((20, 4, 4), np.float32), fps=25.0, height=48, width=64, fingerprint="0" * 16)
    sizes = {}
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # stores written for their size, not to last: seconds
    for n in (2_000, 20_000):
        with StoreWriter(tmp_path / str(n), root=tmp_path / "videos", flow="farneback", size=32) as writer:
            for i in range(n):
                writer.add(f"c{i // 1000:04d}/v{i:07d}.mp4", maps)
        store = MotionStore(tmp_path / str(n))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no notice: nothing short, nothing dropped
            loader = TorchVideoLoader(store.names, store, 8, num_workers=0, clip_len=4, stride=2, size=16)
        sizes[n] = len(pickle.dumps(loader, protocol=pickle.HIGHEST_PROTOCOL))
    per_video = (sizes[20_000] - sizes[2_000]) / 18_000
    assert per_video < 8, sizes  # int32 store rows: 4 bytes a video (names and the store's index: ~170)


def test_clip_scores_convert_a_few_frames_at_a_time_and_equal_the_whole_video_computation(monkeypatch):
    import numpy as np

    from mcl_fast.data import planner
    from mcl_fast.data.plan import MotionSampler

    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (700, 30, 40), dtype=np.uint8)
    level = np.float32(3.7 / 255.0)
    whole = MotionSampler.motion_t(np.multiply(q, level, dtype=np.float32))
    converted = []

    class QuantisedStore:
        def read_quantized(self, video):
            return q

        def read(self, video):
            raise AssertionError("clip scores read the whole video's float32 maps")

    real_multiply = np.multiply

    def counting_multiply(a, *args, **kwargs):
        converted.append(len(a))
        return real_multiply(a, *args, **kwargs)

    entry = planner._VideoInfo.__new__(planner._VideoInfo)
    entry.level, entry.map_hw, entry.cell_scale, entry.height, entry.width = level, None, None, 240, 320
    plan = planner.Planner.__new__(planner.Planner)
    plan.store = QuantisedStore()
    for chunk in (1, 7, 256, 5000):
        monkeypatch.setattr(planner, "MOTION_T_CHUNK", chunk)
        monkeypatch.setattr(planner.np, "multiply", counting_multiply)
        converted.clear()
        got = plan._motion_t("v.mp4", entry)
        monkeypatch.setattr(planner.np, "multiply", real_multiply)
        assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), whole.view(np.uint32)), chunk
        assert max(converted) == min(chunk, len(q)) and sum(converted) == len(q), (chunk, converted[:3])
