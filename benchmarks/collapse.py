"""Why MoCo "collapses" on the CPU runs: one short in-memory MoCo run per setting, side by side.

    python benchmarks/collapse.py                 # small: 80 steps at 32x40, ~5 minutes on 2 cores
    python benchmarks/collapse.py --scale issue   # the issue's scale: 48x64 clips, width 16, batch 32, queue 1024

Every run trains MoCo (mcl_fast.moco + mcl_fast.losses) on rendered action videos (mcl_fast.eval.actions)
held in memory, with the loaders' augmentation (the per-view draw of tests/plan_reference.py, which the
planner's batched draws equal, and its torch twin), and reports over the last quarter of the steps: the InfoNCE loss, acc1 (the positive
ranked first among the step's logits), batch_acc1 (a query's own key ranked first among this
step's keys: chance 100 / batch), and the keys' mean pairwise cosine; and, for queue runs, the
similarity of the queries to the keys queued one step ago and to the oldest queued keys.
acc1 far above batch_acc1 with batch_acc1 at chance is the freshness shortcut (docs/collapse.md).
Prints a table and writes JSON (default benchmarks/results/collapse.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "tests"):  # the package, and the per-view augmentation draw (plan_reference)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SCALES = {
    "small": dict(frames=24, height=32, width=40, object_size=6, size=32, clip_len=4, width_mult=8, dim=32,
                  hidden=32, batch=16, queue=256, steps=80, videos=48),
    "issue": dict(frames=48, height=48, width=64, object_size=10, size=48, clip_len=8, width_mult=16, dim=128,
                  hidden=128, batch=32, queue=1024, steps=250, videos=400),
}

# name -> (scene: "shared" (one scene for all videos) or "own", overrides of the run settings)
SETTINGS = {
    "own scene, full aug, m 0.99, queue": ("own", {}),
    "own scene, no colour jitter": ("own", {"jitter_p": 0.0}),
    "own scene, no greyscale": ("own", {"gray_p": 0.0}),
    "own scene, no blur": ("own", {"blur_p": 0.0}),
    "own scene, no photometric aug": ("own", {"augment": False}),
    "shared scene, full aug, m 0.99, queue": ("shared", {}),
    "shared scene, m 0.9": ("shared", {"momentum": 0.9}),
    "shared scene, m 0.999": ("shared", {"momentum": 0.999}),
    "shared scene, no BN in the backbone": ("shared", {"norm": False}),
    "shared scene, negatives from the step (queue 0)": ("shared", {"queue": 0}),
    "own scene, no photometric aug, queue 0": ("own", {"augment": False, "queue": 0}),
}


def render(scene: str, s: dict) -> np.ndarray:
    from mcl_fast.eval.actions import SHAPE_CLASSES, render_action

    return np.stack([render_action(SHAPE_CLASSES[i % 4], num_frames=s["frames"], height=s["height"], width=s["width"],
                                   object_size=s["object_size"], pan_max=0.0, active_fraction=1.0,
                                   scene_seed=0 if scene == "shared" else None, seed=i)[0]
                     for i in range(s["videos"])])


def run(videos: np.ndarray, s: dict, seed: int = 0) -> dict:
    """One MoCo run; returns the late-run means of the logged quantities."""
    import plan_reference
    from mcl_fast.data.augment import apply_view
    from mcl_fast.data.views import PAPER
    from mcl_fast.diagnostics import contrastive_diagnostics
    from mcl_fast.losses import MCLLoss
    from mcl_fast.models import build_backbone
    from mcl_fast.moco import MoCo
    from mcl_fast.sampling import clip_frame_indices, random_clip_start, random_crop_box

    # The setting's photometric augmentation: the paper's, with its jitter/greyscale/blur chances replaced.
    aug = dataclasses.replace(PAPER, jitter_p=s.get("jitter_p", PAPER.jitter_p),
                              grayscale_p=s.get("gray_p", PAPER.grayscale_p), blur_p=s.get("blur_p", PAPER.blur_p))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MoCo(build_backbone("tiny", width=s["width_mult"], norm=s.get("norm", True)), dim=s["dim"],
                 hidden=s["hidden"], queue_size=s["queue"], momentum=s.get("momentum", 0.99), tau=0.1)
    opt = torch.optim.SGD([p for p in model.encoder_q.parameters() if p.requires_grad], lr=0.05, momentum=0.9,
                          weight_decay=1e-4)
    criterion, rows = MCLLoss(), []
    n, h, w = videos.shape[1:4]
    for _ in range(s["steps"]):
        views = [], []
        for i in rng.choice(len(videos), s["batch"], replace=False):
            frames = clip_frame_indices(random_clip_start(n, s["clip_len"], 2, rng), s["clip_len"], 2, n)
            clip = torch.from_numpy(videos[i][frames])
            for view in views:
                view.append(apply_view(clip, random_crop_box(rng, h, w),
                                       plan_reference.draw_view_aug(rng, s["size"], s.get("augment", True), aug), s["size"]))
        ptr, before = int(model.queue_ptr), model.queue.clone()
        out = model(torch.stack(views[0]), torch.stack(views[1]))
        terms = criterion(out)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        row = {k: float(v.detach()) for k, v in {**terms, **contrastive_diagnostics(out)}.items()}
        if len(before) >= 2 * s["batch"]:  # queries against the keys queued 1 and K / B steps ago
            b, k = s["batch"], len(before)
            q = out["q"].detach()
            row["sim_newest"] = float((q @ before[[(ptr - b + j) % k for j in range(b)]].t()).mean())
            row["sim_oldest"] = float((q @ before[[(ptr + j) % k for j in range(b)]].t()).mean())
            row["sim_positive"] = float((q * out["k"]).sum(1).mean())
        rows.append(row)
    tail = rows[-max(1, s["steps"] // 4):]
    late = {k: float(np.mean([r[k] for r in tail])) for k in tail[0]}
    late["acc1_peak"] = float(max(np.mean([r["acc1"] for r in rows[i:i + 10]]) for i in range(0, len(rows), 10)))
    return late


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--settings", default=None, help="a subset of the setting names, separated by \";\"")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "collapse.json"))
    args = parser.parse_args(argv)
    from mcl_fast._io import atomic_write_json

    base = SCALES[args.scale]
    names = [n.strip() for n in args.settings.split(";")] if args.settings else list(SETTINGS)
    videos, results, t0 = {}, {}, time.perf_counter()
    for name in names:
        scene, overrides = SETTINGS[name]
        if scene not in videos:
            videos[scene] = render(scene, base)
        c0 = time.process_time()
        results[name] = run(videos[scene], {**base, **overrides})
        results[name]["cpu_s"] = time.process_time() - c0
        print(f"{name}: {json.dumps({k: round(v, 3) for k, v in results[name].items()})}", flush=True)
    chance = 100 / base["batch"]
    lines = [f"MoCo collapse ({args.scale}: {base['steps']} steps, batch {base['batch']}, queue {base['queue']} unless "
             f"0, lr 0.05; last quarter of the steps; batch_acc1 chance {chance:.1f} %)", "",
             "| setting | loss | acc1 (peak) | batch_acc1 | key cosine | q·k / q·newest / q·oldest |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        sims = (f"{r['sim_positive']:.2f} / {r['sim_newest']:.2f} / {r['sim_oldest']:.2f}"
                if "sim_positive" in r else "–")
        lines.append(f"| {name} | {r['loss']:.2f} | {r['acc1']:.1f} ({r['acc1_peak']:.1f}) | {r['batch_acc1']:.1f} | "
                     f"{r['key_cos']:.2f} | {sims} |")
    print("\n" + "\n".join(lines) + f"\n\ntotal {time.perf_counter() - t0:.0f} s")
    atomic_write_json(Path(args.json), {"scale": args.scale, "settings": base, "results": results,
                                        "command": "python benchmarks/collapse.py " + " ".join(argv or sys.argv[1:])})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
