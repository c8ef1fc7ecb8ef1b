"""InfoNCE (eq. 3) and the motion alignment loss (eq. 4-7): values, the second-order path, FD check."""
import math

import pytest
import torch
import torch.nn.functional as F

from mcl_fast.losses import info_nce, info_nce_logits, motion_alignment_loss, motion_targets
from mcl_fast.models import build_backbone


def test_info_nce_matches_eq3():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(4, 8), dim=1)
    k = F.normalize(torch.randn(4, 8), dim=1)
    queue = F.normalize(torch.randn(16, 8), dim=1)
    tau = 0.1
    expected = []
    for i in range(4):
        pos = math.exp(float(q[i] @ k[i]) / tau)
        neg = sum(math.exp(float(q[i] @ queue[j]) / tau) for j in range(16))
        expected.append(-math.log(pos / (pos + neg)))
    assert info_nce(q, k, queue, tau).item() == pytest.approx(sum(expected) / 4, rel=1e-5)
    logits = info_nce_logits(q, k, queue, tau)
    assert logits.shape == (4, 17)


def test_info_nce_closed_form_and_key_is_constant():
    q = torch.eye(4)[:2].clone().requires_grad_(True)  # q == k, queue orthogonal to both
    k = torch.eye(4)[:2]
    queue = torch.eye(4)[2:]
    loss = info_nce(q, k, queue, 0.5)
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)), rel=1e-6)
    k2 = k.clone().requires_grad_(True)
    info_nce(q, k2, queue, 0.5).backward()
    assert k2.grad is None, "keys must be detached (MoCo: no gradient to the key encoder)"
    with pytest.raises(ValueError, match="queue must be"):
        info_nce(q, k, torch.randn(5, 3), 0.1)


def test_motion_targets_pool_and_normalise():
    motion = torch.rand(2, 8, 16, 16)
    t = motion_targets(motion, (4, 4, 4))
    assert t["st"].shape == (2, 4, 4, 4) and t["s"].shape == (2, 4, 4) and t["t"].shape == (2, 4)
    for v in t.values():
        torch.testing.assert_close(v.flatten(1).norm(dim=1), torch.ones(2))
    pooled = F.adaptive_avg_pool3d(motion[:1, None], (4, 4, 4))[0, 0]
    torch.testing.assert_close(t["st"][0], pooled / pooled.norm())


def test_v1_is_zero_when_features_equal_motion_and_terms_add():
    motion = torch.rand(3, 4, 6, 6) + 0.1
    feat = torch.zeros(3, 5, 4, 6, 6)
    feat[:, 2] = motion * 7.0  # sum over channels == 7 * motion: normalised maps coincide
    loss = motion_alignment_loss(feat, None, motion, variant="v1")
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    feat2 = torch.rand(3, 5, 4, 6, 6)
    total, parts = motion_alignment_loss(feat2, None, motion, variant="v1", return_terms=True)
    assert set(parts) == {"s", "t", "st"} and all(v > 0 for v in parts.values())
    assert total.item() == pytest.approx(sum(v.item() for v in parts.values()), rel=1e-6)
    only_s = motion_alignment_loss(feat2, None, motion, variant="v1", terms=("s",))
    assert only_s.item() == pytest.approx(parts["s"].item(), rel=1e-6)
    cos = motion_alignment_loss(feat2, None, motion, variant="v1", distance="cosine")
    # unit vectors: 1 - cos = |a - b|^2 / 2
    assert cos.item() == pytest.approx(total.item() / 2, rel=1e-5)


def _tiny_setup(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    net = build_backbone("tiny", width=4, norm=False).to(dtype)
    head = torch.nn.Linear(net.feature_dim, 6).to(dtype)
    x = torch.randn(2, 3, 4, 16, 16, dtype=dtype)
    k = F.normalize(torch.randn(2, 6, dtype=dtype), dim=1)
    motion = torch.rand(2, 4, 8, 8, dtype=dtype)
    return net, head, x, k, motion


def _mal(net, head, x, k, motion, variant="v3", create_graph=True):
    pooled, feat = net(x, return_features=True)
    q = F.normalize(head(pooled), dim=1)
    score = (q * k.detach()).sum(-1)
    return motion_alignment_loss(feat, score, motion, variant=variant, create_graph=create_graph)


def test_v3_trains_through_the_second_order_path():
    net, head, x, k, motion = _tiny_setup(torch.float32)
    loss = _mal(net, head, x, k, motion)
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    # Without create_graph, d score / d feat is a constant: v3 then carries no gradient at all.
    no_graph = _mal(net, head, x, k, motion, create_graph=False)
    assert not no_graph.requires_grad
    assert no_graph.item() == pytest.approx(loss.item(), rel=1e-5)  # same value, no training signal


@pytest.mark.parametrize("variant", ["v3", "v2"])
def test_mal_gradient_matches_finite_differences(variant):
    net, head, x, k, motion = _tiny_setup(torch.float64, seed=1)
    params = [net.features[0].weight, net.features[3].weight, net.features[6].weight, head.weight]
    loss = _mal(net, head, x, k, motion, variant)
    grads = torch.autograd.grad(loss, params)
    eps = 1e-6
    gen = torch.Generator().manual_seed(0)
    for p, g in zip(params, grads):
        flat, gflat = p.data.view(-1), g.view(-1)
        for idx in torch.randint(0, flat.numel(), (3,), generator=gen).tolist():
            old = flat[idx].item()
            flat[idx] = old + eps  # .data: edits outside autograd; the MAL itself needs grad mode
            up = _mal(net, head, x, k, motion, variant).item()
            flat[idx] = old - eps
            down = _mal(net, head, x, k, motion, variant).item()
            flat[idx] = old
            fd = (up - down) / (2 * eps)
            assert gflat[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-8), (variant, p.shape, idx)


def test_mal_under_autocast_is_float32_and_close():
    net, head, x, k, motion = _tiny_setup(torch.float32, seed=2)
    ref = _mal(net, head, x, k, motion)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = _mal(net, head, x, k, motion)
    assert amp.dtype == torch.float32
    assert amp.item() == pytest.approx(ref.item(), rel=0.15, abs=0.05)


def test_mal_input_errors():
    feat = torch.rand(2, 3, 2, 4, 4)
    motion = torch.rand(2, 2, 4, 4)
    with pytest.raises(ValueError, match="variant"):
        motion_alignment_loss(feat, None, motion, variant="v4")
    with pytest.raises(ValueError, match="terms"):
        motion_alignment_loss(feat, None, motion, variant="v1", terms=("xy",))
    with pytest.raises(ValueError, match="score"):
        motion_alignment_loss(feat, None, motion, variant="v3")
    with pytest.raises(ValueError, match="batch"):
        motion_alignment_loss(feat, None, motion[:1], variant="v1")
