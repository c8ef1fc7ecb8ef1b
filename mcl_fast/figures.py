"""PNG figures: motion maps over frames, the sampler's chosen tubelet, training loss curves.

Matplotlib's object API with the Agg canvas (no pyplot, no global backend switch, no display
needed). Every figure is written atomically: a temporary file beside the target, fsync, rename.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._io import atomic_write

HEATMAP = "inferno"


def _new_figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")


def save_figure(fig, path) -> Path:
    """Write `fig` as PNG to `path` atomically; returns the path."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def _show_map(ax, m, frame_hw, vmax=None, overlay: bool = False):
    """Stretch a (possibly downsampled) map over a frame of frame_hw pixels.

    overlay=True draws it translucent in proportion to its value, so the frame stays visible
    where nothing moves and the heat shows where something does.
    """
    from matplotlib import colormaps

    h, w = frame_hw
    m = np.asarray(m, np.float32)
    vmax = float(vmax) if vmax else float(m.max()) or 1.0
    if not overlay:
        return ax.imshow(m, cmap=HEATMAP, vmin=0.0, vmax=vmax, extent=(0, w, h, 0), interpolation="bilinear")
    level = np.clip(m / vmax, 0.0, 1.0)
    rgba = colormaps[HEATMAP](level)
    rgba[..., 3] = 0.85 * np.sqrt(level)  # sqrt: faint motion still shows
    return ax.imshow(rgba, extent=(0, w, h, 0), interpolation="bilinear")


def _box_patch(box, **style):
    from matplotlib.patches import Rectangle

    y0, x0, h, w = (float(v) for v in box)
    return Rectangle((x0, y0), w, h, fill=False, **style)


def plot_motion_overlay(frames, maps, frame_indices, path, title: str | None = None) -> Path:
    """A few frames (top row) and the same frames with their motion maps overlaid (bottom row).

    frames: (K, H, W, 3) uint8 RGB, the frames at `frame_indices` (K,); maps: (K, h, w) float
    motion maps of those frames (any resolution: stretched over the frame). One colour scale
    for all K maps (the 99th percentile of their values), so frames compare.
    """
    frames, maps = np.asarray(frames), np.asarray(maps, np.float32)
    k = len(frames)
    if k == 0 or len(maps) != k or len(frame_indices) != k:
        raise ValueError(f"need as many frames, maps and indices (got {len(frames)}, {len(maps)}, {len(frame_indices)})")
    h, w = frames.shape[1:3]
    vmax = float(np.percentile(maps, 99)) or 1.0
    panel_w = 3.2
    fig = _new_figure(panel_w * k, 2 * panel_w * h / w + 0.8)
    axes = fig.subplots(2, k, squeeze=False)
    for j in range(k):
        axes[0, j].imshow(frames[j])
        axes[0, j].set_title(f"frame {int(frame_indices[j])}", fontsize=9)
        axes[1, j].imshow(frames[j])
        _show_map(axes[1, j], maps[j], (h, w), vmax=vmax, overlay=True)
        for ax in axes[:, j]:
            ax.set_axis_off()
    axes[1, 0].set_title("motion map (eq. 1) overlaid", fontsize=9, loc="left")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scale = ScalarMappable(Normalize(0.0, vmax), HEATMAP)
    fig.colorbar(scale, ax=axes[1, :].tolist(), shrink=0.8, label="motion (eq. 1)")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_tubelet(frames, frame_indices, *, m_t, starts, scores, start: int, span: int, m_s, boxes,
                 chosen: int, path, title: str | None = None, percentile: float = 90.0) -> Path:
    """The sampler's choice for one video.

    Top: T-motion per frame (m_t, (N,)) and every candidate clip's score (`starts`, `scores`
    (K,)) with the median score (clips strictly above it are eligible) and the chosen clip's
    span [start, start + span) shaded. Middle: the clip's S-motion m_s ((h, w), the clip's
    mean map) with its hot pixels (above the `percentile`) outlined. Bottom: the clip's frames
    ((K', H, W, 3) uint8 at frame_indices) with the candidate crop boxes ((C, 4) (y0, x0, h, w)
    in frame pixels) faint and the chosen box `boxes[chosen]` bold.
    """
    frames = np.asarray(frames)
    m_s = np.asarray(m_s, np.float32)
    boxes = np.asarray(boxes)
    k = len(frames)
    h, w = frames.shape[1:3]
    panel_w = 2.0
    strip_h = panel_w * h / w
    top_h = 3.0
    fig_w = max(panel_w * k, 10.0)
    fig = _new_figure(fig_w, top_h + strip_h + 0.9)
    outer = fig.add_gridspec(2, 1, height_ratios=[top_h, strip_h])
    map_w = top_h * w / h  # the S-motion panel keeps the frame's aspect at the top row's height
    top = outer[0].subgridspec(1, 2, width_ratios=[max(fig_w - map_w, 1.0), map_w])
    strip = outer[1].subgridspec(1, k)

    # T-motion and clip scores.
    ax = fig.add_subplot(top[0, 0])
    ax.plot(np.arange(len(m_t)), m_t, color="0.6", lw=1, label="T-motion per frame")
    median = float(np.median(scores))
    eligible = scores > median
    ax.plot(starts, scores, color="tab:blue", lw=1.5, label="clip score (mean T-motion), by start")
    ax.scatter(starts[eligible], scores[eligible], s=6, color="tab:blue", zorder=3)
    ax.axhline(median, color="tab:red", ls="--", lw=1, label="median clip score")
    ax.axvspan(start, start + span - 1, color="tab:green", alpha=0.25, label=f"chosen clip: frames {start}-{start + span - 1}")
    ax.axvline(start, color="tab:green", lw=1.5)
    ax.set_xlim(0, max(len(m_t) - 1, 1))
    ax.set_xlabel("frame")
    ax.set_ylabel("motion")
    ax.legend(fontsize=7, loc="upper right", ncols=2)

    # S-motion of the clip with the hot pixels and the chosen box.
    ax = fig.add_subplot(top[0, 1])
    _show_map(ax, m_s, (h, w), vmax=float(np.percentile(m_s, 99.5)) or 1.0)
    hot = m_s > np.percentile(m_s, percentile)
    if hot.any():
        mh, mw = m_s.shape
        ys = (np.arange(mh) + 0.5) * h / mh
        xs = (np.arange(mw) + 0.5) * w / mw
        ax.contour(xs, ys, hot.astype(float), levels=[0.5], colors="cyan", linewidths=1)
    ax.add_patch(_box_patch(boxes[chosen], edgecolor="lime", lw=2))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(f"clip S-motion, hot pixels (> {percentile:g}th pct)\nin cyan, chosen crop in green", fontsize=8)
    ax.set_axis_off()

    # The clip's frames with the candidates and the chosen box.
    for j in range(k):
        ax = fig.add_subplot(strip[0, j])
        ax.imshow(frames[j])
        for i, box in enumerate(boxes):
            if i != chosen:
                ax.add_patch(_box_patch(box, edgecolor="white", lw=0.6, alpha=0.35))
        ax.add_patch(_box_patch(boxes[chosen], edgecolor="lime", lw=1.8))
        ax.set_title(f"frame {int(frame_indices[j])}", fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_loss_curves(history: dict[str, list[float]], path, title: str | None = None,
                     xlabel: str = "step") -> Path:
    """One line per named series (e.g. {"loss": [...], "info_nce": [...], "mal": [...]}), all
    against their index, with a moving average where a series is long and noisy."""
    if not history:
        raise ValueError("plot_loss_curves needs at least one series")
    fig = _new_figure(7.0, 4.0)
    ax = fig.add_subplot()
    for name, values in history.items():
        values = np.asarray(values, np.float64)
        if values.size == 0:
            continue
        x = np.arange(len(values))
        if len(values) >= 50:
            window = max(5, len(values) // 50)
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            line, = ax.plot(x, values, lw=0.6, alpha=0.3)
            ax.plot(x[window - 1:], smooth, lw=1.5, color=line.get_color(), label=f"{name} (mean of {window})")
        else:
            ax.plot(x, values, lw=1.5, marker="o" if len(values) < 20 else None, ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


__all__ = ["plot_motion_overlay", "plot_tubelet", "plot_loss_curves", "save_figure"]
