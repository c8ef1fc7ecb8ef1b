"""Evaluation clips and frozen-backbone features, cached on disk.

The paper's linear protocol (sec. 4.2): 20 clips sampled uniformly over each video (16 frames at
stride 2 by default), the short side resized (256 for 224 crops, 128 for 112: crop·256/224), one
centre crop, ImageNet normalisation; the video's feature is the mean of its clips' features.

Decoding is PyAV on the CPU (every frame is decoded once, resized and centre-cropped on the fly,
so memory holds crops only), parallelised over videos by a torch DataLoader; the backbone runs
on whatever device is given, in batches of clips. Features are cached as ``.npy`` + ``.json``
(never pickle), keyed by the checkpoint's content hash, the split's entries and the clip settings.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_write

from ..sampling import clip_frame_indices, clip_span

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


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


def resize_center_crop(image: np.ndarray, short_side: int, crop: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (crop, crop, 3) uint8: short side resized to short_side, centre crop."""
    import cv2

    h, w = image.shape[:2]
    scale = short_side / min(h, w)
    nh, nw = max(crop, int(round(h * scale))), max(crop, int(round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (nw, nh), interpolation=interp)
    y0, x0 = (nh - crop) // 2, (nw - crop) // 2
    return image[y0:y0 + crop, x0:x0 + crop]


def decode_resized(path, short_side: int, crop: int | None = None) -> np.ndarray:
    """Decode every frame of a video with PyAV: (N, S, S, 3) uint8 RGB after resize + centre crop.

    crop=None keeps the whole resized frame (N, h, w, 3). Raises ValueError (a VideoError naming
    the file, with the reason every tool gives: mcl_fast.video_io) for a bad video.
    """
    import cv2

    from ..video_io import iter_frames

    frames = []
    for image in iter_frames(path):
        if crop is None:
            h, w = image.shape[:2]
            s = short_side / min(h, w)
            image = cv2.resize(image, (int(round(w * s)), int(round(h * s))),
                               interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        else:
            image = resize_center_crop(image, short_side, crop)
        frames.append(image)
    return np.stack(frames)  # iter_frames raises for a file without a frame


def uniform_clip_starts(num_frames: int, num_clips: int, clip_len: int, stride: int) -> np.ndarray:
    """(num_clips,) int64 starts evenly spaced from 0 to the last full clip (0 when the video is short)."""
    last = max(0, num_frames - clip_span(clip_len, stride))
    return np.floor(np.linspace(0, last, num_clips) + 0.5).astype(np.int64)  # half rounds up


def normalize_clips(frames_uint8: np.ndarray) -> np.ndarray:
    """(..., T, H, W, 3) uint8 -> (..., 3, T, H, W) float32, ImageNet-normalised."""
    x = (frames_uint8.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(np.moveaxis(x, -1, -4))


def eval_clips(path, settings: ClipSettings) -> np.ndarray:
    """(num_clips, 3, clip_len, crop, crop) float32 normalised evaluation clips of one video."""
    frames = decode_resized(path, settings.resize_to, settings.crop_size)
    starts = uniform_clip_starts(len(frames), settings.num_clips, settings.clip_len, settings.stride)
    idx = np.stack([clip_frame_indices(s, settings.clip_len, settings.stride, len(frames)) for s in starts])
    return normalize_clips(frames[idx])


class EvalClipDataset:
    """torch-style dataset: item i = (clips (num_clips, 3, T, S, S) float32 tensor, i)."""

    def __init__(self, paths, settings: ClipSettings):
        self.paths = [Path(p) for p in paths]
        self.settings = settings

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import torch

        return torch.from_numpy(eval_clips(self.paths[i], self.settings)), i


# ---------------------------------------------------------------------------- DALI decoding


def centre_box(height: int, width: int, settings: ClipSettings) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) in source pixels of the centre crop: what resize-short-side + centre-crop keeps."""
    side = int(round(settings.crop_size * min(height, width) / settings.resize_to))
    side = max(1, min(side, height, width))
    return (height - side) // 2, (width - side) // 2, side, side


def iter_dali_clips(paths, settings: ClipSettings, *, device: str = "gpu", batch_size: int = 40,
                    num_threads: int = 2):
    """Evaluation clips through DALI: yields (video index, (num_clips, 3, T, S, S) float32 torch tensor).

    device="gpu" decodes with NVDEC (H.264, HEVC, VP9, ...) and leaves the clips on the GPU;
    device="cpu" uses DALI's CPU decoder (VP8, VP9, MJPEG only). Each clip's frames are decoded
    exactly (fn.decoders.video with frames=), the centre box (centre_box) is cropped and resized
    to crop_size² and ImageNet-normalised: the same clips as eval_clips up to interpolation.
    Frame counts come from demuxing (video_io.frame_index, no decode). On the GPU, files NVDEC
    cannot decode (data.nvdec) raise NvdecUnsupported naming each, before any decoding.
    """
    import torch

    from .._backend import require_dali
    from ..data.nvdec import refuse_unsupported
    from ..data.pipeline import crop_resize, decode, flip_normalize, to_torch
    from ..video_io import VideoError, frame_index, probe

    if device == "gpu":
        refuse_unsupported(paths, "evaluation with decoder='dali' on the GPU")
    dali = require_dali()
    samples = []  # (video index, frames (T,) int32, box)
    for vi, path in enumerate(paths):
        path = str(path)
        info = probe(path)
        n = len(frame_index(path))
        if n == 0:
            raise VideoError(path, "corrupt: no frame decodes")
        box = centre_box(info["height"], info["width"], settings)
        for start in uniform_clip_starts(n, settings.num_clips, settings.clip_len, settings.stride):
            samples.append((vi, clip_frame_indices(start, settings.clip_len, settings.stride, n).astype(np.int32), box))
    batch = max(1, min(batch_size, len(samples)))
    encoded_cache: dict[int, np.ndarray] = {}

    def source(info):  # batch callback: info.iteration counts batches
        lo = info.iteration * batch
        if lo >= len(samples):
            raise StopIteration
        chunk = samples[lo:lo + batch]
        chunk = chunk + [chunk[-1]] * (batch - len(chunk))  # pad the last batch; extras dropped below
        encoded, frames, starts, shapes = [], [], [], []
        for vi, fr, (y0, x0, h, w) in chunk:
            if vi not in encoded_cache:
                encoded_cache.clear()  # keep one file's bytes at a time
                encoded_cache[vi] = np.fromfile(str(paths[vi]), dtype=np.uint8)
            encoded.append(encoded_cache[vi])
            frames.append(fr)
            starts.append(np.array([y0, x0], np.int32))
            shapes.append(np.array([h, w], np.int32))
        return encoded, frames, starts, shapes

    dev_id = torch.cuda.current_device() if device == "gpu" else None
    pipe = dali.pipeline.Pipeline(batch_size=batch, num_threads=num_threads, device_id=dev_id, prefetch_queue_depth=1,
                                  exec_async=False, exec_pipelined=False)
    with pipe:
        enc, fr, st, sh = dali.fn.external_source(source=source, num_outputs=4, batch=True, batch_info=True,
                                                  parallel=False)
        clip = decode(enc, fr, device)
        pipe.set_outputs(flip_normalize(crop_resize(clip, st, sh, settings.crop_size), 0))
    pipe.build()
    pending: list = []  # (video index, clip tensor) in sample order
    position = 0
    while position < len(samples):
        (out,) = pipe.run()
        clips = to_torch(out, device)  # (batch, 3, T, S, S), a copy DALI will not overwrite
        take = min(batch, len(samples) - position)
        for k in range(take):
            pending.append((samples[position + k][0], clips[k]))
        position += take
        while pending and (position >= len(samples) or pending[-1][0] != pending[0][0]):
            vi = pending[0][0]
            group = [c for v, c in pending if v == vi]
            pending = [(v, c) for v, c in pending if v != vi]
            yield vi, torch.stack(group)


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
    autocast on CUDA.
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
    if decoder == "dali":
        batches = ((torch.tensor([vi]), clips[None]) for vi, clips in
                   iter_dali_clips(paths, settings, device="gpu" if device == "cuda" else "cpu", batch_size=batch_size))
    else:
        per_batch = max(1, batch_size // settings.num_clips)
        batches = ((index, clips) for clips, index in torch.utils.data.DataLoader(
            EvalClipDataset(paths, settings), batch_size=per_batch, num_workers=num_workers, shuffle=False))
    feats = None
    try:
        with torch.inference_mode(), tqdm(total=len(paths), desc=desc, unit="video", disable=not progress) as bar:
            for index, clips in batches:
                b, k = clips.shape[:2]
                x = clips.flatten(0, 1).to(device, non_blocking=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                    out = backbone(x)
                out = out.float().reshape(b, k, -1).mean(1).cpu().numpy()
                if feats is None:
                    feats = np.zeros((len(paths), out.shape[1]), np.float32)
                feats[index.numpy()] = out
                bar.update(b)
    finally:
        backbone.train(was_training)
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
    # The decoder and the device (bf16 autocast on CUDA, fp32 on CPU) change the features too.
    meta = {"checkpoint": checkpoint_hash, "split": split.name, "entries": entries_hash,
            "clips": settings.to_dict(), "decoder": extract_kwargs.get("decoder", "pyav"),
            "device": resolve_device(extract_kwargs.get("device")), "version": 2}
    extract_kwargs.setdefault("desc", f"features {split.name}")
    feats, _ = cached_features(cache_dir, meta, lambda: extract_features(backbone, paths, settings, **extract_kwargs))
    return feats, np.asarray(split.labels, np.int64)
