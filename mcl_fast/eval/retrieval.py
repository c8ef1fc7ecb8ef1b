"""Video retrieval (paper sec. 4.2, Table 5): test videos query the training videos.

Similarity is the cosine of the frozen features; a query counts as a hit at k when any of its
k nearest gallery videos shares its class (the common practice of Xu et al., VCOP).
"""
from __future__ import annotations

import numpy as np

DEFAULT_KS = (1, 5, 10, 20)


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(query_feats, gallery_feats, k: int) -> np.ndarray:
    """(Q, k) int64 gallery indices by decreasing cosine similarity (ties: lower index first)."""
    q = _l2_normalize(np.asarray(query_feats, np.float64))
    g = _l2_normalize(np.asarray(gallery_feats, np.float64))
    sim = q @ g.T
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def recall_at_k(query_feats, query_labels, gallery_feats, gallery_labels, ks=DEFAULT_KS) -> dict:
    """{k: recall} with recall = fraction of queries whose top-k gallery items hold their class.

    query_feats (Q, D), gallery_feats (G, D), labels (Q,) and (G,) of any comparable type.
    A k larger than G is clipped to G. Features are compared by cosine similarity.
    """
    query_feats, gallery_feats = np.asarray(query_feats), np.asarray(gallery_feats)
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    if query_feats.ndim != 2 or gallery_feats.ndim != 2 or query_feats.shape[1] != gallery_feats.shape[1]:
        raise ValueError(f"features must be (Q, D) and (G, D), got {query_feats.shape} and {gallery_feats.shape}")
    if len(query_labels) != len(query_feats) or len(gallery_labels) != len(gallery_feats):
        raise ValueError("one label per feature row is needed")
    if len(query_feats) == 0 or len(gallery_feats) == 0:
        raise ValueError("recall_at_k needs at least one query and one gallery item")
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    order = nearest_neighbours(query_feats, gallery_feats, min(max(ks), len(gallery_feats)))
    match = gallery_labels[order] == query_labels[:, None]  # (Q, kmax)
    first_hit = np.where(match.any(1), match.argmax(1), np.iinfo(np.int64).max)
    return {int(k): float(np.mean(first_hit < min(int(k), len(gallery_feats)))) for k in ks}


def format_recalls(recalls: dict) -> str:
    return "  ".join(f"R@{k} {100 * v:.2f}" for k, v in recalls.items())
