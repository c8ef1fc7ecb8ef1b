"""The per-sample reference of the built-in sampler: what the batched planner must equal, draw for draw.

The loaders plan a whole batch at once (mcl_fast/data/planner.py); these functions make one
sample's query/key choice step by step from its generator, calling the NumPy sampling oracle
(mcl_fast.sampling) as the paper describes it. tests/test_plan.py checks the planner against
them; tests/gpu checks the GPU kernels' selections against `select`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mcl_fast import sampling as reference
from mcl_fast.data.batchplan import RGB_TO_YIQ, YIQ_TO_RGB
from mcl_fast.data.plan import CONTRAST_CENTER, Choice, MotionSampler, ViewAug, jitter_ranges, map_cells
from mcl_fast.data.views import PAPER, Augmentation


def draw_start(sampler: MotionSampler, clip_scores, rng: np.random.Generator) -> int:
    """reference.sample_clip_start given its clip_scores (starts, scores): the same draws."""
    starts, scores = clip_scores
    if sampler.config.motion_prob >= 1.0 or rng.random() < sampler.config.motion_prob:
        hot = starts[scores > np.median(scores)]
        if len(hot):
            starts = hot
    return int(starts[rng.integers(len(starts))])


def draw_clips(sampler: MotionSampler, maps: np.ndarray, info: dict, rng: np.random.Generator,
               clip_scores=None) -> list:
    """[query frames (T,), key frames (T,)] int64: one start (two with two_clips), motion-focused
    or uniform as the mode says. clip_scores: see propose (ignored for a uniform clip)."""
    n, clip_len, stride = int(info["num_frames"]), sampler.clip_len, sampler.stride
    if not sampler.motion_clip:
        draw = lambda: reference.random_clip_start(n, clip_len, stride, rng)  # noqa: E731
    elif clip_scores is None:
        m_t = MotionSampler.motion_t(maps)
        draw = lambda: reference.sample_clip_start(m_t, clip_len, stride, rng,  # noqa: E731
                                                   motion_prob=sampler.config.motion_prob)
    else:
        draw = lambda: draw_start(sampler, clip_scores, rng)  # noqa: E731
    starts = [draw()]
    starts.append(draw() if sampler.two_clips else starts[0])
    return [reference.clip_frame_indices(s, clip_len, stride, n) for s in starts]


def propose(sampler: MotionSampler, maps: np.ndarray, info: dict, rng: np.random.Generator,
            clip_scores=None) -> dict:
    """Draw clip starts and candidate boxes ("motion", "spatial"). Returns a dict: frames (2, T),
    m_s (2, h, w), candidates (2, K, 4) in source pixels, judged (2, K, 4) the map cells they
    cover (info["cells_per_pixel"], when given, maps pixels to cells).
    clip_scores: reference.clip_scores(motion_t(maps), clip_len, stride) computed elsewhere
    (bit-equal values give the same draws); None: sample_clip_start computes them."""
    if not sampler.motion_crop:
        raise ValueError(f"propose() is for the motion-focused crop; sampling={sampler.sampling!r} has none")
    cfg = sampler.config
    frame_hw = (int(info["height"]), int(info["width"]))
    frames = draw_clips(sampler, maps, info, rng, clip_scores)
    m_s = [maps[np.minimum(f, len(maps) - 1)].mean(axis=0) for f in frames[:1 + sampler.two_clips]]
    if not sampler.two_clips:
        m_s = m_s * 2
    candidates = np.stack([reference.draw_boxes(rng, cfg.num_candidates, *frame_hw, cfg.scale, cfg.ratio)
                           for _ in range(2)])
    judged = np.stack([map_cells(c, frame_hw, maps.shape[1:], info.get("cells_per_pixel")) for c in candidates])
    return {"frames": np.stack(frames), "m_s": np.stack(m_s), "candidates": candidates, "judged": judged}


def select(sampler: MotionSampler, proposal: dict) -> np.ndarray:
    """(V,) indices of the chosen candidates of a proposal's V views (reference.select_box_index)."""
    cfg = sampler.config
    return np.array([reference.select_box_index(proposal["m_s"][v], proposal["judged"][v], cfg.percentile,
                                               cfg.coverage) for v in range(len(proposal["m_s"]))])


def finish(proposal: dict, chosen) -> Choice:
    """The Choice of a proposal given its chosen candidate per view."""
    boxes = [tuple(int(x) for x in proposal["candidates"][v, int(chosen[v])]) for v in range(2)]
    return Choice(proposal["frames"][0], boxes[0], proposal["frames"][1], boxes[1])


def random_crop_choice(sampler: MotionSampler, maps: np.ndarray, info: dict, rng: np.random.Generator,
                       clip_scores=None) -> Choice:
    """"random" and "temporal": the clip(s) as the mode says, then one random-resized-crop box
    per view (reference.random_crop_box with the preset's scale and ratio)."""
    cfg = sampler.config
    hw = (int(info["height"]), int(info["width"]))
    frames = draw_clips(sampler, maps, info, rng, clip_scores)
    boxes = [reference.random_crop_box(rng, *hw, cfg.scale, cfg.ratio) for _ in range(2)]
    return Choice(frames[0], boxes[0], frames[1], boxes[1])


def choose(sampler: MotionSampler, maps: np.ndarray, info: dict, rng: np.random.Generator) -> Choice:
    """One sample's Choice, all modes: the clip(s), then the two views' boxes."""
    if not sampler.motion_crop:
        return random_crop_choice(sampler, maps, info, rng)
    proposal = propose(sampler, maps, info, rng)
    return finish(proposal, select(sampler, proposal))


class PerSample:
    """A MotionSampler's configuration as a per-sample sampler(maps, info, rng) -> Choice: what the
    planner runs for a user's sampler (so a planner given one takes the per-sample path)."""

    def __init__(self, sampler: MotionSampler):
        self.sampler = sampler

    def __call__(self, maps: np.ndarray, info: dict, rng: np.random.Generator) -> Choice:
        return choose(self.sampler, maps, info, rng)


def per_sample(*args, **kw) -> PerSample:
    """PerSample(MotionSampler(*args, **kw))."""
    return PerSample(MotionSampler(*args, **kw))


def missing_box(rng: np.random.Generator, view, maps: np.ndarray, frames, info: dict, boxes, config) -> tuple:
    """A view's box that a user sampler left out, per sample: the view's crop rule (views.ViewSpec)
    with config's candidates, percentile and coverage; boxes: the views' boxes so far ("same")."""
    height, width = int(info["height"]), int(info["width"])
    if view.crop == "motion":
        m_s = maps[np.minimum(frames, len(maps) - 1)].mean(axis=0)
        return reference.sample_crop_box(m_s, rng, frame_size=(height, width), cell_scale=info.get("cells_per_pixel"),
                                         num_candidates=config.num_candidates, scale=view.scale, ratio=view.ratio,
                                         percentile=config.percentile, coverage=config.coverage)
    if view.crop == "random":
        return reference.random_crop_box(rng, height, width, view.scale, view.ratio)
    if view.crop == "center":
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side
    if view.crop == "full":
        return 0, 0, height, width
    return boxes[0]  # "same"


# ----------------------------------------------------------------- one view's augmentation


def _homogeneous(matrix, offset=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 homogeneous form of rgb -> matrix @ rgb + offset."""
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = offset
    return out


def color_affine(brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0, hue: float = 0.0,
                 grayscale: bool = False, order: Sequence[int] = (0, 1, 2, 3)) -> tuple[np.ndarray, np.ndarray]:
    """(3, 3) float32 matrix and (3,) float32 offset of colour jitter then greyscale, on RGB 0..255.

    brightness b: rgb*b. contrast c: (rgb - 128)*c + 128. saturation s: scales the chroma (I, Q of
    YIQ) by s. hue h (fraction of a turn, in [-0.5, 0.5]): rotates the chroma by 2*pi*h. `order`
    is the order the four are applied in (indices into b, c, s, h). Greyscale keeps Y =
    0.299 R + 0.587 G + 0.114 B in all three channels (the same weights as torchvision).
    """
    theta = 2.0 * np.pi * hue
    steps = [
        _homogeneous(np.eye(3) * brightness),
        _homogeneous(np.eye(3) * contrast, [(1.0 - contrast) * CONTRAST_CENTER] * 3),
        _homogeneous(YIQ_TO_RGB @ np.diag([1.0, saturation, saturation]) @ RGB_TO_YIQ),
        _homogeneous(YIQ_TO_RGB @ np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)],
                                        [0, np.sin(theta), np.cos(theta)]]) @ RGB_TO_YIQ),
    ]
    total = np.eye(4)
    for i in order:
        total = steps[i] @ total
    if grayscale:
        total = _homogeneous(np.repeat(RGB_TO_YIQ[:1], 3, axis=0)) @ total
    return total[:3, :3].astype(np.float32), total[:3, 3].astype(np.float32)


def blur_window(sigma: float, size: int) -> int:
    """Odd Gaussian window covering +-3 sigma, smaller than the image (reflect padding needs it)."""
    window = 2 * int(np.ceil(3.0 * sigma)) + 1
    return int(max(1, min(window, size - 1 if size % 2 == 0 else size)))


def draw_view_aug(rng: np.random.Generator, size: int, augment: bool = True, aug: Augmentation = PAPER) -> ViewAug:
    """The random augmentation of one view (views.Augmentation; default the paper's: colour
    jitter p=0.8, greyscale p=0.2, blur p=0.5, flip p=0.5). Always draws the same count of
    numbers (4 + 3 + 1 doubles, a permutation of 4, 1 double), so later draws do not depend on
    which branches fired or on the settings. With augment=False returns the identity.
    The loaders do not call it: the planner draws every view's augmentation in batches
    (planner.view_augs), which tests/test_plan.py checks against this per-sample form."""
    low, high = jitter_ranges(aug)
    u = rng.random(4)  # jitter?, greyscale?, blur?, flip?
    if low[0] == low[1] == low[2] and high[0] == high[1] == high[2]:
        b, c, s = rng.uniform(float(low[0]), float(high[0]), 3)
    else:
        b, c, s = rng.uniform(low, high, 3)
    h = rng.uniform(-aug.hue, aug.hue)
    order = rng.permutation(4)
    sigma = float(rng.uniform(*aug.blur_sigma))
    if not augment:
        return ViewAug()
    jitter, gray, blur, flip = u[0] < aug.jitter_p, u[1] < aug.grayscale_p, u[2] < aug.blur_p, u[3] < aug.flip_p
    if jitter or gray:
        matrix, offset = color_affine(b, c, s, h, gray, order) if jitter else color_affine(grayscale=True)
    else:
        matrix, offset = np.eye(3, dtype=np.float32), np.zeros(3, np.float32)  # exact: DALI skips nothing
    return ViewAug(flip=bool(flip), color_matrix=matrix, color_offset=offset,
                   blur_sigma=sigma if blur else 0.0, blur_window=blur_window(sigma, size) if blur else 1)
