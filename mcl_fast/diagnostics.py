"""What a contrastive run reports besides its loss, and the collapse warning.

All take detached tensors and return float32 scalar tensors (no host sync; the trainer averages
them over a logging window and over ranks).

- `topk_accuracy(logits, ks)`: instance discrimination, % of queries whose positive (column 0)
  is among the k largest logits. Chance is k / (1 + K).
- `mean_pairwise_cosine(x)`: mean cosine similarity over all pairs i != j of the rows of x (N, d);
  for unit rows it is (|sum x|^2 - N) / (N (N - 1)), O(N d). About 0 for embeddings spread over
  the sphere (1 / d scale), 1 when all rows point the same way: the collapse signal.
- `embedding_std(z)`: the per-dimension std over the batch of L2-normalised embeddings, averaged
  over dimensions and times sqrt(d): about 1 for embeddings spread uniformly, 0 when collapsed
  (the measure of SimSiam, Chen & He 2021, sec. 4.1).
- `feature_std(h)`: per-dimension std over the batch of the backbone's pooled features divided
  by their per-dimension RMS, averaged: the share of the features that varies between clips
  (0: every clip has the same features, whatever the head does).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

# The queue's mean pairwise cosine above which the trainer warns. Healthy MoCo runs on the CPU
# ablation data stay below ~0.2 after the first epochs; collapsed ones climb to 0.6-0.9 (see
# BENCHMARKS.md "collapse" for the runs that set it).
COLLAPSE_COSINE = 0.5


def topk_accuracy(logits: torch.Tensor, ks=(1, 5)) -> dict[str, torch.Tensor]:
    """{"acc1": %, "acc5": %} of rows whose column 0 is among the k largest; logits (B, C)."""
    logits = logits.detach()
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == 0
    return {f"acc{k}": hit[:, :min(k, kmax)].any(1).float().mean() * 100 for k in ks}


def mean_pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """Mean cosine over pairs i != j of the rows of x (N, d), N >= 2; rows are normalised first."""
    x = F.normalize(x.detach().float(), dim=1)
    n = x.shape[0]
    if n < 2:
        raise ValueError("mean_pairwise_cosine needs at least two rows")
    s = x.sum(0)
    return ((s @ s) - n) / (n * (n - 1))


def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """sqrt(d) x mean over dimensions of the batch std of the L2-normalised rows of z (B, d)."""
    z = F.normalize(z.detach().float(), dim=1)
    return z.std(0, unbiased=False).mean() * math.sqrt(z.shape[1])


def feature_std(h: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of std / RMS over the batch of h (B, D): 0 = constant features."""
    h = h.detach().float()
    rms = h.pow(2).mean(0).sqrt().clamp_min(1e-12)
    return (h.std(0, unbiased=False) / rms).mean()


def contrastive_diagnostics(out: dict) -> dict[str, torch.Tensor]:
    """The per-step diagnostics of a MoCo output dict (logits, q, k, pooled): acc1, acc5,
    emb_std (of q), feat_std (of the query backbone's pooled features), key_cos (among the keys)."""
    stats = topk_accuracy(out["logits"], (1, 5))
    stats["emb_std"] = embedding_std(out["q"])
    if "pooled" in out:
        stats["feat_std"] = feature_std(out["pooled"])
    if out["k"].shape[0] > 1:
        stats["key_cos"] = mean_pairwise_cosine(out["k"])
    return stats


class CollapseMonitor:
    """Warns (once per run, then again only after recovering) when the queue's mean pairwise
    cosine exceeds `threshold`: every queued key points nearly the same way, so the InfoNCE loss
    approaches log(1 + K) and the features stop separating clips."""

    def __init__(self, threshold: float = COLLAPSE_COSINE):
        self.threshold = threshold
        self.warned = False

    def check(self, queue_cos: float, step: int) -> bool:
        """True (and a warning) the first time queue_cos crosses the threshold."""
        if queue_cos > self.threshold and not self.warned:
            self.warned = True
            warnings.warn(f"representation collapse at step {step}: the queue's mean pairwise cosine is "
                          f"{queue_cos:.2f} (> {self.threshold}); the embeddings point nearly one way. "
                          "See README 'MoCo collapse' for the causes measured on this project.", RuntimeWarning,
                          stacklevel=2)
            return True
        if queue_cos < 0.8 * self.threshold:
            self.warned = False
        return False
