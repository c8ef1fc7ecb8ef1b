"""A synthetic action dataset whose classes are defined by HOW a small object moves.

Used by the ablation (benchmarks/ablation.py) and the demo's evaluation. Every video shows a
small textured object over a smooth random background, with static high-contrast distractors
and (optionally) a camera pan. The class is the object's trajectory shape:

  horizontal  back and forth along x            vertical  back and forth along y
  circle      round a circle (either sense)      jitter    shaking in place (random steps)
  diagonal    back and forth along a diagonal
  still       never moves                        slow / fast  straight lines, bouncing off the
                                                              borders, at 0.75 / 3 px/frame × speed

The classes are mirror-invariant (a horizontally flipped video keeps its class), because
pretraining augments with flips. The object moves only during an active window covering
`active_fraction` of the video and rests elsewhere, so which clip is sampled matters (temporal
augmentation), and it is small against distractors and the pan, so where the crop falls matters
(spatial augmentation). Nothing but the motion tells the classes apart: the object's and the
scene's textures, the distractors, the pan, the position and phase are random per video.

Three kinds of scene (`make_action_dataset`): one per video (`scene_seed=None`), one shared by
every video (`scene_seed=N`), or a pool of K scenes shared across classes (`scene_pool=K`): each
video draws its scene from the pool independently of its class, so the scene tells videos apart
but not classes (the static appearance bias the paper's motion focus targets).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np

ACTION_CLASSES = ("horizontal", "vertical", "circle", "jitter", "diagonal", "still", "slow", "fast")
# Classes told apart by the trajectory's shape (the harder task; the other three differ by speed).
SHAPE_CLASSES = ACTION_CLASSES[:5]


def action_trajectory(cls: str, rng: np.random.Generator, num_frames: int, height: int, width: int, size: int,
                      speed: float, active) -> np.ndarray:
    """(num_frames, 2) float (y, x) top-left positions of the object; it moves only for t in [a, b)."""
    a, b = active
    period = rng.uniform(14, 22)  # frames per back-and-forth / turn
    amp = np.array([0.3 * (height - size), 0.3 * (width - size)])
    centre = np.array([rng.uniform(amp[0], height - size - amp[0]), rng.uniform(amp[1], width - size - amp[1])])
    phase = rng.uniform(0, 2 * np.pi)
    # Moving time: frozen before a and after b, so the motion happens only in the window.
    tau = np.clip(np.arange(num_frames, dtype=np.float64), a, b) - a
    theta = phase + 2 * np.pi * tau / period * speed / 2.0
    if cls == "horizontal":
        offset = np.stack([np.zeros_like(theta), amp[1] * np.sin(theta)], 1)
    elif cls == "vertical":
        offset = np.stack([amp[0] * np.sin(theta), np.zeros_like(theta)], 1)
    elif cls == "diagonal":
        sign = rng.choice([-1.0, 1.0])
        r = min(amp) * np.sin(theta)
        offset = np.stack([r, sign * r], 1)
    elif cls == "circle":
        sense = rng.choice([-1.0, 1.0])
        r = min(amp)
        offset = np.stack([r * np.sin(sense * theta), r * np.cos(sense * theta)], 1)
    elif cls == "jitter":
        steps = rng.normal(0, 1.2 * speed, size=(num_frames, 2))
        steps[: a] = 0
        steps[b:] = 0
        offset = np.clip(np.cumsum(steps, 0), -amp / 2, amp / 2)  # a bounded random walk
    elif cls in ("still", "slow", "fast"):
        v = {"still": 0.0, "slow": 0.75, "fast": 3.0}[cls] * speed
        angle = rng.uniform(0, 2 * np.pi)
        span = np.array([height - size, width - size], np.float64)
        start = rng.uniform(0, 1, 2) * span
        travel = start[None] + tau[:, None] * v * np.array([np.sin(angle), np.cos(angle)])[None]
        # Bounce off the borders: fold the straight path back into [0, span].
        folded = np.mod(travel, 2 * span)
        return np.where(folded > span, 2 * span - folded, folded)
    else:
        raise ValueError(f"unknown action class {cls!r}; choose from {ACTION_CLASSES}")
    pos = centre + offset
    return np.clip(pos, 0, [height - size, width - size])


def render_action(cls: str, *, num_frames: int = 48, height: int = 64, width: int = 80, object_size: int = 10,
                  speed: float = 2.0, pan_max: float = 1.0, active_fraction: float = 0.5, num_distractors: int = 2,
                  scene_seed: int | None = None, shared_object: bool = True, seed: int = 0):
    """Render one action video: (frames (N, H, W, 3) uint8, boxes (N, 4) int64 (y0, x0, h, w)).

    pan_max: the camera pans by a random (dy, dx) with |d| <= pan_max px/frame. active_fraction:
    the share of the video during which the object moves (the window's start is random).
    scene_seed: None gives every video its own scene (background, distractors, object skin); an
    int draws the whole static scene from that seed instead (textures and distractor places), so
    videos with the same scene_seed differ only in how the object moves (trajectory, place,
    phase, active window) and in the camera pan. shared_object=False keeps the object's texture
    per video (then it is what tells two videos of a scene apart at a glance).
    """
    import cv2

    from ..data.synthetic import smooth_texture

    if cls not in ACTION_CLASSES:
        raise ValueError(f"unknown action class {cls!r}; choose from {ACTION_CLASSES}")
    if not 0 < active_fraction <= 1:
        raise ValueError(f"active_fraction must be in (0, 1], got {active_fraction}")
    rng = np.random.default_rng(seed)
    length = max(2, int(round(active_fraction * num_frames)))
    a = int(rng.integers(0, num_frames - length + 1))
    pos = action_trajectory(cls, rng, num_frames, height, width, object_size, speed, (a, a + length))
    dy, dx = rng.uniform(-pan_max, pan_max, 2)
    my, mx = int(np.ceil(abs(dy) * num_frames)) + 2, int(np.ceil(abs(dx) * num_frames)) + 2
    # Textures come from `look`: this video's generator, or one shared by all videos of a scene_seed.
    look = rng if scene_seed is None else np.random.default_rng([scene_seed, 7])
    span_h, span_w = height + int(np.ceil(pan_max * num_frames)) + 2, width + int(np.ceil(pan_max * num_frames)) + 2
    scene = smooth_texture(look, height + my, width + mx) if scene_seed is None else \
        smooth_texture(look, span_h, span_w)[:height + my, :width + mx].copy()
    for _ in range(num_distractors):
        side = int(look.integers(object_size, 2 * object_size + 1))
        y0, x0 = int(look.integers(0, scene.shape[0] - side + 1)), int(look.integers(0, scene.shape[1] - side + 1))
        scene[y0:y0 + side, x0:x0 + side] = smooth_texture(look, side, side, sigmas=(1.0, 2.5), contrast=1.6)
    skin = smooth_texture(rng if scene_seed is None or not shared_object else np.random.default_rng([scene_seed, 8]),
                          object_size, object_size, sigmas=(1.0, 2.0), contrast=1.5)
    oy0, ox0 = (my - 1 if dy > 0 else 1), (mx - 1 if dx > 0 else 1)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    boxes = np.empty((num_frames, 4), np.int64)
    for t in range(num_frames):
        m = np.float32([[1, 0, ox0 - dx * t], [0, 1, oy0 - dy * t]])
        frames[t] = cv2.warpAffine(scene, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_REFLECT)
        y, x = (int(round(v)) for v in pos[t])
        frames[t, y:y + object_size, x:x + object_size] = skin
        boxes[t] = (y, x, object_size, object_size)
    return frames, boxes


def pool_scene(video_seed: int, scene_pool: int) -> int:
    """The scene seed (0 .. scene_pool - 1) of the video rendered with `video_seed`: uniform and drawn
    from the video's own seed only, so it does not depend on the class or on the other videos."""
    if scene_pool < 1:
        raise ValueError(f"scene_pool must be >= 1 scenes, got {scene_pool}")
    return int(np.random.default_rng([video_seed, 11]).integers(scene_pool))


def make_action_dataset(root, *, classes=SHAPE_CLASSES[:4], videos_per_class: int = 12, test_fraction: float = 0.33,
                        seed: int = 0, ext: str = ".mp4", progress: bool = True, scene_pool: int | None = None,
                        **render_kwargs):
    """Write `videos_per_class` videos per class under root/<class>/<class>_<i><ext> (existing files
    are kept) and root/train.csv, root/test.csv (``path,label``, the last test_fraction of each
    class's videos go to test). Returns (train_csv, test_csv) paths.

    scene_pool: K draws each video's `scene_seed` from K pool scenes (`pool_scene`) instead of the
    render_kwargs' scene_seed (which must then be None).
    The rendering settings are recorded in root/actions.json: a folder written with other settings
    is refused (its kept videos would not be what these settings render); more classes, videos or
    another split may be asked of the same folder.
    """
    from tqdm import tqdm

    from ..data.synthetic import write_video
    from .._io import atomic_write

    root = Path(root)
    unknown = [c for c in classes if c not in ACTION_CLASSES]
    if unknown:
        raise ValueError(f"unknown action classes {unknown}; choose from {ACTION_CLASSES}")
    n_test = max(1, int(round(test_fraction * videos_per_class)))
    if n_test >= videos_per_class:
        raise ValueError(f"videos_per_class={videos_per_class} leaves no training video")
    if scene_pool is not None and render_kwargs.get("scene_seed") is not None:
        raise ValueError(f"scene_pool={scene_pool} draws each video's scene: leave scene_seed None "
                         f"(got {render_kwargs['scene_seed']})")
    defaults = {k: v.default for k, v in inspect.signature(render_action).parameters.items()
                if v.default is not inspect.Parameter.empty and k != "seed"}
    check_folder_settings(root, {"seed": seed, "ext": ext, "scene_pool": scene_pool,
                                 "render": {**defaults, **render_kwargs}})
    rows = {"train": [], "test": []}
    jobs = [(ci, cls, i) for ci, cls in enumerate(classes) for i in range(videos_per_class)]
    for ci, cls, i in tqdm(jobs, desc="action videos", unit="video", disable=not progress):
        rel = f"{cls}/{cls}_{i:03d}{ext}"
        if not (root / rel).is_file():
            video_seed = seed * 100_003 + ci * 1009 + i
            if scene_pool is not None:
                render_kwargs["scene_seed"] = pool_scene(video_seed, scene_pool)
            frames, _ = render_action(cls, seed=video_seed, **render_kwargs)
            write_video(root / rel, frames, fps=25, gop=8)
        rows["test" if i >= videos_per_class - n_test else "train"].append(f"{rel},{cls}\n")
    out = []
    for subset in ("train", "test"):
        path = root / f"{subset}.csv"
        text = "path,label\n" + "".join(rows[subset])
        atomic_write(path, lambda f, text=text: f.write(text.encode()))
        out.append(path)
    return tuple(out)


SETTINGS_FILE = "actions.json"


def check_folder_settings(root: Path, settings: dict) -> None:
    """Record `settings` (JSON) in root/actions.json, or refuse a folder whose record differs,
    naming the settings that differ. A folder without a record (an earlier version's) gets one."""
    from .._io import atomic_write_json

    settings = json.loads(json.dumps(settings))  # the form the file holds (tuples as lists)
    path = root / SETTINGS_FILE
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read the dataset's settings ({err}); remove the folder or the file") from None
        if recorded != settings:
            was, now = _flat(recorded), _flat(settings)
            differ = sorted(k for k in {*was, *now} if was.get(k) != now.get(k))
            raise ValueError(f"{root} holds action videos rendered with other settings: "
                             + ", ".join(f"{k} {was.get(k)!r} there, {now.get(k)!r} asked" for k in differ)
                             + "; use another folder")
        return
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, settings)


def _flat(settings: dict) -> dict:
    """The settings with the render options beside the others (one level)."""
    return {**{k: v for k, v in settings.items() if k != "render"}, **settings.get("render", {})}
