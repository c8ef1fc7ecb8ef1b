"""The store checksum's cost (issue 18): per clip in the loaders, per video in `prepare`, side by
side with the check off and on, in one run.

Videos: --videos synthetic clips of --frames frames at 320x240 (UCF101's size; H.264 for
TorchVideoLoader, the same clips in VP9 for DALI's CPU decoder), prepared once (Farneback flow,
short side 128: 32x42 maps, the store's defaults but the flow).

- Loaders: one epoch of TorchVideoLoader (num_workers=0, so the process's CPU time is the
  loader's) and, if DALI is installed, of MotionFocusedLoader(device="cpu"), over a MotionStore
  opened with verify=False ("off") and verify=True ("on"). A fresh store object and loader per
  epoch, so every video is checked once per epoch: the most it can cost (a long run checks each
  video once per process). CPU s per clip = process CPU time / clips; off and on interleaved,
  median of --repeats.
- prepare: a whole `prepare` into a fresh store with checksums ("on") and with the store's
  digest replaced by a constant ("off": no hashing), per video; and a rerun on the complete store
  (what every rerun now does: each video's checksum and source fingerprint) against a rerun with
  that check skipped.

    python benchmarks/checksum_cost.py [--videos 6] [--frames 96] [--repeats 3] [--json PATH]

Prints a Markdown table and writes JSON (default benchmarks/results/checksum_cost.json).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from _results import write_results  # noqa: E402 (benchmarks/_results.py)
from mcl_fast.data.synthetic import make_video  # noqa: E402
from mcl_fast.motion import prepare as prepare_module  # noqa: E402
from mcl_fast.motion import store as store_module  # noqa: E402
from mcl_fast.motion.store import MotionStore  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "checksum_cost.json"
PREPARE = dict(flow="farneback", size=128, workers=0, progress=False)
LOADER = dict(clip_len=16, stride=2, size=112, drop_last=False, seed=0)


def make_clips(folder: Path, count: int, frames: int, codec: str | None, ext: str) -> Path:
    for i in range(count):
        make_video(folder / f"v{i}{ext}", num_frames=frames, height=240, width=320, object_size=40, speed=3.0,
                   num_distractors=2, gop=16, seed=i, codec=codec)
    return folder


def cpu_per_clip(make_loader) -> float:
    """Process CPU seconds per clip of one epoch of a new loader."""
    loader = make_loader()
    start = time.process_time()
    clips = sum(len(batch["index"]) for batch in loader)
    return (time.process_time() - start) / clips


def loader_rows(name: str, make_loader, store_path: Path, repeats: int, check_ms: float) -> dict:
    """Off and on, interleaved; `share`: one video's check (hash_row) over the loader's CPU time
    per clip with the check off, the cost when every clip is of a video not yet checked."""
    cpu_per_clip(lambda: make_loader(MotionStore(store_path, verify=False)))  # warm-up: imports, codecs, caches
    times = {"off": [], "on": []}
    for _ in range(repeats):
        for mode in ("off", "on"):  # interleaved: the machine's load hits both alike
            store = MotionStore(store_path, verify=mode == "on")
            times[mode].append(cpu_per_clip(lambda: make_loader(store)))
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    return {"what": name, "unit": "clip", "off_ms": off * 1e3, "on_ms": on * 1e3, "ratio": on / off,
            "check_share": check_ms / (off * 1e3)}


def timed_prepare(videos: Path, out: Path, hashing: bool) -> float:
    """CPU seconds of a prepare into `out`, with the store's checksums or with a constant digest."""
    shutil.rmtree(out, ignore_errors=True)
    real = store_module.digest
    if not hashing:
        store_module.digest = lambda data: "xxh3_64:0000000000000000"
    try:
        start = time.process_time()
        prepare_module.prepare(videos, out, **PREPARE)
        return time.process_time() - start
    finally:
        store_module.digest = real


def timed_rerun(videos: Path, out: Path, check: bool) -> float:
    """CPU seconds of a prepare rerun on a complete store, with or without its store check."""
    real = prepare_module._Run.find_suspects
    if not check:
        prepare_module._Run.find_suspects = lambda self, *a, **k: set()
    try:
        start = time.process_time()
        report = prepare_module.prepare(videos, out, **PREPARE)
        assert report.done == 0
        return time.process_time() - start
    finally:
        prepare_module._Run.find_suspects = real


def prepare_rows(videos: Path, work: Path, count: int, repeats: int) -> list[dict]:
    full = {True: [], False: []}
    rerun = {True: [], False: []}
    for _ in range(repeats):
        for on in (False, True):
            full[on].append(timed_prepare(videos, work / "store_prepare", on) / count)
        timed_prepare(videos, work / "store_rerun", True)
        for on in (False, True):
            rerun[on].append(timed_rerun(videos, work / "store_rerun", on) / count)
    rows = []
    for what, runs in (("prepare (compute and write)", full), ("prepare rerun on a complete store", rerun)):
        off, on = statistics.median(runs[False]), statistics.median(runs[True])
        rows.append({"what": what, "unit": "video", "off_ms": off * 1e3, "on_ms": on * 1e3, "ratio": on / off})
    return rows


def hash_row(store_path: Path, repeats: int) -> dict:
    """The bare check of one video's maps (MotionStore.check), per video."""
    store = MotionStore(store_path)
    names = store.videos
    for v in names:
        store.check(v)  # pages in
    best = min(_time_checks(store, names) for _ in range(max(3, repeats)))
    return {"what": "MotionStore.check (maps in page cache)", "unit": "video", "off_ms": 0.0, "on_ms": best * 1e3,
            "ratio": None, "map_bytes": int(sum(store.read_quantized(v).nbytes for v in names) / len(names))}


def _time_checks(store, names) -> float:
    start = time.perf_counter()
    for v in names:
        store.check(v)
    return (time.perf_counter() - start) / len(names)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-dali", action="store_true", help="skip DALI's CPU loader")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from mcl_fast.data import TorchVideoLoader

    with tempfile.TemporaryDirectory(prefix="checksum_cost_") as tmp:
        work = Path(tmp)
        h264 = make_clips(work / "h264", args.videos, args.frames, None, ".mp4")
        prepare_module.prepare(h264, work / "store_h264", **PREPARE)
        rows = [hash_row(work / "store_h264", args.repeats)]
        check_ms = rows[0]["on_ms"]
        rows.append(loader_rows("TorchVideoLoader (num_workers=0)", lambda s: TorchVideoLoader(
            s.videos, s, 2, num_workers=0, **LOADER), work / "store_h264", args.repeats, check_ms))
        if not args.no_dali:
            try:
                from mcl_fast.data import MotionFocusedLoader
                import nvidia.dali  # noqa: F401
            except ImportError as e:
                print(f"DALI skipped: {e}", file=sys.stderr)
            else:
                vp9 = make_clips(work / "vp9", args.videos, args.frames, "vp9", ".webm")
                prepare_module.prepare(vp9, work / "store_vp9", **PREPARE)
                rows.append(loader_rows(
                    "MotionFocusedLoader (DALI, device=cpu, 2 threads)",
                    lambda s: MotionFocusedLoader(s.videos, s, 2, device="cpu", num_threads=2, **LOADER),
                    work / "store_vp9", args.repeats, check_ms))
        rows += prepare_rows(h264, work, args.videos, args.repeats)

    print(f"\n{args.videos} videos of {args.frames} frames at 320x240, maps 32x42 (flow farneback, size 128); "
          f"clips {LOADER['clip_len']}x{LOADER['size']}px; CPU time, median of {args.repeats}; {os.cpu_count()} CPUs\n")
    print("| what | per | check off ms | check on ms | on / off | one check / CPU per clip |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
        share = f"{100 * r['check_share']:.3f} %" if "check_share" in r else "-"
        print(f"| {r['what']} | {r['unit']} | {r['off_ms']:.3f} | {r['on_ms']:.3f} | {ratio} | {share} |")
    write_results(args.json, cpus=os.cpu_count(), videos=args.videos, frames=args.frames, repeats=args.repeats,
                  loader=LOADER, prepare=PREPARE, rows=rows)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
