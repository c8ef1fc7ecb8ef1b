"""Linear protocol (paper sec. 4.2): classifiers trained on frozen, clip-averaged features.

Two heads, both reported as top-1 accuracy on the test features:
  - a linear SVM (scikit-learn LinearSVC: liblinear, L2-regularised squared hinge, C = 1; the
    primal solver, liblinear ``-s 2``, as the authors' release runs it), used for UCF101;
  - a fully connected layer + softmax trained with SGD on L2-normalised features (the authors'
    Kinetics probe: lr 16, batch 32, cosine, no weight decay), used for Kinetics-400.
"""
from __future__ import annotations

import warnings

import numpy as np


def top1_accuracy(pred, labels) -> float:
    pred, labels = np.asarray(pred), np.asarray(labels)
    if len(pred) != len(labels) or len(labels) == 0:
        raise ValueError(f"need as many predictions as labels (and at least one), got {len(pred)}, {len(labels)}")
    return float(np.mean(pred == labels))


def _check(train_x, train_y, test_x, test_y):
    train_x, test_x = np.asarray(train_x, np.float32), np.asarray(test_x, np.float32)
    train_y, test_y = np.asarray(train_y, np.int64), np.asarray(test_y, np.int64)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {train_x.shape} and {test_x.shape}")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("one label per feature row is needed")
    if len(np.unique(train_y)) < 2:
        raise ValueError("the training features hold fewer than two classes")
    return train_x, train_y, test_x, test_y


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def linear_svm_top1(train_x, train_y, test_x, test_y, C: float = 1.0, max_iter: int = 5000,
                    standardize: bool = False) -> float:
    """Top-1 of a LinearSVC (C, squared hinge, primal) fitted on the training features.

    standardize: z-score every feature with the training set's mean and std first (not the
    paper's protocol; useful when feature scales differ across the models being compared).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    train_x, train_y, test_x, test_y = _check(train_x, train_y, test_x, test_y)
    if standardize:
        mean, std = train_x.mean(0), train_x.std(0) + 1e-8
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    svm = LinearSVC(C=C, dual=False, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a capped solve still gives a usable probe
        svm.fit(train_x, train_y)
    return top1_accuracy(svm.predict(test_x), test_y)


def fc_softmax_top1(train_x, train_y, test_x, test_y, *, num_classes: int | None = None, epochs: int = 100,
                    lr: float = 16.0, batch_size: int = 32, momentum: float = 0.9, weight_decay: float = 0.0,
                    normalize: bool = True, seed: int = 0) -> float:
    """Top-1 of a fully connected layer + softmax trained with SGD and a cosine schedule (CPU torch).

    normalize: L2-normalise the features first (the authors' Kinetics probe does, which is what
    makes lr 16 a sensible step size).
    """
    import torch
    from torch import nn

    train_x, train_y, test_x, test_y = _check(train_x, train_y, test_x, test_y)
    if normalize:
        train_x, test_x = l2_normalize(train_x), l2_normalize(test_x)
    num_classes = int(num_classes or max(train_y.max(), test_y.max()) + 1)
    gen = torch.Generator().manual_seed(seed)
    fc = nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():
        fc.weight.normal_(0, 0.01, generator=gen)
        fc.bias.zero_()
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    steps_per_epoch = max(1, -(-len(x) // batch_size))
    opt = torch.optim.SGD(fc.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            loss = nn.functional.cross_entropy(fc(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        pred = fc(torch.from_numpy(test_x)).argmax(1).numpy()
    return top1_accuracy(pred, test_y)


def linear_probe(train_x, train_y, test_x, test_y, *, C: float = 1.0, fc_epochs: int = 100, fc_lr: float = 16.0,
                 num_classes: int | None = None, seed: int = 0) -> dict:
    """{"svm_top1": ..., "fc_top1": ...} for one set of frozen features."""
    return {
        "svm_top1": linear_svm_top1(train_x, train_y, test_x, test_y, C=C),
        "fc_top1": fc_softmax_top1(train_x, train_y, test_x, test_y, num_classes=num_classes, epochs=fc_epochs,
                                   lr=fc_lr, seed=seed),
    }


def evaluate_checkpoint(checkpoint, train_split, test_split, videos_root, *, settings=None, cache_dir=None,
                        device=None, decoder: str = "pyav", fc_epochs: int = 100, ks=(1, 5, 10, 20),
                        progress: bool = True) -> dict:
    """Linear probe (SVM and FC top-1) and retrieval R@k of a pretraining checkpoint, in one call.

    train_split/test_split: `Split`s or split specs (see mcl_fast.data.splits.load_split), paths
    relative to videos_root. settings: a ClipSettings (default: 20 clips, clip length, stride and
    crop size from the checkpoint's config). Used by `make demo`.
    """
    from ..checkpoint import load_backbone
    from ..data.splits import Split, load_split
    from .features import ClipSettings, file_sha256, split_features
    from .retrieval import recall_at_k

    backbone, config = load_backbone(checkpoint)
    if not isinstance(train_split, Split):
        train_split = load_split(train_split, videos_root=videos_root)
    if not isinstance(test_split, Split):
        test_split = load_split(test_split, videos_root=videos_root, classes=train_split.classes)
    if settings is None:
        data = config.get("data", {})
        settings = ClipSettings(clip_len=int(data.get("clip_len", 16)), stride=int(data.get("stride", 2)),
                                crop_size=int(data.get("size", 224)))
    kw = dict(checkpoint_hash=file_sha256(checkpoint), cache_dir=cache_dir, device=device, decoder=decoder,
              progress=progress)
    train_x, train_y = split_features(backbone, train_split, videos_root, settings, **kw)
    test_x, test_y = split_features(backbone, test_split, videos_root, settings, **kw)
    result = linear_probe(train_x, train_y, test_x, test_y, fc_epochs=fc_epochs, num_classes=len(train_split.classes))
    result["recall"] = recall_at_k(test_x, test_y, train_x, train_y, ks=ks)
    result.update(num_train=len(train_split), num_test=len(test_split), clips=settings.to_dict())
    return result
