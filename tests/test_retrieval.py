"""recall_at_k against a hand-computed example."""
from __future__ import annotations

import numpy as np
import pytest

from mcl_fast.eval.retrieval import nearest_neighbours, recall_at_k


def test_recall_hand_computed():
    # Gallery: 4 unit directions (angles 0, 30, 90, 180 degrees), classes a, b, a, c.
    ang = np.deg2rad([0, 30, 90, 180])
    gallery = np.stack([np.cos(ang), np.sin(ang)], 1) * np.array([[1], [5], [0.1], [2]])  # scale must not matter
    g_labels = np.array(["a", "b", "a", "c"])
    # Query 0 at 10 deg, class b: ranking 0 (10), 1 (20), 2 (80), 3 (170) -> first hit at rank 2.
    # Query 1 at 100 deg, class c: ranking 2 (10), 1 (70), 3 (80), 0 (100) -> hit at rank 3.
    # Query 2 at 185 deg, class a: ranking 3, 2 (95), 1 (155), 0 (175) -> hit at rank 2.
    # Query 3 at -5 deg, class d: never a hit.
    qa = np.deg2rad([10, 100, 185, -5])
    queries = np.stack([np.cos(qa), np.sin(qa)], 1)
    q_labels = np.array(["b", "c", "a", "d"])
    order = nearest_neighbours(queries, gallery, 4)
    assert order.tolist() == [[0, 1, 2, 3], [2, 1, 3, 0], [3, 2, 1, 0], [0, 1, 2, 3]]
    r = recall_at_k(queries, q_labels, gallery, g_labels, ks=(1, 2, 3, 5))
    assert r == {1: 0.0, 2: 0.5, 3: 0.75, 5: 0.75}  # k=5 > 4 gallery items is clipped to 4


def test_recall_identical_sets_and_errors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 8))
    y = np.arange(6)
    assert recall_at_k(x, y, x, y, ks=(1,)) == {1: 1.0}  # each query finds itself first
    assert recall_at_k(x, y, x, (y + 1) % 6, ks=(1, 6)) == {1: 0.0, 6: 1.0}
    with pytest.raises(ValueError, match="one label per feature"):
        recall_at_k(x, y[:5], x, y)
    with pytest.raises(ValueError, match=r"\(Q, D\)"):
        recall_at_k(x, y, x[:, :4], y)
    with pytest.raises(ValueError, match="k must be >= 1"):
        recall_at_k(x, y, x, y, ks=(0,))
