"""The demo's labelled action data and its evaluation: pretrained vs random init (vs supervised).

`make_demo_actions` writes a small synthetic action dataset (mcl_fast.eval.actions: 4 classes
told apart only by how a small object moves, during 3/4 of each video, amid static distractors,
every video in one shared scene) with 204 training and 300 held-out videos. `make demo`
pretrains on its training videos, then `run_demo_evaluation` measures the checkpoint's frozen
features beside the same backbone at random initialisation, as it is and with its BN statistics
measured on the data (eval/baselines.py), at the warm start it began from (the inflated image-level
MoCo network, no video pretraining) and, if asked, trained with labels, with one protocol:
clip-averaged features, a linear SVM on z-scored features, a softmax probe and retrieval R@1 on the
held-out videos. It also draws Grad-CAM before pretraining beside after it, with each map's cosine
to the clip's S-motion. The gap's noise band is paired (both backbones are scored on the same
held-out videos: gap_and_noise; BENCHMARKS.md, the demo's recipe, has the measurement).
"""
from __future__ import annotations

import math
from pathlib import Path

# The demo's action videos: the ablation's cpu data (benchmarks/ablation.py), fewer per class.
DEMO_ACTIONS = dict(num_frames=48, height=48, width=64, object_size=10, pan_max=0.0, active_fraction=0.75,
                    num_distractors=2, scene_seed=0)


def make_demo_actions(root, *, videos_per_class: int = 76, test_per_class: int | None = None,
                      progress: bool = True) -> dict:
    """Write root/videos (4 classes; per class, the first videos_per_class - round(videos_per_class / 3)
    for training, then test_per_class held out, default the rest of videos_per_class), train.csv /
    test.csv and train_videos.txt (the training paths, for `data.videos`).

    A larger test_per_class only adds videos after the training ones (each video's pixels depend on
    its index alone), so the training set, and the pretraining on it, stay the same.
    Returns {"videos", "train_csv", "test_csv", "train_list"} paths. Existing videos are kept.
    """
    from .._io import atomic_write
    from .actions import SHAPE_CLASSES, make_action_dataset

    num_train = videos_per_class - max(1, round(videos_per_class / 3))  # the split make_action_dataset's 0.33 gives
    num_test = videos_per_class - num_train if test_per_class is None else test_per_class
    if num_train < 1 or num_test < 1:
        raise ValueError(f"the demo's action data needs training and test videos: videos_per_class={videos_per_class} "
                         f"gives {num_train} training and test_per_class={test_per_class} {num_test} test videos")
    total = num_train + num_test
    root = Path(root)
    videos = root / "videos"
    train_csv, test_csv = make_action_dataset(videos, classes=SHAPE_CLASSES[:4], videos_per_class=total,
                                              test_fraction=num_test / total, progress=progress, **DEMO_ACTIONS)
    paths = [line.split(",")[0] for line in train_csv.read_text().splitlines()[1:] if line.strip()]
    train_list = root / "train_videos.txt"
    atomic_write(train_list, lambda f: f.write(("\n".join(paths) + "\n").encode()))
    return {"videos": videos, "train_csv": train_csv, "test_csv": test_csv, "train_list": train_list}


def probe(backbone, train, test, videos, settings, cache_dir, key: str, progress: bool) -> dict:
    """Frozen features of one backbone: SVM (z-scored) and softmax-probe top-1, retrieval R@1, and
    svm_correct (per held-out video, 1 where the SVM is right: what pairs the gap's noise)."""
    from .features import split_features
    from .linear import fc_softmax_top1
    from .retrieval import recall_at_k

    kw = dict(checkpoint_hash=key, cache_dir=cache_dir, progress=progress)
    train_x, train_y = split_features(backbone, train, videos, settings, **kw)
    test_x, test_y = split_features(backbone, test, videos, settings, **kw)
    correct = svm_correct(train_x, train_y, test_x, test_y)
    return {"svm_top1": float(correct.mean()),
            "fc_top1": fc_softmax_top1(train_x, train_y, test_x, test_y, num_classes=len(train.classes)),
            "r1": recall_at_k(test_x, test_y, train_x, train_y, ks=(1,))[1], "svm_correct": correct.tolist()}


def svm_correct(train_x, train_y, test_x, test_y):
    """(N_test,) int8: 1 where the linear SVM on z-scored features is right. The same fit as
    eval.linear.linear_svm_top1(standardize=True), kept per video (tests/test_demo_eval.py checks
    the two agree)."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    from .linear import _check

    train_x, train_y, test_x, test_y = _check(train_x, train_y, test_x, test_y)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8
    svm = LinearSVC(C=1.0, dual=False, max_iter=5000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # as linear_svm_top1: a capped solve is usable
        svm.fit((train_x - mean) / std, train_y)
    return (svm.predict((test_x - mean) / std) == test_y).astype(np.int8)


def format_comparison(rows: dict, num_test: int) -> str:
    """The side-by-side table the demo prints (percentages)."""
    lines = [f"frozen features on {num_test} held-out action videos (4 classes, chance 25 %):",
             f"  {'backbone':<30}{'SVM top-1':>10}{'FC top-1':>10}{'R@1':>8}"]
    for name, r in rows.items():
        lines.append(f"  {name:<30}{100 * r['svm_top1']:>9.1f}%{100 * r['fc_top1']:>9.1f}%{100 * r['r1']:>7.1f}%")
    return "\n".join(lines)


def gap_and_noise(pretrained: dict, random_init: dict, num_test: int) -> tuple[float, float]:
    """(gap, noise) in points of SVM top-1: pretrained minus random_init, and 2 standard errors of
    that difference over the num_test held-out videos.

    Paired when both rows carry svm_correct (scored on the same videos, probe's rows): the standard
    error of the mean per-video difference (right minus right, in {-1, 0, 1}), which counts only
    the videos where the two disagree. Otherwise the unpaired binomial one of two independent
    accuracies, wider when the two models err on the same videos.
    """
    a, b = pretrained["svm_top1"], random_init["svm_top1"]
    if pairs(pretrained, random_init):
        diff = [x - y for x, y in zip(pretrained["svm_correct"], random_init["svm_correct"], strict=True)]
        n = len(diff)
        mean = sum(diff) / n
        variance = sum((d - mean) ** 2 for d in diff) / max(1, n - 1)
        return 100 * mean, 200 * math.sqrt(variance / n)
    return 100 * (a - b), 200 * math.sqrt((a * (1 - a) + b * (1 - b)) / max(1, num_test))


def verdict(pretrained: dict, random_init: dict, num_test: int) -> str:
    """One sentence: whether pretraining beat random initialisation (random_init: the row to beat)
    on the SVM probe, with the noise of the difference on num_test videos (gap_and_noise: 2
    standard errors, paired where the rows allow)."""
    a, b = pretrained["svm_top1"], random_init["svm_top1"]
    gap, noise = gap_and_noise(pretrained, random_init, num_test)
    paired = "paired " if pairs(pretrained, random_init) else ""
    band = f"noise about ±{noise:.1f} points, 2 standard errors {paired}over {num_test} test videos"
    if gap > noise:
        times = f": {gap / noise:.1f}x the noise" if noise > 0 else ""
        return f"pretrained beats random init by {gap:.1f} points (SVM top-1; {band}{times})"
    if gap > 0:
        return (f"pretrained is ahead of random init by {gap:.1f} points (SVM top-1), within the noise ({band}): "
                "not shown to be better")
    return (f"pretrained is NOT better than random init ({100 * a:.1f} % vs {100 * b:.1f} % SVM top-1): this short "
            "CPU pretraining did not learn features that separate the motions (BENCHMARKS.md, ablation, has "
            "the longer measurement)")


def pairs(pretrained: dict, random_init: dict) -> bool:
    """Whether both rows carry per-video SVM results, so gap_and_noise pairs them."""
    return "svm_correct" in pretrained and "svm_correct" in random_init


def gradcam_before_after(models: dict, video: Path, out_png: Path, settings, store=None, store_key=None) -> dict:
    """Grad-CAM of one test clip under each backbone of `models` ({label: backbone}, in column
    order: before pretraining first), in one figure (frame | S-motion | one CAM per model).

    Returns {"png", "motion_alignment": {label: cosine of the time-averaged CAM with the S-motion
    at the CAM's resolution}} (1: the map is the motion map; measured, not drawn only).
    """
    import cv2
    import numpy as np

    from .gradcam import gradcam_video, save_gradcam_comparison

    cams, first = {}, None
    for label, net in models.items():
        # gradcam_video writes each model's own Figure-4 PNG beside the comparison (cheap: one clip).
        slug = label.split(" ")[0].replace("-", "_").lower()
        first = gradcam_video(net, video, out_png.with_name(f"gradcam_{slug}.png"), clip_len=settings.clip_len,
                              stride=settings.stride, crop_size=settings.crop_size, short_side=settings.resize_to,
                              store=store, store_key=store_key)
        cams[label] = first["cam"]
    frame, s_motion = first["frame"], first["s_motion"]
    alignment = {}
    for label, cam in cams.items():
        avg = cam.mean(0)
        m = cv2.resize(np.asarray(s_motion, np.float32), avg.shape[::-1], interpolation=cv2.INTER_AREA)
        denom = float(np.linalg.norm(avg) * np.linalg.norm(m))
        alignment[label] = float((avg * m).sum() / denom) if denom > 0 else 0.0
    titles = {label: f"{label}\nGrad-CAM (cos with S-motion {alignment[label]:.2f})" for label in cams}
    png = save_gradcam_comparison(out_png, frame, s_motion, {titles[k]: v for k, v in cams.items()},
                                  title=f"{video.name}: Grad-CAM before and after pretraining")
    return {"png": str(png), "motion_alignment": alignment}


def run_demo_evaluation(checkpoint, data: dict, out_dir, *, num_clips: int = 5, supervised_epochs: int = 0,
                        store=None, init=None, progress: bool = True) -> dict:
    """Evaluate `checkpoint` against random init (and supervised training for supervised_epochs > 0)
    on `data` (make_demo_actions' dict); writes OUT/eval.json and OUT/figures/gradcam.png (Grad-CAM
    before pretraining beside after it).

    store: the motion store of data["videos"] (S-motion of the Grad-CAM figure; default: Farneback
    flow over the clip). init: the 2D checkpoint the pretraining started from (model.init), which
    adds the row of that initialisation with no video pretraining.
    Returns {"pretrained", "random_init", "random_init_bn"[, "image_init"][, "supervised"], "num_train",
    "num_test", "gap_svm", "noise_svm", "verdict", "gradcam", ...}; the verdict and the gap compare
    the pretrained SVM top-1 with the better random row.
    """
    import torch

    from .._io import atomic_write_json
    from ..checkpoint import load_backbone
    from ..data.splits import load_split
    from ..models import build_backbone
    from .baselines import recalibrate_batchnorm
    from .features import ClipSettings, file_sha256

    out_dir = Path(out_dir)
    videos = Path(data["videos"])
    train = load_split(data["train_csv"], videos_root=videos)
    test = load_split(data["test_csv"], videos_root=videos, classes=train.classes)
    backbone, config = load_backbone(checkpoint)
    d = config.get("data", {})
    settings = ClipSettings(num_clips=num_clips, clip_len=int(d.get("clip_len", 16)), stride=int(d.get("stride", 2)),
                            crop_size=int(d.get("size", 224)), short_side=int(d.get("size", 224)))
    cache = out_dir / "eval_cache"
    rows = {"pretrained": probe(backbone, train, test, videos, settings, cache, file_sha256(checkpoint), progress)}
    name, kwargs = config["model"]["backbone"], config["model"].get("backbone_kwargs", {})
    torch.manual_seed(0)
    random_net = build_backbone(name, **kwargs)
    before = {"random init": copy_of(random_net)}
    rows["random init"] = probe(random_net, train, test, videos, settings, cache, f"random-{name}-0", progress)
    # The same random weights with BN statistics measured on the training clips (eval/baselines.py).
    recalibrate_batchnorm(random_net, [videos / p for p in train.paths], settings)
    rows["random init, BN statistics"] = probe(random_net, train, test, videos, settings, cache,
                                               f"random-bn-{name}-0", progress)
    result = {"pretrained": rows["pretrained"], "random_init": rows["random init"],
              "random_init_bn": rows["random init, BN statistics"]}
    if init:
        image_net = build_backbone(name, init=str(init), **kwargs).eval()
        before["image-MoCo init"] = image_net
        rows["image-MoCo init (no video)"] = probe(image_net, train, test, videos, settings, cache,
                                                   f"init-{file_sha256(init)}", progress)
        result["image_init"] = rows["image-MoCo init (no video)"]
    if supervised_epochs > 0:
        from .finetune import FinetuneConfig, finetune

        torch.manual_seed(0)
        net = build_backbone(name, **kwargs)
        batch = int(d.get("batch_size", 16))
        cfg = FinetuneConfig(epochs=supervised_epochs, batch_size=batch, lr=0.05 * 8 / batch, dropout=0.0,
                             num_test_clips=num_clips, num_workers=0)
        sup = finetune(net, {"model": config["model"], "data": d}, train, test, videos, train_settings=settings,
                       config=cfg, out=out_dir / "supervised.pt", device="cpu", progress=progress)
        sup_backbone, _ = load_backbone(out_dir / "supervised.pt")
        rows[f"supervised ({supervised_epochs} epochs)"] = probe(sup_backbone, train, test, videos, settings, cache,
                                                                 file_sha256(out_dir / "supervised.pt"), progress)
        result["supervised"] = {**rows[f"supervised ({supervised_epochs} epochs)"], "classifier_top1": sup["top1"],
                                "epochs": supervised_epochs}
    cam = gradcam_before_after({**before, "pretrained": backbone}, videos / test.paths[0],
                               out_dir / "figures" / "gradcam.png", settings, store=store,
                               store_key=test.paths[0] if store is not None else None)
    best_random = max(rows["random init"], rows["random init, BN statistics"], key=lambda r: r["svm_top1"])
    gap, noise = gap_and_noise(rows["pretrained"], best_random, len(test))
    result.update(num_train=len(train), num_test=len(test), clips=settings.to_dict(), gradcam_png=cam["png"],
                  gradcam_motion_alignment=cam["motion_alignment"], gap_svm=gap, noise_svm=noise,
                  verdict=verdict(rows["pretrained"], best_random, len(test)), table=format_comparison(rows, len(test)))
    atomic_write_json(out_dir / "eval.json", result)
    return result


def copy_of(net):
    """A deep copy of a backbone (its forward hooks rebind to the copy: models.base)."""
    import copy

    return copy.deepcopy(net).eval()
