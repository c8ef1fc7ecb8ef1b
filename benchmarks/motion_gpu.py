"""GPU motion benchmark, side by side with the CPU on the same machine, in one run.

1. TV-L1 flow, frame pairs/s: the project's kernels (mcl_fast.gpu.flow, many pairs per launch) vs
   OpenCV's DualTVL1 on every CPU core (a process pool, one OpenCV thread per process), at 320x240
   and at prepare's default size (short side 128: 171x128). Fidelity: mean end-point error (EPE) of
   both to the known flow of a textured frame translated by a sub-pixel shift per frame.
2. Motion-map kernels: achieved GB/s (bytes read + written / kernel time) vs the device's measured
   copy bandwidth (a CuPy device-to-device copy of the same flow bytes, read + write).
3. select_box: candidate boxes judged per second, batched kernels vs the NumPy reference.

GPU times are CUDA-event timed after a warm-up (NVRTC compile excluded). Prints each row as it
finishes, then the Markdown table, and writes JSON (default benchmarks/results/motion_gpu.json)
after every measure ("complete": false until the end, so a run cut short keeps its rows).

    python benchmarks/motion_gpu.py [--quick] [--json PATH] [--allow-cpu]

Without a GPU it exits with status 2 and says so; with --allow-cpu it instead measures only the
CPU columns (exit 0), which is how CI smoke-tests this script.
"""
from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import ResultsFile  # noqa: E402 (benchmarks/_results.py)
from mcl_fast import sampling as ref  # noqa: E402
from mcl_fast._backend import has_gpu  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "motion_gpu.json"
SIZES = {"320x240": (240, 320), "171x128": (128, 171)}  # name -> (H, W)
SHIFT = (0.7, -0.4)  # (u, v) pixels per frame of the translated texture: the known flow
BORDER = 16  # pixels left out of the EPE (warping borders are ill-posed for every method)


# ------------------------------------------------------------------ test frames with known flow

def shifted_frames(count: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(count, H, W) uint8 gray: one texture translated by SHIFT per frame (content moves by +SHIFT)."""
    import cv2

    from mcl_fast.data.synthetic import smooth_texture

    h, w = hw
    pad = 2 * BORDER + int(np.ceil(count * max(abs(SHIFT[0]), abs(SHIFT[1]))))
    tex = cv2.cvtColor(smooth_texture(np.random.default_rng(seed), h + 2 * pad, w + 2 * pad), cv2.COLOR_RGB2GRAY)
    frames = np.empty((count, h, w), np.uint8)
    for k in range(count):
        m = np.float32([[1, 0, SHIFT[0] * k - pad], [0, 1, SHIFT[1] * k - pad]])
        frames[k] = cv2.warpAffine(tex, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return frames


def epe(flow: np.ndarray) -> float:
    """Mean end-point error of (P, H, W, 2) flow to SHIFT, borders excluded (pixels)."""
    inner = flow[:, BORDER:-BORDER, BORDER:-BORDER]
    return float(np.sqrt((inner[..., 0] - SHIFT[0]) ** 2 + (inner[..., 1] - SHIFT[1]) ** 2).mean())


# ------------------------------------------------------------------ CPU: OpenCV TV-L1 on every core

_worker_tvl1 = None


def cpu_backend() -> str:
    """"opencv" where cv2.optflow exists (opencv-contrib), else "host": the project's C++ twin of the
    kernels (libmcl_host, the same algorithm at -O2) — GPU machines ship plain opencv-python."""
    import cv2

    return "opencv" if hasattr(cv2, "optflow") else "host"


def _init_cpu_worker():
    import cv2

    global _worker_tvl1
    cv2.setNumThreads(1)
    if cpu_backend() == "opencv":
        _worker_tvl1 = cv2.optflow.DualTVL1OpticalFlow_create().calc
    else:
        from mcl_fast.gpu.tvl1_host import tvl1_pairs

        _worker_tvl1 = lambda prev, nxt, _: tvl1_pairs(prev[None], nxt[None])[0]  # noqa: E731


def _cpu_pair(args):
    prev, nxt = args
    return _worker_tvl1(prev, nxt, None)


def cpu_tvl1(frames: np.ndarray, workers: int) -> dict:
    """CPU TV-L1 (cpu_backend()) over consecutive pairs on `workers` processes: pairs/s, EPE."""
    pairs = [(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_init_cpu_worker) as pool:
        pool.map(_cpu_pair, pairs[:workers], chunksize=1)  # warm: workers started, OpenCV loaded
        t0 = time.perf_counter()
        flows = pool.map(_cpu_pair, pairs, chunksize=1)
        seconds = time.perf_counter() - t0
    return {"pairs": len(pairs), "seconds": seconds, "pairs_per_s": len(pairs) / seconds,
            "epe": epe(np.stack(flows)), "backend": cpu_backend()}


# ------------------------------------------------------------------ GPU timing

def gpu_time(fn, repeats: int) -> float:
    """Mean seconds of fn() by CUDA events over `repeats` calls, after one warm-up call."""
    import cupy as cp

    fn()
    cp.cuda.Device().synchronize()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(repeats):
        fn()
    stop.record()
    stop.synchronize()
    return cp.cuda.get_elapsed_time(start, stop) / 1e3 / repeats


def gpu_tvl1(frames: np.ndarray, repeats: int) -> dict:
    import cupy as cp

    from mcl_fast.gpu.flow import compute_flow

    dev = cp.asarray(frames)
    out = {}

    def run():
        out["flow"] = compute_flow(dev, method="tvl1")

    seconds = gpu_time(run, repeats)
    pairs = len(frames) - 1
    flow = cp.asnumpy(out["flow"][:-1])
    return {"pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds, "epe": epe(flow)}


def map_bandwidth(n: int, hw: tuple[int, int], factor: int, repeats: int) -> dict:
    """GB/s of the full-size and the fused motion-map kernels vs a device copy of the flow."""
    import cupy as cp

    from mcl_fast.gpu.motion import motion_map, motion_maps_fused

    rng = cp.random.default_rng(0)
    flow = rng.standard_normal((n, *hw, 2), dtype=cp.float32)
    dst = cp.empty_like(flow)
    t_copy = gpu_time(lambda: dst.__setitem__(Ellipsis, flow), repeats)
    copy_gbs = 2 * flow.nbytes / t_copy / 1e9  # a copy reads and writes every byte
    t_full = gpu_time(lambda: motion_map(flow), repeats)
    full_bytes = flow.nbytes + flow.nbytes // 2  # read (N,H,W,2), write (N,H,W) float32
    t_fused = gpu_time(lambda: motion_maps_fused(flow, factor), repeats)
    small = (hw[0] // factor) * (hw[1] // factor) * 4 * n
    fused_bytes = flow.nbytes + small
    return {"frames": n, "size": f"{hw[1]}x{hw[0]}", "factor": factor, "copy_gb_s": copy_gbs,
            "full_gb_s": full_bytes / t_full / 1e9, "fused_gb_s": fused_bytes / t_fused / 1e9,
            "full_ms": t_full * 1e3, "fused_ms": t_fused * 1e3, "copy_ms": t_copy * 1e3,
            "full_frac_of_copy": full_bytes / t_full / 1e9 / copy_gbs,
            "fused_frac_of_copy": fused_bytes / t_fused / 1e9 / copy_gbs}


def select_box_inputs(batch: int, k: int, hw=(32, 42), seed: int = 0):
    rng = np.random.default_rng(seed)
    maps = rng.gamma(0.5, 1.0, (batch, *hw)).astype(np.float32)
    boxes = np.stack([ref.draw_boxes(rng, k, *hw) for _ in range(batch)])
    return maps, boxes


def numpy_select_box(batch: int, k: int) -> dict:
    maps, boxes = select_box_inputs(batch, k)
    t0 = time.perf_counter()
    for m, b in zip(maps, boxes):
        ref.select_box_index(m, b)
    seconds = time.perf_counter() - t0
    return {"maps": batch, "boxes_per_map": k, "seconds": seconds, "boxes_per_s": batch * k / seconds}


def gpu_select_box(batch: int, k: int, repeats: int) -> dict:
    import cupy as cp

    from mcl_fast.gpu.sampling import select_box_index_batch

    maps, boxes = select_box_inputs(batch, k)
    maps_d, boxes_d = cp.asarray(maps), cp.asarray(boxes)
    got = {}
    seconds = gpu_time(lambda: got.__setitem__("i", select_box_index_batch(maps_d, boxes_d)), repeats)
    check = min(batch, 64)  # the batch must agree with the reference (spot check)
    want = [ref.select_box_index(maps[i], boxes[i]) for i in range(check)]
    agree = bool((cp.asnumpy(got["i"][:check]) == np.array(want)).all())
    return {"maps": batch, "boxes_per_map": k, "seconds": seconds, "boxes_per_s": batch * k / seconds,
            "agrees_with_numpy": agree}


# ------------------------------------------------------------------ report

def fmt(v, spec=".1f"):
    return "—" if v is None else format(v, spec)


TABLE_HEAD = "| measure | size | GPU | CPU / reference | GPU ÷ CPU | fidelity |\n|---|---|---|---|---|---|"


def tvl1_line(name: str, r: dict, workers: int) -> str:
    g, c = r.get("gpu"), r["cpu"]
    ratio = g["pairs_per_s"] / c["pairs_per_s"] if g else None
    fid = f"EPE GPU {fmt(g['epe'], '.3f') if g else '—'} / CPU {c['epe']:.3f} px"
    return (f"| TV-L1 pairs/s (CPU: {c.get('backend', 'opencv')} on {workers} cores) | {name} | "
            f"{fmt(g and g['pairs_per_s'])} | {c['pairs_per_s']:.2f} | {fmt(ratio)}× | {fid} |")


def maps_lines(m: dict) -> list[str]:
    return [f"| motion map GB/s (full size) | {m['size']} ×{m['frames']} | {m['full_gb_s']:.0f} | "
            f"copy {m['copy_gb_s']:.0f} | {100 * m['full_frac_of_copy']:.0f} % of copy | bit-exact (tests) |",
            f"| motion map GB/s (fused ↓{m['factor']}, m_t) | {m['size']} ×{m['frames']} | {m['fused_gb_s']:.0f} | "
            f"copy {m['copy_gb_s']:.0f} | {100 * m['fused_frac_of_copy']:.0f} % of copy | < 1e-5 rel. (tests) |"]


def select_box_line(s: dict) -> str:
    g = s.get("gpu")
    return (f"| select_box boxes/s | {s['numpy']['maps']}+ maps × {s['numpy']['boxes_per_map']} | "
            f"{fmt(g and g['boxes_per_s'], '.3g')} | {s['numpy']['boxes_per_s']:.3g} | "
            f"{fmt(g and g['boxes_per_s'] / s['numpy']['boxes_per_s'], '.0f')}× | "
            f"{'identical boxes' if g and g['agrees_with_numpy'] else ('MISMATCH' if g else '—')} |")


def table(res: dict) -> str:
    rows = [TABLE_HEAD] + [tvl1_line(name, r, res["cpu_workers"]) for name, r in res["tvl1"].items()]
    if res.get("maps"):
        rows += maps_lines(res["maps"])
    if res["select_box"]:
        rows.append(select_box_line(res["select_box"]))
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer pairs and repeats (about a minute on a GPU machine)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"JSON output (default {DEFAULT_JSON})")
    p.add_argument("--allow-cpu", action="store_true", help="without a GPU, measure the CPU columns and exit 0")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="CPU processes for OpenCV TV-L1")
    args = p.parse_args(argv)
    gpu = has_gpu()
    if not gpu and not args.allow_cpu:
        print("motion_gpu: no CUDA device visible to CuPy (or CuPy missing): nothing to compare. "
              "Run on a GPU machine, or pass --allow-cpu to measure the CPU side only.", file=sys.stderr)
        return 2
    q = args.quick
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "quick": q,
           "host": platform.node(), "cpu": platform.processor() or platform.machine(), "cpu_workers": args.workers,
           "device": None, "tvl1": {}, "maps": None, "select_box": {}}
    if gpu:
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
        res["device"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        res["cupy"] = cp.__version__
    out = ResultsFile(args.json, **res)  # rewritten after each measure: a cut run keeps what it measured
    res = out.fields
    print(TABLE_HEAD, flush=True)
    for name, hw in SIZES.items():
        # quick: one pair per CPU process (one round; the host twin takes seconds per 320x240 pair)
        cpu_pairs = args.workers * (1 if q else 3) if name == "320x240" else args.workers * (1 if q else 6)
        gpu_pairs = 64 if q else 256
        frames = shifted_frames(max(cpu_pairs, gpu_pairs) + 1, hw)
        row = {"cpu": cpu_tvl1(frames[:cpu_pairs + 1], args.workers)}
        if gpu:
            row["gpu"] = gpu_tvl1(frames[:gpu_pairs + 1], repeats=1 if q else 3)
        res["tvl1"][name] = row
        out.write()
        print(tvl1_line(name, row, args.workers), flush=True)
    if gpu:
        out.update(maps=map_bandwidth(1024 if q else 4096, SIZES["171x128"], 4, repeats=10 if q else 30))
        print("\n".join(maps_lines(res["maps"])), flush=True)
    k = 20
    res["select_box"]["numpy"] = numpy_select_box(200 if q else 1000, k)
    if gpu:
        res["select_box"]["gpu"] = gpu_select_box(4096 if q else 16384, k, repeats=5 if q else 20)
    out.finish()
    print(select_box_line(res["select_box"]), flush=True)
    print(f"\nmotion_gpu ({res['device'] or 'no GPU: CPU columns only'}, {res['date']})\n")
    print(table(res))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
