"""Baselines for frozen-feature evaluation.

`recalibrate_batchnorm`: an untrained network's BN layers, in eval mode, normalise with their
initial running statistics (mean 0, variance 1), while a trained network's use statistics of
the data it saw. Comparing a pretrained backbone with a random one therefore mixes two effects:
what the weights learned and what BN's statistics became. Measuring the random backbone's BN
statistics on the data (weights untouched) leaves only the first (BENCHMARKS.md, ablation).
"""
from __future__ import annotations

import torch


def recalibrate_batchnorm(backbone: torch.nn.Module, paths, settings, *, batch_size: int = 8,
                          num_workers: int = 1) -> torch.nn.Module:
    """Reset every BN layer's running statistics and measure them (cumulative average) on the
    evaluation clips (`settings`: a ClipSettings) of the videos `paths`; the weights are not
    changed. Returns the backbone in eval mode."""
    from .features import batch_clips, clip_loader, close_loader

    for m in backbone.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over all batches
    backbone.train()
    loader = clip_loader(list(paths), settings, videos_per_batch=batch_size, num_workers=num_workers)
    try:
        with torch.no_grad():
            for batch in loader:
                backbone(batch_clips(batch)[0].flatten(0, 1))
    finally:
        close_loader(loader)
    return backbone.eval()
