"""MoCo (He et al. 2020) for clips: encoders, queue, shuffle BN; the losses are in `losses.py`.

In the spirit of facebookresearch/moco's builder: the backbone is injected, the key encoder is
a momentum copy of the query encoder, the queue of negatives lives in buffers, keys are
all-gathered across ranks before they are enqueued, and BN is shuffled across ranks so a
query and its key never share batch statistics. With one process, "split-batch" BN does the
same job: each encoder normalises over sub-batches, and the keys are permuted before theirs.
"""
from __future__ import annotations

import copy
import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from . import dist
from .losses import batch_logits, info_nce_logits
from .models import MLPHead, VideoBackbone


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last_3d for a 5-D tensor laid out that way (and not also standard), else contiguous."""
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


class SplitBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d that, in training, normalises `num_splits` interleaved sub-batches separately.

    Sub-batch j holds samples j, j + s, j + 2s, ... (s = num_splits). Running statistics are the
    mean over sub-batches. Same parameters and buffers as BatchNorm3d (state dicts interchange).
    A batch not divisible by s is normalised whole.
    """

    num_splits: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        n, c = x.shape[:2]
        if not self.training or s <= 1 or n % s != 0 or n == s:
            # Split only when every sub-batch keeps >= 2 samples: BN over one clip would be
            # instance norm, which removes exactly the per-clip statistics contrast relies on.
            return super().forward(x)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        rm = self.running_mean.repeat(s)
        rv = self.running_var.repeat(s)
        # (n, c, ...) viewed as (n/s, s*c, ...): channel block j of row i is sample i*s + j.
        out = F.batch_norm(x.reshape(n // s, s * c, *x.shape[2:]), rm, rv,
                           self.weight.repeat(s), self.bias.repeat(s), True, self.momentum, self.eps)
        with torch.no_grad():
            self.running_mean.copy_(rm.view(s, c).mean(0))
            self.running_var.copy_(rv.view(s, c).mean(0))
        # The (n/s, s*c) reshape cannot be a view of a channels_last_3d tensor, so it copies into
        # the standard layout; hand the result back in the input's layout (cuDNN's fast path).
        return out.view_as(x).contiguous(memory_format=_memory_format(x))


def set_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Turn every BatchNorm3d of `module` into a SplitBatchNorm3d with `num_splits` (in place)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.__class__ = SplitBatchNorm3d  # same fields: only forward() changes
            m.num_splits = num_splits
    return module


class Encoder(nn.Module):
    """Backbone + MLP head: clip (B, 3, T, H, W) -> L2-normalised embedding (B, dim).

    `embed(x, return_features)` also hands back the backbone's pooled features (B, D) (the
    diagnostics' "feature std") and, when asked, the tapped conv map the MAL differentiates.
    A variant's encoder adds heads: `embed` gives each one's "z_NAME", `forward` carries them side
    by side and `split` takes them apart (`heads` names them, "z" first).
    """

    heads: tuple[str, ...] = ("z",)

    def __init__(self, backbone: VideoBackbone, hidden: int = 2048, dim: int = 128):
        super().__init__()
        self.backbone = backbone
        self.head = MLPHead(backbone.feature_dim, hidden, dim)

    def embed(self, x: torch.Tensor, return_features: bool = False) -> dict[str, torch.Tensor]:
        """{"z": (B, dim) unit rows, "pooled": (B, D), with return_features "feat" (B, C, T', H', W')}."""
        if return_features:
            pooled, feat = self.backbone(x, return_features=True)
        else:
            pooled, feat = self.backbone(x), None
        out = {"z": F.normalize(self.head(pooled), dim=1), "pooled": pooled}
        out.update(self.extra_embeddings(pooled))
        if feat is not None:
            out["feat"] = feat
        return out

    def extra_embeddings(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """A variant's further embeddings of the pooled features (B, D): {"z_NAME": (B, dim)}; none here."""
        return {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, len(heads) dim): the embeddings of `heads` side by side (what the key encoder's
        shuffle carries; `split` takes them apart)."""
        out = self.embed(x)
        if len(self.heads) == 1:
            return out["z"]
        return torch.cat([out[name] for name in self.heads], dim=1)

    def split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """forward's (B, len(heads) dim) -> {name: (B, dim)} for each of `heads`."""
        return dict(zip(self.heads, z.chunk(len(self.heads), dim=1)))


class MoCo(nn.Module):
    """Query encoder, momentum key encoder, queue; forward returns one step's logits and embeddings.

    The loss lives outside the model (as in facebookresearch/moco): `mcl_fast.losses.MCLLoss`
    turns the output dict into InfoNCE (+ MAL). backbone: an unshared backbone instance (the key
    encoder is a deep copy). dim: embedding size; hidden: MLP width; queue_size: K negatives, or
    0 for none: the negatives are then the other keys of the same step, all ranks' (MoCo v3's
    choice; docs/collapse.md: a queue lets a fast-moving key encoder rank the positive
    first by its freshness alone); momentum m; tau the temperature; split_bn: number of
    sub-batches for BN when the job has one process (1 turns it off).

    encoder: a variant's query encoder on `backbone` (default `Encoder(backbone, hidden, dim)`);
    a variant (a subclass, in the variant's own module) passes its own, and its forward takes its
    own inputs; `positives` counts the keys each query enqueues.
    """

    positives = 1  # keys enqueued per query
    extra_views: tuple[str, ...] = ()  # forward's keyword inputs beside query and key (a variant's further clips)

    def __init__(self, backbone: VideoBackbone, dim: int = 128, hidden: int = 2048, queue_size: int = 131072,
                 momentum: float = 0.999, tau: float = 0.1, split_bn: int = 2, *, encoder: Encoder | None = None):
        super().__init__()
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0 (0: this step's keys are the negatives), got {queue_size}")
        self.momentum, self.tau = momentum, tau
        self.encoder_q = encoder if encoder is not None else Encoder(backbone, hidden, dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        # (K, dim): one negative key per row, unit length (K = 0: no queue).
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.split_bn = split_bn if dist.get_world_size() == 1 else 1
        if self.split_bn > 1:
            set_split_batchnorm(self, self.split_bn)

    # -- no-grad helpers -------------------------------------------------------------------------
    @torch.no_grad()
    def momentum_update(self) -> None:
        """k <- m k + (1 - m) q for every parameter (BN buffers of the key encoder stay its own)."""
        q_params = list(self.encoder_q.parameters())
        k_params = list(self.encoder_k.parameters())
        torch._foreach_mul_(k_params, self.momentum)
        torch._foreach_add_(k_params, q_params, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, *keys: torch.Tensor) -> None:
        """Write the all-gathered keys (N, dim) at the pointer, wrapping around; advance it.

        Several key tensors (a variant's k1, k2, k3): each is all-gathered, and they enter in the
        order given, [k1 of every rank, k2 of every rank, k3 of every rank].
        """
        k = self.queue.shape[0]
        if k == 0:
            return
        gathered = [dist.concat_all_gather(part.contiguous()) for part in keys]
        keys = (gathered[0] if len(gathered) == 1 else torch.cat(gathered)).to(self.queue.dtype)
        if keys.shape[0] > k:  # a tiny queue keeps the newest keys only
            keys = keys[-k:]
        ptr, n = int(self.queue_ptr.item()), keys.shape[0]
        first = min(n, k - ptr)  # slice copies (no index_copy_: it has no deterministic CUDA kernel)
        self.queue[ptr:ptr + first] = keys[:first]
        if n > first:
            self.queue[:n - first] = keys[first:]
        self.queue_ptr[0] = (ptr + n) % k

    @torch.no_grad()
    def shuffled_keys(self, key: torch.Tensor) -> torch.Tensor:
        """Encode the keys with shuffled BN and hand them back in input order: (B, ...) -> (B, dim).

        Several ranks: gather the global batch, permute it (permutation from rank 0), encode this
        rank's slice, gather the embeddings and undo the permutation (MoCo's shuffle BN).
        One rank: permute the batch so the key encoder's BN sub-batches differ from the query's.
        """
        world = dist.get_world_size()
        if world == 1:
            perm = torch.randperm(key.shape[0], device=key.device) if self.split_bn > 1 else None
            if perm is None:
                return self.encoder_k(key)
            k = self.encoder_k(key[perm])
            return k[torch.argsort(perm)]
        b = key.shape[0]
        key_all = dist.concat_all_gather(key)
        perm = torch.randperm(key_all.shape[0], device=key.device)
        tdist.broadcast(perm, src=0)
        mine = perm.view(world, b)[dist.get_rank()]
        k_all = dist.concat_all_gather(self.encoder_k(key_all[mine]).contiguous())
        unshuffle = torch.argsort(perm)
        return k_all[unshuffle].view(world, b, -1)[dist.get_rank()]

    # -- the step ------------------------------------------------------------------------------
    def forward(self, query: torch.Tensor, key: torch.Tensor, return_features: bool = False,
                update: bool = True) -> dict[str, torch.Tensor]:
        """One MoCo step's forward: query, key (B, 3, T, H, W) -> a dict of

        logits (B, 1 + K) float32: column 0 the positive q.k, then q against the queue, over tau
        (queue_size 0: (B, N) with N all ranks' keys of this step, the positive first);
        q (B, dim) query embeddings (with gradient); k (B, dim) key embeddings (no gradient);
        pooled (B, D) the query backbone's pooled features; feat (B, C, T', H', W') the tapped
        map when return_features (what the motion alignment loss needs).
        update=False skips the momentum update and the enqueue (evaluation of the loss only).
        """
        out = self.encoder_q.embed(query, return_features=return_features)
        with torch.no_grad():
            if update:
                self.momentum_update()
            k = self.encoder_k.split(self.shuffled_keys(key))["z"]
        if self.queue.shape[0] == 0:  # negatives: the other keys of this step, every rank's
            everyone = dist.concat_all_gather(k.contiguous())
            positive = torch.arange(k.shape[0], device=k.device) + dist.get_rank() * k.shape[0]
            logits = batch_logits(out["z"], everyone, positive, self.tau)
        else:
            # The queue is read before this step's keys enter it (and cloned: the enqueue below
            # writes in place, and the logits' backward needs the values they were computed from).
            logits = info_nce_logits(out["z"], k, self.queue.clone(), self.tau)
        if update:
            self.enqueue(k)
        result = {"logits": logits, "q": out.pop("z"), "k": k}
        result.update(out)
        return result


__all__ = ["MoCo", "Encoder", "SplitBatchNorm3d", "set_split_batchnorm"]
