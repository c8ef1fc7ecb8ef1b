"""The model of the authors' release (`method: official`, docs/release.md): MoCo with its extra heads.

Three clips per video: the query and key 1 from one, keys 2 and 3 from the others. InfoNCE over
3B rows (q against each key and the one queue, all three keys enqueued), an intra-video head and
an order head with its classifier; the objective is `losses_official.OfficialLoss`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .losses import info_nce_logits
from .losses_official import intra_video_logits
from .models import MLPHead, VideoBackbone
from .moco import Encoder, MoCo


class OrderClassifier(nn.Linear):
    """The release's order classifier: a linear layer (3 dim -> 2) on the L2-normalised concatenation
    of the query's and the two other clips' order embeddings (B, 3 dim) -> logits (B, 2)."""

    def __init__(self, dim: int):
        super().__init__(3 * dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.normalize(x, dim=-1))


class OfficialEncoder(Encoder):
    """`Encoder` with the release's further MLP heads on the same pooled features: "z_intra" (the
    intra-video logits) and, with order, "z_order" and the `order_classifier` (used on the query
    side only). Parameter names as the release's MoCo checkpoints of this project
    (`intra_head`, `order_head`, `order_classifier`)."""

    def __init__(self, backbone: VideoBackbone, hidden: int = 2048, dim: int = 128, *, order: bool = True):
        super().__init__(backbone, hidden, dim)
        self.heads = ("z", "z_intra", "z_order") if order else ("z", "z_intra")
        self.intra_head = MLPHead(backbone.feature_dim, hidden, dim)
        if order:
            self.order_head = MLPHead(backbone.feature_dim, hidden, dim)
            self.order_classifier = OrderClassifier(dim)

    def extra_embeddings(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"z_intra", and with order "z_order"}: (B, dim) unit rows."""
        out = {"z_intra": F.normalize(self.intra_head(pooled), dim=1)}
        if "z_order" in self.heads:
            out["z_order"] = F.normalize(self.order_head(pooled), dim=1)
        return out


class OfficialMoCo(MoCo):
    """MoCo as the release trains it; arguments as `MoCo` (queue_size must be > 0: the 3B rows
    share the queue), plus order (the order head; off for the release's Kinetics runs) and
    tau_intra (the intra-video logits' temperature)."""

    positives = 3
    extra_views = ("key2", "key3")

    def __init__(self, backbone: VideoBackbone, dim: int = 128, hidden: int = 2048, queue_size: int = 131072,
                 momentum: float = 0.999, tau: float = 0.1, split_bn: int = 2, *, order: bool = True,
                 tau_intra: float = 0.1):
        if queue_size <= 0:
            raise ValueError("the release's InfoNCE over 3B rows needs a queue: set queue_size > 0")
        super().__init__(backbone, dim, hidden, queue_size, momentum, tau, split_bn,
                         encoder=OfficialEncoder(backbone, hidden, dim, order=order))
        self.order, self.tau_intra = order, tau_intra

    def forward(self, query: torch.Tensor, key: torch.Tensor, return_features: bool = False, update: bool = True,
                *, key2: torch.Tensor | None = None, key3: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`MoCo.forward` with the video's two other clips key2, key3 (B, 3, T, H, W), giving

        logits (3B, 1 + K): the rows of key, key2, key3 in blocks, each against the queue as it was
        before this step; intra_logits (2B, 2) (`losses_official.intra_video_logits`); with order,
        order_logits (B, 2); and q, k (key 1's embeddings), pooled, feat as `MoCo.forward`.
        """
        if key2 is None or key3 is None:
            raise ValueError("OfficialMoCo needs key2 and key3, the batch of an official loader (preset='official')")
        out = self.encoder_q.embed(query, return_features=return_features)
        with torch.no_grad():
            if update:
                self.momentum_update()
            keys = [self.encoder_k.split(self.shuffled_keys(x)) for x in (key, key2, key3)]
        queue = self.queue.clone()  # read before this step's keys enter it (see MoCo.forward)
        logits = torch.cat([info_nce_logits(out["z"], k["z"], queue, self.tau) for k in keys])
        if update:
            self.enqueue(*(k["z"] for k in keys))  # all three, as the release
        result = {"logits": logits, "q": out.pop("z"), "k": keys[0]["z"],
                  "intra_logits": intra_video_logits(out.pop("z_intra"), keys[0]["z_intra"],
                                                     [k["z_intra"] for k in keys[1:]], self.tau_intra)}
        if self.order:
            # The other clips' order embeddings come from the key encoder (constants), as the release.
            order_in = torch.cat([out.pop("z_order")] + [k["z_order"] for k in keys[1:]], dim=1)
            result["order_logits"] = self.encoder_q.order_classifier(order_in)
        result.update(out)
        return result


__all__ = ["OfficialMoCo", "OfficialEncoder", "OrderClassifier"]
