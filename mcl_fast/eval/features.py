"""Evaluation clips and frozen-backbone features, cached on disk.

The paper's linear protocol (sec. 4.2): 20 clips sampled uniformly over each video (16 frames at
stride 2 by default), the centre crop that resizing the short side to 256 for 224 crops (128 for
112: crop·256/224) keeps, ImageNet normalisation; the video's feature is the mean of its clips'
features. The clips come from the loaders' evaluation mode (mcl_fast.data.evaluation): PyAV in
DataLoader workers, or DALI (NVDEC on a GPU); the backbone runs on whatever device is given, in
batches of clips. Features are cached as ``.npy`` + ``.json`` (never pickle), keyed by the
checkpoint's content hash, the split's entries and the clip settings.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..data.evaluation import evaluation_loader, uniform_clip_starts  # noqa: F401 (the evaluation's, re-exported)
from ..data.output import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class ClipSettings:
    """How evaluation clips are cut: num_clips × (clip_len frames at stride), crop_size² pixels.

    short_side: the frames' short side before the centre crop; None means crop_size·256/224
    (256 for 224, 128 for 112), the paper's rule.
    """

    num_clips: int = 20
    clip_len: int = 16
    stride: int = 2
    crop_size: int = 224
    short_side: int | None = None

    def __post_init__(self):
        if min(self.num_clips, self.clip_len, self.stride, self.crop_size) < 1:
            raise ValueError(f"clip settings must be positive: {self}")
        if self.short_side is not None and self.short_side < self.crop_size:
            raise ValueError(f"short_side {self.short_side} is smaller than crop_size {self.crop_size}")

    @property
    def resize_to(self) -> int:
        return self.short_side if self.short_side is not None else int(round(self.crop_size * 256 / 224))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["short_side"] = self.resize_to
        return d


# ------------------------------------------------------------------------------- decoding


def resize_short_side(image: np.ndarray, short_side: int, at_least: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with min(h, w) = short_side (each side at least
    `at_least`): OpenCV's area filter when shrinking, bilinear when enlarging."""
    import cv2

    h, w = image.shape[:2]
    scale = short_side / min(h, w)
    size = (max(at_least, int(round(w * scale))), max(at_least, int(round(h * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def resize_center_crop(image: np.ndarray, short_side: int, crop: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (crop, crop, 3) uint8: short side resized to short_side, centre crop."""
    image = resize_short_side(image, short_side, at_least=crop)
    y0, x0 = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
    return image[y0:y0 + crop, x0:x0 + crop]


def decode_resized(path, short_side: int, crop: int | None = None) -> np.ndarray:
    """Decode every frame of a video with PyAV: (N, S, S, 3) uint8 RGB after resize + centre crop
    (Grad-CAM's overlays). crop=None keeps the whole resized frame
    (N, h, w, 3). Raises ValueError (a VideoError naming the file, with the reason every tool
    gives: mcl_fast.video_io) for a bad video.
    """
    from ..video_io import iter_frames

    frames = [resize_short_side(image, short_side) if crop is None else resize_center_crop(image, short_side, crop)
              for image in iter_frames(path)]
    return np.stack(frames)  # iter_frames raises for a file without a frame


def normalize_clips(frames_uint8: np.ndarray) -> np.ndarray:
    """(..., T, H, W, 3) uint8 -> (..., 3, T, H, W) float32, ImageNet-normalised."""
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    x = (frames_uint8.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(np.moveaxis(x, -1, -4))


def clip_loader(paths, settings: ClipSettings, *, videos_per_batch: int = 1, labels=None, decoder: str = "pyav",
                device: str = "cpu", num_workers: int = 0):
    """The loaders' evaluation mode (data.evaluation.evaluation_loader) with these clip settings:
    batch["views"] holds settings.num_clips tensors (B, 3, T, S, S), batch["index"] (B,) the videos."""
    s = settings
    return evaluation_loader([str(p) for p in paths], num_clips=s.num_clips, clip_len=s.clip_len, stride=s.stride,
                             crop_size=s.crop_size, resize_to=s.resize_to, batch_size=videos_per_batch,
                             labels=labels, decoder=decoder, device=device, num_workers=num_workers)


def batch_clips(batch: dict):
    """(B, num_clips, 3, T, S, S) clips and (B,) int64 video indices of an evaluation batch."""
    import torch

    return torch.stack(batch["views"], 1), batch["index"]


def close_loader(loader) -> None:
    """Stop a TorchVideoLoader's workers now (a DALI loader has none)."""
    close = getattr(loader, "close", None)
    if close is not None:
        close()


def unread_videos(loader, paths, seen) -> dict[int, str]:
    """{index: reason} of the videos no batch held (seen: (N,) bool), with the reason the loader
    recorded (their samples were given replacements, each reported once)."""
    return {int(i): loader.failures.get(str(paths[i]), "not read") for i in np.flatnonzero(~np.asarray(seen))}


def eval_clips(path, settings: ClipSettings) -> np.ndarray:
    """(num_clips, 3, clip_len, crop, crop) float32 normalised evaluation clips of one video.
    Raises VideoError naming the file when it cannot be read."""
    from ..video_io import VideoError

    loader = clip_loader([path], settings)
    try:
        clips, _ = batch_clips(next(iter(loader)))
    except RuntimeError:  # every attempt at the one video failed: say why
        reason = loader.failures.get(str(path))
        if reason is None:
            raise
        raise VideoError(str(path), reason) from None
    return clips[0].numpy()


# ------------------------------------------------------------------------------ extraction


def resolve_device(device: str | None = None) -> str:
    """'cuda' when available and not told otherwise, else 'cpu'."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
    return "cuda" if device == "gpu" else device


def extract_features(backbone, paths, settings: ClipSettings, *, batch_size: int = 40, num_workers: int = 0,
                     device: str | None = None, decoder: str = "pyav", progress: bool = True,
                     desc: str = "features") -> np.ndarray:
    """Frozen features: (len(paths), D) float32, each the mean of the video's clip features.

    backbone: maps (B, 3, T, S, S) -> (B, D). batch_size counts clips per forward (at least one
    video's clips). decoder: "pyav" (CPU, num_workers DataLoader processes) or "dali" (NVDEC when
    device is cuda, else DALI's CPU decoder: VP8/VP9/MJPEG). Runs under inference mode, bf16
    autocast on CUDA. A video that cannot be read is a ValueError naming it and why.
    """
    import torch
    from tqdm import tqdm

    if len(paths) == 0:
        raise ValueError("extract_features: no videos")
    if decoder not in ("pyav", "dali"):
        raise ValueError(f"decoder must be 'pyav' or 'dali', got {decoder!r}")
    device = resolve_device(device)
    was_training = backbone.training
    backbone.eval().to(device)
    loader = clip_loader(paths, settings, videos_per_batch=max(1, batch_size // settings.num_clips),
                         decoder=decoder, device=device if decoder == "dali" else "cpu", num_workers=num_workers)
    feats, seen = None, np.zeros(len(paths), bool)
    try:
        with torch.inference_mode(), tqdm(total=len(paths), desc=desc, unit="video", disable=not progress) as bar:
            for batch in loader:
                clips, index = batch_clips(batch)
                b, k = clips.shape[:2]
                x = clips.flatten(0, 1).to(device, non_blocking=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                    out = backbone(x)
                out = out.float().reshape(b, k, -1).mean(1).cpu().numpy()
                if feats is None:
                    feats = np.zeros((len(paths), out.shape[1]), np.float32)
                feats[index.cpu().numpy()] = out
                seen[index.cpu().numpy()] = True
                bar.update(b)
    finally:
        backbone.train(was_training)
        close_loader(loader)
    failed = unread_videos(loader, paths, seen)
    if failed:
        listed = "; ".join(f"{paths[i]}: {reason}" for i, reason in list(failed.items())[:5])
        raise ValueError(f"{len(failed)} of {len(paths)} videos could not be read ({listed})")
    return feats


# ------------------------------------------------------------------------------------ cache


def file_sha256(path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes (a checkpoint's identity for the cache)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_key(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:24]


def cached_features(cache_dir, meta: dict, compute):
    """Load features for `meta` from cache_dir, or compute() them and store them.

    meta: JSON-able identity (checkpoint hash, split entries, clip settings...). Files are
    `<key>.npy` (the array) and `<key>.json` (meta, written last: its presence marks a complete
    entry). cache_dir=None disables caching. Returns (features, hit: bool).
    """
    if cache_dir is None:
        return compute(), False
    cache_dir = Path(cache_dir)
    key = cache_key(meta)
    npy, js = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if npy.is_file() and js.is_file():
        try:
            stored = json.loads(js.read_text())
            feats = np.load(npy, allow_pickle=False)
            if stored.get("meta") == json.loads(json.dumps(meta)) and feats.shape[0] == stored.get("rows"):
                return feats, True
        except (ValueError, OSError):
            pass  # a damaged entry is recomputed
    feats = np.asarray(compute(), np.float32)
    atomic_write(npy, lambda f: np.save(f, feats, allow_pickle=False))
    atomic_write(js, lambda f: f.write(json.dumps({"meta": meta, "rows": int(feats.shape[0])}, indent=1).encode()))
    return feats, False


def split_features(backbone, split, videos_root, settings: ClipSettings, *, checkpoint_hash: str = "",
                   cache_dir=None, **extract_kwargs):
    """(features (N, D) float32, labels (N,) int64) of a Split's videos, through the cache."""
    paths = [Path(videos_root) / rel for rel in split.paths]
    entries_hash = hashlib.sha256(json.dumps(split.entries).encode()).hexdigest()
    # The decoder and the device (bf16 autocast on CUDA, fp32 on CPU) change the features too; version 3:
    # the loaders' clips (antialiased resize of the centre box), no longer a resize then a crop.
    meta = {"checkpoint": checkpoint_hash, "split": split.name, "entries": entries_hash,
            "clips": settings.to_dict(), "decoder": extract_kwargs.get("decoder", "pyav"),
            "device": resolve_device(extract_kwargs.get("device")), "version": 3}
    extract_kwargs.setdefault("desc", f"features {split.name}")
    feats, _ = cached_features(cache_dir, meta, lambda: extract_features(backbone, paths, settings, **extract_kwargs))
    return feats, np.asarray(split.labels, np.int64)
