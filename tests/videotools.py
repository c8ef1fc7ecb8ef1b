"""Helpers shared by the loader tests: an independent decode, a reference crop and PSNR."""
from __future__ import annotations

import numpy as np


def decode_all(path) -> np.ndarray:
    """Every frame of `path`, decoded start to end with PyAV (independent of the loaders)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def psnr(a, b) -> float:
    mse = float(((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def reference_view(frames: np.ndarray, box, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> crop at box, bilinear antialiased resize (the loader's filter): (3, T, S, S)."""
    import torch
    import torch.nn.functional as F

    y0, x0, h, w = box
    crop = torch.from_numpy(frames[:, y0:y0 + h, x0:x0 + w]).permute(0, 3, 1, 2).float()
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.permute(1, 0, 2, 3).numpy()


def assert_loaders_agree(a, b, exact, views, epochs: int = 2, min_psnr: float = 35.0) -> None:
    """Two loaders with the same seed and options hand out, epoch after epoch, equal `exact` batch
    fields (a tensor, or a per-view list of them) and the views numbered `views` (positions in
    batch["views"]) within min_psnr dB of each other (their resize and blur filters differ)."""
    import torch

    from mcl_fast.data.augment import denormalize

    for epoch in range(epochs):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for x, y in zip(a, b):
            for key in exact:
                assert same_field(x[key], y[key]), key
            for view in views:
                p, q = denormalize(x["views"][view]).numpy(), denormalize(y["views"][view]).numpy()
                for i in range(len(p)):
                    assert psnr(p[i], q[i]) >= min_psnr, (view, i)


def same_field(x, y) -> bool:
    """Two batch fields are equal: tensors, or lists of tensors (the per-view fields)."""
    import torch

    if isinstance(x, list) or isinstance(y, list):
        return isinstance(x, list) and isinstance(y, list) and len(x) == len(y) and all(map(same_field, x, y))
    return torch.equal(x, y)


def labelled_store(root, clips, seed: int):
    """VP9 clips in class folders, their motion store (Farneback, short side 48) and a UCF101-style
    split listing every video with its class's 1-based number.

    clips: [(class_name, file_stem, num_frames)]. Returns (store, videos_folder, trainlist path).
    """
    from mcl_fast.data.synthetic import make_video
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    classes = sorted({cls for cls, _, _ in clips})
    videos = root / "videos"
    for i, (cls, stem, n) in enumerate(clips):
        make_video(videos / cls / f"{stem}.webm", num_frames=n, height=48, width=64, object_size=12, gop=8,
                   seed=seed + i)
    prepare(str(videos), str(root / "store"), flow="farneback", size=48, workers=1, progress=False)
    store = MotionStore(root / "store")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(classes)))
    (lists / "trainlist01.txt").write_text(
        "".join(f"{v} {classes.index(v.split('/')[0]) + 1}\n" for v in store.videos))
    return store, videos, lists / "trainlist01.txt"
