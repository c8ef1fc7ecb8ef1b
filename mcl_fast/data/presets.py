"""The loaders' variant presets: `preset=` names a variant whose module hooks its sampler, views
and defaults into the loader (data/base.py); the paper's preset is no variant (MotionSampler)."""
from __future__ import annotations


def loader_variant(preset: str):
    """The variant hooks (a LoaderVariant: sampler, layout, min_frames, motion_size, meta_fields)
    of a preset name, or None for the built-in presets of sampling.PRESETS. Imported on first use:
    a paper loader never loads a variant's modules."""
    if preset == "official":  # the authors' release (docs/release.md)
        from .official import VARIANT

        return VARIANT
    return None
