"""The linear probes separate linearly separable features and do not invent structure."""
from __future__ import annotations

import numpy as np
import pytest

from mcl_fast.eval.linear import fc_softmax_top1, linear_probe, linear_svm_top1, top1_accuracy


def separable(seed: int, n_per_class: int = 30, classes: int = 4, dim: int = 16):
    """Gaussian blobs around far-apart class means: linearly separable with a wide margin."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dim)) * 4
    y = np.repeat(np.arange(classes), n_per_class)
    x = means[y] + rng.normal(size=(len(y), dim)) * 0.5 + 3.0  # an offset: normalisation must cope
    return x.astype(np.float32), y


def test_probes_separate_separable_features():
    train_x, train_y = separable(0)
    test_x, test_y = separable(0)  # same class means
    rng = np.random.default_rng(1)
    test_x = test_x + rng.normal(size=test_x.shape).astype(np.float32) * 0.3
    result = linear_probe(train_x, train_y, test_x, test_y, fc_epochs=30)
    assert result["svm_top1"] == 1.0
    assert result["fc_top1"] == 1.0


def test_xor_is_not_linearly_separable():
    # XOR labels on 2-D points: no linear classifier beats ~75 %; a probe reporting more is broken.
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(400, 2)).astype(np.float32)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    assert linear_svm_top1(x[:200], y[:200], x[200:], y[200:]) < 0.75
    assert fc_softmax_top1(x[:200], y[:200], x[200:], y[200:], epochs=20, normalize=False, lr=0.5) < 0.75


def test_random_labels_give_chance():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = rng.integers(0, 4, 200)
    acc = linear_svm_top1(x[:100], y[:100], x[100:], y[100:])
    assert acc < 0.45  # chance is 0.25


def test_errors():
    x, y = separable(0)
    with pytest.raises(ValueError, match="same D"):
        linear_svm_top1(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="fewer than two classes"):
        linear_svm_top1(x, np.zeros_like(y), x, y)
    with pytest.raises(ValueError, match="one label per feature"):
        fc_softmax_top1(x, y[:-1], x, y)
    assert top1_accuracy([1, 2, 3], [1, 0, 3]) == pytest.approx(2 / 3)


def test_standardized_svm_ignores_feature_scales():
    # z-scoring on the training set makes the probe blind to per-feature scale and offset.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=120) * 0.8 > 0).astype(np.int64)
    scale = np.float32([1e-3, 1e3, 1.0, 50.0, 1e-2, 7.0])
    a = linear_svm_top1(x[:80], y[:80], x[80:], y[80:], standardize=True)
    b = linear_svm_top1(x[:80] * scale + 3, y[:80], x[80:] * scale + 3, y[80:], standardize=True)
    assert a == pytest.approx(b) and a > 0.6
