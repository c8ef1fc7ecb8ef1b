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
    logits = info_nce_logits(q, k, queue, tau)
    assert logits.shape == (4, 17)
    assert info_nce(logits).item() == pytest.approx(sum(expected) / 4, rel=1e-5)


def test_info_nce_closed_form_and_key_is_constant():
    q = torch.eye(4)[:2].clone().requires_grad_(True)  # q == k, queue orthogonal to both
    k = torch.eye(4)[:2]
    queue = torch.eye(4)[2:]
    loss = info_nce(info_nce_logits(q, k, queue, 0.5))
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)), rel=1e-6)
    k2 = k.clone().requires_grad_(True)
    info_nce(info_nce_logits(q, k2, queue, 0.5)).backward()
    assert k2.grad is None, "keys must be detached (MoCo: no gradient to the key encoder)"
    with pytest.raises(ValueError, match="queue must be"):
        info_nce_logits(q, k, torch.randn(5, 3), 0.1)
    with pytest.raises(ValueError, match="logits must be"):
        info_nce(torch.randn(4))


def test_mcl_loss_is_info_nce_plus_weighted_mal():
    from mcl_fast.losses import MCLLoss

    torch.manual_seed(0)
    net, head, x, k, motion = _tiny_setup(torch.float32)
    queue = F.normalize(torch.randn(10, 6), dim=1)
    pooled, feat = net(x, return_features=True)
    q = F.normalize(head(pooled), dim=1)
    out = {"logits": info_nce_logits(q, k, queue, 0.2), "q": q, "k": k, "feat": feat}
    criterion = MCLLoss({"variant": "v3"})
    only_nce = criterion(out, motion, mal_weight=0.0)
    assert set(only_nce) == {"loss", "nce"} and not criterion.needs_features(0.0)
    ref = info_nce(info_nce_logits(q, k, queue, 0.2))
    assert only_nce["loss"].item() == pytest.approx(ref.item(), rel=1e-6)
    both = criterion(out, motion, mal_weight=2.0)
    mal = _mal(net, head, x, k, motion)
    assert both["mal"].item() == pytest.approx(mal.item(), rel=1e-5)
    assert both["loss"].item() == pytest.approx(ref.item() + 2.0 * mal.item(), rel=1e-5)
    assert {"mal_s", "mal_t", "mal_st"} <= set(both) and both["loss"].requires_grad
    with pytest.raises(ValueError, match="motion"):
        criterion(out, None, mal_weight=1.0)
    with pytest.raises(ValueError, match="return_features"):
        criterion({k_: v for k_, v in out.items() if k_ != "feat"}, motion, mal_weight=1.0)


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


# --------------------------------------------------------------------------------------------
# An independent reference of motion_alignment_loss, written from the paper's equations alone (docs/architecture.md), on a
# NON-cubic feature shape (T, H, W) = (2, 3, 5) so that pooling over the wrong axis cannot pass.

FEAT_THW = (2, 3, 5)


class _TapNet(torch.nn.Module):
    """x (B, 3, 2, 3, 5) -> (q (B, 6) unit embedding, feat (B, 5, 2, 3, 5) the tapped conv output).

    After the tap: optional BatchNorm3d, tanh (smooth, so d score / d feat depends on feat and the
    second-order path is not trivially zero), a 1x1x1 conv, global mean pool, a linear head.
    """

    def __init__(self, batchnorm: bool):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(3, 4, 3, padding=1)
        self.tapped = torch.nn.Conv3d(4, 5, 3, padding=1)
        self.bn = torch.nn.BatchNorm3d(5) if batchnorm else torch.nn.Identity()
        self.conv3 = torch.nn.Conv3d(5, 7, 1)
        self.head = torch.nn.Linear(7, 6)

    def forward(self, x):
        feat = self.tapped(torch.tanh(self.conv1(x)))
        y = self.conv3(torch.tanh(self.bn(feat)))
        return F.normalize(self.head(y.mean((2, 3, 4))), dim=1), feat


def _tap_setup(batchnorm=False, seed=0, batch=3):
    torch.manual_seed(seed)
    net = _TapNet(batchnorm).to(torch.float64).train()
    x = torch.randn(batch, 3, *FEAT_THW, dtype=torch.float64)
    k = F.normalize(torch.randn(batch, 6, dtype=torch.float64), dim=1)
    motion = torch.rand(batch, 4, 6, 10, dtype=torch.float64)  # (T', H', W') = 2 x (T, H, W)
    return net, x, k, motion


def _unit(x):
    """Divide each sample by its L2 norm over all its positions."""
    flat = x.reshape(x.shape[0], -1)
    return (flat / flat.norm(dim=1, keepdim=True)).reshape(x.shape)


def _reference_mal(feat, score, motion, variant, terms):
    """The paper's definition (eq. 4-7), spelt out step by step (no library helper)."""
    b, c, t, h, w = feat.shape
    if variant == "v1":
        raw = feat.sum(1)
    else:
        (g,) = torch.autograd.grad(score.sum(), feat, create_graph=True)
        weights = g.mean(dim=(2, 3, 4))  # w_c: (B, C), mean over the T*H*W positions
        source = feat if variant == "v2" else g
        raw = torch.relu(torch.einsum("bc,bcthw->bthw", weights, source))
    assert (raw.reshape(b, -1).abs().amax(1) > 0).all(), "a zero map would make the reference 0/0"
    pred_st = _unit(raw)  # (B, T, H, W)
    pred = {"st": pred_st, "s": _unit(pred_st.mean(1)), "t": _unit(pred_st.mean((2, 3)))}
    # motion (B, 4, 6, 10) -> (B, 2, 3, 5): every output cell is the mean of a 2x2x2 block, which is
    # what adaptive average pooling does for an exact factor of two (checked against it below).
    m = motion.reshape(b, t, 2, h, 2, w, 2).mean((2, 4, 6))
    torch.testing.assert_close(m, F.adaptive_avg_pool3d(motion[:, None], (t, h, w))[:, 0])
    tgt_st = _unit(m)
    target = {"st": tgt_st, "s": _unit(tgt_st.mean(1)), "t": _unit(tgt_st.mean((2, 3)))}
    assert pred["s"].shape == (b, h, w) and pred["t"].shape == (b, t)
    return sum(((pred[n] - target[n]) ** 2).reshape(b, -1).sum(1).mean() for n in terms)


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("terms", [("s",), ("t",), ("st",), ("s", "t", "st")])
@pytest.mark.parametrize("variant", ["v1", "v2", "v3"])
def test_mal_matches_independent_reference_on_non_cubic_shape(variant, terms, batchnorm):
    net, x, k, motion = _tap_setup(batchnorm, seed=3)
    params = list(net.parameters())
    values, grads = [], []
    for fn in (motion_alignment_loss, _reference_mal):
        q, feat = net(x)
        assert feat.shape[2:] == FEAT_THW
        score = (q * k).sum(-1)
        loss = fn(feat, score, motion, variant, terms)
        values.append(loss)
        grads.append(torch.autograd.grad(loss, params, allow_unused=True))
    torch.testing.assert_close(values[0], values[1], rtol=1e-10, atol=1e-12)
    assert values[1].item() > 1e-4  # the maps do differ: a non-trivial comparison
    touched = 0
    for p, lib, ref in zip(params, *grads):
        if ref is None:  # v1 ignores the layers after the tap
            assert lib is None or lib.abs().max() == 0
            continue
        torch.testing.assert_close(lib, ref, rtol=1e-8, atol=1e-12)
        touched += int(ref.abs().max() > 0)
    # v1 trains the layers up to the tap (conv1, tapped: weights and biases); v2 / v3 also those
    # after it, through d score / d feat
    assert touched == (4 if variant == "v1" else len(params)), touched


@pytest.mark.parametrize("variant", ["v3", "v2"])
def test_mal_gradient_through_batchnorm_matches_finite_differences(variant):
    """Double backward through train-mode BN (fixed batch, so batch statistics are deterministic)."""
    net, x, k, motion = _tap_setup(batchnorm=True, seed=4)

    def loss_value():
        q, feat = net(x)
        return motion_alignment_loss(feat, (q * k).sum(-1), motion, variant)

    params = [net.conv1.weight, net.tapped.weight, net.bn.weight, net.bn.bias, net.conv3.weight]
    grads = torch.autograd.grad(loss_value(), params)
    assert grads[2].abs().max() > 0 and grads[3].abs().max() > 0  # BN's affine is on the gradient path
    eps = 1e-6
    gen = torch.Generator().manual_seed(1)
    for p, g in zip(params, grads):
        flat, gflat = p.data.view(-1), g.reshape(-1)  # a conv weight's grad may be non-contiguous
        for idx in torch.randint(0, flat.numel(), (3,), generator=gen).tolist():
            old = flat[idx].item()
            flat[idx] = old + eps
            up = loss_value().item()
            flat[idx] = old - eps
            down = loss_value().item()
            flat[idx] = old
            fd = (up - down) / (2 * eps)
            assert gflat[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-8), (variant, tuple(p.shape), idx)
