"""Views as data: what each output view of a loader sample is cut from and how it is augmented.

A loader sample is N clips of one video and M views; each view is cut from one of the clips
(`ViewSpec.clip`: 0 is the query's clip, 1, 2, ... further clips of the same video, sampled
like the first) with its own crop rule, output size and augmentation (`Augmentation`).

    views = [ViewSpec(), ViewSpec()]                                # the paper's query/key pair (default)
    views = [ViewSpec(), ViewSpec(aug=WEAK)]                        # CoCLR: strong view + crop-and-flip view
    views = [ViewSpec(clip=c) for c in range(3)]                    # three clips, one view each
    views = [ViewSpec(crop="center", aug=NONE)]                     # one plain view: supervised / evaluation

Every random choice is drawn by the planner (plan.py) from the sample's generator in a fixed
order (clips, then boxes view by view, then augmentations view by view), so the default spec
gives exactly the plans the loaders gave before views existed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

CROPS = ("auto", "motion", "random", "center", "full", "same")


@dataclass(frozen=True)
class Augmentation:
    """Photometric and flip augmentation of one view, the same on every frame of it.

    jitter_p: chance of colour jitter; brightness, contrast, saturation: factors drawn in
    [1 - x, 1 + x] (torchvision's ColorJitter convention); hue: a turn in [-hue, hue] (fraction of
    a full turn, at most 0.5); applied in a random order. grayscale_p: chance of greyscale (after
    the jitter). blur_p: chance of a Gaussian blur with sigma in blur_sigma pixels of the output.
    flip_p: chance of a horizontal flip. Defaults: MoCo v2 / the paper (sec. 4.2).
    """

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    flip_p: float = 0.5

    def __post_init__(self):
        for name in ("jitter_p", "grayscale_p", "blur_p", "flip_p"):
            p = getattr(self, name)
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"Augmentation.{name} must be a probability in [0, 1], got {p}")
        for name in ("brightness", "contrast", "saturation"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"Augmentation.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= float(self.hue) <= 0.5:
            raise ValueError(f"Augmentation.hue must be in [0, 0.5] (a fraction of a turn), got {self.hue}")
        lo, hi = (float(s) for s in self.blur_sigma)
        if not 0.0 < lo <= hi:
            raise ValueError(f"Augmentation.blur_sigma must be (low, high) with 0 < low <= high, got {self.blur_sigma}")
        object.__setattr__(self, "blur_sigma", (lo, hi))

    @property
    def colour(self) -> bool:
        """True when a view can get a colour change (jitter or greyscale)."""
        return self.jitter_p > 0 or self.grayscale_p > 0

    @property
    def blur(self) -> bool:
        return self.blur_p > 0

    @property
    def flip(self) -> bool:
        return self.flip_p > 0


PAPER = Augmentation()  # MoCo v2 / MCL: jitter 0.8 (0.4, 0.4, 0.4, 0.1), greyscale 0.2, blur 0.5, flip 0.5
WEAK = Augmentation(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)  # crop and flip only (CoCLR's second view)
NONE = Augmentation(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, flip_p=0.0)  # the crop itself, nothing else


@dataclass(frozen=True)
class ViewSpec:
    """One output view of a loader sample.

    clip: the clip it is cut from: 0 the query's clip; 1, 2, ... other clips of the same video,
      sampled like clip 0 (motion-focused with sampling="motion"); views sharing a clip share its
      frames. A user sampler returns the frames of every clip (plan.Clips).
    crop: "auto" (the loader's sampling mode: motion-focused for "motion"/"spatial", else a
      random-resized crop), "motion" (motion-focused box on its clip's S-motion), "random"
      (random-resized crop), "center" (the centred square of the frame's short side), "full"
      (the whole frame, aspect not kept) or "same" (view 0's box: the same pixels, augmented
      independently).
    size: output side in pixels (default: the loader's size).
    clip_len, stride: frames of its clip and their spacing (default: the loader's); views that
      share a clip must agree.
    scale, ratio: candidate area (fraction of the frame) and aspect (w/h) of "motion" and "random"
      crops (default: the preset's).
    aug: its Augmentation (ignored, i.e. no augmentation at all, when the loader has augment=False).
    """

    clip: int = 0
    crop: str = "auto"
    size: int | None = None
    clip_len: int | None = None
    stride: int | None = None
    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] | None = None
    aug: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self):
        if int(self.clip) < 0:
            raise ValueError(f"ViewSpec.clip must be >= 0, got {self.clip}")
        if self.crop not in CROPS:
            raise ValueError(f"ViewSpec.crop must be one of {', '.join(repr(c) for c in CROPS)}, got {self.crop!r}")
        if self.size is not None and int(self.size) < 8:
            raise ValueError(f"ViewSpec.size must be >= 8 pixels, got {self.size}")
        for name in ("clip_len", "stride"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"ViewSpec.{name} must be >= 1, got {value}")
        for name, bounds in (("scale", (0.0, 1.0)), ("ratio", (0.0, float("inf")))):
            value = getattr(self, name)
            if value is None:
                continue
            lo, hi = (float(v) for v in value)
            if not bounds[0] < lo <= hi <= bounds[1]:
                raise ValueError(f"ViewSpec.{name} must be (low, high) with {bounds[0]} < low <= high <= {bounds[1]}, "
                                 f"got {value}")
            object.__setattr__(self, name, (lo, hi))
        if not isinstance(self.aug, Augmentation):
            raise TypeError(f"ViewSpec.aug must be an Augmentation, got {type(self.aug).__name__}")

    @classmethod
    def from_dict(cls, spec: dict) -> "ViewSpec":
        """A view from plain data (a JSON config's `data.views` entry): ViewSpec's
        fields, with "aug" a dict of Augmentation's fields. Unknown names raise ValueError."""
        if isinstance(spec, ViewSpec):
            return spec
        if not isinstance(spec, dict):
            raise TypeError(f"a view is a ViewSpec or a dict of its fields, got {type(spec).__name__}")
        spec = dict(spec)
        aug = spec.pop("aug", {})
        _check_names("ViewSpec", spec, cls)
        if isinstance(aug, dict):
            _check_names("Augmentation", aug, Augmentation)
            aug = Augmentation(**aug)
        return cls(**spec, aug=aug)


def _check_names(what: str, given: dict, kind) -> None:
    unknown = sorted(set(given) - set(kind.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{what} has no field {', '.join(map(repr, unknown))}; its fields: "
                         f"{', '.join(kind.__dataclass_fields__)}")


def default_views(two_clips: bool = False) -> tuple[ViewSpec, ViewSpec]:
    """The paper's query/key pair: both from one clip, or the key from a second clip (two_clips)."""
    return ViewSpec(clip=0), ViewSpec(clip=1 if two_clips else 0)


@dataclass(frozen=True)
class ResolvedView:
    """A ViewSpec with the loader's defaults filled in: clip, crop ("motion", "random", "center",
    "full", "same"), size, scale, ratio, aug (None: no augmentation at all)."""

    clip: int
    crop: str
    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    aug: Augmentation | None


@dataclass(frozen=True)
class ViewLayout:
    """The resolved views of a loader and the clips they are cut from.

    views: ResolvedView per output view; clips: (clip_len, stride) per clip, in clip order.
    """

    views: tuple[ResolvedView, ...]
    clips: tuple[tuple[int, int], ...]

    @property
    def num_clips(self) -> int:
        return len(self.clips)

    @property
    def max_span(self) -> int:
        """Source frames the longest clip spans: (clip_len - 1) * stride + 1."""
        return max((n - 1) * s + 1 for n, s in self.clips)


def resolve_views(views: Sequence[ViewSpec], *, clip_len: int, stride: int, size: int, motion_crop: bool,
                  scale, ratio, augment: bool) -> ViewLayout:
    """Fill in a views list with the loader's defaults and check it.

    motion_crop: whether "auto" means a motion-focused crop (the sampling mode has one); scale,
    ratio: the preset's candidate area and aspect. Raises ValueError naming the problem: an empty
    list, clips not numbered 0..N-1, views of one clip that disagree on clip_len/stride, or "same"
    on view 0.
    """
    views = list(views)
    if not views:
        raise ValueError("views must hold at least one ViewSpec")
    for i, v in enumerate(views):
        if not isinstance(v, ViewSpec):
            raise TypeError(f"views[{i}] must be a ViewSpec, got {type(v).__name__}")
    if views[0].crop == "same":
        raise ValueError("views[0] cannot use crop='same' (it means view 0's box)")
    used = sorted({int(v.clip) for v in views})
    if used != list(range(len(used))):
        raise ValueError(f"views use clips {used}: number the clips 0, 1, ..., N-1 (clip 0 is the query's)")
    clips = []
    for c in used:
        shapes = {(int(v.clip_len or clip_len), int(v.stride or stride)) for v in views if v.clip == c}
        if len(shapes) > 1:
            raise ValueError(f"the views of clip {c} disagree on (clip_len, stride): {sorted(shapes)}; views of one "
                             "clip share its frames")
        clips.append(shapes.pop())
    resolved = []
    for v in views:
        crop = ("motion" if motion_crop else "random") if v.crop == "auto" else v.crop
        resolved.append(ResolvedView(clip=int(v.clip), crop=crop, size=int(v.size or size),
                                     scale=tuple(v.scale or scale), ratio=tuple(v.ratio or ratio),
                                     aug=v.aug if augment else None))
    return ViewLayout(views=tuple(resolved), clips=tuple(clips))
