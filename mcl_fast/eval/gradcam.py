"""3D Grad-CAM (Selvaraju et al.) of a video backbone, and the paper's Figure 4.

For a conv layer with output A (C, T', H', W') and a scalar score y, the channel weights are
the gradients averaged over all positions, w_c = mean(dy/dA_c), and the map is
ReLU(sum_c w_c A_c) (T', H', W'). The score is the embedding's L2 norm (a pretrained
backbone has no classes) or one class logit of a fine-tuned model. The figure shows, left to
right, the clip's first frame, its S-motion (eq. 2: the motion map averaged over time) and the
Grad-CAM averaged over time, overlaid on the frame.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._io import atomic_write


def resolve_layer(model, layer: str | None = None):
    """(name, module) of the layer to explain: `layer`, else model.mal_layer, else the last Conv3d."""
    from torch import nn

    if layer is None:
        layer = getattr(model, "mal_layer", None) or None
    if layer is not None:
        try:
            return layer, model.get_submodule(layer)
        except AttributeError:
            raise ValueError(f"the model has no layer named {layer!r}") from None
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv3d)]
    if not convs:
        raise ValueError("the model has no Conv3d layer to explain; name one with layer=")
    return convs[-1]


def grad_cam_3d(model, clip, *, layer: str | None = None, target="norm", head=None) -> np.ndarray:
    """Grad-CAM of one clip: (T', H', W') float32 in [0, 1] at the layer's resolution.

    model: (B, 3, T, H, W) -> (B, D) features (or logits). clip: (3, T, H, W) or (1, 3, T, H, W)
    tensor, normalised like the model's input. target: "norm" (the L2 norm of the model's output),
    "pred" (the top logit of head(model(x))) or an int class index (that logit). head: optional
    module mapping the features to logits. The map is scaled so its maximum is 1 (all zeros if
    the score has no positive evidence at that layer).
    """
    import torch

    x = clip if clip.dim() == 5 else clip.unsqueeze(0)
    if x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"grad_cam_3d explains one clip (3, T, H, W), got {tuple(clip.shape)}")
    _, module = resolve_layer(model, layer)
    store = {}
    handle = module.register_forward_hook(lambda _m, _i, out: store.__setitem__("act", out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)  # so the layer's output carries a graph even if frozen
            out = model(x)
            if isinstance(out, tuple):
                out = out[0]
            if head is not None:
                out = head(out)
            if target == "norm":
                score = out.float().norm()
            else:
                index = int(out.argmax(1)[0]) if target == "pred" else int(target)
                if not 0 <= index < out.shape[1]:
                    raise ValueError(f"class index {index} is out of range for {out.shape[1]} outputs")
                score = out[0, index]
            act = store["act"]
            (grad,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
        model.train(was_training)
    act, grad = act[0].detach().float(), grad[0].float()  # (C, T', H', W')
    weights = grad.mean(dim=(1, 2, 3))
    cam = torch.relu((weights[:, None, None, None] * act).sum(0))
    peak = cam.max()
    if peak > 0:
        cam = cam / peak
    return cam.cpu().numpy().astype(np.float32)


def cam_to_image(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T', H', W') Grad-CAM -> (height, width) float32: averaged over time, bilinear upsampling, max 1."""
    import cv2

    cam = np.asarray(cam, np.float32)
    spatial = cam.mean(0) if cam.ndim == 3 else cam
    out = cv2.resize(spatial, (width, height), interpolation=cv2.INTER_LINEAR)
    peak = out.max()
    return out / peak if peak > 0 else out


def s_motion_from_frames(frames: np.ndarray, method: str = "farneback") -> np.ndarray:
    """(N, H, W, 3) uint8 consecutive frames -> (H, W) float32 S-motion (eq. 1-2) via CPU flow."""
    from ..motion import compute_flow, motion_map, pool_motion

    _, m_s, _ = pool_motion(motion_map(compute_flow(frames, method)))
    return m_s.astype(np.float32)


def save_gradcam_figure(path, frame: np.ndarray, s_motion: np.ndarray, cam: np.ndarray, *, title: str = "",
                        labels=("first frame", "S-motion", "Grad-CAM")) -> Path:
    """Write the Figure-4 style PNG: frame | S-motion | Grad-CAM over the frame. Atomic write.

    frame (H, W, 3) uint8; s_motion (h, w) and cam (H, W) or (T', H', W') float (resized to the frame).
    """
    return save_gradcam_comparison(path, frame, s_motion, {labels[2]: cam}, title=title, labels=labels[:2])


def save_gradcam_comparison(path, frame: np.ndarray, s_motion: np.ndarray, cams: dict, *, title: str = "",
                            labels=("first frame", "S-motion")) -> Path:
    """frame | S-motion | one Grad-CAM overlay per entry of `cams` ({panel title: cam}, e.g. before
    and after pretraining), one row. Shapes as `save_gradcam_figure`. Atomic write."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    h, w = frame.shape[:2]
    motion = cv2.resize(np.asarray(s_motion, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    fig, axes = plt.subplots(1, 2 + len(cams), figsize=(3 * (2 + len(cams)), 3.2))
    axes[0].imshow(frame)
    axes[1].imshow(motion, cmap="jet")
    for ax, cam in zip(axes[2:], cams.values()):
        ax.imshow(frame)
        ax.imshow(cam_to_image(cam, h, w), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    for ax, label in zip(axes, [*labels, *cams]):
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path


def _store_key(store, video: Path, key: str | None) -> str:
    """The entry of store.videos that names `video` (exact, else by matching path tail)."""
    videos = list(store.videos)
    if key is not None:
        if key not in videos:
            raise ValueError(f"{key!r} is not a video of the motion store")
        return key
    text = str(video)
    if text in videos:
        return text
    if hasattr(store, "video_path"):  # the store knows where its videos are: compare real paths
        real = video.resolve()
        same = [v for v in videos if Path(store.video_path(v)).resolve() == real]
        if len(same) == 1:
            return same[0]
    matches = [v for v in videos if video.as_posix().endswith("/" + Path(v).as_posix()) or Path(v).name == video.name]
    if len(matches) != 1:
        raise ValueError(f"{video}: cannot find it in the motion store ({len(matches)} candidates); pass store_key=")
    return matches[0]


def gradcam_video(model, video, out_png, *, clip_len: int = 16, stride: int = 2, crop_size: int = 112,
                  short_side: int | None = None, start: int | None = None, store=None, store_key=None,
                  layer: str | None = None, target="norm", head=None, device: str = "cpu") -> dict:
    """Explain one clip of a video file and write the Figure-4 PNG.

    The clip: clip_len frames at stride from `start` (default: the middle of the video), short side
    resized (crop·256/224 by default) and centre-cropped to crop_size. S-motion comes from the
    motion store when given (its maps resized to the frame, cropped the same way), else from
    Farneback flow over the clip's consecutive frames. Returns {"png", "start", "cam" (T', H', W'),
    "frame" (crop, crop, 3) uint8 the clip's first frame, "s_motion" (crop, crop) float32}.
    """
    import torch

    from ..sampling import clip_frame_indices, clip_span
    from .features import decode_resized, normalize_clips

    video = Path(video)
    resize_to = short_side if short_side is not None else int(round(crop_size * 256 / 224))
    frames = decode_resized(video, resize_to, crop=None)  # (N, h, w, 3), short side = resize_to
    n, h, w = frames.shape[:3]
    if min(h, w) < crop_size:
        raise ValueError(f"{video}: frames of {h}x{w} after resizing are smaller than the {crop_size} crop")
    y0, x0 = (h - crop_size) // 2, (w - crop_size) // 2
    span = clip_span(clip_len, stride)
    if start is None:
        start = max(0, (n - span) // 2)
    if not 0 <= start < n:
        raise ValueError(f"{video}: clip start {start} is outside its {n} frames")
    crops = frames[:, y0:y0 + crop_size, x0:x0 + crop_size]
    idx = clip_frame_indices(start, clip_len, stride, n)
    x = torch.from_numpy(normalize_clips(crops[idx])).to(device)
    model = model.to(device)
    if head is not None:
        head = head.to(device)
    cam = grad_cam_3d(model, x, layer=layer, target=target, head=head)

    if store is not None:
        if isinstance(store, (str, os.PathLike)):
            from ..motion import MotionStore

            store = MotionStore(store)
        import cv2

        maps = store.read(_store_key(store, video, store_key))  # (N', h', w') per-frame motion maps
        lo, hi = min(start, len(maps) - 1), min(start + span, len(maps))
        m_s = cv2.resize(maps[lo:hi].mean(0).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        s_motion = m_s[y0:y0 + crop_size, x0:x0 + crop_size]
    else:
        s_motion = s_motion_from_frames(crops[start:min(n, start + span)] if n - start >= 2 else crops[-2:])
    title = f"{video.name}  frames {start}..{int(idx[-1])}  target {target}"
    png = save_gradcam_figure(out_png, crops[idx[0]], s_motion, cam, title=title)
    return {"png": str(png), "start": int(start), "cam": cam, "frame": crops[idx[0]], "s_motion": s_motion}
