"""The loaders' variant presets: `preset=` names a variant whose module hooks its sampler, views
and defaults into the loader (data/base.py); the paper's preset is no variant (MotionSampler)."""
from __future__ import annotations


def loader_variant(preset: str):
    """A preset name's variant hooks (its module's VARIANT: sampler, layout, min_frames,
    motion_size, meta_fields, synthetic, sampling), or None for the built-in presets of
    sampling.PRESETS. Imported on first use: a paper loader never loads a variant's modules."""
    if preset == "official":  # the authors' release (docs/release.md)
        from .official import VARIANT

        return VARIANT
    return None
