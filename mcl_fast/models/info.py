"""`mcl-fast models`: per backbone, parameters, multiply-adds at a clip size, last-stage shape, MAL tap.

    mcl-fast models                          # every backbone, 16x224^2 clips (2D backbones: 1 frame)
    mcl-fast models --size 112 --clip-len 8 r2plus1d_50 s3d
    mcl-fast models --json                   # the same as JSON

Multiply-adds are counted by `torch.utils.flop_counter.FlopCounterMode` on the meta device (no
weights are allocated, nothing runs): its FLOPs count a multiply-add as 2, so MACs = FLOPs / 2; it
counts convolutions and matrix products only (BN, ReLU and pooling are a few per cent more). The
paper's Table 3 counts the same way (R(2+1)D-50: 27.3 M parameters, 20.4 G per 16x224^2 clip).
"""
from __future__ import annotations

import argparse
import json
import sys

# The paper's Table 3 (parameters in millions, multiply-adds in G at its input: 16x224^2 clips for
# the 3D networks, one 224^2 frame for ResNet-50). Table 1's I2D has no figures in the paper.
PAPER_TABLE3 = {
    "r2plus1d_50": (27.3, 20.4),
    "s3d": (7.9, 18.4),
    "r2d_50": (23.5, 4.12),
}


def describe(name: str, clip_len: int | None = None, size: int = 224) -> dict:
    """Facts about one backbone at a (clip_len x size x size) clip, batch 1.

    clip_len None: 16 for the 3D backbones, 1 for the 2D ones (how the paper feeds them).
    Returns name, params (count), macs (count), input [T, H, W], last_stage [C, T', H', W'],
    mal_layer, mal_shape [C, T', H', W'], feature_dim, temporal, paper_params_m, paper_gmacs.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from . import FRAME_BACKBONES, build_backbone, count_parameters

    if clip_len is None:
        clip_len = 1 if name in FRAME_BACKBONES else 16
    with torch.device("meta"):
        model = build_backbone(name).eval()
        x = torch.empty(1, 3, clip_len, size, size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model._tap_active = True  # keep the tapped map without building an autograd graph
            try:
                last = model.forward_features(x)
                tapped = model._tapped
            finally:
                model._tap_active, model._tapped = False, None
    paper = PAPER_TABLE3.get(name, (None, None))
    return {"name": name, "params": count_parameters(model), "macs": counter.get_total_flops() // 2,
            "input": [clip_len, size, size], "last_stage": list(last.shape[1:]), "mal_layer": model.mal_layer,
            "mal_shape": list(tapped.shape[1:]), "feature_dim": model.feature_dim, "temporal": model.temporal,
            "paper_params_m": paper[0], "paper_gmacs": paper[1]}


def table(rows: list[dict]) -> str:
    """A Markdown table of `describe` rows, with Table 3's figures beside ours."""
    head = ("| backbone | input T×H×W | params (M) | GMACs | Table 3 params / GMACs | last stage C×T×H×W "
            "| MAL tap | tap shape |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        paper = (f"{r['paper_params_m']} M / {r['paper_gmacs']} G" if r["paper_params_m"] is not None else "—")
        lines.append(f"| {r['name']} | {'×'.join(map(str, r['input']))} | {r['params'] / 1e6:.2f} | "
                     f"{r['macs'] / 1e9:.2f} | {paper} | {'×'.join(map(str, r['last_stage']))} | "
                     f"`{r['mal_layer']}` | {'×'.join(map(str, r['mal_shape']))} |")
    return "\n".join(lines)


def add_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("backbones", nargs="*", metavar="BACKBONE", help="backbones to describe (default: all)")
    parser.add_argument("--clip-len", type=int, default=None,
                        help="frames per clip (default: 16, and 1 for the 2D backbones r2d_50 / i2d)")
    parser.add_argument("--size", type=int, default=224, help="clip height and width (default 224)")
    parser.add_argument("--json", action="store_true", help="print JSON (a list of objects) instead of the table")
    return parser


def run(args: argparse.Namespace) -> int:
    from . import BACKBONES

    names = args.backbones or list(BACKBONES)
    unknown = [n for n in names if n not in BACKBONES]
    if unknown:
        print(f"mcl-fast models: unknown backbone(s) {unknown}; choose from {sorted(BACKBONES)}", file=sys.stderr)
        return 2
    if (args.clip_len is not None and args.clip_len < 1) or args.size < 1:
        print("mcl-fast models: --clip-len and --size must be >= 1", file=sys.stderr)
        return 2
    rows = []
    for name in names:
        try:
            rows.append(describe(name, args.clip_len, args.size))
        except RuntimeError as e:  # a clip too small for the network (e.g. < 4 frames for r2plus1d_50)
            print(f"mcl-fast models: {name} does not take a {args.clip_len}x{args.size}^2 clip: "
                  f"{str(e).splitlines()[0]}", file=sys.stderr)
            return 2
    print(json.dumps(rows, indent=1) if args.json else table(rows))
    return 0


__all__ = ["describe", "table", "PAPER_TABLE3", "add_args", "run"]
