"""A scaled-down ablation of the paper's claims (Tables 1-2) on a synthetic action dataset.

    python benchmarks/ablation.py --preset smoke   # 2-3 minutes: checks the pipeline runs
    python benchmarks/ablation.py --preset cpu     # ~13 min on the 2-core VM (<= 30 loaded): BENCHMARKS.md
    python benchmarks/ablation.py --preset gpu     # larger data, backbone and budget
    python benchmarks/ablation.py --preset warm    # the cpu data and budget from an image-MoCo warm start (~31 min)
    python benchmarks/ablation.py --preset warm-shortcut   # the same on scenes from a pool of 64 (~30 min)
    python benchmarks/ablation.py --preset smoke --warm-start 20   # the warm path's pipeline check

The dataset (mcl_fast.eval.actions): classes defined by how a small object moves (horizontal,
vertical, circle, jitter), amid static distractors; the object moves only during part of each
video. In the cpu preset every video shares one scene (background, distractors, object texture:
`scene_seed`), so nothing but the motion tells videos or classes apart, and pretraining uses crops
only (`augment=False`; docs/collapse.md). Rows:

  supervised  the same backbone trained with labels (mcl_fast.eval.finetune, the trainer's loop):
              the ceiling of what this backbone and data allow
  random init the untrained backbone (the same weights every pretraining seed starts from)
  random init, BN statistics   the same, its BN running statistics measured on the training
              clips (an untrained network's eval-mode BN normalises with mean 0, variance 1;
              a pretrained one's with the data's statistics: this row separates the two effects)
  moco        MoCo, random clip and random crop (the baseline)
  +TA         motion-focused clip (T-motion above the median), random crop
  +TA+SA      motion-focused clip and crop (S-motion: the paper's sampling)
  +MAL v1     +TA+SA with the motion alignment loss, v1 (activation maps), terms S, T, ST
  +MAL v3     +TA+SA with the MAL v3 (gradient maps, the paper's), terms S, T, ST, at λ 1 (the
              paper's weight), and in the warm preset also at λ 0.5 and 2
  image-MoCo init (no video)   with a warm start only: the inflated 2D network, no video pretraining

The warm preset is the paper's regime at this scale (issue 22, item 1): the paper starts from an
ImageNet-MoCo network; here the demo's image-level MoCo (mcl_fast.image_moco, `mcl_fast.demo.image_stage`,
the same settings) trains tiny's 2D counterpart on frames of the training videos, and every
pretraining row starts from it inflated into tiny (models/inflate.py, "repeat", the demo's default),
with the same budget as every other row. The warm-shortcut preset is the same on data where
appearance is a shortcut (issue 22, item 2): each video's scene comes from a pool of 64 shared
across classes (`scene_pool`), so the scene tells a batch's videos apart but not the classes
(the object is 16 px and always moving there: the supervised ceiling needs it; BENCHMARKS.md).

Every pretraining variant runs through the trainer (mcl_fast.train.train, torch loader) with the
same budget. Every row is then evaluated on frozen features (clips averaged per video): linear
SVM top-1 (features z-scored) and retrieval R@1 (test videos query the training videos); mean ±
std over the seeds, printed as a table and written as JSON. The supervised row also reports its
own classifier's test top-1. The point is to measure: whatever the table shows is the result.

The mechanism columns (mcl_fast.eval.mechanism): on held-out clips (MECHANISM_EPOCHS passes over
the test videos, motion-focused clips, seed MECHANISM_SEED: every row sees the same clips), the
MAL v3 per term as the +MAL v3 rows train it (computed, not trained, for the other rows) and the
InfoNCE below chance (ln of the batch size), the network in evaluation mode. Rows without MoCo
heads are measured as the model pretraining seed s starts from (its random heads on their
backbone: random init, its BN statistics, the image-MoCo init); the supervised row has none ("—").
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

# name -> (sampling mode of the loaders, see mcl_fast.data.plan.MotionSampler; loss overrides)
VARIANTS = {
    "moco": ("random", {"mal": False}),
    "+TA": ("temporal", {"mal": False}),
    "+TA+SA": ("motion", {"mal": False}),
    "+MAL v1": ("motion", {"mal": True, "variant": "v1", "terms": ["s", "t", "st"]}),
    "+MAL v3": ("motion", {"mal": True, "variant": "v3", "terms": ["s", "t", "st"]}),
    "+MAL v3 λ0.5": ("motion", {"mal": True, "variant": "v3", "terms": ["s", "t", "st"], "weight": 0.5}),
    "+MAL v3 λ2": ("motion", {"mal": True, "variant": "v3", "terms": ["s", "t", "st"], "weight": 2.0}),
}

# Pretraining settings shared by the presets (docs/collapse.md: the negatives come from the
# same step, so a fast key encoder cannot win by freshness; momentum suits a run of a few hundred
# steps). A preset can override any of them.
PRETRAIN = dict(queue=0, momentum=0.99, tau=0.1, dim=128, hidden=128, lr=0.05, weight_decay=1e-4)

# The held-out clips of the mechanism columns: outside the presets, so changing them reuses every run.
MECHANISM_SEED, MECHANISM_EPOCHS, MECHANISM_CRITERION = 0, 2, "+MAL v3"

PRESETS = {
    # ~2-3 minutes: a pipeline check, numbers meaningless.
    "smoke": dict(classes=4, videos_per_class=6, num_frames=32, height=48, width=64, object_size=10, pan=0.0,
                  active_fraction=0.75, distractors=2, scene_seed=0, backbone="tiny", size=48, clip_len=8, stride=2,
                  batch=8, epochs=1, seeds=1, eval_clips=2, supervised_epochs=1,
                  variants=["moco", "+MAL v3"]),
    # The CPU table in BENCHMARKS.md: <= 30 minutes on the 2-core VM (216 train / 104 test videos).
    # Pretraining: batch 16 (13 steps per epoch, 22 epochs = 286 steps), crops only (augment=False:
    # with the MoCo v2 photometric augmentation instance discrimination did not start within 300
    # steps on this shared-scene data; with crops only it started after ~200 steps, README "MoCo
    # collapse"; 104 steps left one seed in three learning nothing). Supervised ceiling: lr 0.05 at
    # batch 32, 40 epochs (~270 steps).
    "cpu": dict(classes=4, videos_per_class=80, num_frames=48, height=48, width=64, object_size=10, pan=0.0,
                active_fraction=0.75, distractors=2, scene_seed=0, backbone="tiny", size=48, clip_len=8, stride=2,
                batch=16, epochs=22, augment=False, seeds=3, eval_clips=3, supervised_epochs=40,
                supervised_lr=0.05, supervised_batch=32, loader_workers=2,
                variants=list(VARIANTS)),
    # The cpu data and budget, every pretraining row from the image-MoCo warm start (1000 steps, the
    # demo's) inflated by "repeat"; MoCo, +TA, +TA+SA and the MAL v3 at three weights.
    "warm": dict(classes=4, videos_per_class=80, num_frames=48, height=48, width=64, object_size=10, pan=0.0,
                 active_fraction=0.75, distractors=2, scene_seed=0, backbone="tiny", size=48, clip_len=8, stride=2,
                 batch=16, epochs=22, augment=False, seeds=3, eval_clips=3, supervised_epochs=40,
                 supervised_lr=0.05, supervised_batch=32, loader_workers=2, warm_start=1000, inflate="repeat",
                 variants=["moco", "+TA", "+TA+SA", "+MAL v3", "+MAL v3 λ0.5", "+MAL v3 λ2"]),
    # The warm preset on scenes drawn from a pool of 64 shared across classes (a batch of 16 has
    # ~1.8 pairs of videos sharing a scene): appearance tells videos apart, only motion classes.
    # Object 16 px moving all the time: with the warm preset's 10 px for 75 % of the video the
    # supervised ceiling was 31 % (seed 0; 14 px all the time 87 %, 16 px for 75 % 61 / 97 %).
    "warm-shortcut": dict(classes=4, videos_per_class=80, num_frames=48, height=48, width=64, object_size=16,
                          pan=0.0, active_fraction=1.0, distractors=2, scene_seed=None, scene_pool=64,
                          backbone="tiny", size=48, clip_len=8, stride=2, batch=16, epochs=22, augment=False,
                          seeds=3, eval_clips=3, supervised_epochs=40, supervised_lr=0.05, supervised_batch=32,
                          loader_workers=2, warm_start=1000, inflate="repeat",
                          variants=["moco", "+TA", "+TA+SA", "+MAL v3", "+MAL v3 λ0.5", "+MAL v3 λ2"]),
    # One GPU: more classes, videos, a bigger backbone and budget; per-video scenes.
    "gpu": dict(classes=5, videos_per_class=80, num_frames=64, height=128, width=160, object_size=16, pan=1.0,
                active_fraction=0.5, distractors=2, scene_seed=None, backbone="r3d_18", size=112, clip_len=16,
                stride=2, batch=32, epochs=30, seeds=3, eval_clips=10, supervised_epochs=30, queue=2048,
                momentum=0.999, variants=list(VARIANTS)),
}


# ------------------------------------------------------------------------------------- stages


def build_dataset(work: Path, p: dict, progress: bool):
    """Videos, train/test CSVs and the motion store (Farneback flow: the sampling signal only)."""
    from mcl_fast.data.splits import load_split
    from mcl_fast.eval.actions import SHAPE_CLASSES, make_action_dataset
    from mcl_fast.motion.prepare import prepare

    videos = work / "videos"
    train_csv, test_csv = make_action_dataset(
        videos, classes=SHAPE_CLASSES[:p["classes"]], videos_per_class=p["videos_per_class"],
        num_frames=p["num_frames"], height=p["height"], width=p["width"], object_size=p["object_size"],
        pan_max=p["pan"], active_fraction=p["active_fraction"], num_distractors=p["distractors"],
        scene_seed=p["scene_seed"], scene_pool=p.get("scene_pool"), progress=progress)
    # strict: a video the store could not take fails the run here, naming it, not later in the loader.
    prepare(str(videos), str(work / "store"), flow="farneback", size=min(p["height"], p["width"]), workers=1,
            strict=True, progress=progress)
    train = load_split(train_csv, videos_root=videos)
    test = load_split(test_csv, videos_root=videos, classes=train.classes)
    return videos, train, test


def warm_start(work: Path, p: dict, train_split, videos: Path) -> Path | None:
    """The image-level MoCo warm start (p["warm_start"] steps; None without one): the demo's image
    stage on frames of the training videos -> work/image_moco/tiny2d_<steps>steps.pt (reused)."""
    from mcl_fast._io import atomic_write
    from mcl_fast.demo import image_stage

    steps = p.get("warm_start", 0)
    if not steps:
        return None
    if p["backbone"] != "tiny":
        raise SystemExit(f"the warm start trains tiny's 2D counterpart; this preset's backbone is {p['backbone']}")
    listing = work / "train_videos.txt"
    text = "".join(f"{path}\n" for path in train_split.paths)
    atomic_write(listing, lambda f: f.write(text.encode()))
    return image_stage(listing, videos, work / "image_moco" / f"tiny2d_{steps}steps.pt", steps)


def pretrain(work: Path, p: dict, variant: str, seed: int, train_split, progress: bool,
             init: Path | None = None) -> Path:
    """Pretrain one variant with one seed, from random init or the 2D checkpoint `init` (inflated by
    p["inflate"]); returns its last checkpoint (reused when present)."""
    from mcl_fast.checkpoint import list_checkpoints
    from mcl_fast.train import train

    # The run folder is keyed by the settings, so a changed preset never reuses an old run.
    out = run_folder(work, p, variant, seed)
    done = out / "summary.json"
    if done.is_file() and list_checkpoints(out):
        return list_checkpoints(out)[-1]
    train(pretrain_config(work, p, variant, seed, train_split, progress, init), resume="auto")
    # resume="auto": a run killed before its summary continues; a fresh folder starts.
    return list_checkpoints(out)[-1]


def pretrain_config(work: Path, p: dict, variant: str, seed: int, train_split, progress: bool = False,
                    init: Path | None = None) -> dict:
    """The trainer's config of one variant and seed (demo_cpu with the preset's settings)."""
    from mcl_fast.train import load_config

    sampling, loss = VARIANTS[variant]
    out = run_folder(work, p, variant, seed)
    config = load_config("demo_cpu")
    config = copy.deepcopy(config)
    config["name"] = f"ablation {variant} seed {seed}"
    config["output"] = str(out)
    config["model"].update(backbone=p["backbone"], queue_size=p["queue"], momentum=p["momentum"], tau=p["tau"],
                           dim=p["dim"], hidden=p["hidden"])
    if init:
        config["model"].update(init=str(init), backbone_kwargs={"inflate": p.get("inflate", "repeat")})
    config["loss"].update(loss)
    config["data"].update(loader="torch", store=str(work / "store"), videos=list(train_split.paths),
                          batch_size=p["batch"], clip_len=p["clip_len"], stride=p["stride"], size=p["size"],
                          sampling=sampling, preset="paper", augment=p.get("augment", True),
                          num_workers=p.get("loader_workers", 1))
    config["optim"].update(lr=p["lr"], weight_decay=p["weight_decay"], epochs=p["epochs"],
                           warmup_epochs=min(1, p["epochs"] - 1))
    config["train"].update(device="auto", amp="auto", seed=seed, tensorboard=False, plot=False, progress=progress)
    config["checkpoint"].update(every_steps=0, keep=1)
    return config


def run_folder(work: Path, p: dict, name: str, seed: int) -> Path:
    """The run folder of one row and seed, keyed by the settings: a changed preset never reuses a run."""
    budget = hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:8]
    return work / "runs" / budget / name.replace(" ", "_").replace("+", "p") / f"seed{seed}"


def supervised(work: Path, p: dict, seed: int, train_split, test_split, videos: Path, progress: bool):
    """Train the backbone from scratch with labels through mcl_fast.eval.finetune (the trainer's
    loop): a random clip and crop per video and epoch. Returns (backbone, its classifier's test
    top-1); the fine-tuned checkpoint is reused when present."""
    import torch

    from mcl_fast.checkpoint import load_backbone, load_checkpoint
    from mcl_fast.eval.finetune import FinetuneConfig, finetune
    from mcl_fast.models import build_backbone

    out = run_folder(work, p, "supervised", seed) / "finetuned.pt"
    if not out.is_file() or load_checkpoint(out)["finetune"].get("top1") is None:
        settings = eval_settings(p)
        torch.manual_seed(seed)
        net = build_backbone(p["backbone"])
        config = {"model": {"backbone": p["backbone"]},
                  "data": {"clip_len": p["clip_len"], "stride": p["stride"], "size": p["size"]}}
        cfg = FinetuneConfig(epochs=p["supervised_epochs"], batch_size=p.get("supervised_batch", p["batch"]),
                             lr=p.get("supervised_lr", 0.05 * 8 / p["batch"]),
                             dropout=0.0, num_test_clips=p["eval_clips"], num_workers=0, seed=seed)
        finetune(net, config, train_split, test_split, videos, train_settings=settings, config=cfg, out=out,
                 device="auto", progress=progress)
    backbone, _ = load_backbone(out)
    return backbone, float(load_checkpoint(out)["finetune"]["top1"])


def supervised_row(work: Path, p: dict, seed: int, train_split, test_split, videos: Path, cache: Path,
                   progress: bool) -> dict:
    """The supervised ceiling of one seed: trained (or reused), its frozen features evaluated."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    net, classifier_top1 = supervised(work, p, seed, train_split, test_split, videos, progress)
    result = {"seed": seed, **timing(run_folder(work, p, "supervised", seed), t0, c0),
              "classifier_top1": classifier_top1}
    result.update(evaluate(net, train_split, test_split, videos, p, cache, f"supervised-{seed}-"
                           f"{run_folder(work, p, 'supervised', seed).parent.parent.name}", progress))
    print(f"supervised seed {seed}: SVM top-1 {100 * result['top1']:.1f} %, its classifier "
          f"{100 * classifier_top1:.1f} % ({result['train_s']:.0f} s)", flush=True)
    return result


def eval_settings(p: dict):
    from mcl_fast.eval.features import ClipSettings

    return ClipSettings(num_clips=p["eval_clips"], clip_len=p["clip_len"], stride=p["stride"], crop_size=p["size"],
                        short_side=min(p["height"], p["width"]))


def timing(run: Path, t0: float, c0: float) -> dict:
    """{"train_s", "train_cpu_s"} of a run: measured now and kept in run/timing.json, or, for a
    run reused from an earlier invocation (which took no time now), read back from that file."""
    from mcl_fast._io import atomic_write_json

    path = run / "timing.json"
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if wall < 5 and path.is_file():
        return json.loads(path.read_text())
    times = {"train_s": wall, "train_cpu_s": cpu}
    atomic_write_json(path, times)
    return times


def cpu_seconds() -> float:
    """CPU seconds of this process's tree: the loaders' forkserver workers included (_proc)."""
    from _proc import tree_cpu_seconds  # this folder: the script's own

    return tree_cpu_seconds()


def evaluate(backbone, train_split, test_split, videos: Path, p: dict, cache: Path, key: str, progress: bool) -> dict:
    from mcl_fast.eval.features import split_features
    from mcl_fast.eval.linear import linear_svm_top1
    from mcl_fast.eval.retrieval import recall_at_k

    settings = eval_settings(p)
    kw = dict(checkpoint_hash=key, cache_dir=cache, progress=progress, batch_size=8 * p["eval_clips"], num_workers=2)
    tr_x, tr_y = split_features(backbone, train_split, videos, settings, **kw)
    te_x, te_y = split_features(backbone, test_split, videos, settings, **kw)
    # Standardised features: the tiny backbones' feature scales differ by orders of magnitude
    # between variants (and at random init), which a fixed C = 1 would turn into different
    # regularisation strengths. Retrieval (cosine) is scale-free and uses the raw features.
    return {"top1": linear_svm_top1(tr_x, tr_y, te_x, te_y, standardize=True),
            "r1": recall_at_k(te_x, te_y, tr_x, tr_y, ks=(1,))[1]}


def held_out_setup(work: Path, p: dict, train_split, test_split) -> tuple:
    """(criterion, batches) every row's mechanism columns share: the MAL of the MECHANISM_CRITERION
    rows, on MECHANISM_EPOCHS passes over the test videos (motion-focused clips, MECHANISM_SEED)."""
    from mcl_fast.eval.mechanism import held_out_batches, mal_criterion

    config = pretrain_config(work, p, MECHANISM_CRITERION, 0, train_split)
    batches = held_out_batches(config, test_split.paths, seed=MECHANISM_SEED, epochs=MECHANISM_EPOCHS)
    return mal_criterion(config), batches


def held_out(model, setup: tuple) -> dict:
    """A MoCo model's held-out MAL per term and InfoNCE (mcl_fast.eval.mechanism), rounded; on the GPU if any."""
    import torch

    from mcl_fast.eval.mechanism import held_out_mechanism

    criterion, batches = setup
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    return {k: round(v, 4) for k, v in held_out_mechanism(model, criterion, batches).items()}


def starting_model(work: Path, p: dict, seed: int, train_split, init: Path | None = None, backbone=None):
    """The model pretraining seed `seed` starts from (random heads; the backbone random, inflated
    from `init`, or, given, `backbone`'s weights and BN statistics in both encoders)."""
    from mcl_fast.eval.mechanism import initial_model

    model = initial_model(pretrain_config(work, p, "moco", seed, train_split, init=init), seed)
    if backbone is not None:
        for encoder in (model.encoder_q, model.encoder_k):
            encoder.backbone.load_state_dict(backbone.state_dict())
    return model


def _last_row(run: Path) -> dict:
    """The last logged training row's loss and diagnostics (acc1, batch_acc1, key_cos), rounded."""
    history = json.loads((run / "history.json").read_text()) if (run / "history.json").is_file() else []
    keys = ("loss", "nce", "mal", "acc1", "batch_acc1", "key_cos", "queue_cos")
    return {k: round(history[-1][k], 3) for k in keys if history and k in history[-1]}


# The held-out mechanism values the table reports (keys of mcl_fast.eval.mechanism.held_out_mechanism).
HELD_OUT = ("mal_s", "mal_t", "mal_st", "nce", "below_chance", "chance")


def _held_out_stats(runs: list[dict]) -> dict:
    """{key_mean, key_std} of each HELD_OUT value over the runs; {} when a run has none."""
    if not all("held_out" in r for r in runs):
        return {}
    out = {}
    for key in HELD_OUT:
        values = np.array([r["held_out"][key] for r in runs])
        out.update({f"{key}_mean": float(values.mean()), f"{key}_std": float(values.std())})
    return out


def summarize(rows: dict) -> list[dict]:
    table = []
    for name, runs in rows.items():
        top1 = np.array([r["top1"] for r in runs]) * 100
        r1 = np.array([r["r1"] for r in runs]) * 100
        table.append({"variant": name, "seeds": len(runs), **_held_out_stats(runs), "top1_mean": float(top1.mean()),
                      "top1_std": float(top1.std()), "r1_mean": float(r1.mean()), "r1_std": float(r1.std()),
                      "train_s": float(np.mean([r.get("train_s") or np.nan for r in runs])),
                      "train_cpu_s": float(np.mean([r.get("train_cpu_s") or np.nan for r in runs])),
                      "classifier_top1": (float(np.mean([r["classifier_top1"] for r in runs])) * 100
                                          if all("classifier_top1" in r for r in runs) else None)})
    return table


def _seconds(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.0f}"


def _held_out_cells(row: dict) -> str:
    """The MAL S, T, ST, InfoNCE and below-chance cells of a table row ("—" without a MoCo head)."""
    if "nce_mean" not in row:
        return " — | — | — | — | — |"
    return "".join(f" {row[f'{k}_mean']:.3f} ± {row[f'{k}_std']:.3f} |"
                   for k in ("mal_s", "mal_t", "mal_st", "nce", "below_chance"))


def format_table(table: list[dict], p: dict, preset: str) -> str:
    chance = next((row["chance_mean"] for row in table if "chance_mean" in row), float("nan"))
    lines = [f"Ablation ({preset}): {p['classes']} classes x {p['videos_per_class']} videos, backbone {p['backbone']}, "
             f"{p['epochs']} epochs x batch {p['batch']} (supervised {p['supervised_epochs']} epochs), "
             f"{p['seeds']} seed(s); frozen features: linear SVM top-1 and R@1 (%); held-out MAL v3 per term "
             f"and InfoNCE (chance {chance:.3f})",
             "", "| row | SVM top-1 (%) | R@1 (%) | MAL S | MAL T | MAL ST | InfoNCE | below chance "
             "| training s/run (CPU s) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in table:
        extra = f" (its classifier: {row['classifier_top1']:.1f})" if row.get("classifier_top1") is not None else ""
        name = row["variant"] + (f" ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})"
                                 if row["seeds"] != p["seeds"] else "")
        lines.append(f"| {name} | {row['top1_mean']:.1f} ± {row['top1_std']:.1f}{extra} | "
                     f"{row['r1_mean']:.1f} ± {row['r1_std']:.1f} |{_held_out_cells(row)} {_seconds(row['train_s'])} "
                     f"({_seconds(row['train_cpu_s'])}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    parser.add_argument("--work", default=None, help="working folder (default: ablation_out/<preset>)")
    parser.add_argument("--json", default=None, help="results JSON (default: <work>/ablation.json)")
    parser.add_argument("--seeds", type=int, default=None, help="override the preset's number of seeds")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--variants", default=None, help="comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--warm-start", type=int, default=None, metavar="STEPS",
                        help="image-MoCo warm start steps for every pretraining row (default: the preset's; 0: off)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (default 1)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from mcl_fast.checkpoint import load_backbone
    from mcl_fast._io import atomic_write_json
    from mcl_fast.eval.baselines import recalibrate_batchnorm
    from mcl_fast.eval.mechanism import pretrained_model
    from mcl_fast.eval.features import file_sha256
    from mcl_fast.models import build_backbone

    p = {**PRETRAIN, **PRESETS[args.preset]}
    if not torch.cuda.is_available():
        # One torch thread: the loader's worker process decodes on the other core, and on a shared
        # machine a second thread mostly spins (the step took 2-3x the CPU time with two).
        torch.set_num_threads(args.threads)
    if args.seeds:
        p["seeds"] = args.seeds
    if args.epochs:
        p["epochs"] = args.epochs
    if args.warm_start is not None:
        p["warm_start"] = args.warm_start
    if args.variants:
        p["variants"] = [v.strip() for v in args.variants.split(",")]
        unknown = [v for v in p["variants"] if v not in VARIANTS]
        if unknown:
            parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    progress = not args.no_progress
    work = Path(args.work or ROOT / "ablation_out" / args.preset)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    videos, train_split, test_split = build_dataset(work, p, progress)
    print(f"dataset: {len(train_split)} train / {len(test_split)} test videos, classes {train_split.classes} "
          f"({time.perf_counter() - t_start:.0f} s)", flush=True)

    rows: dict[str, list[dict]] = {"supervised": [], "random init": [], "random init, BN statistics": []}
    cache = work / "feature_cache"
    init = warm_start(work, p, train_split, videos)
    setup = held_out_setup(work, p, train_split, test_split)
    if init:  # deterministic features: one evaluation; the held-out columns of each seed's random heads
        net = build_backbone(p["backbone"], init=str(init), inflate=p.get("inflate", "repeat"))
        scores = evaluate(net, train_split, test_split, videos, p, cache,
                          f"init-{file_sha256(init)}-{p.get('inflate', 'repeat')}", progress)
        rows["image-MoCo init (no video)"] = [
            {**scores, "seed": seed, "held_out": held_out(starting_model(work, p, seed, train_split, init), setup)}
            for seed in range(p["seeds"])]
    for seed in range(p["seeds"]):
        if seed < p.get("supervised_seeds", p["seeds"]):
            rows["supervised"].append(supervised_row(work, p, seed, train_split, test_split, videos, cache, progress))
        torch.manual_seed(seed)
        net = build_backbone(p["backbone"])
        rows["random init"].append({**evaluate(net, train_split, test_split, videos, p, cache,
                                               f"random-{p['backbone']}-{seed}", progress),
                                    "held_out": held_out(starting_model(work, p, seed, train_split), setup)})
        # The same weights (pretraining seed s starts from them too) with BN statistics of the data:
        # eval-mode BN of an untrained network normalises with mean 0 / variance 1.
        net = recalibrate_batchnorm(net, [videos / v for v in train_split.paths], eval_settings(p))
        rows["random init, BN statistics"].append({
            **evaluate(net, train_split, test_split, videos, p, cache, f"random-bn-{p['backbone']}-{seed}", progress),
            "held_out": held_out(starting_model(work, p, seed, train_split, backbone=net), setup)})
    for variant in p["variants"]:
        rows[variant] = []
        for seed in range(p["seeds"]):
            t0, c0 = time.perf_counter(), cpu_seconds()
            ckpt = pretrain(work, p, variant, seed, train_split, progress, init=init)
            times = timing(ckpt.parent, t0, c0)
            backbone, _ = load_backbone(ckpt)
            result = evaluate(backbone, train_split, test_split, videos, p, cache, file_sha256(ckpt), progress)
            result.update(seed=seed, **times, checkpoint=str(ckpt), last=_last_row(ckpt.parent),
                          held_out=held_out(pretrained_model(ckpt), setup))
            rows[variant].append(result)
            print(f"{variant} seed {seed}: top-1 {100 * result['top1']:.1f} %  R@1 {100 * result['r1']:.1f} %  "
                  f"(pretrain {times['train_s']:.0f} s, {times['train_cpu_s']:.0f} CPU-s; last logged "
                  f"{result['last']}; held out {result['held_out']})", flush=True)

    table = summarize(rows)
    text = format_table(table, p, args.preset)
    total = time.perf_counter() - t_start
    print("\n" + text + f"\n\ntotal {total / 60:.1f} min")
    out = Path(args.json or work / "ablation.json")
    payload = {"preset": args.preset, "settings": p, "table": table, "runs": rows, "total_s": total,
               "command": "python benchmarks/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    atomic_write_json(out, payload)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
