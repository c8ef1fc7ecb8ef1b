"""The loaders' file checks and messages: stale stores (fingerprints), rejected videos, paths for
keys, zero-batch epochs, one-line replacement notes, num_replaced per sample. verify="eager"
checks the shard at construction (errors); the default checks each file when first planned
(the same message, in a one-line note, and the file replaced)."""
from __future__ import annotations

import shutil
import warnings
from types import SimpleNamespace

import pytest

from corpus import write_video
from mcl_fast.data import TorchVideoLoader

CLIP = dict(clip_len=4, stride=2, size=16, num_workers=0)
EAGER = dict(CLIP, verify="eager")


def skipped_notes(loader, epochs: int = 1) -> list[str]:
    """The one-line notes of files replaced while iterating `epochs` epochs of `loader`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            for _ in loader:
                pass
    return [str(w.message) for w in caught if "skipping video" in str(w.message)]


@pytest.fixture()
def dataset(tmp_path):
    """Three 12-frame H.264 clips of 48x64 and their store (fresh per test: tests change files)."""
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    videos = tmp_path / "videos"
    for i in range(3):
        write_video(videos / f"v{i}.mp4", "mp4", "libx264", n=12, seed=i)
    prepare(videos, tmp_path / "store", flow="farneback", size=32, workers=0, progress=False)
    return SimpleNamespace(root=tmp_path, videos=videos, store=MotionStore(tmp_path / "store"),
                           names=["v0.mp4", "v1.mp4", "v2.mp4"])


def test_other_footage_under_the_same_name_is_refused_unless_asked(dataset):
    write_video(dataset.videos / "v1.mp4", "mp4", "libx264", n=12, seed=7)  # same name, length and size
    with pytest.raises(ValueError, match=r"other content than the maps were made from: .*v1\.mp4 \(not the file"):
        TorchVideoLoader(dataset.names, dataset.store, 1, **EAGER)
    ld = TorchVideoLoader(dataset.names, dataset.store, 1, check_fingerprints=False, **EAGER)  # the opt-out
    assert len(list(ld)) == 3
    lazy = TorchVideoLoader(dataset.names, dataset.store, 1, **CLIP)  # checked when first planned: refused by name
    notes = skipped_notes(lazy)
    assert len(notes) == 1 and notes[0].startswith(f"skipping video {dataset.videos / 'v1.mp4'}: the motion store "
                                                   "does not match the videos"), notes
    assert "v1.mp4 (not the file the maps were made from)" in notes[0]
    assert lazy.num_replaced == 1 and list(lazy.failures) == [str(dataset.videos / "v1.mp4")]


@pytest.mark.filterwarnings("ignore:.*have no fingerprint")  # the notice is checked once, below
def test_a_store_from_before_fingerprints_loads_with_a_notice(dataset):
    from mcl_fast.motion.store import MotionStore, StoreWriter, VideoMaps

    # the same maps in a store whose entries have no fingerprint, as a store written before them
    with StoreWriter(dataset.root / "old_store", root=dataset.videos, flow="farneback", size=32) as writer:
        for v in dataset.names:
            info = dataset.store.info(v)
            writer.add(v, VideoMaps.from_maps(dataset.store.read(v), fps=info["fps"], height=info["height"],
                                              width=info["width"]))
    old = MotionStore(dataset.root / "old_store")
    assert all(old.fingerprint(v) is None for v in dataset.names)
    with pytest.warns(UserWarning, match=r"^3 of 3 videos have no fingerprint .* checked by frame count and size only$"):
        ld = TorchVideoLoader(dataset.names, old, 1, **EAGER)
    assert len(list(ld)) == 3
    lazy = TorchVideoLoader(dataset.names, old, 1, **CLIP)
    with pytest.warns(UserWarning, match=r"^v\d\.mp4 and maybe other videos have no fingerprint .* checked by frame "
                                         r"count and size only$") as told:
        assert len(list(lazy)) == 3
    assert len([w for w in told if "no fingerprint" in str(w.message)]) == 1  # once, not once per file
    write_video(dataset.videos / "v1.mp4", "mp4", "libx264", n=20, seed=7)  # the count check still runs
    with pytest.raises(ValueError, match=r"v1\.mp4 \(file 20 frames, store 12\)"):
        TorchVideoLoader(dataset.names, old, 1, **EAGER)
    notes = skipped_notes(TorchVideoLoader(dataset.names, old, 1, **CLIP))
    assert len(notes) == 1 and "v1.mp4 (file 20 frames, store 12)" in notes[0], notes


def test_transcoded_copies_are_checked_through_their_sources(dataset):
    from mcl_fast.data.transcode import transcode_dataset

    copies = dataset.root / "h264"
    transcode_dataset(dataset.videos, copies, codec="h264", gop=4, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # vouched for by transcode_sources.json: no notice
        TorchVideoLoader(dataset.names, dataset.store, 1, video_root=copies, **EAGER)
    write_video(copies / "v2.mp4", "mp4", "libx264", n=12, seed=9)  # replaced after transcode
    with pytest.raises(ValueError, match=r"v2\.mp4 \(changed since `mcl-fast transcode` wrote it\)"):
        TorchVideoLoader(dataset.names, dataset.store, 1, video_root=copies, **EAGER)
    write_video(dataset.videos / "v2.mp4", "mp4", "libx264", n=12, seed=9)  # a new source, transcoded again
    transcode_dataset(dataset.videos, copies, codec="h264", gop=4, overwrite=True, progress=False)
    with pytest.raises(ValueError, match=r"v2\.mp4 \(transcoded from other footage than the store's v2\.mp4\)"):
        TorchVideoLoader(dataset.names, dataset.store, 1, video_root=copies, **EAGER)
    notes = skipped_notes(TorchVideoLoader(dataset.names, dataset.store, 1, video_root=copies, **CLIP))
    assert len(notes) == 1 and "v2.mp4 (transcoded from other footage than the store's v2.mp4)" in notes[0], notes
    (copies / "transcode_sources.json").unlink()  # copies of unknown origin: a notice, not an error
    with pytest.warns(UserWarning, match="3 of 3 videos have no fingerprint"):
        TorchVideoLoader(dataset.names, dataset.store, 1, video_root=copies, **EAGER)


def test_messages_say_what_to_do(dataset):
    with pytest.raises(ValueError, match=r"an epoch would have no batch: 3 videos over 2 shard\(s\) leave 1 per "
                                         r"shard, fewer than batch_size=2 \(batch_size is per shard\), and "
                                         r"drop_last=True drops the incomplete batch"):
        TorchVideoLoader(dataset.names, dataset.store, 2, num_shards=2, **CLIP)  # drop_last=True: the default
    assert len(TorchVideoLoader(dataset.names, dataset.store, 3, drop_last=True, **CLIP)) == 1
    paths = [str(dataset.videos / n) for n in dataset.names]
    with pytest.raises(ValueError, match=r"3 file paths given instead of store keys: .*v0\.mp4.*: pass "
                                         r"`store.videos` keys and `video_root=`"):
        TorchVideoLoader(paths, dataset.store, 1, **CLIP)
    with pytest.raises(ValueError, match=r"1 missing: never\.mp4 \(run `mcl-fast prepare` on them\)"):
        TorchVideoLoader(["never.mp4"], dataset.store, 1, **CLIP)
    with pytest.raises(ValueError, match=r"verify must be one of 'lazy', 'eager', True, False, got 'sometimes'"):
        TorchVideoLoader(dataset.names, dataset.store, 1, verify="sometimes", **CLIP)


def test_a_replaced_sample_counts_once_and_its_note_is_one_line(dataset):
    bad_root = dataset.root / "bad_copy"
    shutil.copytree(dataset.videos, bad_root)
    (bad_root / "v1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 400)  # an MP4 without an index
    ld = TorchVideoLoader(dataset.names[:2], dataset.store, 1, video_root=bad_root, verify=False, seed=3, **CLIP)
    attempts = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(6):
            ld.set_epoch(epoch)
            for batch in ld:
                assert int(batch["index"][0]) == 0  # v1 never comes out: v0 replaces it
            positions, indices = ld.epoch_samples(epoch)
            attempts += sum(len(ld.planner.plan(epoch, int(p), int(i)).failures) for p, i in zip(positions, indices))
    assert ld.num_replaced == 6  # one sample of v1 per epoch, however many draws it took
    assert attempts > 6  # the replacement drew v1 again at least once: attempts are not samples
    notes = [str(w.message) for w in caught]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0] == (f"skipping video {bad_root / 'v1.mp4'}: MP4/MOV without a readable index (moov atom): "
                        "truncated or incomplete file? (Invalid data found when processing input) (replaced by "
                        "another sample; reported once)")
