"""CPU seconds per clip of TorchVideoLoader in this checkout against another checkout of mcl_fast,
interleaved in one run: what a change to the torch loader's view path costs or saves.

Each measurement is a fresh process (PYTHONPATH = the checkout, one torch thread, num_workers=0,
so the process's CPU time is the loader's): a loader over every video of --store (16 frames at
stride 2, the default two views with the paper's augmentation, batch 4), one warm-up batch, then
--epochs epochs; CPU s per clip = process CPU time / clips. Checkouts alternate, --repeats times
per size; the table gives medians.

    git worktree add /tmp/baseline <commit>
    python benchmarks/torch_loader_cpu.py --store STORE --baseline /tmp/baseline [--sizes 112 224]

Prints a Markdown table and writes JSON (default benchmarks/results/torch_loader_cpu.json).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from _results import write_results  # noqa: E402 (benchmarks/_results.py)

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "torch_loader_cpu.json"

# Run in a child process with the checkout under test first on sys.path.
MEASURE = r'''
import sys, time, warnings
import torch
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
from mcl_fast.data import TorchVideoLoader
from mcl_fast.motion.store import MotionStore
store, size, epochs = MotionStore(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
loader = TorchVideoLoader(list(store.videos), store, 4, clip_len=16, stride=2, size=size, num_workers=0,
                          drop_last=False, seed=0)
next(iter(loader))  # warm-up: imports, first decodes, planning caches
start, clips = time.process_time(), 0
for _ in range(epochs):
    for batch in loader:
        clips += int(batch["index"].shape[0])
print((time.process_time() - start) / clips)
'''


def cpu_per_clip(checkout: Path, store: Path, size: int, epochs: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(store), str(size), str(epochs)], env=env,
                          capture_output=True, text=True, cwd="/")
    if done.returncode != 0:
        raise RuntimeError(f"measuring {checkout} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of mcl_fast")
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    checkouts = {"baseline": args.baseline.resolve(), "this": ROOT}
    rows = []
    for size in args.sizes:
        runs = {name: [] for name in checkouts}
        for _ in range(args.repeats):
            for name, path in checkouts.items():
                runs[name].append(cpu_per_clip(path, args.store, size, args.epochs))
        base, this = statistics.median(runs["baseline"]), statistics.median(runs["this"])
        rows.append({"size": size, "baseline_cpu_s_per_clip": base, "this_cpu_s_per_clip": this,
                     "speedup": base / this, "runs": runs})
    print(f"TorchVideoLoader, {args.store}, 16 frames at stride 2, two views (paper augmentation), batch 4, "
          f"workers 0, one thread; median of {args.repeats}; load {os.getloadavg()[0]:.1f}\n")
    print("| size | baseline CPU-s/clip | this CPU-s/clip | speed-up |")
    print("| ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['size']}² | {r['baseline_cpu_s_per_clip']:.3f} | {r['this_cpu_s_per_clip']:.3f} | "
              f"{r['speedup']:.2f}× |")
    write_results(args.json, store=str(args.store), baseline=str(args.baseline), rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
