"""`MoCo` + `MCLLoss` against an independent reference of MoCo's Algorithm 1 (He et al. 2020).

The reference below is written from the paper's pseudo-code, not from mcl_fast.moco:

    f_k.params = f_q.params                        # initialise
    for x in loader:
        q = f_q.forward(x_q); k = f_k.forward(x_k).detach()
        l_pos = bmm(q.view(N,1,C), k.view(N,C,1)); l_neg = mm(q.view(N,C), queue.view(C,K))
        logits = cat([l_pos, l_neg], dim=1)
        loss = CrossEntropyLoss(logits / t, zeros(N))
        loss.backward(); update(f_q.params)
        f_k.params = m * f_k.params + (1 - m) * f_q.params
        enqueue(queue, k); dequeue(queue)           # a FIFO of the K newest keys

with f = L2-normalised output (sec. 3.3) and, for "shuffle BN" on one process, the key batch
permuted, cut into interleaved sub-batches each normalised on its own (the query's too), and
put back in order. The reference queue is a (C, K) FIFO, oldest key first; MoCo keeps a (K, C)
ring buffer, so its columns are compared after rotating by the write pointer.
Everything runs in float64 so that agreement is to rounding error, step after step.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mcl_fast.losses import MCLLoss
from mcl_fast.models import build_backbone
from mcl_fast.moco import MoCo

N, K, DIM, STEPS = 4, 10, 8, 4   # K is not a multiple of N: the ring buffer wraps inside a step


class ReferenceEncoder(nn.Module):
    """f(x) = normalize(W2 relu(W1 backbone(x))), optionally with BN over interleaved sub-batches."""

    def __init__(self, backbone, head, splits):
        super().__init__()
        self.backbone, self.head, self.splits = backbone, head, splits

    def forward(self, x):
        s = self.splits
        if s <= 1:
            return F.normalize(self.head(self.backbone(x)), dim=1)
        parts = [F.normalize(self.head(self.backbone(x[j::s])), dim=1) for j in range(s)]
        out = torch.empty(x.shape[0], parts[0].shape[1], dtype=parts[0].dtype)
        for j, p in enumerate(parts):
            out[j::s] = p
        return out


def reference_step(f_q, f_k, queue, x_q, x_k, opt, m, t, perm):
    """One iteration of Algorithm 1; returns (logits / t, loss). Mutates f_q, f_k, queue (C, K)."""
    q = f_q(x_q)
    with torch.no_grad():
        if perm is None:
            k = f_k(x_k)
        else:  # shuffle BN: encode the permuted batch, then undo the permutation
            k = torch.empty(N, DIM, dtype=x_k.dtype)
            k[perm] = f_k(x_k[perm])
    k = k.detach()
    l_pos = torch.bmm(q.view(N, 1, DIM), k.view(N, DIM, 1)).view(N, 1)
    l_neg = torch.mm(q.view(N, DIM), queue)
    logits = torch.cat([l_pos, l_neg], dim=1) / t
    loss = nn.CrossEntropyLoss()(logits, torch.zeros(N, dtype=torch.long))
    opt.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in f_q.parameters()]
    opt.step()
    with torch.no_grad():
        for pk, pq in zip(f_k.parameters(), f_q.parameters()):
            pk.mul_(m).add_(pq, alpha=1 - m)
        queue.copy_(torch.cat([queue[:, N:], k.t()], dim=1))  # enqueue the newest N, drop the oldest N
    return logits.detach(), loss.detach(), grads


def compare_with_algorithm_1(split_bn: int, steps: int = STEPS) -> None:
    """Train MoCo and the reference side by side; assert_close on everything after every step."""
    m, t = 0.9, 0.2
    torch.manual_seed(0)
    backbone = build_backbone("tiny", width=4).double()
    # The reference owns plain-BatchNorm copies taken before MoCo touches anything.
    ref_backbone = copy.deepcopy(backbone)
    model = MoCo(backbone, dim=DIM, hidden=16, queue_size=K, momentum=m, tau=t, split_bn=split_bn).double()
    ref_head = copy.deepcopy(model.encoder_q.head)  # same initial head weights (f_k.params = f_q.params)
    f_q = ReferenceEncoder(ref_backbone, ref_head, split_bn)
    f_k = copy.deepcopy(f_q)
    for p in f_k.parameters():
        p.requires_grad_(False)
    queue = model.queue.t().clone()  # (C, K), oldest first: at the start the ring order
    initial_queue = queue.clone()

    sgd = dict(lr=0.5, momentum=0.9, weight_decay=1e-3)
    opt = torch.optim.SGD([p for p in model.encoder_q.parameters() if p.requires_grad], **sgd)
    ref_opt = torch.optim.SGD(f_q.parameters(), **sgd)
    criterion = MCLLoss()
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        x_q = torch.randn(N, 3, 4, 16, 16, generator=gen, dtype=torch.float64)
        x_k = torch.randn(N, 3, 4, 16, 16, generator=gen, dtype=torch.float64)
        ptr = int(model.queue_ptr)
        torch.manual_seed(100 + step)
        perm = torch.randperm(N) if split_bn > 1 else None  # the draw MoCo's shuffle makes next
        torch.manual_seed(100 + step)
        out = model(x_q, x_k)
        # the key encoder that made this step's keys = the reference's f_k before its step
        for a, b in zip(model.encoder_k.parameters(), f_k.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13, msg=f"key encoder, step {step}")
        terms = criterion(out, mal_weight=0.0)
        opt.zero_grad()
        terms["loss"].backward()
        grads = [p.grad for p in model.encoder_q.parameters()]
        opt.step()

        ref_logits, ref_loss, ref_grads = reference_step(f_q, f_k, queue, x_q, x_k, ref_opt, m, t, perm)
        logits = torch.cat([out["logits"][:, :1], out["logits"][:, 1:].roll(-ptr, dims=1)], dim=1)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-11, msg=f"logits, step {step}")
        torch.testing.assert_close(terms["loss"].detach(), ref_loss, rtol=1e-12, atol=1e-13)
        for i, (g, rg) in enumerate(zip(grads, ref_grads)):
            torch.testing.assert_close(g, rg, rtol=1e-9, atol=1e-12, msg=f"gradient {i}, step {step}")
        for a, b in zip(model.encoder_q.parameters(), f_q.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=f"query encoder after step {step}")
        ring = model.queue.roll(-int(model.queue_ptr), dims=0)  # oldest first
        torch.testing.assert_close(ring.t(), queue, rtol=1e-10, atol=1e-12, msg=f"queue after step {step}")
    assert int(model.queue_ptr) == steps * N % K
    assert not torch.allclose(queue, initial_queue)  # keys really entered: not two frozen models


@pytest.mark.parametrize("split_bn", [1, 2])
def test_moco_matches_algorithm_1_step_for_step(split_bn):
    compare_with_algorithm_1(split_bn)


def _keys_left_shuffled(self, key):
    perm = torch.randperm(key.shape[0])
    return self.encoder_k(key[perm])  # forgets to undo the permutation


def _enqueue_first(self, query, key, return_features=False, update=True):
    with torch.no_grad():
        self.momentum_update()
        k = self.shuffled_keys(key)
        self.enqueue(k)  # the queue now holds this step's keys: they become their own negatives
    out = self.encoder_q.embed(query)
    from mcl_fast.losses import info_nce_logits

    return {"logits": info_nce_logits(out["z"], k, self.queue.clone(), self.tau), "q": out["z"], "k": k}


DEFECTS = {
    "no momentum update": ("momentum_update", lambda self: None),
    "keys left shuffled": ("shuffled_keys", _keys_left_shuffled),
    "enqueue before the logits": ("forward", _enqueue_first),
    "queue pointer not advanced": ("enqueue", lambda self, keys: self.queue.__setitem__(slice(0, len(keys)), keys)),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_the_comparison_catches_a_wrong_moco_step(defect, monkeypatch):
    name, broken = DEFECTS[defect]
    monkeypatch.setattr(MoCo, name, broken)
    with pytest.raises(AssertionError):
        compare_with_algorithm_1(split_bn=2)
