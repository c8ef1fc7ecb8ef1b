"""What a contrastive run reports besides its loss, and the collapse warning.

All take detached tensors and return float32 scalar tensors (no host sync; the trainer averages
them over a logging window and over ranks).

- `topk_accuracy(logits, ks)`: instance discrimination, % of queries whose positive (column 0)
  is among the k largest logits. Chance is k / (1 + K).
- `batch_accuracy(q, k)`: % of queries whose own key is the most similar among this step's keys
  (chance 1 / B). All these keys come from the same key encoder at the same step, so unlike
  acc1 it cannot be earned by "freshness" (the positive being the only key in the logits that
  the current key encoder made): acc1 high with batch_acc1 at chance is MoCo's shortcut, not
  learning (docs/collapse.md).
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

# Warning thresholds (docs/collapse.md has the runs that set them). Collapse: the keys'
# mean pairwise cosine above COLLAPSE_COSINE while this step's clips are not told apart
# (batch_acc1 < 3 x chance). A tiny backbone starts near 0.9 (pooled post-ReLU features share
# their mean), so the warning means "never left the starting cone", not only "fell into it".
# Shortcut: acc1 over batch_acc1 by SHORTCUT_GAP points or more while batch_acc1 < 3 x chance.
COLLAPSE_COSINE = 0.9
SHORTCUT_GAP = 20.0


def topk_accuracy(logits: torch.Tensor, ks=(1, 5)) -> dict[str, torch.Tensor]:
    """{"acc1": %, "acc5": %} of rows whose column 0 is among the k largest; logits (B, C)."""
    logits = logits.detach()
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == 0
    return {f"acc{k}": hit[:, :min(k, kmax)].any(1).float().mean() * 100 for k in ks}


def batch_accuracy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """% of rows i of q (B, d) whose most similar row of k (B, d) is k[i]."""
    sim = q.detach().float() @ k.detach().float().t()
    return (sim.argmax(1) == torch.arange(len(sim), device=sim.device)).float().mean() * 100


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
    batch_acc1, emb_std (of q), feat_std (of the query backbone's pooled features), key_cos
    (among the keys)."""
    stats = topk_accuracy(out["logits"], (1, 5))
    stats["batch_acc1"] = batch_accuracy(out["q"], out["k"])
    stats["emb_std"] = embedding_std(out["q"])
    if "pooled" in out:
        stats["feat_std"] = feature_std(out["pooled"])
    if out["k"].shape[0] > 1:
        stats["key_cos"] = mean_pairwise_cosine(out["k"])
    return stats


class CollapseMonitor:
    """Warns when a logged row shows a collapsed representation or MoCo's freshness shortcut.

    `check(row, batch)` reads acc1, batch_acc1 and queue_cos (or key_cos) of a logged row; batch
    is the per-rank batch (chance of batch_acc1 = 100 / batch %). Each kind warns once, and again
    only after a row without it.
    """

    def __init__(self, cosine: float = COLLAPSE_COSINE, gap: float = SHORTCUT_GAP):
        self.cosine, self.gap = cosine, gap
        self.active: set[str] = set()

    def check(self, row: dict, batch: int) -> list[str]:
        """The kinds found in this row ("collapse", "shortcut"); warns for the new ones."""
        step, chance = row.get("step"), 100.0 / max(1, batch)
        blind = row.get("batch_acc1", 0.0) < 3 * chance  # this step's clips are not told apart
        cos = row.get("queue_cos", row.get("key_cos"))
        found = {}
        if cos is not None and cos > self.cosine and blind:
            found["collapse"] = (f"representation collapse at step {step}: the keys' mean pairwise cosine is "
                                 f"{cos:.2f} (> {self.cosine}) and batch_acc1 {row.get('batch_acc1', 0):.1f} % "
                                 f"is near chance ({chance:.1f} %): the embeddings point one way.")
        if "acc1" in row and row["acc1"] - row.get("batch_acc1", 0.0) >= self.gap and blind:
            found["shortcut"] = (f"MoCo shortcut at step {step}: acc1 {row['acc1']:.1f} % against the queue but "
                                 f"batch_acc1 {row.get('batch_acc1', 0):.1f} % (chance {chance:.1f} %): the positive "
                                 "wins by being the freshest key, not by content. Raise model.momentum, or use "
                                 "model.queue_size=0 (negatives from the same step).")
        for kind, message in found.items():
            if kind not in self.active:
                warnings.warn(message + " See docs/collapse.md.", RuntimeWarning, stacklevel=2)
        self.active = set(found)
        return sorted(found)
