"""Contrastive diagnostics against brute-force definitions, the collapse warning, and the shared loop."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from mcl_fast.diagnostics import (CollapseMonitor, batch_accuracy, embedding_std, feature_std,
                                  mean_pairwise_cosine, topk_accuracy)
from mcl_fast.engine import MetricWindow, Runtime, train_one_epoch


def test_topk_accuracy_counts_the_positive_column():
    logits = torch.tensor([[5.0, 1.0, 2.0, 3.0],    # positive first: top-1
                           [1.0, 5.0, 0.0, 0.0],    # second: top-5 only
                           [0.0, 1.0, 2.0, 3.0]])   # last of 4: inside top-5 (only 4 columns)
    acc = topk_accuracy(logits, (1, 2, 5))
    assert acc["acc1"].item() == pytest.approx(100 / 3)
    assert acc["acc2"].item() == pytest.approx(200 / 3)
    assert acc["acc5"].item() == pytest.approx(100.0)


def test_batch_accuracy_is_own_key_nearest():
    torch.manual_seed(0)
    k = F.normalize(torch.randn(8, 16), dim=1)
    assert batch_accuracy(k + 0.01 * torch.randn(8, 16), k).item() == 100.0
    assert batch_accuracy(k.roll(1, 0), k).item() == 0.0
    q = k.clone()
    q[:2] = k[[1, 0]]  # two queries swapped: 6 of 8 right
    assert batch_accuracy(q, k).item() == pytest.approx(75.0)


def test_mean_pairwise_cosine_matches_all_pairs():
    torch.manual_seed(0)
    x = torch.randn(37, 8) + 0.5
    u = F.normalize(x, dim=1)
    brute = [float(u[i] @ u[j]) for i in range(37) for j in range(37) if i != j]
    assert mean_pairwise_cosine(x).item() == pytest.approx(sum(brute) / len(brute), abs=1e-5)
    same = torch.randn(1, 8).repeat(10, 1)
    assert mean_pairwise_cosine(same).item() == pytest.approx(1.0, abs=1e-5)
    spread = F.normalize(torch.randn(4000, 16), dim=1)
    assert abs(mean_pairwise_cosine(spread).item()) < 0.01


def test_embedding_and_feature_std_separate_collapsed_from_spread():
    torch.manual_seed(0)
    spread = torch.randn(512, 32)
    assert embedding_std(spread).item() == pytest.approx(1.0, abs=0.05)  # uniform on the sphere: ~1
    collapsed = torch.randn(1, 32) + 1e-4 * torch.randn(512, 32)
    assert embedding_std(collapsed).item() < 1e-2
    # feature_std: std / RMS per dimension; a constant feature gives 0, zero-mean noise gives 1
    assert feature_std(torch.ones(64, 5) * 3).item() == pytest.approx(0.0, abs=1e-6)
    z = torch.randn(20000, 5)
    assert feature_std(z).item() == pytest.approx(1.0, abs=0.02)
    assert feature_std(z + 10).item() == pytest.approx(1 / math.sqrt(101), rel=0.05)


def test_collapse_monitor_warns_on_collapse_and_on_the_shortcut_once_each():
    monitor = CollapseMonitor()
    healthy = {"step": 10, "acc1": 40.0, "batch_acc1": 35.0, "queue_cos": 0.3}
    collapsed = {"step": 20, "acc1": 5.0, "batch_acc1": 4.0, "queue_cos": 0.95}
    shortcut = {"step": 30, "acc1": 80.0, "batch_acc1": 4.0, "queue_cos": 0.5}
    learned_cone = {"step": 40, "acc1": 60.0, "batch_acc1": 50.0, "queue_cos": 0.95}  # high cosine, but learning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert monitor.check(healthy, batch=32) == []
        assert monitor.check(collapsed, batch=32) == ["collapse"]
        assert monitor.check(collapsed, batch=32) == ["collapse"]   # still collapsed: no repeat
        assert monitor.check(shortcut, batch=32) == ["shortcut"]
        assert monitor.check(learned_cone, batch=32) == []
        assert monitor.check({**collapsed, "step": 50}, batch=32) == ["collapse"]
        assert monitor.check({"step": 60, "acc1": 90.0, "batch_acc1": 80.0, "key_cos": 0.95}, batch=4) == []
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 3, messages
    assert "step 20" in messages[0] and "0.95" in messages[0] and "shortcut at step 30" in messages[1]
    assert "step 50" in messages[2]


def test_train_one_epoch_equals_a_plain_sgd_loop():
    """The shared loop does exactly forward, backward, SGD step, schedule step per batch."""
    torch.manual_seed(0)
    batches = [{"x": torch.randn(4, 3), "y": torch.randn(4, 1)} for _ in range(5)]

    def compute_loss(model, batch):
        return {"loss": F.mse_loss(model(batch["x"]), batch["y"])}

    ref = torch.nn.Linear(3, 1)
    model = torch.nn.Linear(3, 1)
    model.load_state_dict(ref.state_dict())
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for i, b in enumerate(batches):
        for g in opt_ref.param_groups:
            g["lr"] = 0.1 * (i + 1)
        opt_ref.zero_grad()
        compute_loss(ref, b)["loss"].backward()
        opt_ref.step()

    class Linear:  # lr 0.1, 0.2, ...: the loop must step the schedule after each batch
        def __init__(self, opt):
            self.opt, self.n = opt, 0
            self.step()

        def step(self):
            self.n += 1
            for g in self.opt.param_groups:
                g["lr"] = 0.1 * self.n

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    window, lrs = MetricWindow(), []

    def on_step(info):
        window.update(info.metrics, info.samples)
        lrs.append(info.lr)

    done = train_one_epoch(model, compute_loss, iter(batches), opt, Runtime(torch.device("cpu")),
                           scheduler=Linear(opt), steps=5, on_step=on_step)
    assert done == 5 and lrs == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)
    assert window.steps == 5 and window.samples == 20 and set(window.means()) == {"loss"}
    stop_at_two = train_one_epoch(model, compute_loss, iter(batches), opt, Runtime(torch.device("cpu")), steps=5,
                                  start=1, on_step=lambda info: info.index == 2)
    assert stop_at_two == 2  # started at batch 1 of the epoch, on_step asked to stop after batch 2
    with pytest.raises(RuntimeError, match="ended after 2 of the 3"):
        train_one_epoch(model, compute_loss, iter(batches[:2]), opt, Runtime(torch.device("cpu")), steps=3)
