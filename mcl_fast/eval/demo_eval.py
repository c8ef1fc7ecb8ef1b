"""The evaluation step of `make demo`: linear probe, retrieval and a Grad-CAM figure of a checkpoint.

The demo's pretraining videos carry no labels, so the probe runs on a small labelled synthetic
action dataset (mcl_fast.eval.actions: classes told apart only by how a small object moves),
written once under OUT/eval_videos. Numbers from a few minutes of CPU pretraining are near
chance; the step shows the protocol end to end, not a result.
"""
from __future__ import annotations

from pathlib import Path


def run_demo_evaluation(checkpoint, out_dir, *, videos_per_class: int = 8, num_clips: int = 20,
                        gradcam_video=None, store=None, progress: bool = True) -> dict:
    """Evaluate `checkpoint`; writes OUT/eval.json and OUT/figures/gradcam.png; returns the results.

    gradcam_video: the video to explain (default: a test video of the action dataset); store: a
    motion store holding it (default: S-motion from Farneback flow).
    """
    from ..checkpoint import load_backbone
    from .actions import SHAPE_CLASSES, make_action_dataset
    from .._io import atomic_write_json
    from .features import ClipSettings
    from .gradcam import gradcam_video as explain
    from .linear import evaluate_checkpoint
    from .retrieval import format_recalls

    out_dir = Path(out_dir)
    videos = out_dir / "eval_videos"
    train_csv, test_csv = make_action_dataset(videos, classes=SHAPE_CLASSES[:4], videos_per_class=videos_per_class,
                                              num_frames=32, height=64, width=80, object_size=12, progress=progress)
    backbone, config = load_backbone(checkpoint)
    data = config.get("data", {})
    settings = ClipSettings(num_clips=num_clips, clip_len=int(data.get("clip_len", 16)),
                            stride=int(data.get("stride", 2)), crop_size=int(data.get("size", 224)))
    result = evaluate_checkpoint(checkpoint, train_csv, test_csv, videos, settings=settings,
                                 cache_dir=out_dir / "eval_cache", progress=progress)
    if gradcam_video is None:
        gradcam_video = videos / test_csv.read_text().splitlines()[1].split(",")[0]
    cam = explain(backbone, gradcam_video, out_dir / "figures" / "gradcam.png", clip_len=settings.clip_len,
                  stride=settings.stride, crop_size=settings.crop_size, store=store)
    result["gradcam_png"] = cam["png"]
    result["recall"] = {str(k): v for k, v in result["recall"].items()}
    atomic_write_json(out_dir / "eval.json", result)
    print(f"linear probe on {result['num_train']} / {result['num_test']} synthetic action videos: "
          f"SVM top-1 {100 * result['svm_top1']:.1f} %, FC top-1 {100 * result['fc_top1']:.1f} %; "
          f"retrieval {format_recalls({int(k): v for k, v in result['recall'].items()})}; "
          f"Grad-CAM {cam['png']}")
    return result
