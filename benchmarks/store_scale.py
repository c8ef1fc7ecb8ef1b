"""What a dataset's size costs every rank and every worker (issue 24, item 5): per store size, in
fresh processes, with this checkout's code ("after") and, in the same run, another checkout's
(--before, e.g. `git worktree add /tmp/before <commit>` of the code before a change):

- open: seconds and private memory (Private_Clean + Private_Dirty of /proc/self/smaps_rollup,
  after minus before MotionStore(path)), also per video;
- loader construction (TorchVideoLoader, num_workers=0): default checks on and checks off, one
  rank; checks on for rank 0 of --shards ranks (the process that also starts the workers);
- first batch at 0 workers and at each of --workers (forkserver), timed from iter(); each
  worker's PSS and private memory after it (the median over workers) against the store's size;
- planning per sample, cold (a fresh process's first visit of each video) then warm (the same
  samples again), over --samples samples of epoch 0's last batches; the private memory that cold
  planning added per video (the planner's, the verdicts' and the frame-index caches);
- a no-op `prepare` (every video done) and whether it rewrote index.json; the rank-journal fold
  (StoreWriter.fold_parts after FOLD_RANKS PartWriters each added FOLD_VIDEOS videos).

Stores: written with the checkout's own store writer (motion.store.StoreWriter): one real H.264
clip (--frames frames of --height x --width) and its real maps (Farneback, size 128, map
downsample 4), then every other name an entry of the same maps (written by the writer's own
index code: its entries, then compact), each name a hard link to the clip, 1,000 names per
folder like Kinetics' class folders. Index-only stores (--index-only) have the entries and no
files: they are measured for open and fold only. Everything goes under --dir (default /dev/shm).

The full run for BENCHMARKS.md (a quiet machine; ~45 min on the 2-core VM at load ~10 with the old
code as --before, estimated from a measured run of --sizes 2000 20000 --index-only 100000 1000000
10000000 (17 min): most of it the old code's checks of 250k files on one rank (~10 min) and its
1M index (~4 min per checkout); needs ~5 GB of free memory (the old code's 1M fold, the new writer's 10M build) and
~2 GB of /dev/shm; the 10M index-only store is measured with the new code only):

    python benchmarks/store_scale.py --before /tmp/before
    (defaults: --sizes 10000 100000 250000 --index-only 1000000 10000000 --workers 8 --shards 8
    --before-max-videos 1000000 --fold-max-videos 1000000)

Prints a Markdown table and the extrapolation to Kinetics-400/700, HowTo100M and WebVid-10M (with
the formulas), and writes JSON row by row (default benchmarks/results/store_scale.json);
`python benchmarks/store_scale.py --print JSON` prints them again from a finished run's JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "store_scale.json"
PER_FOLDER = 1000  # videos per folder (Kinetics-400: ~600 per class folder)
STORE_SETTINGS = {"flow": "farneback", "size": 128, "map_downsample": 4}  # prepare's defaults but the flow
LOADER = {"clip_len": 16, "stride": 2, "size": 112}  # every loader's options (the paper's clip, 112 px)
BATCH = 4  # samples per batch of every loader
FOLD_RANKS, FOLD_VIDEOS = 2, 16  # the fold: rank journals, videos each
DATASETS = {"Kinetics-400": 240_000, "Kinetics-700": 650_000, "HowTo100M": 1_200_000, "WebVid-10M": 10_700_000}
NODE_RANKS = 8  # ranks per node in the extrapolation's per-node memory


# ----------------------------------------------------------------------- shared by every step


def video_name(i: int) -> str:
    return f"c{i // PER_FOLDER:04d}/v{i:08d}.mp4"


def memory_kib(pid="self") -> dict:
    """{"pss", "private"} KiB of a process (/proc/PID/smaps_rollup; private = Private_Clean + Private_Dirty)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Private_Clean", "Private_Dirty"):
                fields[key] = int(rest.split()[0])
    return {"pss": fields["Pss"], "private": fields["Private_Clean"] + fields["Private_Dirty"]}


def folder_state(store) -> dict:
    """{path: (size, mtime_ns)} of a store's files but its map shards and lock: the index, whatever
    form it has (one JSON file, or a header and a folder of columns), and errors.json."""
    out = {}
    for p in Path(store).rglob("*"):
        if p.is_file() and not p.name.startswith(("shard", "flows", "mags", ".lock")):
            st = p.stat()
            out[str(p.relative_to(store))] = (st.st_size, st.st_mtime_ns)
    return out


def peak_mib() -> float:
    """This process's peak resident memory (ru_maxrss), MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def private_mib() -> float:
    import gc

    gc.collect()
    return memory_kib()["private"] / 1024


def load_maps(work: Path):
    """The clip's VideoMaps, as the step "maps" saved them (maps.npy and maps.json: no pickle)."""
    import numpy as np

    from mcl_fast.motion.store import VideoMaps

    meta = json.loads((work / "maps.json").read_text())
    return VideoMaps.from_maps(np.load(work / "maps.npy"), **meta)


# ------------------------------------------------------------ steps (each in a fresh process)


def step_maps(a) -> dict:
    """The clip's real maps (Farneback, like prepare), saved for the builders."""
    import numpy as np

    from mcl_fast.motion.prepare import compute_video_maps

    maps = compute_video_maps(a.clip, flow=STORE_SETTINGS["flow"], size=STORE_SETTINGS["size"],
                              map_downsample=STORE_SETTINGS["map_downsample"])
    np.save(a.work / "maps.npy", maps.dequantized())
    (a.work / "maps.json").write_text(json.dumps({"fps": maps.fps, "height": maps.height, "width": maps.width,
                                                  "fingerprint": maps.fingerprint}))
    return {"num_frames": int(maps.num_frames), "map_hw": list(maps.maps_u8.shape[1:])}


def step_build(a) -> dict:
    from mcl_fast.motion.store import StoreWriter

    maps = load_maps(a.work)
    t0 = time.perf_counter()
    writer = StoreWriter(a.store, root=a.root, **STORE_SETTINGS)
    try:
        entry = writer.add(video_name(0), maps)
        # every other name shares the first video's block: one index write, no journal line per video
        writer.add_entries((video_name(i), entry) for i in range(1, a.videos))
        writer.compact()
    finally:
        writer.close()
    return {"build_s": time.perf_counter() - t0, "build_peak_mib": peak_mib(),
            "index_mb": sum(size for size, _ in folder_state(a.store).values()) / 1e6}


def step_open(a) -> dict:
    from mcl_fast.motion.store import MotionStore

    before = private_mib()
    t0 = time.perf_counter()
    store = MotionStore(a.store)
    seconds = time.perf_counter() - t0
    grew = private_mib() - before
    assert len(store) == a.videos, f"{a.store}: {len(store)} videos, expected {a.videos}"
    return {"open_s": seconds, "open_private_mib": grew, "open_private_b_per_video": grew * 2**20 / a.videos}


def _loader(store, checks: bool, workers: int, shards: int):
    from mcl_fast.data import TorchVideoLoader  # imported by the caller before its clock starts

    off = {} if checks else {"verify": False, "check_fingerprints": False}  # on: the loader's defaults
    return TorchVideoLoader(store.videos, store, BATCH, num_workers=workers, shard_id=0, num_shards=shards,
                            **off, **LOADER)


def _cache_entries(loader) -> int:
    """Entries in every LRU the loader, its planner and its verdicts hold, plus the frame-index cache."""
    try:
        from mcl_fast._cache import LRU
    except ImportError:
        return -1
    holders = [loader, getattr(loader, "planner", None), getattr(loader, "verdicts", None)]
    count = sum(len(v) for h in holders if h is not None for v in vars(h).values() if isinstance(v, LRU))
    try:
        from mcl_fast.video_io import random_access

        count += sum(len(v) for v in vars(random_access).values() if isinstance(v, LRU))
    except ImportError:
        pass
    return count


def _plan(loader, batches) -> float:
    t0 = time.perf_counter()
    for batch in batches:
        loader.plan_chunk(0, [batch])
    return time.perf_counter() - t0


def step_loader(a) -> dict:
    """One rank, checks on or off: construction, then (checks on) the first batch without workers,
    then cold and warm planning of epoch 0's last batches (videos the first batch did not visit)."""
    from mcl_fast.data import TorchVideoLoader  # noqa: F401 (imported before the clock starts)
    from mcl_fast.motion.store import MotionStore

    checks = a.checks == "on"
    store = MotionStore(a.store)
    t0 = time.perf_counter()
    loader = _loader(store, checks, 0, 1)
    out = {f"construct_{a.checks}_s": time.perf_counter() - t0}
    if checks:
        t0 = time.perf_counter()
        next(iter(loader))
        out["first_batch_0_s"] = time.perf_counter() - t0
    all_batches = loader.batches(0)
    count = max(1, min(math.ceil(a.samples / BATCH), len(all_batches) // 2))
    batches = all_batches[-count:]
    samples = count * BATCH
    before = private_mib()
    cold = _plan(loader, batches)
    grew = private_mib() - before
    warm = _plan(loader, batches)
    out.update({f"plan_cold_{a.checks}_ms": 1e3 * cold / samples, f"plan_warm_{a.checks}_ms": 1e3 * warm / samples,
                f"plan_samples_{a.checks}": samples})
    if checks:
        out.update(cache_kib_per_video=grew * 1024 / samples, cache_entries=_cache_entries(loader))
    return out


def step_workers(a) -> dict:
    """Rank 0 of --shards with the default checks: construction, then the first batch with
    `a.workers` forkserver workers and each worker's memory after it."""
    import statistics

    from mcl_fast.data import TorchVideoLoader  # noqa: F401 (imported before the clock starts)
    from mcl_fast.motion.store import MotionStore

    store = MotionStore(a.store)
    t0 = time.perf_counter()
    loader = _loader(store, True, a.workers, a.shards)
    out = {"construct_on_rank0_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    out[f"first_batch_{a.workers}_s"] = time.perf_counter() - t0
    workers = [memory_kib(w.pid) for w in loader._data._iterator._workers]
    out[f"worker_{a.workers}_pss_mib"] = statistics.median(w["pss"] for w in workers) / 1024
    out[f"worker_{a.workers}_private_mib"] = statistics.median(w["private"] for w in workers) / 1024
    del it
    loader.close()
    return out


def step_prepare_fold(a) -> dict:
    """A no-op prepare (real stores: every video is done; whether it changed any index file), then
    the fold of FOLD_RANKS rank journals; the process's peak memory."""
    from mcl_fast.motion.store import PartWriter, StoreWriter

    out = {}
    if a.real:
        from mcl_fast.motion.prepare import prepare

        before = folder_state(a.store)
        t0 = time.perf_counter()
        report = prepare(a.root, a.store, workers=0, progress=False, **STORE_SETTINGS)
        out["noop_prepare_s"] = time.perf_counter() - t0
        out["noop_prepare_wrote"] = folder_state(a.store) != before
        assert report.done == 0 and not report.errors, f"the no-op prepare did work: {report.summary()}"
    maps = load_maps(a.work)
    with StoreWriter(a.store, root=a.root, **STORE_SETTINGS) as writer:  # rank 0's, holding the lock
        first = writer.next_free_shard()
        opened = 0.0
        for rank in range(FOLD_RANKS):
            t0 = time.perf_counter()
            part = PartWriter(a.store, rank=rank, world=FOLD_RANKS, first_shard=first, root=a.root,
                              **STORE_SETTINGS)
            opened += time.perf_counter() - t0
            for k in range(FOLD_VIDEOS):
                part.add(f"fold/r{rank}/v{k}.mp4", maps)
            part.compact()
            part.close()
        t0 = time.perf_counter()
        writer.fold_parts()
        out["fold_s"] = time.perf_counter() - t0
        out["rank_open_s"] = opened / FOLD_RANKS
    out["fold_peak_mib"] = peak_mib()
    return out


STEPS = {"maps": step_maps, "build": step_build, "open": step_open, "loader": step_loader,
         "workers": step_workers, "prepare_fold": step_prepare_fold}


def run_step(checkout: Path, step: str, **kw) -> dict:
    """Run one step in a fresh process with `checkout`'s mcl_fast; its result dict, or {"error": ...}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--checkout", str(checkout)]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"  {step} with {checkout} failed: {tail}", file=sys.stderr, flush=True)
        return {f"{step}_error": tail[-300:]}
    return json.loads(lines[-1])


def child(argv) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--step", choices=sorted(STEPS), required=True)
    ap.add_argument("--checkout", type=Path, required=True)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--clip")
    ap.add_argument("--store")
    ap.add_argument("--root")
    ap.add_argument("--videos", type=int)
    ap.add_argument("--checks", choices=("on", "off"))
    ap.add_argument("--samples", type=int)
    ap.add_argument("--fold-max-videos", type=int, default=1000000,
                    help="fold index-only stores only up to this size (a writer may hold every entry as a dict)")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--shards", type=int)
    ap.add_argument("--real", type=int)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(a.checkout))  # the checkout's mcl_fast (workers inherit sys.path)
    import warnings

    warnings.simplefilter("ignore")
    print(json.dumps(STEPS[a.step](a)), flush=True)
    return 0


# ----------------------------------------------------------------------------- the parent


def write_clip(path: Path, frames: int, height: int, width: int) -> None:
    """A real H.264 clip: a moving gradient with a moving square (so its maps are not flat)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        ramp = np.add.outer(np.arange(height), np.arange(width))
        side = max(4, height // 6)
        for t in range(frames):
            img = np.repeat(((ramp + 3 * t) % 256)[..., None], 3, axis=2).astype(np.uint8)
            x = (5 * t) % max(1, width - side)
            img[height // 3:height // 3 + side, x:x + side] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def link_videos(root: Path, clip: Path, n: int) -> None:
    for i in range(n):
        path = root / video_name(i)
        if i % PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        os.link(clip, path)


def measure_size(checkout: Path, work: Path, root: Path, n: int, real: bool, args) -> dict:
    """Every step's numbers for one store size with one checkout (its own store, removed after)."""
    store = work / f"store-{n}"
    common = {"work": work, "store": store, "root": root, "videos": n}
    row = run_step(checkout, "build", **common)
    if "build_error" in row:
        return row
    row.update(run_step(checkout, "open", **common))
    if real:
        for checks in ("on", "off"):
            row.update(run_step(checkout, "loader", checks=checks, samples=args.samples, **common))
        for w in args.workers:
            if w > 0:
                row.update(run_step(checkout, "workers", workers=w, shards=args.shards, **common))
    if real or n <= args.fold_max_videos:
        row.update(run_step(checkout, "prepare_fold", real=int(real), **common))
    shutil.rmtree(store, ignore_errors=True)
    return row


def fit(points) -> tuple[float, float] | None:
    """(a, b) of the least-squares line y = a + b * N through [(N, y)]; None under two sizes."""
    points = [(n, y) for n, y in points if y is not None]
    if len({n for n, _ in points}) < 2:
        return None
    mn = sum(n for n, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    b = sum((n - mn) * (y - my) for n, y in points) / sum((n - mn) ** 2 for n, _ in points)
    return my - b * mn, b


# metric -> (label, unit, whether index-only rows count)
EXTRAPOLATED = {"open_s": ("open", "s", True), "open_private_mib": ("open, private memory", "MiB", True),
                "construct_on_s": ("loader construction, checks on, one rank", "s", False),
                "construct_on_rank0_s": ("loader construction, checks on, rank 0 of --shards", "s", False),
                "construct_off_s": ("loader construction, checks off", "s", False),
                "worker_private_mib": ("one worker's private memory", "MiB", False),
                "noop_prepare_s": ("no-op prepare", "s", False), "fold_s": ("rank-journal fold", "s", True)}


def extrapolate(rows: list[dict], label: str, workers: int) -> tuple[list[str], dict]:
    """Markdown lines and JSON of each EXTRAPOLATED metric fitted as a + b * N over `label`'s rows
    (worker memory: that of the first batch with `workers` workers)."""
    lines = [f"\nExtrapolation ({label}): each metric fitted as y(N) = a + b * N by least squares over the measured "
             "sizes (index-only stores count for open and fold only), then evaluated at "
             + ", ".join(f"{k} N = {v:,}" for k, v in DATASETS.items()) + ".\n",
             "| metric | a | b (per video) | " + " | ".join(DATASETS) + " |", "|---|---:|---:|" + "---:|" * len(DATASETS)]
    out = {}
    for key, (what, unit, index_only) in EXTRAPOLATED.items():
        field = f"worker_{workers}_private_mib" if key == "worker_private_mib" else key
        points = [(r["videos"], r.get(label, {}).get(field)) for r in rows if r["real"] or index_only]
        line = fit(points)
        if line is None:
            continue
        a, b = line
        if b < 0:  # a flat metric measured with noise: no growth, at its mean
            measured = [y for _, y in points if y is not None]
            a, b = sum(measured) / len(measured), 0.0
            what += " (fitted b < 0: noise, taken as b = 0, a = the mean)"
        at = {name: a + b * n for name, n in DATASETS.items()}
        out[key] = {"a": a, "b": b, "unit": unit, "at": at}
        lines.append(f"| {what}, {unit} | {a:.3g} | {b:.3g} | " + " | ".join(f"{v:,.3g}" for v in at.values()) + " |")
    per_node = {}
    if "open_private_mib" in out and "worker_private_mib" in out:
        b = out["open_private_mib"]["b"] + workers * out["worker_private_mib"]["b"]
        per_node = {name: NODE_RANKS * b * n / 1024 for name, n in DATASETS.items()}
        lines.append(f"\nPer node ({NODE_RANKS} ranks x {workers} workers), memory that grows with the store: "
                     f"{NODE_RANKS} * (b_open + {workers} * b_worker) * N = "
                     + ", ".join(f"{k} {v:,.2f} GiB" for k, v in per_node.items()) + ".")
    out["per_node_gib"] = per_node
    worker = [(r["videos"], r.get(label, {}).get(f"worker_{workers}_private_mib")) for r in rows if r["real"]]
    worker = [(n, y) for n, y in worker if y is not None]
    if len(worker) >= 2:
        (n0, y0), (n1, y1) = min(worker), max(worker)
        out["worker_growth"] = y1 / y0
        lines.append(f"\nOne worker's private memory, {n1:,} against {n0:,} videos: {y1:.0f} / {y0:.0f} MiB = "
                     f"{y1 / y0:.2f}x (the issue's bound: within 20 %).")
    return lines, out


def cell(row: dict, key: str, fmt: str, labels) -> str:
    values = [row.get(label, {}).get(key) for label in labels]
    if all(v is None for v in values):
        return ""
    return " → ".join("–" if v is None else format(v, fmt) for v in values)


def table(rows: list[dict], labels, workers: int, shards: int) -> list[str]:
    cols = [("index, MB", "index_mb", ".1f"), ("open, s", "open_s", ".3f"),
            ("open, private MiB", "open_private_mib", ".1f"), ("B per video", "open_private_b_per_video", ".1f"),
            ("construct, checks on, s", "construct_on_s", ".2f"),
            (f"rank 0 of {shards}, on, s", "construct_on_rank0_s", ".2f"),
            ("checks off, s", "construct_off_s", ".2f"), ("first batch, 0 workers, s", "first_batch_0_s", ".2f"),
            (f"{workers} workers, s", f"first_batch_{workers}_s", ".2f"),
            ("worker private MiB", f"worker_{workers}_private_mib", ".0f"),
            ("worker PSS MiB", f"worker_{workers}_pss_mib", ".0f"),
            ("plan cold, ms/sample", "plan_cold_on_ms", ".2f"), ("warm", "plan_warm_on_ms", ".3f"),
            ("cache KiB/video", "cache_kib_per_video", ".1f"), ("no-op prepare, s", "noop_prepare_s", ".2f"),
            ("fold, s", "fold_s", ".2f")]
    head = " → ".join(labels)
    lines = [f"\nEach cell: {head}.\n", "| videos | " + " | ".join(c[0] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for r in rows:
        name = f"{r['videos']:,}" + ("" if r["real"] else " (index only)")
        lines.append(f"| {name} | " + " | ".join(cell(r, key, fmt, labels) for _, key, fmt in cols) + " |")
    return lines


def report(doc: dict) -> tuple[list[str], dict]:
    """The Markdown lines (table, then each checkout's extrapolation) and the extrapolation's JSON
    of a run's results (its JSON document)."""
    labels = (["before"] if doc.get("before") else []) + ["after"]
    workers = max(doc["settings"]["workers"])
    lines = table(doc["rows"], labels, workers, doc["settings"]["shards"])
    extrapolation = {}
    for label in labels:
        more, extrapolation[label] = extrapolate(doc["rows"], label, workers)
        lines += more
    return lines, extrapolation


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--step" in argv:
        return child(argv)
    sys.path.insert(0, str(ROOT))  # this checkout's mcl_fast for _results' writer
    from _results import ResultsFile  # noqa: E402 (benchmarks/_results.py)

    if argv[:1] == ["--print"]:  # the table and extrapolation of a finished run's JSON, again
        print("\n".join(report(json.loads(Path(argv[1]).read_text()))[0]))
        return 0

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10000, 100000, 250000], help="stores with files")
    ap.add_argument("--index-only", type=int, nargs="*", default=[1000000, 10000000], help="stores without files")
    ap.add_argument("--before", type=Path, default=None, help="another checkout, measured in the same run")
    ap.add_argument("--before-max-videos", type=int, default=1000000,
                    help="measure --before only up to this size (its JSON index needs ~0.66 KB per video per process)")
    ap.add_argument("--fold-max-videos", type=int, default=1000000,
                    help="fold index-only stores only up to this size (a writer may hold every entry as a dict)")
    ap.add_argument("--workers", type=int, nargs="+", default=[8], help="worker counts of the first-batch rows")
    ap.add_argument("--shards", type=int, default=8, help="the job's ranks of the rank-0 construction")
    ap.add_argument("--samples", type=int, default=256, help="samples planned cold, then warm")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--dir", type=Path, default=Path("/dev/shm") if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)
    checkouts = ([("before", args.before.resolve())] if args.before else []) + [("after", ROOT)]
    results = ResultsFile(args.json, before=str(args.before) if args.before else None,
                          settings={"clip": {"frames": args.frames, "height": args.height, "width": args.width},
                                    "store": STORE_SETTINGS, "loader": {**LOADER, "batch_size": BATCH},
                                    "workers": args.workers, "shards": args.shards, "samples": args.samples,
                                    "fold": {"ranks": FOLD_RANKS, "videos_per_rank": FOLD_VIDEOS}})
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="store_scale-", dir=args.dir))
    try:
        clip = work / "clip.mp4"
        write_clip(clip, args.frames, args.height, args.width)
        results.update(maps=run_step(ROOT, "maps", work=work, clip=clip))
        sizes = [(n, True) for n in args.sizes] + [(n, False) for n in args.index_only]
        for n, real in sizes:
            root = work / f"videos-{n}"
            root.mkdir()
            if real:
                link_videos(root, clip, n)
            row = results.add({"videos": n, "real": real})
            for name, checkout in checkouts:
                if name == "before" and n > args.before_max_videos:
                    row[name] = {"skipped": f"over --before-max-videos {args.before_max_videos:,}"}
                    continue
                t0 = time.perf_counter()
                row[name] = measure_size(checkout, work, root, n, real, args)
                row[name]["wall_s"] = time.perf_counter() - t0
                results.write()
                print(f"{n:,} videos{'' if real else ' (index only)'}, {name}: {row[name]}", flush=True)
            shutil.rmtree(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines, extrapolation = report(results.fields)
    print("\n".join(lines))
    results.finish(extrapolation=extrapolation, wall_s=time.perf_counter() - started)
    print(f"\nwrote {args.json} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
