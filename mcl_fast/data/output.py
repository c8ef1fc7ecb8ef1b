"""Output format of the loaders' views: normalisation, dtype and layout.

    OutputFormat()                                   # ImageNet-normalised float32 (B, 3, T, S, S): the default
    OutputFormat(normalize=None)                     # float in [0, 1]
    OutputFormat(normalize=None, dtype="uint8")      # 0..255 integers (round to nearest, clamp)
    OutputFormat(normalize=((0.5,) * 3, (0.5,) * 3)) # your own mean/std, in [0, 1] units like torchvision's
    OutputFormat(layout="NTCHW")                     # (B, T, 3, S, S); "NTHWC": (B, T, S, S, 3)

The transform on a pixel x in 0..255 (after crop, resize and augmentation) is
(x / 255 - mean) / std with "imagenet" or (mean, std), x / 255 with None, and round(x) with
dtype uint8. The DALI loader does it inside the pipeline (crop_mirror_normalize: mean * 255,
std * 255, its dtype and output layout); the torch loader with the same formula. bfloat16, which
DALI has no type for, leaves the pipeline as float32 and is converted by torch on the same device
right after the copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DTYPES = ("float32", "float16", "bfloat16", "uint8")
LAYOUTS = {"NCTHW": "CFHW", "NTCHW": "FCHW", "NTHWC": "FHWC"}  # batch layout -> DALI per-sample layout
FROM_NHWC = {"NCTHW": (3, 0, 1, 2), "NTCHW": (0, 3, 1, 2), "NTHWC": (0, 1, 2, 3)}  # (T, S, S, 3) -> a sample


def _dtype_name(dtype) -> str:
    """'float32' for "float32", torch.float32 or numpy.float32."""
    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            pass
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (or the torch/NumPy dtype), got {dtype!r}")
    return name


@dataclass(frozen=True)
class OutputFormat:
    """normalize: "imagenet", (mean, std) per channel in [0, 1] units, or None ([0, 1]);
    dtype: float32, float16, bfloat16 or uint8 (uint8 only with normalize=None: 0..255);
    layout: "NCTHW", "NTCHW" or "NTHWC" of a batch of views."""

    normalize: object = "imagenet"
    dtype: str = "float32"
    layout: str = "NCTHW"

    def __post_init__(self):
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        norm = self.normalize
        if isinstance(norm, str):
            if norm != "imagenet":
                raise ValueError(f"normalize must be 'imagenet', (mean, std) or None, got {norm!r}")
            norm = (IMAGENET_MEAN, IMAGENET_STD)
        elif norm is not None:
            try:
                mean, std = norm
                norm = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
            except (TypeError, ValueError):
                raise ValueError(f"normalize must be 'imagenet', (mean, std) or None, got {self.normalize!r}") from None
            if len(norm[0]) != 3 or len(norm[1]) != 3 or min(norm[1]) <= 0:
                raise ValueError(f"normalize=(mean, std) needs 3 means and 3 positive stds, got {self.normalize!r}")
        object.__setattr__(self, "_mean_std", norm)
        if self.dtype == "uint8" and norm is not None:
            raise ValueError("dtype='uint8' holds 0..255 pixels: it needs normalize=None")

    # -- the transform, in 0..255 units ------------------------------------------------------------
    @property
    def mean_255(self) -> tuple[float, float, float]:
        """Per-channel value subtracted from 0..255 pixels (0 without normalisation)."""
        if self._mean_std is None:
            return (0.0, 0.0, 0.0)
        return tuple(m * 255.0 for m in self._mean_std[0])

    @property
    def std_255(self) -> tuple[float, float, float]:
        """Per-channel divisor of 0..255 pixels: std * 255, 255 for [0, 1], 1 for uint8."""
        if self._mean_std is None:
            return (1.0, 1.0, 1.0) if self.dtype == "uint8" else (255.0, 255.0, 255.0)
        return tuple(s * 255.0 for s in self._mean_std[1])

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    @property
    def dali_layout(self) -> str:
        """The per-sample layout crop_mirror_normalize writes (F = frames)."""
        return LAYOUTS[self.layout]

    @property
    def from_nhwc(self) -> tuple[int, int, int, int]:
        """The axes order that takes a (T, S, S, 3) view to one sample of this layout."""
        return FROM_NHWC[self.layout]

    def sample_shape(self, frames: int, size: int) -> tuple[int, int, int, int]:
        """Shape of one view of `frames` frames at size x size in this layout."""
        return tuple((frames, size, size, 3)[a] for a in self.from_nhwc)

    def empty_batch(self, batch: int, frames: int, size: int, *, shared: bool = False, pinned: bool = False):
        """An uninitialised torch batch of views in this format. shared: in shared memory (what a
        DataLoader worker hands to the main process; allocated there directly, as torch's
        default_collate does, so sending it is not another copy); pinned: page-locked (CUDA)."""
        import torch

        shape = (batch,) + self.sample_shape(frames, size)
        if shared:
            numel = int(np.prod(shape))
            storage = torch.empty(0, dtype=self.torch_dtype)._typed_storage()._new_shared(numel)
            return torch.empty(0, dtype=self.torch_dtype).new(storage).view(shape)
        return torch.empty(shape, dtype=self.torch_dtype, pin_memory=pinned)

    def apply(self, view):
        """(T, 3, S, S) float 0..255 torch tensor -> one view in this format (per-sample layout)."""
        import torch

        mean = torch.tensor(self.mean_255, dtype=torch.float32, device=view.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std_255, dtype=torch.float32, device=view.device).view(1, 3, 1, 1)
        x = (view - mean) / std
        if self.dtype == "uint8":
            x = x.round().clamp_(0, 255)
        x = x.to(self.torch_dtype)
        if self.layout == "NCTHW":
            x = x.permute(1, 0, 2, 3)
        elif self.layout == "NTHWC":
            x = x.permute(0, 2, 3, 1)
        return x.contiguous()
