"""Compare a `prepare --device cuda` store with the CPU path's store of the same clips.

    python tests/gpu/compare_prepare.py --gpu-store DIR --videos DIR --cpu-store DIR

Builds the CPU store (prepare --device cpu, TV-L1: OpenCV's where cv2.optflow exists, else the
project's CPU twin of the kernels, libmcl_host: GPU machines ship opencv-python without contrib),
then per clip checks the frame count and map shape are equal and the dequantised maps correlate
(Pearson) at least MIN_CORRELATION. The tolerance is loose by design: the GPU path resizes with
DALI (linear, antialiased, on RGB) and the CPU path with OpenCV's INTER_AREA on gray, which moves
maps by small amounts (mcl_fast.gpu.video_maps). Prints one line per clip with the measured values
and a verdict line; exit 1 when a clip differs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIN_CORRELATION = 0.8  # GPU vs CPU motion maps of one clip (tests/gpu/test_gpu_video_maps.py too)


def cpu_store(videos, out, size: int = 128, map_downsample: int = 4):
    """The CPU path's store of `videos` (TV-L1 in this process; the CPU twin without cv2.optflow)."""
    import cv2

    from mcl_fast.motion import prepare
    from mcl_fast.motion.store import MotionStore

    if not hasattr(cv2, "optflow"):
        from mcl_fast.gpu import tvl1_host

        prepare._pair_flow = lambda method: lambda prev, nxt: tvl1_host.tvl1_pairs(prev[None], nxt[None])[0]
    prepare.prepare(str(videos), str(out), flow="tvl1", size=size, map_downsample=map_downsample, workers=0,
                    device="cpu", progress=False)
    return MotionStore(out)


def compare_stores(gpu, cpu) -> list[dict]:
    """Per clip of the GPU store: frames, map shape, correlation and mean |difference| with the CPU's."""
    rows = []
    for video in gpu.videos:
        row = {"video": video, "in_cpu_store": video in cpu.videos}
        if row["in_cpu_store"]:
            a, b = gpu.read(video), cpu.read(video)
            row.update(frames=(len(a), len(b)), shape=(a.shape[1:], b.shape[1:]))
            if a.shape == b.shape:
                row.update(correlation=round(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]), 4),
                           mean_abs_diff=round(float(np.abs(a - b).mean()), 5))
        row["ok"] = row.get("correlation", -1.0) >= MIN_CORRELATION
        rows.append(row)
    return rows


def describe(row: dict) -> str:
    if not row["in_cpu_store"]:
        return f"{row['video']}: not in the CPU store (rejected there?)"
    if "correlation" not in row:
        return f"{row['video']}: frames {row['frames']}, map shapes {row['shape']} differ"
    return (f"{row['video']}: corr {row['correlation']:.3f}, mean |diff| {row['mean_abs_diff']:.4f} "
            f"({row['frames'][0]} frames)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu-store", type=Path, required=True)
    p.add_argument("--videos", type=Path, required=True)
    p.add_argument("--cpu-store", type=Path, required=True, help="where the CPU store is written")
    p.add_argument("--size", type=int, default=128)
    args = p.parse_args(argv)
    from mcl_fast.motion.store import MotionStore

    gpu = MotionStore(args.gpu_store)
    if not gpu.videos:
        print(f"FAIL: the GPU store {args.gpu_store} holds no clip (errors: {gpu.errors})")
        return 1
    rows = compare_stores(gpu, cpu_store(args.videos, args.cpu_store, args.size))
    for row in rows:
        print(describe(row))
    worst = min((r.get("correlation", -1.0) for r in rows), default=-1.0)
    verdict = "PASS" if all(r["ok"] for r in rows) else "FAIL"
    print(f"maps vs CPU store {verdict}: min corr {worst:.3f} over {len(rows)} clips (need >= {MIN_CORRELATION})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
