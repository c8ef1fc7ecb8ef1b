"""`prepare` and `transcode` under torchrun (gloo on CPU): per-rank shards and journals, one merged
store, resuming a killed job with another world size, one error report (mcl_fast.ranks)."""
from __future__ import annotations

import json
import os
import re
import signal
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mcl_fast.data.synthetic import make_video
from mcl_fast.motion.prepare import prepare
from mcl_fast.ranks import RankError, Ranks, balanced_slices
from mcl_fast._checksum import digest
from mcl_fast.motion.store import (ERRORS, HEADER_BYTES, JOURNAL, PART_JOURNAL_GLOB, MotionStore, PartWriter,
                                   StoreError, StoreWriter, check_store, part_journal_name)
from mcl_fast.motion.store_official import OfficialVideoMaps as VideoMaps  # paper maps too

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["--flow", "farneback", "--size", "64", "--map-downsample", "4"]
GOOD = ["a.mp4", "b.webm", "c.mp4", "sub/d.mp4", "sub/e.webm", "sub/f.mp4", "sub/g.mp4"]
BAD = "sub/corrupt.mp4"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Seven good clips (H.264 and VP9, 64x80, 16-28 frames) and one corrupt file (random bytes mid-file)."""
    folder = tmp_path_factory.mktemp("videos")
    for i, rel in enumerate(GOOD):
        (folder / rel).parent.mkdir(exist_ok=True)
        make_video(folder / rel, num_frames=16 + 2 * i, height=64, width=80, object_size=14, speed=2.0, seed=i)
    good = bytearray((folder / "c.mp4").read_bytes())
    k, start = len(good) // 10, len(good) // 2 - len(good) // 20
    good[start:start + k] = np.random.default_rng(0).integers(0, 256, k, dtype=np.uint8).tobytes()
    (folder / BAD).write_bytes(bytes(good))
    return folder


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory) -> MotionStore:
    """The store one process makes of the same videos."""
    out = tmp_path_factory.mktemp("ref") / "store"
    report = prepare(videos, out, flow="farneback", size=64, map_downsample=4, workers=0, progress=False)
    assert report.done == len(GOOD) and [e["path"] for e in report.errors] == [BAD]
    return MotionStore(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, name: str, nnodes: int, nproc: int, entry: list[str], env=None) -> list[subprocess.Popen]:
    """One torchrun agent per "node", all started at once on this machine (static rendezvous on
    127.0.0.1), each in its own session; stdout and stderr go to tmp_path/name-nodeK.log."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", **(env or {})}
    procs = []
    for node in range(nnodes):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc-per-node", str(nproc),
               "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
               "--max-restarts", "0", *entry]
        log = open(tmp_path / f"{name}-node{node}.log", "wb")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
        log.close()
    return procs


def wait(procs, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [p.returncode for p in procs]


def logs(tmp_path: Path, name: str) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob(f"{name}-node*.log")))


def prepare_cmd(videos: Path, store: Path) -> list[str]:
    return ["--videos", str(videos), "--out", str(store), *SETTINGS, "--workers", "0"]


def assert_same_store(store: Path, reference: MotionStore) -> None:
    """Map for map the reference's: the same videos, entries (but where the bytes lie), bytes and
    errors; nothing left of the ranks' journals, and no shard byte that no video owns."""
    got = MotionStore(store)
    assert got.videos == reference.videos == sorted(GOOD)
    for v in got.videos:
        a, b = got.info(v), reference.info(v)
        for key in ("shard", "offset"):
            a.pop(key), b.pop(key)
        assert a == b, v
        np.testing.assert_array_equal(got.read_quantized(v), reference.read_quantized(v))
    assert got.errors == reference.errors and [e["path"] for e in got.errors] == [BAD]
    assert json.loads((store / ERRORS).read_text()) == got.errors  # the bad file once, in the one report
    assert not list(store.glob(PART_JOURNAL_GLOB)) and not (store / JOURNAL).exists()
    owned: dict[int, int] = {}
    for v in got.videos:
        owned[got.info(v)["shard"]] = owned.get(got.info(v)["shard"], 0) + HEADER_BYTES + got.read_quantized(v).nbytes
    on_disk = {int(p.stem.split("-")[1]): p.stat().st_size for p in store.glob("shard-*.bin")}
    assert {k: v for k, v in on_disk.items() if v} == owned


# ------------------------------------------------------------------------- no processes


def test_balanced_slices_split_by_frames_deterministically():
    weights = [300, 20, 20, 20, 20, 150, 150, 5, 0]
    slices = balanced_slices(weights, 3)
    assert slices == balanced_slices(list(weights), 3)  # the same on every rank
    assert sorted(i for s in slices for i in s) == list(range(len(weights)))
    loads = [sum(max(weights[i], 1) for i in s) for s in slices]
    assert slices[0] == [0]  # the 300-frame video alone: counting files would give it two more
    assert max(loads) - min(loads) <= max(weights)
    assert balanced_slices(weights, 1) == [sorted(range(9), key=lambda i: (-weights[i], i))]
    assert balanced_slices([], 4) == [[], [], [], []]


def test_torchrun_environment_is_read_and_checked():
    assert not Ranks.from_env({}).distributed
    r = Ranks.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (r.rank, r.world, r.local_rank, r.local_world, r.distributed) == (3, 4, 1, 2, True)
    with pytest.raises(RankError, match="RANK 4, WORLD_SIZE 4"):
        Ranks.from_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert Ranks().on_rank0(lambda: 7) == 7 and Ranks().by_stride(3, lambda i: i * i) == [0, 1, 4]


def test_device_cuda_under_torchrun_computes_on_the_local_rank_gpu(monkeypatch):
    """--device cuda: rank LOCAL_RANK makes cuda:LOCAL_RANK CuPy's device (a stand-in CuPy: no GPU here)."""
    from types import SimpleNamespace

    from mcl_fast import _backend
    from mcl_fast.motion import prepare as prepare_module

    used = []

    class Device:
        def __init__(self, index):
            self.index = index

        def use(self):
            used.append(self.index)

    cupy = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=lambda: 2), Device=Device))
    monkeypatch.setattr(_backend, "require_cupy", lambda: cupy)
    twins = {"prepare.require_gpu_stack": lambda: None, "prepare.compute_video_maps": "the GPU twin"}
    monkeypatch.setattr(prepare_module, "gpu_twin", twins.__getitem__)
    assert prepare_module._gpu_compute(1) == "the GPU twin" and used == [1]
    assert prepare_module._gpu_compute(None) == "the GPU twin" and used == [1]  # one process: the current device
    with pytest.raises(prepare_module.InputError, match="LOCAL_RANK 2 but 2 CUDA device"):
        prepare_module._gpu_compute(2)


def _maps(n: int, seed: int) -> VideoMaps:
    rng = np.random.default_rng(seed)
    return VideoMaps.from_maps(rng.random((n, 4, 5), np.float32), fps=25.0, height=16, width=20)


def test_rank_writers_fold_into_one_index_and_a_dead_ranks_bytes_are_cut(tmp_path):
    """Two ranks' PartWriters in one process: their shards are disjoint, readers see their
    journals before the fold, and the fold keeps what a rank recorded and cuts what it did not."""
    store = tmp_path / "s"
    settings = dict(root=tmp_path, flow="farneback", size=16, map_downsample=4)
    main = StoreWriter(store, **settings)
    main.add("old.mp4", _maps(3, 0))
    main.fold_parts()
    first = main.next_free_shard()
    assert first == 1
    with pytest.raises(StoreError, match="another process"):
        StoreWriter(store, **settings)  # rank 0 holds the lock for the job
    r0 = PartWriter(store, rank=0, world=2, first_shard=first, shard_bytes=100, **settings)
    r1 = PartWriter(store, rank=1, world=2, first_shard=first, shard_bytes=100, **settings)
    e = [r0.add("a.mp4", _maps(4, 1)), r1.add("b.mp4", _maps(2, 2)), r0.add("c.mp4", _maps(4, 3)),
         r1.add_error("bad.mp4", "corrupt: test")]
    assert (e[0]["shard"], e[1]["shard"], e[2]["shard"]) == (1, 2, 3)  # rank 0: 1, 3, ...; rank 1: 2, 4, ...
    torn = _maps(5, 4).maps_u8
    r1._append(r1.streams[0], torn, digest(torn))  # a rank killed mid-video: bytes, no journal line
    with open(store / part_journal_name(1), "ab") as f:
        f.write(b'{"op":"video","path":"torn')  # ... and a torn line
    r0.compact(), r1.compact(), r0.close(), r1.close()
    seen = MotionStore(store)  # before the fold: index + the ranks' journals
    assert seen.videos == ["a.mp4", "b.mp4", "c.mp4", "old.mp4"] and seen.errors[0]["path"] == "bad.mp4"
    main.fold_parts()
    main.close()
    folded = MotionStore(store)
    assert folded.videos == seen.videos and folded.errors == seen.errors
    for v in folded.videos:
        np.testing.assert_array_equal(folded.read_quantized(v), seen.read_quantized(v))
    # b.mp4's block only: the dead video's cut
    assert (store / "shard-00002.bin").stat().st_size == HEADER_BYTES + 2 * 20
    assert not list(store.glob(PART_JOURNAL_GLOB))
    # a one-process prepare after a killed job folds the rank journals before its own lines
    with StoreWriter(store, **settings) as w:
        first = w.next_free_shard()
    with PartWriter(store, rank=0, world=1, first_shard=first, **settings) as r:
        r.add("d.mp4", _maps(2, 5))
    with StoreWriter(store, **settings) as w:
        assert "d.mp4" in w.videos and not list(store.glob(PART_JOURNAL_GLOB))
        assert MotionStore(store).info("d.mp4")["shard"] == first
    with pytest.raises(StoreError, match="not a motion store yet"):
        PartWriter(tmp_path / "none", rank=0, world=1, first_shard=0, **settings)


def test_one_process_stays_alone_without_torch(tmp_path, videos, reference, monkeypatch):
    """Without torchrun nothing imports torch; distributed=False under torchrun's variables runs
    this process alone (no process group to wait for) and makes the one-process store."""
    code = ("import sys; import mcl_fast.motion.prepare, mcl_fast.data.transcode; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "store"
    report = prepare(videos, out, flow="farneback", size=64, map_downsample=4, workers=0, progress=False,
                     distributed=False)
    assert report.done == len(GOOD)
    assert_same_store(out, reference)


def test_rank_writers_of_an_official_store_keep_flows_and_magnitudes(tmp_path):
    """Official stores have three kinds of shard; each rank numbers all three its own way."""
    store = tmp_path / "s"
    settings = dict(root=tmp_path, flow="farneback", size=16, maps="official", window=4)
    rng = np.random.default_rng(0)
    made = {}
    with StoreWriter(store, **settings) as main:
        first = main.next_free_shard()
        for rank in (0, 1):
            with PartWriter(store, rank=rank, world=2, first_shard=first, **settings) as w:
                for k in range(2):
                    n = 3 + rank + k
                    m = VideoMaps.official(rng.integers(0, 256, (n, 7, 7), dtype=np.uint8), rng.random(1),
                                           rng.integers(0, 256, (n - 1, 4, 5, 2), dtype=np.uint8), fps=25.0,
                                           height=16, width=20)
                    entry = w.add(f"r{rank}v{k}.mp4", m)
                    assert entry["shard"] == entry["flow_shard"] == entry["mag_shard"] == first + rank
                    made[f"r{rank}v{k}.mp4"] = m
        main.fold_parts()
    got = MotionStore(store)
    assert got.videos == sorted(made)
    for v, m in made.items():
        np.testing.assert_array_equal(got.read_quantized(v), m.maps_u8)
        np.testing.assert_array_equal(got.read_flows(v), m.flows)
        np.testing.assert_array_equal(got.clip_magnitudes(v), m.magnitudes)


# ------------------------------------------------------------------------ torchrun jobs


@pytest.mark.timeout(300)
def test_two_nodes_of_two_processes_make_the_single_process_store(tmp_path, videos, reference):
    store = tmp_path / "store"
    rcs = wait(launch(tmp_path, "job", 2, 2, ["-m", "mcl_fast.cli", "prepare", *prepare_cmd(videos, store)]), 240)
    out = logs(tmp_path, "job")
    assert rcs == [0, 0], out[-4000:]
    assert f"prepared {len(GOOD)}, skipped 0 already done, 1 errors" in out
    assert f"prepare job: {len(GOOD)} videos on 4 ranks" in out  # rank 0's total
    assert all(f"prepare rank {r}" in out for r in range(4)) and "prepare job (4 ranks)" in out  # the bars
    shards = {MotionStore(store).info(v)["shard"] for v in GOOD}
    assert len(shards) == 4  # every rank wrote its own shard
    assert_same_store(store, reference)


@pytest.mark.timeout(300)
def test_a_killed_job_resumes_with_another_world_size(tmp_path, videos, reference):
    store = tmp_path / "store"
    die = {"MCL_TEST_DIE_RANK": "1", "MCL_TEST_DIE_AT": "1"}  # rank 1 dies in its second video
    procs = launch(tmp_path, "killed", 2, 2, [str(REPO / "tests" / "prepare_rank_dies.py"),
                                               *prepare_cmd(videos, store)], env=die)
    rc0 = wait(procs[:1], 180)[0]  # node 0 (ranks 0 and 1) ends when its rank 1 dies
    rc1 = wait(procs[1:], 5)[0]  # node 1's ranks would wait for the dead ranks: the job dies
    out = logs(tmp_path, "killed")
    assert rc0 != 0 and rc1 != 0, out[-4000:]
    assert re.search(r"exitcode\s*:\s*-9", out), out[-4000:]  # SIGKILL
    assert (store / part_journal_name(1)).read_bytes().count(b"\n") == 1  # one video recorded, then death
    killed = MotionStore(store)  # readable as it stands: index.json and the ranks' complete lines
    finished = killed.videos
    assert 1 <= len(finished) < len(GOOD), finished
    before = {v: (killed.info(v), killed.read_quantized(v).copy()) for v in finished}

    rcs = wait(launch(tmp_path, "resumed", 1, 3, ["-m", "mcl_fast.motion.prepare", *prepare_cmd(videos, store)]), 180)
    out = logs(tmp_path, "resumed")
    assert rcs == [0], out[-4000:]
    m = re.search(r"prepared (\d+), skipped (\d+) already done, 1 errors", out)
    assert m and (int(m[1]), int(m[2])) == (len(GOOD) - len(finished), len(finished)), out[-4000:]  # none again
    after = MotionStore(store)
    for v, (info, q) in before.items():
        assert after.info(v) == info  # the same bytes, where they were
        np.testing.assert_array_equal(after.read_quantized(v), q)
    assert_same_store(store, reference)


@pytest.mark.timeout(300)
def test_transcode_under_two_processes_writes_every_output_once(tmp_path, videos):
    out = tmp_path / "out"
    cmd = ["-m", "mcl_fast.data.transcode", "--videos", str(videos), "--out", str(out), "--codec", "h264",
           "--gop", "4", "--workers", "1", "--no-progress"]
    rcs = wait(launch(tmp_path, "tc", 1, 2, cmd), 180)
    text = logs(tmp_path, "tc")
    assert rcs == [1], text[-4000:]  # the corrupt file
    job = re.search(r"^transcode: (\d+) written, (\d+) already there, (\d+) failed", text, re.M)
    rank1 = re.search(r"^rank 1/2: transcode: (\d+) written", text, re.M)
    assert job and rank1, text[-4000:]
    assert (int(job[1]), int(job[2]), int(job[3])) == (len(GOOD), 0, 1)  # each file written by one rank
    assert 0 < int(rank1[1]) < len(GOOD)  # ... and both ranks wrote
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert outputs == sorted(str(Path(r).with_suffix(".mp4").as_posix()) for r in GOOD)
    assert [e["path"] for e in json.loads((out / "transcode_errors.json").read_text())] == [BAD]
    sources = json.loads((out / "transcode_sources.json").read_text())["files"]
    assert sorted(sources) == outputs and not list(out.glob(".transcode-rank*"))
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}

    rcs = wait(launch(tmp_path, "tc2", 1, 2, cmd), 180)  # a rerun: nothing to write, every rank skips
    text = logs(tmp_path, "tc2")
    assert re.search(rf"^transcode: 0 written, {len(GOOD)} already there, 1 failed", text, re.M), text[-4000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == mtimes
    assert sorted(json.loads((out / "transcode_sources.json").read_text())["files"]) == outputs


def test_repair_under_torchrun_recomputes_exactly_the_damaged_video(tmp_path, videos, reference):
    store = tmp_path / "store"
    shutil.copytree(reference.path, store)
    info = reference.info("sub/d.mp4")
    shard = store / f"shard-{info['shard']:05d}.bin"
    data = bytearray(shard.read_bytes())
    data[info["offset"] + 3] ^= 0xFF  # a failing disk
    shard.write_bytes(bytes(data))
    untouched = {v: reference.info(v) for v in GOOD if v != "sub/d.mp4"}
    rcs = wait(launch(tmp_path, "job", 1, 2, ["-m", "mcl_fast.cli", "prepare", *prepare_cmd(videos, store),
                                              "--repair"]), 240)
    out = logs(tmp_path, "job")
    assert rcs == [0], out[-4000:]
    assert f"prepared 1, skipped {len(GOOD) - 1} already done" in out and "repaired 1 damaged" in out
    got = MotionStore(store)
    assert {v: got.info(v) for v in untouched} == untouched  # nothing else recomputed
    for v in GOOD:
        np.testing.assert_array_equal(got.read_quantized(v), reference.read_quantized(v))
    assert check_store(store).damage == []


def test_a_rank_reads_the_store_index_once(tmp_path, videos, monkeypatch):
    """prepare's rank path (here one rank, in this process) reads the columnar index once: rank 0's
    writer's entries serve its checks, its rank writer and the fold (the old code read it 7 times)."""
    from mcl_fast.motion import prepare as prepare_module, store as store_module

    out = tmp_path / "store"
    prepare(videos / "a.mp4", out, root=videos, flow="farneback", size=64, map_downsample=4, workers=0,
            progress=False)
    reads = []
    real = store_module._open_columns
    monkeypatch.setattr(store_module, "_open_columns", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    settings = dict(root=str(videos), flow="farneback", size=64, map_downsample=4, maps="paper", window=None)
    work = prepare_module._Run(flow="farneback", size=64, map_downsample=4, maps="paper", window=None, workers=0,
                               gpu_compute=None, retry_errors=False, progress=False)
    report = prepare_module._prepare_ranks(Ranks(), ["a.mp4", "b.webm", BAD], out, settings, work)
    assert len(reads) == 1, reads
    assert report.done == 1 and report.skipped_existing == 1 and [e["path"] for e in report.errors] == [BAD]
    store = MotionStore(out)
    assert list(store.names) == ["a.mp4", "b.webm"] and check_store(out).damage == []
