"""How hard the MAL pulls against InfoNCE on the layers they share (issue 22, item 4).

    python benchmarks/mal_pull.py --store demo_out/actions/store --videos demo_out/actions/train_videos.txt \
        --steps 120 --schedule constant|release|ramp [--weight 1] [--init tiny2d.pt]

Trains the demo_cpu recipe (tiny backbone, MoCo without a queue, MAL v3 S+T+ST) with the real
model, criterion, loader and optimiser, and at every step takes the gradients of InfoNCE and of
lambda x MAL separately (two autograd.grad calls: ~2x the cost of a step) on each conv of the
shared backbone, then steps on their sum. Logged per step: both losses, each term's gradient norm
per layer and over the backbone, and the cosine between the two gradients (negative: they pull
against each other). Schedules of lambda: constant; release (2 x weight for the first
`--hold` epochs' worth of steps, then weight: the authors' 2-for-5-epochs); ramp (linear from 0
to weight over `--hold` steps' epochs). Prints a summary, writes JSON (--out).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def mal_lambda(schedule: str, weight: float, step: int, hold_steps: int) -> float:
    """lambda at 0-based `step`: constant, release (2 weight before hold_steps) or a linear ramp from 0."""
    if schedule == "constant":
        return weight
    if schedule == "release":
        return 2 * weight if step < hold_steps else weight
    if schedule == "ramp":
        return weight * min(1.0, step / max(1, hold_steps))
    raise ValueError(f"unknown schedule {schedule!r}")


def layer_grads(loss: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{name: d loss / d param} (zeros where the loss does not reach the parameter)."""
    grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True, allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(params.items(), grads)}


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads.values()])


def conv_params(backbone) -> dict[str, torch.Tensor]:
    """The backbone's conv weights (the layers both losses share), by name."""
    return {n: p for n, p in backbone.named_parameters() if p.dim() == 5}


def measure(args) -> list[dict]:
    from tqdm import tqdm

    from mcl_fast.losses import info_nce
    from mcl_fast.train import build_criterion, build_loader, build_model, build_optimizer, load_config
    from mcl_fast.engine import setup_runtime

    overrides = [f"data.store={args.store}", f"data.videos={args.videos}", f"train.seed={args.seed}",
                 f"model.init={args.init or 'null'}", *args.overrides]
    config = load_config("demo_cpu", overrides)
    torch.manual_seed(args.seed)
    runtime = setup_runtime("cpu", "off", False)
    model = build_model(config).train()
    criterion = build_criterion(config, runtime)
    optimizer = build_optimizer(config, model)
    loader = build_loader(config, torch.device("cpu"), 0, 1)
    params = conv_params(model.encoder_q.backbone)
    hold = args.hold_epochs * len(loader)
    log, step, epoch = [], 0, 0
    bar = tqdm(total=args.steps, desc=f"mal pull ({args.schedule})", unit="step")
    while step < args.steps:
        loader.set_epoch(epoch)
        for batch in loader:
            lam = mal_lambda(args.schedule, args.weight, step, hold)
            out = model(batch["query"], batch["key"], return_features=True)
            nce = info_nce(out["logits"])
            mal, parts = criterion.alignment(out, batch["motion"])
            g_nce, g_mal = layer_grads(nce, params), layer_grads(mal, params)
            a, b = flat(g_nce), lam * flat(g_mal)
            cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0)) if lam > 0 else float("nan")
            log.append({"step": step, "lambda": lam, "nce": nce.item(), "mal": mal.item(),
                        **{f"mal_{k}": v.item() for k, v in parts.items()},
                        "grad_nce": a.norm().item(), "grad_mal": flat(g_mal).norm().item(), "cos": cos,
                        "layers": {n: [g_nce[n].norm().item(), g_mal[n].norm().item()] for n in params}})
            optimizer.zero_grad(set_to_none=True)
            (nce + lam * mal).backward()
            optimizer.step()
            step += 1
            bar.update()
            bar.set_postfix(nce=f"{nce.item():.3f}", mal=f"{mal.item():.3f}")
            if step >= args.steps:
                break
        epoch += 1
    bar.close()
    return log


def summary(log: list[dict], window: int = 10) -> str:
    """Means over the first and last `window` steps."""
    def mean(rows, key):
        vals = [r[key] for r in rows if not math.isnan(r[key])]
        return sum(vals) / len(vals) if vals else float("nan")

    lines = [f"{'':>8}{'nce':>8}{'mal':>8}{'|g_nce|':>10}{'|g_mal|':>10}{'ratio':>8}{'cos':>8}"]
    for name, rows in (("first", log[:window]), ("last", log[-window:])):
        gn, gm = mean(rows, "grad_nce"), mean(rows, "grad_mal")
        lines.append(f"{name:>8}{mean(rows, 'nce'):8.3f}{mean(rows, 'mal'):8.3f}{gn:10.3g}{gm:10.3g}"
                     f"{gm / gn:8.2f}{mean(rows, 'cos'):8.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--videos", required=True)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--schedule", choices=("constant", "release", "ramp"), default="constant")
    parser.add_argument("--weight", type=float, default=1.0, help="lambda (after the schedule's first phase)")
    parser.add_argument("--hold-epochs", type=float, default=2.0, help="epochs of the release's 2x / the ramp")
    parser.add_argument("--init", default=None, help="a 2D checkpoint to inflate (model.init)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON log")
    parser.add_argument("overrides", nargs="*", help="demo_cpu config overrides key=value")
    args = parser.parse_args(argv)
    log = measure(args)
    print(summary(log))
    if args.out:
        from mcl_fast._io import atomic_write_json

        atomic_write_json(args.out, {"args": vars(args), "log": log})
    return 0


if __name__ == "__main__":
    sys.exit(main())
