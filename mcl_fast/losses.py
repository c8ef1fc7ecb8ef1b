"""InfoNCE (eq. 3) and the motion alignment loss (eq. 4-7) of MCL: the paper's objective.

Notation (docs/architecture.md): q, k (B, d) L2-normalised embeddings; queue (K, d) negative keys; feat
(B, C, T, H, W) the conv feature map the similarity score (B,) = (q * k.detach()).sum(-1) was
computed from; motion (B, T', H', W') the query tubelet's ST-motion. A variant of the method
(docs/release.md) has its own objective in its own module beside this one.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

VARIANTS = ("v1", "v2", "v3")
TERMS = ("s", "t", "st")
DISTANCES = ("l2", "cosine")
WEIGHTINGS = ("global", "per_time")


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
    q, k = widen(q), widen(k.detach())
    l_pos = (q * k.to(q.dtype)).sum(dim=1, keepdim=True)
    l_neg = q @ queue.detach().to(q.dtype).t()
    return torch.cat([l_pos, l_neg], dim=1) / tau


def batch_logits(q: torch.Tensor, keys: torch.Tensor, positive: torch.Tensor, tau: float) -> torch.Tensor:
    """Logits (B, N) against one step's keys only: column 0 the positive q[i].keys[positive[i]],
    then the N - 1 other keys in their order, over tau (MoCo without a queue, as MoCo v3).

    q: (B, d); keys: (N, d) every key of this step (all ranks'), treated as constants; positive:
    (B,) int64 the row of keys that is q[i]'s positive. Half-precision inputs give float32.
    """
    q, keys = widen(q), widen(keys.detach()).to(widen(q).dtype)
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
    logits = widen(logits)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)


def widen(x: torch.Tensor) -> torch.Tensor:
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
    m = F.adaptive_avg_pool3d(widen(motion).unsqueeze(1), tuple(size)).squeeze(1)
    st = _normalise(m)
    return {"st": st, "s": _normalise(st.mean(1)), "t": _normalise(st.mean((2, 3)))}


def gradient_map(feat, score, variant, create_graph, weighting, grad_scale):
    """The (B, T, H, W) map of eq. 4 (v1), 5 (v2) or 6 (v3), in float32, before normalisation.

    weighting: "global" (one Grad-CAM weight per channel) or "per_time" (one per channel and time
    step); grad_scale: the score is multiplied by it before the gradient (fp16), divided out after."""
    if variant == "v1":
        return widen(feat).sum(1)
    if score is None:
        raise ValueError(f"MAL {variant} needs the similarity score the feature map produced")
    if not feat.requires_grad:
        raise ValueError("feat does not require grad: take it from the forward that produced score")
    # grad_scale keeps an fp16 gradient out of the underflow range; the maps are normalised, and
    # the division below restores the true value anyway.
    (g,) = torch.autograd.grad(score.sum() * grad_scale, feat, create_graph=create_graph)
    g = widen(g) / grad_scale
    # w_c: the gradient's mean over positions (Grad-CAM weights), per channel; "per_time" (the
    # authors' code) averages over space only, one weight per channel and time step.
    w = g.mean(dim=(2, 3, 4), keepdim=True) if weighting == "global" else g.mean(dim=(3, 4), keepdim=True)
    source = g if variant == "v3" else widen(feat)
    return F.relu((w * source).sum(1))


def check_mal_options(variant: str, terms: Sequence[str]) -> tuple[str, ...]:
    """ValueError unless variant is one of VARIANTS and terms a non-empty subset of TERMS; the terms as a tuple."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown MAL variant {variant!r}; choose one of {VARIANTS}")
    terms = tuple(terms)
    if not terms or any(t not in TERMS for t in terms):
        raise ValueError(f"MAL terms must be a non-empty subset of {TERMS}, got {terms}")
    return terms


def check_feat(feat: torch.Tensor, motion: torch.Tensor) -> None:
    """ValueError unless feat is (B, C, T, H, W) and motion has the same batch size."""
    if feat.dim() != 5:
        raise ValueError(f"feat must be (B, C, T, H, W), got {tuple(feat.shape)}")
    if motion.shape[0] != feat.shape[0]:
        raise ValueError(f"motion has batch {motion.shape[0]}, feat has {feat.shape[0]}")


def motion_alignment_loss(feat: torch.Tensor, score: torch.Tensor | None, motion: torch.Tensor,
                          variant: str = "v3", terms: Sequence[str] = TERMS, *, distance: str = "l2",
                          weighting: str = "global", create_graph: bool = True, grad_scale: float = 1.0,
                          return_terms: bool = False):
    """Motion alignment loss (eq. 4-7), computed in float32 (float64 inputs stay float64).

    feat: (B, C, T, H, W) the tapped conv output; score: (B,) the query/positive-key similarity
    computed from feat (unused by v1); motion: (B, T', H', W') resampled to (T, H, W) by adaptive
    average pooling. g = d score.sum() / d feat with create_graph=True, so the loss trains the
    network through the second-order path; w_c = mean of g_c over positions (with gradient).
    v1: sum_c h_c; v2: ReLU(sum_c w_c h_c); v3: ReLU(sum_c w_c g_c). Each map is L2-normalised per
    sample; S / T maps are the normalised map pooled over time / space, normalised again. A term
    is the squared L2 distance (or 1 - cosine with distance="cosine"), batch mean; the terms add.

    Returns the scalar loss, or (loss, {term: value}) with return_terms=True.
    """
    terms = check_mal_options(variant, terms)
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose one of {DISTANCES}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")
    check_feat(feat, motion)
    with torch.autocast(device_type=feat.device.type, enabled=False):
        raw = gradient_map(feat, score, variant, create_graph, weighting, grad_scale)
        st = _normalise(raw)
        pred = {"st": st, "s": _normalise(st.mean(1)), "t": _normalise(st.mean((2, 3)))}
        target = motion_targets(motion.to(raw.dtype), raw.shape[1:])
        parts = {t: _distance(pred[t], target[t], distance) for t in terms}
        loss = sum(parts.values())
    return (loss, parts) if return_terms else loss


class MCLLoss:
    """The pretraining objective on a `MoCo` output dict: InfoNCE (eq. 3) + lambda x MAL (eq. 4-7).

    mal: the keyword arguments of `motion_alignment_loss` (variant, terms, distance, weighting);
    grad_scale: see `motion_alignment_loss` (the trainer raises it under fp16).
    `loss(out, motion, mal_weight)` returns {"loss": the scalar to minimise, "nce", and with the
    MAL on (mal_weight > 0) "mal", "mal_s", "mal_t", "mal_st"} (all but "loss" detached).
    A variant's objective (a subclass) may take further batch entries (`batch_keys`, by name) and
    per-epoch weights (`epoch_weights`) as keyword arguments.
    """

    batch_keys: tuple[str, ...] = ()  # the batch entries __call__ takes by name, beside motion

    def __init__(self, mal: dict | None = None, grad_scale: float = 1.0):
        self.mal = {"variant": "v3", "terms": TERMS, **(mal or {})}
        self.grad_scale = grad_scale

    @staticmethod
    def needs_features(mal_weight: float) -> bool:
        """Whether the model must return the tapped feature map ("feat") for this weight."""
        return mal_weight > 0

    def epoch_weights(self, epoch: int) -> dict[str, float]:
        """The keyword weights __call__ takes at 0-based `epoch` beside mal_weight (none here)."""
        return {}

    def alignment(self, out: dict, motion: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The MAL of a `MoCo` output dict (with "feat"): (scalar loss, {term: scalar}), with gradient.

        The score is l_pos before the temperature, q . k with k constant, as the authors' code.
        """
        score = (out["q"] * out["k"].detach()).sum(-1)
        return motion_alignment_loss(out["feat"], score, motion, grad_scale=self.grad_scale, return_terms=True,
                                     **self.mal)

    def add_alignment(self, terms: dict, loss: torch.Tensor, out: dict, motion: torch.Tensor | None,
                      mal_weight: float) -> torch.Tensor:
        """loss + mal_weight x MAL (mal_weight > 0), the MAL's terms logged into `terms`; loss as is otherwise."""
        if mal_weight <= 0:
            return loss
        if motion is None:
            raise ValueError("the motion alignment loss needs the batch's `motion` maps")
        if "feat" not in out:
            raise ValueError("the motion alignment loss needs the tapped feature map: call the model "
                             "with return_features=True")
        mal, parts = self.alignment(out, motion)
        terms["mal"] = mal.detach()
        terms.update({f"mal_{name}": value.detach() for name, value in parts.items()})
        return loss + mal_weight * mal

    def __call__(self, out: dict, motion: torch.Tensor | None = None, mal_weight: float = 0.0) -> dict:
        nce = info_nce(out["logits"])
        terms = {"nce": nce.detach()}
        terms["loss"] = self.add_alignment(terms, nce, out, motion, mal_weight)
        return terms
