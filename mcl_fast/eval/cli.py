"""`mcl-fast eval {linear,retrieval,finetune,gradcam}`: the paper's evaluation protocols.

  mcl-fast eval linear    --checkpoint CKPT --train-split S --test-split S --videos ROOT
  mcl-fast eval retrieval --checkpoint CKPT --train-split S --test-split S --videos ROOT
  mcl-fast eval finetune  --checkpoint CKPT --train-split S --test-split S --videos ROOT [--epochs N]
  mcl-fast eval gradcam   --checkpoint CKPT --video FILE --out fig.png [--store STORE]

A split S is a UCF101 list file (trainlist01.txt / testlist01.txt, classInd.txt beside it), a
Kinetics-400 or `path,label` CSV, or `hmdb51:DIR:N:train|test` (see mcl_fast.data.splits).
Clip settings default to the checkpoint's pretraining config (crop size, clip length, stride),
else the paper's 16 frames × stride 2 at 224².
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _common(p: argparse.ArgumentParser, splits: bool = True) -> None:
    p.add_argument("--checkpoint", required=True, help="a pretraining (or fine-tuning) checkpoint")
    if splits:
        p.add_argument("--train-split", required=True, help="training split (the gallery for retrieval)")
        p.add_argument("--test-split", required=True, help="test split (the queries for retrieval)")
        p.add_argument("--videos", required=True, help="folder the split's paths are relative to")
        p.add_argument("--skip-missing", action="store_true",
                       help="leave out split entries whose video is missing (listed in the output) instead of failing")
    p.add_argument("--clip-len", type=int, default=None, help="frames per clip (default: checkpoint's, else 16)")
    p.add_argument("--stride", type=int, default=None, help="frame stride (default: checkpoint's, else 2)")
    p.add_argument("--crop-size", type=int, default=None, help="centre crop side (default: checkpoint's, else 224)")
    p.add_argument("--short-side", type=int, default=None, help="resize short side to this first (default crop·256/224)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes")
    p.add_argument("--batch-size", type=int, default=40, help="clips per forward pass")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--no-progress", action="store_true")


def _features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-clips", type=int, default=20, help="clips per video, averaged (paper: 20)")
    p.add_argument("--cache", default=None, help="feature cache folder (default: <checkpoint dir>/eval_cache; 'none' disables)")
    p.add_argument("--decoder", choices=("pyav", "dali"), default="pyav",
                   help="pyav (CPU) or dali (NVDEC on GPU; DALI's CPU decoder reads VP8/VP9/MJPEG only)")


def add_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="PROTOCOL", required=True)
    p = sub.add_parser("linear", help="linear SVM and softmax layer on frozen clip-averaged features (top-1)")
    _common(p)
    _features_args(p)
    p.add_argument("--C", type=float, default=1.0, help="SVM regularisation (paper: 1)")
    p.add_argument("--fc-epochs", type=int, default=100)
    p.add_argument("--fc-lr", type=float, default=16.0)
    p.add_argument("--retrieval", action="store_true", help="also report retrieval R@k on the same features")

    p = sub.add_parser("retrieval", help="test videos query training videos by cosine similarity (R@k)")
    _common(p)
    _features_args(p)
    p.add_argument("--ks", default="1,5,10,20", help="comma-separated k values")

    p = sub.add_parser("finetune", help="supervised fine-tuning of backbone + linear layer (torchrun for DDP)")
    _common(p)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.05, help="learning rate at a global batch of 8 (scaled linearly)")
    p.add_argument("--train-batch", type=int, default=8, help="training clips per process")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--num-test-clips", "--num-clips", dest="num_test_clips", type=int, default=10,
                   help="clips per test video (softmax averaged)")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                   help="mixed precision (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the fine-tuned checkpoint here")

    p = sub.add_parser("gradcam", help="3D Grad-CAM of a clip beside its first frame and S-motion (paper Fig. 4)")
    _common(p, splits=False)
    p.add_argument("--video", required=True, help="a video file")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--start", type=int, default=None, help="first frame of the clip (default: the middle clip)")
    p.add_argument("--store", default=None, help="motion store for the S-motion (default: Farneback flow now)")
    p.add_argument("--store-key", default=None, help="the video's name in the store (default: matched by path)")
    p.add_argument("--layer", default=None, help="layer to explain (default: the backbone's mal_layer)")
    p.add_argument("--target", default="norm",
                   help="'norm' (embedding norm), 'pred' (top class of a fine-tuned checkpoint) or a class index")


# ------------------------------------------------------------------------------------ helpers


def _from_config(config: dict, *names):
    """The first of names found in config or its 'data' section (None if absent)."""
    for section in (config.get("data") or {}, config):
        if isinstance(section, dict):
            for name in names:
                if section.get(name) is not None:
                    return section[name]
    return None


def clip_settings(args, config: dict, num_clips: int):
    from .features import ClipSettings

    return ClipSettings(
        num_clips=num_clips,
        clip_len=args.clip_len or int(_from_config(config, "clip_len") or 16),
        stride=args.stride or int(_from_config(config, "stride") or 2),
        crop_size=args.crop_size or int(_from_config(config, "size", "crop_size") or 224),
        short_side=args.short_side,
    )


def _load_splits(args):
    from ..data.splits import load_split

    train = load_split(args.train_split, videos_root=args.videos, skip_missing=args.skip_missing)
    test = load_split(args.test_split, videos_root=args.videos, skip_missing=args.skip_missing, classes=train.classes)
    if test.classes != train.classes:
        raise ValueError(f"the test split's classes ({len(test.classes)}) differ from the training split's "
                         f"({len(train.classes)})")
    for split in (train, test):
        if split.missing:
            print(f"skipped {len(split.missing)} missing videos of {split.name} (first: {split.missing[0]})",
                  file=sys.stderr)
        if len(split) == 0:
            raise ValueError(f"split {split.name} has no videos")
    return train, test


def _features(args, backbone, config, train, test):
    from .features import file_sha256, split_features

    settings = clip_settings(args, config, args.num_clips)
    cache = None if str(args.cache).lower() == "none" else (
        Path(args.cache) if args.cache else Path(args.checkpoint).resolve().parent / "eval_cache")
    ckpt_hash = file_sha256(args.checkpoint)
    kw = dict(checkpoint_hash=ckpt_hash, cache_dir=cache, batch_size=args.batch_size, num_workers=args.workers,
              device=args.device, decoder=args.decoder, progress=not args.no_progress)
    train_x, train_y = split_features(backbone, train, args.videos, settings, **kw)
    test_x, test_y = split_features(backbone, test, args.videos, settings, **kw)
    return settings, train_x, train_y, test_x, test_y


def _write_json(path, result: dict) -> None:
    from .._io import atomic_write_json

    atomic_write_json(path, result)


def _split_info(train, test) -> dict:
    return {"train": train.name, "test": test.name, "num_train": len(train), "num_test": len(test),
            "num_classes": len(train.classes), "missing": len(train.missing) + len(test.missing)}


# ---------------------------------------------------------------------------------- protocols


def run_linear(args) -> dict:
    from ..checkpoint import load_backbone
    from .linear import linear_probe
    from .retrieval import format_recalls, recall_at_k

    backbone, config = load_backbone(args.checkpoint)
    train, test = _load_splits(args)
    settings, train_x, train_y, test_x, test_y = _features(args, backbone, config, train, test)
    result = {"protocol": "linear", "checkpoint": str(args.checkpoint), "clips": settings.to_dict(),
              **_split_info(train, test), "feature_dim": int(train_x.shape[1])}
    result.update(linear_probe(train_x, train_y, test_x, test_y, C=args.C, fc_epochs=args.fc_epochs,
                               fc_lr=args.fc_lr, num_classes=len(train.classes)))
    print(f"linear probe ({len(train)} train / {len(test)} test videos, {len(train.classes)} classes, "
          f"{train_x.shape[1]}-d): SVM top-1 {100 * result['svm_top1']:.2f} %  "
          f"FC+softmax top-1 {100 * result['fc_top1']:.2f} %")
    if args.retrieval:
        recalls = recall_at_k(test_x, test_y, train_x, train_y)
        result["recall"] = {str(k): v for k, v in recalls.items()}
        print(f"retrieval: {format_recalls(recalls)}")
    return result


def run_retrieval(args) -> dict:
    from ..checkpoint import load_backbone
    from .retrieval import format_recalls, recall_at_k

    ks = tuple(int(k) for k in str(args.ks).split(",") if k.strip())
    backbone, config = load_backbone(args.checkpoint)
    train, test = _load_splits(args)
    settings, train_x, train_y, test_x, test_y = _features(args, backbone, config, train, test)
    recalls = recall_at_k(test_x, test_y, train_x, train_y, ks=ks)
    print(f"retrieval ({len(test)} queries, {len(train)} gallery videos): {format_recalls(recalls)}")
    return {"protocol": "retrieval", "checkpoint": str(args.checkpoint), "clips": settings.to_dict(),
            **_split_info(train, test), "recall": {str(k): v for k, v in recalls.items()}}


def run_finetune(args) -> dict:
    from .. import dist
    from ..checkpoint import load_backbone
    from .finetune import FinetuneConfig, finetune

    backbone, config = load_backbone(args.checkpoint)
    train, test = _load_splits(args)
    settings = clip_settings(args, config, 1)
    cfg = FinetuneConfig(epochs=args.epochs, batch_size=args.train_batch, lr=args.lr,
                         weight_decay=args.weight_decay, num_test_clips=args.num_test_clips, amp=args.amp,
                         num_workers=args.workers, seed=args.seed)
    out = args.out or str(Path(args.checkpoint).resolve().parent / "finetuned.pt")
    result = finetune(backbone, config, train, test, args.videos, train_settings=settings, config=cfg, out=out,
                      device=args.device, progress=not args.no_progress)
    if dist.get_rank() == 0:
        print(f"fine-tuned {args.epochs} epochs on {len(train)} videos: test top-1 {100 * result['top1']:.2f} % "
              f"({args.num_test_clips} clips per video); checkpoint {result.get('checkpoint')}")
    result.pop("predictions", None)
    return {"protocol": "finetune", "checkpoint": str(args.checkpoint), **_split_info(train, test), **result}


def run_gradcam(args) -> dict:
    from .features import resolve_device
    from .finetune import load_classifier
    from .gradcam import gradcam_video

    backbone, head, classes, config = load_classifier(args.checkpoint)
    target = args.target if args.target in ("norm", "pred") else int(args.target)
    if target != "norm" and head is None:
        raise ValueError(f"--target {args.target} needs a fine-tuned checkpoint (this one has no classifier); "
                         f"use --target norm")
    out = gradcam_video(backbone, args.video, args.out,
                        clip_len=args.clip_len or int(_from_config(config, "clip_len") or 16),
                        stride=args.stride or int(_from_config(config, "stride") or 2),
                        crop_size=args.crop_size or int(_from_config(config, "size", "crop_size") or 224),
                        short_side=args.short_side, start=args.start, store=args.store, store_key=args.store_key,
                        layer=args.layer, target=target, head=head if target != "norm" else None,
                        device=resolve_device(args.device))
    print(f"Grad-CAM of {args.video} (frames from {out['start']}, map {tuple(out['cam'].shape)}) -> {out['png']}")
    return {"protocol": "gradcam", "checkpoint": str(args.checkpoint), "video": str(args.video),
            "png": out["png"], "start": out["start"], "cam_shape": list(out["cam"].shape)}


PROTOCOLS = {"linear": run_linear, "retrieval": run_retrieval, "finetune": run_finetune, "gradcam": run_gradcam}


def run(args) -> int:
    from ..data.splits import SplitError

    try:
        result = PROTOCOLS[args.eval_command](args)
    except (SplitError, ValueError, FileNotFoundError) as err:
        print(f"mcl-fast eval {args.eval_command}: {err}", file=sys.stderr)
        return 1
    from .. import dist

    if args.json and dist.get_rank() == 0:  # under torchrun, one writer
        _write_json(args.json, result)
    return 0
