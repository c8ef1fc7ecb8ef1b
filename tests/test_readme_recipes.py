"""The recipes of docs/loader.md's "Use the loader in your own code" (linked from README.md), run as
written on tiny VP9 clips (DALI's CPU decoder), so they cannot rot."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from videotools import labelled_store  # noqa: E402

LOADER_DOC = Path(__file__).resolve().parents[1] / "docs" / "loader.md"
TINY = dict(clip_len=4, stride=2, verify=False)


def recipes() -> dict:
    """The functions the section's Python blocks define, each block run in its own namespace."""
    text = LOADER_DOC.read_text(encoding="utf-8")
    section = text.split("## Use the loader in your own code", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3, "the section should hold the three recipes"
    found = {}
    for number, block in enumerate(blocks, start=1):
        namespace: dict = {}
        exec(compile(block, f"docs/loader.md recipe {number}", "exec"), namespace)  # noqa: S102 (our own docs)
        found.update({k: v for k, v in namespace.items() if k in ("train_moco", "finetune", "make_loader")})
    return found


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Six VP9 clips in two class folders, their store and a UCF101-style split."""
    root = tmp_path_factory.mktemp("recipes")
    return labelled_store(root, [(("run", "sit")[i % 2], f"v{i}", 20 + 2 * i) for i in range(6)], seed=70)


class TinyEncoder(torch.nn.Module):
    def __init__(self, out: int):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, out)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3, 4)))


def test_the_moco_recipe(data):
    store, clips, _ = data
    torch.manual_seed(0)
    enc_q, enc_k = TinyEncoder(8), TinyEncoder(8)
    enc_k.load_state_dict(enc_q.state_dict())
    opt = torch.optim.SGD(enc_q.parameters(), lr=0.1)
    losses = recipes()["train_moco"](store, clips, enc_q, enc_k, opt, epochs=2, batch_size=2, size=16, dim=8,
                                     queue_size=4, device="cpu", num_threads=1, **TINY)
    assert len(losses) == 2 * 3 and all(np.isfinite(losses))  # 6 clips: three full batches per epoch
    assert not torch.equal(enc_q.conv.weight, enc_k.conv.weight)  # trained, and the key encoder follows slowly


def test_the_finetune_recipe(data):
    store, clips, split = data
    torch.manual_seed(0)
    model = TinyEncoder(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = recipes()["finetune"](store, clips, model, opt, split, epochs=2, batch_size=3, size=16, device="cpu",
                                 num_threads=1, **TINY)
    assert np.isfinite(loss)


def test_the_multi_gpu_recipe(data, monkeypatch):
    store, clips, _ = data
    make_loader = recipes()["make_loader"]
    seen = []
    import torch.distributed as dist

    world = {"size": 2}
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # an initialised group, as torchrun's ranks have
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: world["size"])
    # the loaders' seed check (one all-gather at the first pass): every rank has this one's seed
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj, group=None: out.__setitem__(slice(None),
                                                                                             [obj] * len(out)))
    for rank in range(2):  # each rank in turn, without a GPU
        monkeypatch.setattr(dist, "get_rank", lambda group=None, rank=rank: rank)
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        loader = make_loader(store, clips, 4, size=16, sampling="random", num_threads=1, clip_len=4, stride=2)
        assert loader.batch_size == 2 and loader.shard_id == rank and loader.num_shards == 2
        loader.set_epoch(1)
        seen.append([i for batch in loader for i in batch["index"].tolist()])
    assert len(seen[0]) == len(seen[1]) == 2 and not set(seen[0]) & set(seen[1])  # disjoint shards, full batches
    world["size"] = 3
    with pytest.raises(ValueError, match="does not split over 3 ranks"):
        make_loader(store, clips, 4, clip_len=4, stride=2)
