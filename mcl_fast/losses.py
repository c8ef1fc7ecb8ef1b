"""InfoNCE (eq. 3) and the motion alignment loss (eq. 4-7) of MCL, and the release's extra terms.

Notation (docs/architecture.md): q, k (B, d) L2-normalised embeddings; queue (K, d) negative keys; feat
(B, C, T, H, W) the conv feature map the similarity score (B,) = (q * k.detach()).sum(-1) was
computed from; motion (B, T', H', W') the query tubelet's ST-motion.

The `official` preset (docs/release.md) adds: InfoNCE over 3B rows (the model's
logits; `info_nce` is unchanged), the intra-video logits (`info_nce` on (2B, 2) logits), the
order loss (`order_loss`) and the release's alignment terms (`release_alignment_terms`: the ST
term weighted by a softmax over chunks), selected by `motion_alignment_loss(st_weighting="softmax")`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

VARIANTS = ("v1", "v2", "v3")
TERMS = ("s", "t", "st")
DISTANCES = ("l2", "cosine")
WEIGHTINGS = ("global", "per_time")
ST_WEIGHTINGS = ("uniform", "softmax")


def info_nce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """Logits (B, 1 + K): column 0 the positive q.k, then q against every queued negative, over tau.

    q, k: (B, d); queue: (K, d) (one negative key per row). k and queue are treated as constants.
    Half-precision inputs give float32 logits.
    """
    if q.dim() != 2 or k.shape != q.shape:
        raise ValueError(f"q and k must both be (B, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, d={q.shape[1]}), got {tuple(queue.shape)}")
    # In float32 (or float64) under autocast too: bf16 would round q.k / 0.1 by up to ~0.04.
    q, k = _wide(q), _wide(k.detach())
    l_pos = (q * k.to(q.dtype)).sum(dim=1, keepdim=True)
    l_neg = q @ queue.detach().to(q.dtype).t()
    return torch.cat([l_pos, l_neg], dim=1) / tau


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
    q = _wide(q)
    pos = (q * _wide(k_same.detach()).to(q.dtype)).sum(1, keepdim=True)
    rows = [torch.cat([pos, (q * _wide(k.detach()).to(q.dtype)).sum(1, keepdim=True)], dim=1) for k in k_others]
    return torch.cat(rows, dim=0) / tau


def batch_logits(q: torch.Tensor, keys: torch.Tensor, positive: torch.Tensor, tau: float) -> torch.Tensor:
    """Logits (B, N) against one step's keys only: column 0 the positive q[i].keys[positive[i]],
    then the N - 1 other keys in their order, over tau (MoCo without a queue, as MoCo v3).

    q: (B, d); keys: (N, d) every key of this step (all ranks'), treated as constants; positive:
    (B,) int64 the row of keys that is q[i]'s positive. Half-precision inputs give float32.
    """
    q, keys = _wide(q), _wide(keys.detach()).to(_wide(q).dtype)
    sim = q @ keys.t() / tau
    b, n = sim.shape
    if positive.shape != (b,):
        raise ValueError(f"positive must be ({b},), got {tuple(positive.shape)}")
    is_pos = torch.zeros_like(sim, dtype=torch.bool)
    is_pos[torch.arange(b, device=sim.device), positive] = True
    return torch.cat([sim[is_pos].view(b, 1), sim[~is_pos].view(b, n - 1)], dim=1)


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Eq. (3) given the logits (B, 1 + K) of `info_nce_logits` (positive in column 0, already
    over tau): mean over the batch of -log softmax(logits)[:, 0]. Scalar, float32 (or float64).

    Eq. (3) for embeddings is `info_nce(info_nce_logits(q, k, queue, tau))`.
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (B, 1 + K) with K >= 1, got {tuple(logits.shape)}")
    logits = _wide(logits)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)


def order_loss(logits: torch.Tensor, query_first: torch.Tensor) -> torch.Tensor:
    """The release's order loss: cross-entropy of the order classifier's logits (B, 2) against
    query_first (B,) bool / int (class 1: the query clip is from the video's first half and the
    two other clips from the second; class 0: the reverse). Scalar, float32 (or float64)."""
    if logits.dim() != 2 or logits.shape[1] != 2:
        raise ValueError(f"order logits must be (B, 2), got {tuple(logits.shape)}")
    if query_first.shape != logits.shape[:1]:
        raise ValueError(f"query_first must be ({logits.shape[0]},), got {tuple(query_first.shape)}")
    return F.cross_entropy(_wide(logits), query_first.to(device=logits.device, dtype=torch.long))


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors -> float32; float32 / float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise each sample over all its positions: (B, ...) -> (B, ...)."""
    flat = x.flatten(1)
    return F.normalize(flat, dim=1, eps=1e-12).view_as(x)


def _distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    """Per-sample distance between two (B, ...) maps, then the batch mean."""
    a, b = a.flatten(1), b.flatten(1)
    if distance == "l2":
        return (a - b).pow(2).sum(1).mean()
    # The authors' code: 1 - cosine similarity (the maps are already unit length, so this is
    # half the squared L2 distance; kept separate for clarity and for unnormalised inputs).
    return (1 - F.cosine_similarity(a, b, dim=1, eps=1e-12)).mean()


def motion_targets(motion: torch.Tensor, size: Sequence[int]) -> dict[str, torch.Tensor]:
    """The normalised ST, S and T motion maps at the feature map's (T, H, W).

    motion (B, T', H', W') -> {"st": (B, T, H, W), "s": (B, H, W), "t": (B, T)}, float32 or wider.
    """
    if motion.dim() != 4:
        raise ValueError(f"motion must be (B, T', H', W'), got {tuple(motion.shape)}")
    m = F.adaptive_avg_pool3d(_wide(motion).unsqueeze(1), tuple(size)).squeeze(1)
    st = _normalise(m)
    return {"st": st, "s": _normalise(st.mean(1)), "t": _normalise(st.mean((2, 3)))}


def _cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the last axis of a and b (..., n) -> (...): each side L2-normalised with eps 1e-12
    first, so a zero vector has cosine 0 (as the release's F.normalize-then-dot)."""
    return (F.normalize(a, dim=-1, eps=1e-12) * F.normalize(b, dim=-1, eps=1e-12)).sum(-1)


def release_alignment_terms(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The release's three alignment terms, each 1 - a cosine, batch means.

    pred: (B, T, H, W) the prediction map ReLU(sum_c w g) before any normalisation; target:
    (B, T, H, W) the raw motion target (encoded-flow magnitudes, the (4, 7, 7) of the loader's
    `preset="official"`), same shape. With chunk t the (H W)-vector at time t:
    st = 1 - sum_t softmax_t(sum of target chunk t) * cos(pred chunk t, target chunk t);
    t = 1 - cos of the (T,) per-chunk sums; s = 1 - cos of the (H W,) means over chunks.
    The softmax takes the raw sums: at the release's scale (sums of ~2000 encoded units that
    differ between chunks by tens or more) it is one-hot, so the ST term is the cosine of the
    chunk with the most target motion alone (docs/release.md).
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


def _gradient_map(feat, score, variant, create_graph, weighting, grad_scale):
    """The (B, T, H, W) map of eq. 4 (v1), 5 (v2) or 6 (v3), in float32, before normalisation."""
    if variant == "v1":
        return _wide(feat).sum(1)
    if score is None:
        raise ValueError(f"MAL {variant} needs the similarity score the feature map produced")
    if not feat.requires_grad:
        raise ValueError("feat does not require grad: take it from the forward that produced score")
    # grad_scale keeps an fp16 gradient out of the underflow range; the maps are normalised, and
    # the division below restores the true value anyway.
    (g,) = torch.autograd.grad(score.sum() * grad_scale, feat, create_graph=create_graph)
    g = _wide(g) / grad_scale
    # w_c: the gradient's mean over positions (Grad-CAM weights), per channel; "per_time" (the
    # authors' code) averages over space only, one weight per channel and time step.
    w = g.mean(dim=(2, 3, 4), keepdim=True) if weighting == "global" else g.mean(dim=(3, 4), keepdim=True)
    source = g if variant == "v3" else _wide(feat)
    return F.relu((w * source).sum(1))


def motion_alignment_loss(feat: torch.Tensor, score: torch.Tensor | None, motion: torch.Tensor,
                          variant: str = "v3", terms: Sequence[str] = TERMS, *, distance: str = "l2",
                          weighting: str = "global", st_weighting: str = "uniform", create_graph: bool = True,
                          grad_scale: float = 1.0, return_terms: bool = False):
    """Motion alignment loss (eq. 4-7), computed in float32 (float64 inputs stay float64).

    feat: (B, C, T, H, W) the tapped conv output; score: (B,) the query/positive-key similarity
    computed from feat (unused by v1); motion: (B, T', H', W') resampled to (T, H, W) by adaptive
    average pooling. g = d score.sum() / d feat with create_graph=True, so the loss trains the
    network through the second-order path; w_c = mean of g_c over positions (with gradient).
    v1: sum_c h_c; v2: ReLU(sum_c w_c h_c); v3: ReLU(sum_c w_c g_c). Each map is L2-normalised per
    sample; S / T maps are the normalised map pooled over time / space, normalised again. A term
    is the squared L2 distance (or 1 - cosine with distance="cosine"), batch mean; the terms add.

    st_weighting="softmax" (the release; needs distance="cosine") computes the terms as the
    release does (`release_alignment_terms`): on the raw map (resampled by adaptive average pooling
    to the target's (T', H', W') when it differs: identity for `r2plus1d_50` at 224 and the (4, 7, 7)
    target) against the raw target, the ST term a softmax-weighted mean of per-chunk cosines.

    Returns the scalar loss, or (loss, {term: value}) with return_terms=True.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown MAL variant {variant!r}; choose one of {VARIANTS}")
    terms = tuple(terms)
    if not terms or any(t not in TERMS for t in terms):
        raise ValueError(f"MAL terms must be a non-empty subset of {TERMS}, got {terms}")
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose one of {DISTANCES}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if st_weighting not in ST_WEIGHTINGS:
        raise ValueError(f"unknown st_weighting {st_weighting!r}; choose one of {ST_WEIGHTINGS}")
    if st_weighting == "softmax" and distance != "cosine":
        raise ValueError("st_weighting='softmax' is the release's alignment loss: it needs distance='cosine'")
    if feat.dim() != 5:
        raise ValueError(f"feat must be (B, C, T, H, W), got {tuple(feat.shape)}")
    if motion.shape[0] != feat.shape[0]:
        raise ValueError(f"motion has batch {motion.shape[0]}, feat has {feat.shape[0]}")
    with torch.autocast(device_type=feat.device.type, enabled=False):
        raw = _gradient_map(feat, score, variant, create_graph, weighting, grad_scale)
        if st_weighting == "softmax":
            if motion.dim() != 4:
                raise ValueError(f"motion must be (B, T', H', W'), got {tuple(motion.shape)}")
            grid = tuple(motion.shape[1:])
            pred = raw if tuple(raw.shape[1:]) == grid else F.adaptive_avg_pool3d(raw.unsqueeze(1), grid).squeeze(1)
            released = release_alignment_terms(pred, _wide(motion).to(raw.dtype))
            parts = {t: released[t] for t in terms}
            loss = sum(parts.values())
            return (loss, parts) if return_terms else loss
        st = _normalise(raw)
        pred = {"st": st, "s": _normalise(st.mean(1)), "t": _normalise(st.mean((2, 3)))}
        target = motion_targets(motion.to(raw.dtype), raw.shape[1:])
        parts = {t: _distance(pred[t], target[t], distance) for t in terms}
        loss = sum(parts.values())
    return (loss, parts) if return_terms else loss


class MCLLoss:
    """The pretraining objective on a `MoCo` output dict: InfoNCE (eq. 3) + lambda x MAL (eq. 4-7),
    and the release's terms when the model produced their logits.

    mal: the keyword arguments of `motion_alignment_loss` (variant, terms, distance, weighting,
    st_weighting); grad_scale: see `motion_alignment_loss` (the trainer raises it under fp16).
    `loss(out, motion, mal_weight, query_first=None, order_weight=0.0)` returns {"loss": the scalar
    to minimise, "nce", and with the MAL on (mal_weight > 0) "mal", "mal_s", "mal_t", "mal_st"}
    (all but "loss" detached). Each further term is one key of `out` and one line below:
    "intra_logits" (2B, 2) -> "intra" (InfoNCE, weight 1, as the release adds it to the inter
    term); "order_logits" (B, 2) -> "order" (cross-entropy against `query_first`, x order_weight).
    The sum runs in the release's order: inter + intra + order_weight x order + mal_weight x MAL.
    """

    def __init__(self, mal: dict | None = None, grad_scale: float = 1.0):
        self.mal = {"variant": "v3", "terms": TERMS, **(mal or {})}
        self.grad_scale = grad_scale

    @staticmethod
    def needs_features(mal_weight: float) -> bool:
        """Whether the model must return the tapped feature map ("feat") for this weight."""
        return mal_weight > 0

    def alignment(self, out: dict, motion: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The MAL of a `MoCo` output dict (with "feat"): (scalar loss, {term: scalar}), with gradient.

        The score is l_pos before the temperature, q . k with k constant, as the authors' code.
        """
        score = (out["q"] * out["k"].detach()).sum(-1)
        return motion_alignment_loss(out["feat"], score, motion, grad_scale=self.grad_scale, return_terms=True,
                                     **self.mal)

    def __call__(self, out: dict, motion: torch.Tensor | None = None, mal_weight: float = 0.0, *,
                 query_first: torch.Tensor | None = None, order_weight: float = 0.0) -> dict:
        nce = info_nce(out["logits"])
        terms = {"nce": nce.detach()}
        loss = nce
        if "intra_logits" in out:
            intra = info_nce(out["intra_logits"])
            loss = loss + intra
            terms["intra"] = intra.detach()
        if "order_logits" in out:
            if query_first is None:
                raise ValueError("the order loss needs the batch's `query_first` labels (preset='official')")
            order = order_loss(out["order_logits"], query_first)
            loss = loss + order_weight * order
            terms["order"] = order.detach()
        if mal_weight > 0:
            if motion is None:
                raise ValueError("the motion alignment loss needs the batch's `motion` maps")
            if "feat" not in out:
                raise ValueError("the motion alignment loss needs the tapped feature map: call the model "
                                 "with return_features=True")
            mal, parts = self.alignment(out, motion)
            loss = loss + mal_weight * mal
            terms["mal"] = mal.detach()
            terms.update({f"mal_{name}": value.detach() for name, value in parts.items()})
        terms["loss"] = loss
        return terms
