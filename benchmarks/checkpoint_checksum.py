"""The checkpoint checksum's cost: save and load of a real pretraining state, with and without it,
interleaved in one run.

The state is what `mcl-fast pretrain` writes for --backbone (default r2plus1d_50, the paper's
R(2+1)D-50: both encoders, SGD momentum buffers and a --queue x 128 queue). Rows (median of
--repeats, wall seconds, one torch thread):
- digest: state_checksums alone (every tensor's bytes through xxh3-64);
- save: torch.save to a file (the cost without checksums) vs checkpoint.atomic_torch_save (the
  checksums, torch.save, fsync, rename);
- load: torch.load(weights_only=True) vs checkpoint.load_checkpoint (the same plus the check).

    python benchmarks/checkpoint_checksum.py [--backbone r2plus1d_50] [--queue 65536] [--repeats 3]

Prints a Markdown table and writes JSON (default benchmarks/results/checkpoint_checksum.json).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from _results import write_results  # noqa: E402 (benchmarks/_results.py)
from mcl_fast.checkpoint import atomic_torch_save, load_checkpoint, state_checksums  # noqa: E402
from mcl_fast.models import build_backbone  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "checkpoint_checksum.json"


def training_state(backbone: str, queue: int) -> dict:
    """A checkpoint-shaped state: both encoders' weights, momentum buffers, a queue, plain values."""
    net = build_backbone(backbone)
    weights = {f"encoder_{e}.backbone.{k}": v.clone() for e in "qk" for k, v in net.state_dict().items()}
    weights["queue"] = torch.randn(128, queue)
    momentum = {i: {"momentum_buffer": torch.randn_like(p)} for i, p in enumerate(net.parameters())}
    return {"model": weights, "optimizer": {"state": momentum, "param_groups": [{"lr": 0.03}]}, "step": 1000,
            "epoch": 3, "config": {"model": {"backbone": backbone}}}


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="r2plus1d_50")
    parser.add_argument("--queue", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    state = training_state(args.backbone, args.queue)
    nbytes = sum(t.numel() * t.element_size() for t in _tensors(state))
    with tempfile.TemporaryDirectory() as tmp:
        plain, checked = Path(tmp) / "plain.pt", Path(tmp) / "checked.pt"
        rows = [
            ("digest (state_checksums)", None, median_time(lambda: state_checksums(state), args.repeats)),
            ("save", median_time(lambda: torch.save(state, plain), args.repeats),
             median_time(lambda: atomic_torch_save(state, checked), args.repeats)),
            ("load", median_time(lambda: torch.load(plain, weights_only=True), args.repeats),
             median_time(lambda: load_checkpoint(checked), args.repeats)),
        ]
    print(f"{args.backbone} state, {nbytes / 1e6:.0f} MB of tensors, median of {args.repeats}, one thread\n")
    print("| what | without checksums s | with checksums s | with / without |")
    print("|---|--:|--:|--:|")
    for name, off, on in rows:
        without, ratio = (f"{off:.3f}", f"{on / off:.2f}") if off else ("–", "–")
        print(f"| {name} | {without} | {on:.3f} | {ratio} |")
    write_results(args.json, backbone=args.backbone, queue=args.queue, tensor_bytes=nbytes, repeats=args.repeats,
                  rows=[{"what": n, "without_s": off, "with_s": on} for n, off, on in rows])
    return 0


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


if __name__ == "__main__":
    sys.exit(main())
