"""MoCo: split-batch BN, shuffled keys back in order, queue, momentum update, one step's losses."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mcl_fast.losses import MCLLoss
from mcl_fast.models import build_backbone
from mcl_fast.moco import MoCo, SplitBatchNorm3d, set_split_batchnorm


def _moco(norm=True, queue=12, seed=0, **kw):
    torch.manual_seed(seed)
    return MoCo(build_backbone("tiny", width=4, norm=norm), dim=8, hidden=16, queue_size=queue, **kw)


def test_split_batchnorm_normalises_interleaved_sub_batches():
    torch.manual_seed(0)
    bn = nn.BatchNorm3d(3)
    ref = nn.BatchNorm3d(3)
    set_split_batchnorm(bn, 2)
    assert isinstance(bn, SplitBatchNorm3d) and set(bn.state_dict()) == set(ref.state_dict())
    x = torch.randn(6, 3, 2, 4, 4) * 3 + 1
    out = bn(x)
    # sub-batch j = samples j, j+2, j+4: each normalised on its own (training statistics)
    for j in range(2):
        sub = x[j::2]
        expected = (sub - sub.mean((0, 2, 3, 4), keepdim=True)) / torch.sqrt(
            sub.var((0, 2, 3, 4), unbiased=False, keepdim=True) + bn.eps)
        torch.testing.assert_close(out[j::2], expected, rtol=1e-4, atol=1e-5)
    # running mean = mean over sub-batches of the momentum update
    sub_means = torch.stack([x[j::2].mean((0, 2, 3, 4)) for j in range(2)]).mean(0)
    torch.testing.assert_close(bn.running_mean, 0.1 * sub_means, rtol=1e-4, atol=1e-6)
    bn.eval()
    ref.load_state_dict(bn.state_dict())
    ref.eval()
    torch.testing.assert_close(bn(x), ref(x))


def test_shuffled_keys_come_back_in_input_order():
    model = _moco(norm=False)  # per-sample encoder: only the order can differ
    assert model.split_bn == 2
    key = torch.randn(4, 3, 4, 16, 16)
    with torch.no_grad():
        direct = model.encoder_k(key)
        for _ in range(3):
            torch.testing.assert_close(model.shuffled_keys(key), direct)


def test_split_bn_keys_differ_from_whole_batch_bn():
    model = _moco(norm=True)
    key = torch.randn(8, 3, 4, 16, 16)
    with torch.no_grad():
        shuffled = model.shuffled_keys(key)
        set_split_batchnorm(model.encoder_k, 1)
        whole = model.encoder_k(key)
    assert shuffled.shape == whole.shape
    assert not torch.allclose(shuffled, whole, atol=1e-4), "split-batch BN must change the statistics"


def test_enqueue_wraps_and_advances_pointer():
    model = _moco(queue=5)
    keys = F.normalize(torch.randn(3, 8), dim=1)
    model.enqueue(keys)
    torch.testing.assert_close(model.queue[:3], keys)
    assert int(model.queue_ptr) == 3
    more = F.normalize(torch.randn(3, 8), dim=1)
    model.enqueue(more)
    torch.testing.assert_close(model.queue[3:5], more[:2])
    torch.testing.assert_close(model.queue[0], more[2])
    assert int(model.queue_ptr) == 1


def test_momentum_update():
    model = _moco(momentum=0.9)
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.encoder_k.parameters()]
    model.momentum_update()
    for pk, pq, b in zip(model.encoder_k.parameters(), model.encoder_q.parameters(), before):
        torch.testing.assert_close(pk, 0.9 * b + 0.1 * pq)


@pytest.mark.parametrize("mal_weight", [0.0, 1.0])
def test_step_trains_query_encoder_only_and_enqueues_keys(mal_weight):
    model = _moco()
    criterion = MCLLoss()
    q, k = torch.randn(4, 3, 4, 16, 16), torch.randn(4, 3, 4, 16, 16)
    motion = torch.rand(4, 4, 8, 8)
    queue_before = model.queue.clone()
    out = model(q, k, return_features=criterion.needs_features(mal_weight))
    assert out["logits"].shape == (4, 1 + 12) and out["logits"].dtype == torch.float32
    assert ("feat" in out) == (mal_weight > 0) and out["pooled"].shape == (4, model.encoder_q.backbone.feature_dim)
    # the logits are q against this step's keys, then against the queue as it was before the enqueue
    expected = torch.cat([(out["q"] * out["k"]).sum(1, keepdim=True), out["q"] @ queue_before.t()], 1) / model.tau
    torch.testing.assert_close(out["logits"], expected)
    terms = criterion(out, motion, mal_weight)
    assert torch.isfinite(terms["loss"]) and ("mal" in terms) == (mal_weight > 0)
    if mal_weight:
        assert terms["loss"].item() == pytest.approx(terms["nce"].item() + terms["mal"].item(), rel=1e-5)
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.encoder_q.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.encoder_k.parameters())
    assert int(model.queue_ptr) == 4
    torch.testing.assert_close(model.queue[:4], out["k"])
    torch.testing.assert_close(model.queue[:4].norm(dim=1), torch.ones(4))
    queue = model.queue.clone()
    model(q, k, update=False)
    torch.testing.assert_close(model.queue, queue)


def test_split_batchnorm_keeps_channels_last_3d():
    """A channels_last_3d input comes back channels_last_3d, with the standard layout's values and grads."""
    torch.manual_seed(0)
    bn = set_split_batchnorm(nn.BatchNorm3d(3), 2)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    ref = set_split_batchnorm(nn.BatchNorm3d(3), 2)
    ref.load_state_dict(bn.state_dict())
    x = torch.randn(4, 3, 2, 4, 5) * 2 + 1
    xl = x.clone().contiguous(memory_format=torch.channels_last_3d).requires_grad_(True)
    xs = x.clone().requires_grad_(True)
    assert xl.is_contiguous(memory_format=torch.channels_last_3d) and not xl.is_contiguous()
    out_l, out_s = bn(xl), ref(xs)
    assert out_l.is_contiguous(memory_format=torch.channels_last_3d)
    assert out_s.is_contiguous()  # the standard layout stays standard
    torch.testing.assert_close(out_l, out_s)
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    weights = torch.randn_like(x)
    (out_l * weights).sum().backward()
    (out_s * weights).sum().backward()
    torch.testing.assert_close(xl.grad, xs.grad)
    torch.testing.assert_close(bn.weight.grad, ref.weight.grad)


def test_without_a_queue_the_negatives_are_this_steps_other_keys():
    from mcl_fast.losses import info_nce

    model = _moco(queue=0, split_bn=1)
    q, k = torch.randn(5, 3, 4, 16, 16), torch.randn(5, 3, 4, 16, 16)
    out = model(q, k)
    assert out["logits"].shape == (5, 5) and model.queue.shape == (0, 8)
    sim = out["q"] @ out["k"].t() / model.tau
    torch.testing.assert_close(out["logits"][:, 0], sim.diagonal())
    for i in range(5):  # then the other keys, in order
        torch.testing.assert_close(out["logits"][i, 1:], torch.cat([sim[i, :i], sim[i, i + 1:]]))
    expected = F.cross_entropy(sim, torch.arange(5))  # the positive is the matching key
    torch.testing.assert_close(info_nce(out["logits"]), expected)
    with pytest.raises(ValueError, match="queue_size"):
        _moco(queue=-1)
