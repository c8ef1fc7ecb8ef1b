"""Loader construction against the store's size (issue 24, item 5, first part): the time to build
a TorchVideoLoader with the default checks (verify, fingerprints) over synthetic stores of --sizes
videos, for one rank and for rank 0 of --shards ranks, with this checkout's code ("after") and,
in the same run, with another checkout's (--before, e.g. `git worktree add /tmp/before <commit>` of the code before a change).

The stores are written with the store's own writer (motion.store.StoreWriter): one real clip
(--frames frames of --height x --width, H.264) hard-linked under every name, in folders of 1,000
like Kinetics' class folders, its maps all zero (the checks read the file, not the maps). They
go under --dir (default /dev/shm: the writer fsyncs twice per video). Each construction runs in
a fresh process (the checkout's code on its path; cold per-process caches, warm page cache).

    python benchmarks/store_scale.py [--sizes 10000 100000] [--shards 8] [--before /tmp/before]

Prints a Markdown table and writes JSON (default benchmarks/results/store_scale.json).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from _results import write_results  # noqa: E402 (benchmarks/_results.py)

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "store_scale.json"
PER_FOLDER = 1000  # videos per folder (Kinetics-400: ~600 per class folder)


def write_clip(path: Path, frames: int, height: int, width: int) -> None:
    """A real H.264 clip: a moving gradient."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        ramp = np.add.outer(np.arange(height), np.arange(width))
        for t in range(frames):
            img = np.repeat(((ramp + 3 * t) % 256)[..., None], 3, axis=2).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def build_store(where: Path, n: int, clip: Path, frames: int, height: int, width: int) -> Path:
    """A store of `n` videos (store.StoreWriter), each name a hard link to `clip`. Returns its path."""
    import numpy as np

    from mcl_fast.motion.store import StoreWriter, VideoMaps
    from mcl_fast.video_io import file_fingerprint

    videos, store = where / "videos", where / "store"
    maps = VideoMaps.from_maps(np.zeros((frames, 8, 8), np.float32), fps=25.0, height=height, width=width,
                               fingerprint=file_fingerprint(str(clip)))
    writer = StoreWriter(store, root=videos, flow="farneback", size=32)
    try:
        for i in range(n):
            name = f"c{i // PER_FOLDER:04d}/v{i:07d}.mp4"
            (videos / name).parent.mkdir(parents=True, exist_ok=True)
            os.link(clip, videos / name)
            writer.add(name, maps)
        writer.compact()
    finally:
        writer.close()
    return store


MEASURE = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from mcl_fast.data import TorchVideoLoader
from mcl_fast.motion.store import MotionStore
store = MotionStore(sys.argv[1])
t0 = time.perf_counter()
TorchVideoLoader(store.videos, store, 8, clip_len=4, stride=2, size=16, num_workers=0,
                 shard_id=0, num_shards=int(sys.argv[2]))
print(json.dumps({"construct_s": time.perf_counter() - t0}))
"""


def construct(checkout: Path, store: Path, shards: int) -> float:
    """Seconds to construct rank 0's loader of `shards`, in a fresh process running `checkout`'s code."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run([sys.executable, "-c", MEASURE, str(store), str(shards)], cwd=checkout, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"construction with {checkout} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["construct_s"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--shards", type=int, default=8, help="the job's ranks (rank 0 is timed; 1 rank is too)")
    ap.add_argument("--before", type=Path, default=None, help="another checkout to time in the same run")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--dir", type=Path, default=Path("/dev/shm") if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)
    checkouts = ([("before", args.before.resolve())] if args.before else []) + [("after", ROOT)]
    rows = []
    work = Path(tempfile.mkdtemp(prefix="store_scale-", dir=args.dir))
    try:
        clip = work / "clip.mp4"
        write_clip(clip, args.frames, args.height, args.width)
        for n in args.sizes:
            t0 = time.perf_counter()
            store = build_store(work / str(n), n, clip, args.frames, args.height, args.width)
            built = time.perf_counter() - t0
            for shards in sorted({1, args.shards}):
                row = {"videos": n, "ranks": shards, "store_build_s": round(built, 1)}
                for name, checkout in checkouts:
                    row[f"{name}_s"] = round(construct(checkout, store, shards), 2)
                rows.append(row)
                print(row, flush=True)
            shutil.rmtree(work / str(n))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n| videos | ranks | construction, rank 0 {'(before → after)' if args.before else ''} |\n|---|---|---|")
    for r in rows:
        before = f"{r['before_s']:.2f} s → " if "before_s" in r else ""
        print(f"| {r['videos']:,} | {r['ranks']} | {before}{r['after_s']:.2f} s |")
    write_results(args.json, clip={"frames": args.frames, "height": args.height, "width": args.width},
                  before=str(args.before) if args.before else None, rows=rows)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
