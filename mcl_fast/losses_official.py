"""The objective of the authors' release (`method: official`, docs/release.md), beside the paper's.

InfoNCE over 3B rows (the model's logits), the intra-video logits, the order loss and the
release's alignment terms (the ST term weighted by a softmax over chunks). Shapes as in
`losses.py`; the model side is `moco_official.OfficialMoCo`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .losses import TERMS, MCLLoss, check_feat, check_mal_options, gradient_map, info_nce, widen


def intra_video_logits(q: torch.Tensor, k_same: torch.Tensor, k_others: Sequence[torch.Tensor],
                       tau: float) -> torch.Tensor:
    """The release's intra-video logits: for each other clip's key, rows [q.k_same, q.k_other] / tau.

    q, k_same (the query clip's key), each of k_others: (B, d) unit rows; keys are constants.
    Returns (len(k_others) B, 2), the blocks in k_others' order; column 0 is the positive, so
    `info_nce` of it is the release's intra term (a 2-way InfoNCE per other clip). Half-precision
    inputs give float32.
    """
    if q.dim() != 2 or k_same.shape != q.shape or any(k.shape != q.shape for k in k_others) or not k_others:
        raise ValueError(f"q, k_same and each of k_others must be (B, d) = {tuple(q.shape)}")
    q = widen(q)
    pos = (q * widen(k_same.detach()).to(q.dtype)).sum(1, keepdim=True)
    rows = [torch.cat([pos, (q * widen(k.detach()).to(q.dtype)).sum(1, keepdim=True)], dim=1) for k in k_others]
    return torch.cat(rows, dim=0) / tau


def order_loss(logits: torch.Tensor, query_first: torch.Tensor) -> torch.Tensor:
    """The release's order loss: cross-entropy of the order classifier's logits (B, 2) against
    query_first (B,) bool / int (class 1: the query clip is from the video's first half and the
    two other clips from the second; class 0: the reverse). Scalar, float32 (or float64)."""
    if logits.dim() != 2 or logits.shape[1] != 2:
        raise ValueError(f"order logits must be (B, 2), got {tuple(logits.shape)}")
    if query_first.shape != logits.shape[:1]:
        raise ValueError(f"query_first must be ({logits.shape[0]},), got {tuple(query_first.shape)}")
    return F.cross_entropy(widen(logits), query_first.to(device=logits.device, dtype=torch.long))


def order_loss_weight(epoch: int, epochs: int) -> float:
    """The order loss's weight at 0-based `epoch` of `epochs`: (epoch + 1) / epochs (the release's
    epoch / epochs, counted from 1)."""
    return float(epoch + 1) / float(epochs)


def _cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the last axis of a and b (..., n) -> (...): each side L2-normalised with eps 1e-12
    first, so a zero vector has cosine 0 (as the release's F.normalize-then-dot)."""
    return (F.normalize(a, dim=-1, eps=1e-12) * F.normalize(b, dim=-1, eps=1e-12)).sum(-1)


def official_alignment_terms(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The release's three alignment terms, each 1 - a cosine, batch means.

    pred: (B, T, H, W) the prediction map ReLU(sum_c w g) before any normalisation; target:
    (B, T, H, W) the raw motion target (encoded-flow magnitudes, the (4, 7, 7) of the loader's
    official preset), same shape. With chunk t the (H W)-vector at time t:
    st = 1 - sum_t softmax_t(sum of target chunk t) * cos(pred chunk t, target chunk t);
    t = 1 - cos of the (T,) per-chunk sums; s = 1 - cos of the (H W,) means over chunks.
    The softmax takes the raw sums: at the release's scale it is one-hot, so the ST term is the
    cosine of the chunk with the most target motion alone (docs/release.md).
    Returns {"st", "s", "t"}: scalar tensors.
    """
    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both be (B, T, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    b, t = pred.shape[:2]
    p, m = pred.reshape(b, t, -1), target.reshape(b, t, -1)
    weights = torch.softmax(m.sum(-1), dim=1)  # (B, T) over the chunks
    st = (_cosine_rows(p, m) * weights).sum(1)
    tt = _cosine_rows(p.sum(-1), m.sum(-1))
    ss = _cosine_rows(p.mean(1), m.mean(1))
    return {"st": (1 - st).mean(), "s": (1 - ss).mean(), "t": (1 - tt).mean()}


def official_alignment_loss(feat: torch.Tensor, score: torch.Tensor | None, motion: torch.Tensor,
                           variant: str = "v3", terms: Sequence[str] = TERMS, *, create_graph: bool = True,
                           grad_scale: float = 1.0, return_terms: bool = False):
    """The release's alignment loss, computed in float32 (float64 inputs stay float64).

    feat, score: as `losses.motion_alignment_loss`; the map has one Grad-CAM weight per channel and
    time step (the release's), is taken raw (not normalised) and resampled by adaptive average
    pooling to motion's (T', H', W') when it differs (identity for `r2plus1d_50` at 224 against
    the (4, 7, 7) target); motion: (B, T', H', W') the raw target. The terms are
    `official_alignment_terms`; the chosen ones add.
    Returns the scalar loss, or (loss, {term: value}) with return_terms=True.
    """
    terms = check_mal_options(variant, terms)
    check_feat(feat, motion)
    if motion.dim() != 4:
        raise ValueError(f"motion must be (B, T', H', W'), got {tuple(motion.shape)}")
    with torch.autocast(device_type=feat.device.type, enabled=False):
        raw = gradient_map(feat, score, variant, create_graph, "per_time", grad_scale)
        grid = tuple(motion.shape[1:])
        pred = raw if tuple(raw.shape[1:]) == grid else F.adaptive_avg_pool3d(raw.unsqueeze(1), grid).squeeze(1)
        computed = official_alignment_terms(pred, widen(motion).to(raw.dtype))
        parts = {t: computed[t] for t in terms}
        loss = sum(parts.values())
    return (loss, parts) if return_terms else loss


class OfficialLoss(MCLLoss):
    """The release's objective on an `OfficialMoCo` output dict, summed in the release's order:
    inter (InfoNCE over its 3B rows) + intra (InfoNCE of "intra_logits", weight 1)
    + order_weight x order (cross-entropy of "order_logits" against the batch's `query_first`,
    when the model has the order head) + mal_weight x the release's alignment loss.

    mal: the keyword arguments of `official_alignment_loss` (variant, terms); epochs: the run's,
    for the order weight (`order_loss_weight`); order: whether the order term is on (off: the release's
    Kinetics runs). Returns the terms of `MCLLoss` and "intra", "order" (detached).
    """

    batch_keys = ("query_first",)

    def __init__(self, mal: dict | None = None, grad_scale: float = 1.0, *, epochs: int = 1, order: bool = True):
        super().__init__(mal, grad_scale)
        self.epochs, self.order = epochs, order

    def epoch_weights(self, epoch: int) -> dict[str, float]:
        """{"order_weight": the order loss's weight at 0-based `epoch`} (0 with the order term off)."""
        return {"order_weight": order_loss_weight(epoch, self.epochs) if self.order else 0.0}

    def alignment(self, out: dict, motion: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The release's alignment loss of an output dict (with "feat"): (scalar, {term: scalar})."""
        score = (out["q"] * out["k"].detach()).sum(-1)
        return official_alignment_loss(out["feat"], score, motion, grad_scale=self.grad_scale, return_terms=True,
                                      **self.mal)

    def __call__(self, out: dict, motion: torch.Tensor | None = None, mal_weight: float = 0.0, *,
                 query_first: torch.Tensor | None = None, order_weight: float = 0.0) -> dict:
        nce = info_nce(out["logits"])
        intra = info_nce(out["intra_logits"])
        terms = {"nce": nce.detach(), "intra": intra.detach()}
        loss = nce + intra
        if "order_logits" in out:
            if query_first is None:
                raise ValueError("the order loss needs the batch's `query_first` labels (the official loaders' batch)")
            order = order_loss(out["order_logits"], query_first)
            loss = loss + order_weight * order
            terms["order"] = order.detach()
        terms["loss"] = self.add_alignment(terms, loss, out, motion, mal_weight)
        return terms
