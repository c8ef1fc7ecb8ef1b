"""Synthetic videos with known ground truth: textured objects moving over a textured background.

Used by tests, benchmarks and the demo. The background is a smooth random texture (so optical
flow is well defined everywhere), optionally translated as a whole (a camera pan, which motion
boundaries cancel: eq. 1 of the paper); the objects carry their own texture and bounce around
the frame at a fixed speed, so their box per frame is exact. Videos are written with PyAV as
H.264 (.mp4) or VP9 (.webm), atomically.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .._io import fsync_path

# Container extension -> (encoder, default quality): near-lossless so flow tests see the render.
CODECS = {".mp4": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}
DEFAULT_QUALITY = {"libx264": 10, "libvpx-vp9": 10}


@dataclass(frozen=True)
class SyntheticVideo:
    """A written synthetic video and its ground truth.

    boxes: (num_frames, num_objects, 4) int64 (y0, x0, h, w) of every object in every frame,
    in pixels of the written video.
    """

    path: Path
    boxes: np.ndarray
    num_frames: int
    fps: float
    height: int
    width: int


# ----------------------------------------------------------------------------------- render


def smooth_texture(rng: np.random.Generator, height: int, width: int,
                   sigmas=(1.5, 4.0, 10.0), contrast: float = 1.0) -> np.ndarray:
    """(height, width, 3) uint8 RGB random texture: Gaussian-blurred noise at several scales.

    The detail lives in luma (the finest scale gives the gradients optical flow needs; the
    coarse ones make it look like a scene); colour varies only coarsely, as in real footage,
    so yuv420p's halved chroma resolution loses little of it.
    """
    import cv2

    def blurred_noise(channels: int, sigma: float) -> np.ndarray:
        noise = rng.standard_normal((height, width, channels)).astype(np.float32)
        out = cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT).reshape(height, width, channels)
        return out / (out.std() + 1e-6)

    luma = sum(blurred_noise(1, sigma) for sigma in sigmas)
    luma /= luma.std() + 1e-6
    chroma = blurred_noise(3, max(6.0, max(sigmas)))
    tint = rng.uniform(90, 165, 3).astype(np.float32)  # a random base colour per texture
    return np.clip(tint + 40.0 * contrast * luma + 12.0 * chroma, 0, 255).astype(np.uint8)


def _bounce(pos: float, vel: float, lo: float, hi: float) -> tuple[float, float]:
    """Advance one step, reflecting off [lo, hi]."""
    pos += vel
    if pos < lo:
        pos, vel = 2 * lo - pos, -vel
    elif pos > hi:
        pos, vel = 2 * hi - pos, -vel
    return min(max(pos, lo), hi), vel


def object_trajectories(rng: np.random.Generator, num_frames: int, height: int, width: int,
                        num_objects: int, size: int, speed: float, active=None) -> np.ndarray:
    """(num_frames, num_objects, 2) float64 top-left corners (y, x) of objects bouncing in the frame.

    Each object starts at a random place and moves `speed` px/frame in a random direction,
    reflecting off the frame's edges. With active=(a, b) an object moves from frame t to t+1
    only for a <= t < b, so flow[t] (frame t -> t+1) is non-zero exactly on [a, b).
    """
    lo_y, hi_y = 0.0, float(height - size)
    lo_x, hi_x = 0.0, float(width - size)
    a, b = (0, num_frames) if active is None else (int(active[0]), int(active[1]))
    corners = np.zeros((num_frames, num_objects, 2), np.float64)
    for k in range(num_objects):
        y, x = rng.uniform(lo_y, hi_y), rng.uniform(lo_x, hi_x)
        angle = rng.uniform(0, 2 * np.pi)
        vy, vx = speed * np.sin(angle), speed * np.cos(angle)
        for t in range(num_frames):
            corners[t, k] = (y, x)
            if a <= t < b:
                y, vy = _bounce(y, vy, lo_y, hi_y)
                x, vx = _bounce(x, vx, lo_x, hi_x)
    return corners


def paste_subpixel(frame: np.ndarray, skin: np.ndarray, y: float, x: float) -> None:
    """Draw `skin` ((s, s, 3) uint8) into `frame` in place with its top-left corner at the
    sub-pixel position (y, x): bilinear resampling, its edge pixels blended with the background,
    so an object moving 2.5 px/frame moves 2.5 px every frame (no 2-3-2-3 rounding jitter)."""
    import cv2

    sh, sw = skin.shape[:2]
    iy, ix = int(np.floor(y)), int(np.floor(x))
    shift = np.float32([[1, 0, x - ix], [0, 1, y - iy]])
    size = (sw + 1, sh + 1)
    patch = cv2.warpAffine(skin.astype(np.float32), shift, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = cv2.warpAffine(np.ones((sh, sw), np.float32), shift, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    region = frame[iy:iy + sh + 1, ix:ix + sw + 1]  # one row/column less at the frame's edge
    ph, pw = region.shape[:2]
    a = alpha[:ph, :pw, None]
    region[:] = np.clip(a * patch[:ph, :pw] + (1 - a) * region + 0.5, 0, 255).astype(np.uint8)


def render_frames(*, num_frames: int = 48, height: int = 96, width: int = 128, num_objects: int = 1,
                  object_size: int = 16, speed: float = 2.0, pan=(0.0, 0.0), active=None,
                  num_distractors: int = 0, seed: int = 0, return_positions: bool = False):
    """Render a synthetic clip.

    num_objects textured squares of object_size px bounce at `speed` px/frame (screen
    coordinates, sub-pixel) over a smooth random background. pan=(dy, dx) px/frame translates the whole
    background (sub-pixel, bilinear): a camera pan. active=(a, b): objects move only from
    frame a to frame b (static elsewhere). num_distractors static high-contrast squares are
    painted into the scene (they pan with it: large flow, but no motion boundary).

    Returns (frames (N, H, W, 3) uint8 RGB, boxes (N, num_objects, 4) int64 (y0, x0, h, w)):
    the boxes are the objects' positions rounded to whole pixels (within half a pixel).
    return_positions=True adds a third value, positions (N, num_objects, 2) float64: the exact
    sub-pixel top-left corners (y, x), so positions[t + 1] - positions[t] is the object's true
    displacement (its flow) from frame t to t+1 (use it, not box differences, as ground truth).
    """
    import cv2

    if num_frames < 1 or height < 4 or width < 4:
        raise ValueError(f"need num_frames >= 1 and a frame of at least 4x4, got {num_frames}, {height}x{width}")
    if not 1 <= object_size <= min(height, width):
        raise ValueError(f"object_size {object_size} does not fit a {height}x{width} frame")
    if active is not None and not (0 <= active[0] <= active[1]):
        raise ValueError(f"active must be (a, b) with 0 <= a <= b, got {active}")
    rng = np.random.default_rng(seed)
    dy, dx = float(pan[0]), float(pan[1])
    # The scene texture is large enough that the pan never leaves it (no reflected seams).
    margin_y = int(np.ceil(abs(dy) * num_frames)) + 2
    margin_x = int(np.ceil(abs(dx) * num_frames)) + 2
    scene = smooth_texture(rng, height + margin_y, width + margin_x)
    for _ in range(num_distractors):
        # No larger than the objects, so a figure's eye goes to what moves.
        side = min(int(rng.integers(max(2, object_size // 2), max(3, object_size) + 1)), height, width)
        y0 = int(rng.integers(0, scene.shape[0] - side + 1))
        x0 = int(rng.integers(0, scene.shape[1] - side + 1))
        scene[y0:y0 + side, x0:x0 + side] = smooth_texture(rng, side, side, sigmas=(1.0, 2.5), contrast=1.6)
    # The window onto the scene starts at (oy0, ox0) and moves by -pan per frame, so the
    # background's content (and its optical flow) moves by +pan px/frame on screen.
    oy0 = margin_y - 1 if dy > 0 else 1
    ox0 = margin_x - 1 if dx > 0 else 1
    corners = object_trajectories(rng, num_frames, height, width, num_objects, object_size, speed, active)
    boxes = np.concatenate([np.rint(corners).astype(np.int64),
                            np.full(corners.shape, object_size, np.int64)], axis=-1)
    skins = [smooth_texture(rng, object_size, object_size, sigmas=(1.0, 2.0), contrast=1.5)
             for _ in range(num_objects)]
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        m = np.float32([[1, 0, ox0 - dx * t], [0, 1, oy0 - dy * t]])  # out(x, y) = scene(x + ox, y + oy)
        frames[t] = cv2.warpAffine(scene, m, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_REFLECT)
        for k in range(num_objects):
            paste_subpixel(frames[t], skins[k], *corners[t, k])
    return (frames, boxes, corners) if return_positions else (frames, boxes)


# ------------------------------------------------------------------------------------ write


def _codec_for(path: Path, codec: str | None) -> str:
    if codec is not None:
        return codec
    try:
        return CODECS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"{path}: cannot pick a codec for extension {path.suffix!r}; "
                         f"use one of {sorted(CODECS)} or pass codec=") from None


def write_video(path, frames, fps: float = 25, codec: str | None = None, gop: int | None = None,
                quality: int | None = None) -> Path:
    """Encode (N, H, W, 3) uint8 RGB frames to `path` with PyAV, atomically.

    codec: an FFmpeg encoder name; by default from the extension (.mp4/.mkv -> libx264,
    .webm -> libvpx-vp9), yuv420p. gop: keyframe interval in frames (closed GOPs, IDR
    keyframes: scene-cut keyframes are disabled so the interval is exact). quality: CRF
    (lower is better; default 10, near-lossless). Every frame gets an explicit pts, so the
    file holds exactly N frames. Writes a temporary file beside `path`, fsyncs, then renames.
    """
    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be (N, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    n, height, width, _ = frames.shape
    if n < 1:
        raise ValueError(f"{path}: no frames to write")
    if height % 2 or width % 2:
        raise ValueError(f"{path}: yuv420p needs even frame sides, got {height}x{width}")
    if gop is not None and gop < 1:
        raise ValueError(f"{path}: gop must be >= 1, got {gop}")
    codec = _codec_for(path, codec)
    crf = DEFAULT_QUALITY.get(codec, 10) if quality is None else int(quality)
    rate = Fraction(fps).limit_denominator(1001)
    options = {"crf": str(crf)}
    if codec == "libx264":
        x264 = ["scenecut=0"]  # keyframes only where the GOP says
        if gop is not None:
            x264 += [f"keyint={gop}", f"min-keyint={gop}"]
        options.update({"preset": "veryfast", "x264-params": ":".join(x264)})
    elif codec == "libvpx-vp9":
        # Constant quality (b:v 0 + crf); fast settings: tests and demos encode small clips.
        options.update({"b:v": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"})
        if gop is not None:
            options.update({"keyint_min": str(gop)})

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        with av.open(str(tmp), mode="w", format=_container_format(path)) as container:
            stream = container.add_stream(codec, rate=rate, options=options)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if gop is not None:
                stream.codec_context.gop_size = gop
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1) / rate  # pts counts frames: none dropped or doubled
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # flush delayed frames
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _container_format(path: Path) -> str:
    return {".mp4": "mp4", ".mkv": "matroska", ".webm": "webm"}.get(path.suffix.lower(), None)


def make_video(path, *, fps: float = 25, codec: str | None = None, gop: int | None = None,
               quality: int | None = None, **render_kwargs) -> SyntheticVideo:
    """render_frames(**render_kwargs) then write_video; returns the ground truth with the path."""
    frames, boxes = render_frames(**render_kwargs)
    path = write_video(path, frames, fps=fps, codec=codec, gop=gop, quality=quality)
    n, h, w, _ = frames.shape
    return SyntheticVideo(path=path, boxes=boxes, num_frames=n, fps=float(fps), height=h, width=w)


# ------------------------------------------------------------------------------------- read


def read_frames(path, max_frames: int | None = None, short_side: int | None = None) -> np.ndarray:
    """Decode a video with PyAV: (N, H, W, 3) uint8 RGB, the first max_frames frames.

    short_side resizes every frame (area interpolation) so its shorter side is that many
    pixels, keeping the aspect ratio (sides rounded to even numbers). Raises ValueError (a
    VideoError naming the file) for a file that cannot be decoded.
    """
    import cv2

    from ..video_io import iter_frames

    out = []
    frames = iter_frames(path)
    for image in frames:
        if short_side is not None:
            h, w = image.shape[:2]
            s = short_side / min(h, w)
            size = (max(2, 2 * round(w * s / 2)), max(2, 2 * round(h * s / 2)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        out.append(image)
        if max_frames is not None and len(out) >= max_frames:
            frames.close()  # stop decoding: the rest of the file is not needed
            break
    return np.stack(out)  # iter_frames raises for a file without a frame