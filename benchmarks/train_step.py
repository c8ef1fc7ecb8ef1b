"""Train-step throughput: MoCo only vs MCL (with the motion alignment loss), per backbone, AMP on/off,
synthetic input vs a real loader (DALI or the torch baseline) for the data-wait fraction.

    python benchmarks/train_step.py --quick                   # CPU-sized, a few minutes
    python benchmarks/train_step.py --device cuda             # GPU: paper sizes (16x224^2, batch 8/GPU)
    python benchmarks/train_step.py --device cuda --loader dali --store STORE   # + data wait

Prints each row as it finishes, then the table, and writes JSON (default
benchmarks/results/train_step.json) after every configuration ("complete": false until the end, so
a run cut short keeps its rows). Columns:
GMACs/clip (the backbone's forward multiply-adds per clip at the benchmark's clip size, counted by
torch.utils.flop_counter on the meta device), clips/s (query+key pairs per second), ms/step
(median; MoCo and MCL steps alternate on one model so a busy machine slows both alike), data
wait (fraction of the step spent waiting for the next batch), peak memory (CUDA: torch's peak allocation; CPU: the process's peak RSS so far,
a high-water mark across rows) and, for MCL rows, the step cost relative to MoCo only (goal on a
GPU: <= 1.6x; CPU-seconds on a CPU, where wall time depends on the machine's other load). Synthetic batches live on the device already: their data wait is the floor.
When both R(2+1)D-50 layouts run, a second table gives r2plus1d_50_t16 / r2plus1d_50 ratios of
multiply-adds and step cost (the release's layout against this project's first one).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _results import ResultsFile  # noqa: E402 (benchmarks/_results.py)

from mcl_fast.moco import MoCo  # noqa: E402
from mcl_fast.models import build_backbone  # noqa: E402
from mcl_fast.engine import Runtime, amp_dtype, train_step  # noqa: E402
from mcl_fast.losses import MCLLoss  # noqa: E402
from mcl_fast.models.info import describe  # noqa: E402
from mcl_fast.train import SyntheticBatches, pretrain_loss  # noqa: E402


def _peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def real_loader(args, batch: int, device: torch.device):
    """The DALI (or torch) loader over a prepared store, as the trainer builds it."""
    from mcl_fast.motion.store import MotionStore

    store = MotionStore(args.store)
    kwargs = dict(clip_len=args.clip_len, stride=2, size=args.size, augment=True, sampling="motion",
                  preset="paper", seed=0, shard_id=0, num_shards=1)
    if args.loader == "dali":
        from mcl_fast.data import MotionFocusedLoader

        return MotionFocusedLoader(list(store.videos), store, batch, device="gpu" if device.type == "cuda" else "cpu",
                                   **kwargs)
    from mcl_fast.data import TorchVideoLoader

    return TorchVideoLoader(list(store.videos), store, batch, device=str(device), **kwargs)


def endless(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def bench(backbone: str, amp, source: str, args, device: torch.device) -> list[dict]:
    """MoCo-only and MCL steps on one model, interleaved (MoCo, MCL, MoCo, ...) so that a busy
    machine slows both alike; medians of the per-step times. Returns the two rows."""
    torch.manual_seed(0)
    batch = args.batch if backbone != "tiny" else args.tiny_batch
    runtime = Runtime(device, amp, channels_last=device.type == "cuda")
    model, _ = runtime.prepare(MoCo(build_backbone(backbone), dim=128, hidden=args.hidden, queue_size=args.queue))
    criterion = MCLLoss(grad_scale=1024.0 if amp == torch.float16 else 1.0)
    opt = torch.optim.SGD([p for p in model.encoder_q.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    if source == "synthetic":
        synth = SyntheticBatches(batch, clip_len=args.clip_len, size=args.size, batches=1, device=device)
        fixed = synth.batch(0, 0)
        it = iter(lambda: fixed, None)
    else:
        it = endless(real_loader(args, batch, device))
    times = {False: [], True: []}
    cpu = {False: [], True: []}  # process CPU-seconds: steadier than wall time on a shared CPU
    waits = {False: [], True: []}
    peaks = {False: 0.0, True: 0.0}
    clips = {False: [], True: []}  # a real loader's last batch of an epoch may be smaller
    for i in range(args.warmup + args.steps):
        for mal in (False, True):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            c0 = time.process_time()
            t0 = time.perf_counter()
            b = runtime.to_device(next(it))
            t1 = time.perf_counter()
            train_step(model, lambda m, batch: pretrain_loss(m, batch, criterion, 1.0 if mal else 0.0), b, opt,
                       runtime)
            _sync(device)
            t2 = time.perf_counter()
            if i >= args.warmup:
                times[mal].append(t2 - t0)
                cpu[mal].append(time.process_time() - c0)
                clips[mal].append(int(b["index"].shape[0]))
                waits[mal].append(t1 - t0)
                peaks[mal] = max(peaks[mal], _peak_gib(device))
    rows = []
    macs = describe(backbone, args.clip_len, args.size)["macs"]
    for mal in (False, True):
        step = statistics.median(times[mal])
        per_step = sum(clips[mal]) / len(clips[mal])
        rows.append({"backbone": backbone, "loss": "MCL (MAL v3)" if mal else "MoCo",
                     "amp": str(amp).replace("torch.", "") if amp else "off", "source": source, "batch": round(per_step, 1),
                     "clip": f"{args.clip_len}x{args.size}^2", "gmacs_per_clip": macs / 1e9,
                     "clips_per_s": per_step / step, "ms_per_step": 1000 * step,
                     "cpu_s_per_step": statistics.median(cpu[mal]),
                     "data_wait": sum(waits[mal]) / sum(times[mal]), "peak_gib": peaks[mal], "device": str(device),
                     "step_times_s": times[mal]})
    return rows


TABLE_HEAD = ("| backbone | loss | AMP | input | batch | clip | GMACs/clip | clips/s | ms/step | CPU-s/step | data wait "
              "| peak GiB | MAL cost |")


def _cost(r: dict) -> float:
    return r["cpu_s_per_step"] if r["device"] == "cpu" else r["ms_per_step"]


def table_line(r: dict, rows: list[dict]) -> str:
    """r's table line; sets r["mal_cost"] (MCL / MoCo step cost of the same backbone, AMP and input
    among `rows`: CPU-seconds on a CPU device, wall time on a GPU)."""
    ref = next((_cost(m) for m in rows if m["loss"] == "MoCo"
                and (m["backbone"], m["amp"], m["source"]) == (r["backbone"], r["amp"], r["source"])), None)
    r["mal_cost"] = _cost(r) / ref if r["loss"] != "MoCo" and ref else None
    ratio = f"{r['mal_cost']:.2f}x" if r["mal_cost"] else "-"
    return (f"| {r['backbone']} | {r['loss']} | {r['amp']} | {r['source']} | {r['batch']} | {r['clip']} | "
            f"{r['gmacs_per_clip']:.2f} | {r['clips_per_s']:.2f} | {r['ms_per_step']:.0f} | "
            f"{r['cpu_s_per_step']:.2f} | {100 * r['data_wait']:.1f} % | {r['peak_gib']:.2f} | {ratio} |")


def table(rows: list[dict]) -> str:
    """The MAL cost is the step-time ratio MCL / MoCo (CPU-seconds on a CPU device, wall time on a GPU)."""
    return "\n".join([TABLE_HEAD, "|" + "---|" * (TABLE_HEAD.count("|") - 1), *(table_line(r, rows) for r in rows)])


def layout_ratios(rows: list[dict], old: str = "r2plus1d_50_t16", new: str = "r2plus1d_50") -> str:
    """old / new ratios of multiply-adds and step cost (CPU-s on a CPU, wall time on a GPU), per loss,
    AMP and input; empty when the run did not time both."""
    cost = _cost
    by = {(r["backbone"], r["loss"], r["amp"], r["source"]): r for r in rows}
    lines = []
    for (bb, loss, amp, src), r_new in by.items():
        r_old = by.get((old, loss, amp, src))
        if bb != new or r_old is None:
            continue
        lines.append(f"| {loss} | {amp} | {src} | {r_old['gmacs_per_clip'] / r_new['gmacs_per_clip']:.2f}x | "
                     f"{cost(r_old) / cost(r_new):.2f}x |")
    if not lines:
        return ""
    head = f"| loss | AMP | input | {old} / {new} MACs | {old} / {new} step cost |"
    return "\n".join([head, "|" + "---|" * (head.count("|") - 1), *lines])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="CPU-sized: small clips and backbones, few steps")
    p.add_argument("--backbones", default=None, help="comma list (default: per device)")
    p.add_argument("--amp", default=None, help="comma list of off,bf16,fp16 (default: off,bf16)")
    p.add_argument("--batch", type=int, default=None, help="clips per step (default 8 on GPU, 2 quick)")
    p.add_argument("--tiny-batch", type=int, default=8)
    p.add_argument("--clip-len", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--queue", type=int, default=None)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 on a CPU device)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--loader", choices=["dali", "torch"], default=None, help="also time a real loader")
    p.add_argument("--store", default=None, help="prepared motion store for --loader")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "train_step.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    quick = args.quick or device.type == "cpu"
    args.backbones = args.backbones or ("tiny,s3d,r2plus1d_50,r2plus1d_50_t16" if quick
                                        else "r2plus1d_50,r2plus1d_50_t16,s3d,r2plus1d_18")
    args.amp = args.amp or ("off" if quick else "off,bf16")
    args.batch = args.batch or (2 if quick else 8)
    args.clip_len = args.clip_len or (8 if quick else 16)
    args.size = args.size or (64 if quick else 224)
    args.queue = args.queue or (4096 if quick else 131072)
    args.steps = args.steps or (3 if quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 5)
    if args.loader and not args.store:
        p.error("--loader needs --store")
    if device.type == "cpu":
        # One thread by default: CPU-seconds then measure work, not OpenMP spin-waits on a busy machine.
        torch.set_num_threads(args.threads or 1)
    sources = ["synthetic"] + ([args.loader] if args.loader else [])
    info = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "args": vars(args)}
    out = ResultsFile(args.json, **info, rows=[])  # rewritten after each configuration: a cut run keeps its rows
    plan = [(bb, amp, src) for bb in args.backbones.split(",") for amp in args.amp.split(",") for src in sources
            if not (amp == "fp16" and device.type == "cpu")]  # CPU autocast: bf16 only
    print(TABLE_HEAD + "\n|" + "---|" * (TABLE_HEAD.count("|") - 1), flush=True)
    for bb, amp, src in plan:
        for row in bench(bb, amp_dtype(amp, device), src, args, device):
            out.add(row)
            print(table_line(row, out.fields["rows"]), flush=True)
    rows = out.fields["rows"]
    text = table(rows)
    ratios = layout_ratios(rows)
    if ratios:
        text += "\n\n" + ratios
    print("\n" + text)
    out.finish(table=text)
    print(f"wrote {out.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
