"""benchmarks/ablation.py's pieces: the mechanism columns, and the models its head-less rows are measured on."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import ablation  # noqa: E402
from mcl_fast.models import build_backbone  # noqa: E402

HELD = {"mal_s": 0.5, "mal_t": 0.1, "mal_st": 1.0, "mal": 1.6, "nce": 2.5, "chance": 2.7726, "below_chance": 0.2726}


def run(top1: float, **held) -> dict:
    return {"top1": top1, "r1": top1, "train_s": 10.0, "train_cpu_s": 5.0,
            **({"held_out": {**HELD, **held}} if held else {})}


def test_summary_and_table_carry_the_held_out_columns():
    rows = {"supervised": [{**run(1.0), "classifier_top1": 0.99}] * 2,
            "moco": [run(0.8, nce=2.4, below_chance=0.3726), run(0.9, nce=2.6, below_chance=0.1726)]}
    table = ablation.summarize(rows)
    moco = table[1]
    assert moco["nce_mean"] == pytest.approx(2.5) and moco["nce_std"] == pytest.approx(0.1)
    assert moco["mal_s_mean"] == pytest.approx(0.5) and moco["below_chance_mean"] == pytest.approx(0.2726)
    assert "nce_mean" not in table[0]  # the supervised row has no MoCo heads
    p = {**ablation.PRETRAIN, **ablation.PRESETS["smoke"], "seeds": 2}
    lines = ablation.format_table(table, p, "smoke").splitlines()
    assert "chance 2.773" in lines[0]
    header, supervised, moco_line = lines[2], lines[4], lines[5]
    assert header.count("|") == supervised.count("|") == moco_line.count("|") == 10
    assert "| — | — | — | — | — |" in supervised
    assert "| 0.500 ± 0.000 | 0.100 ± 0.000 | 1.000 ± 0.000 | 2.500 ± 0.100 | 0.273 ± 0.100 |" in moco_line


def test_a_row_missing_the_held_out_values_in_one_seed_gets_none():
    table = ablation.summarize({"moco": [run(0.8, nce=2.4), run(0.9)]})
    assert "nce_mean" not in table[0]


def settings(tmp_path):
    p = {**ablation.PRETRAIN, **ablation.PRESETS["smoke"]}
    return p, SimpleNamespace(paths=["a/a_000.mp4"])


@pytest.mark.parametrize("seed", [0, 3])
def test_the_random_rows_are_measured_on_the_model_pretraining_starts_from(tmp_path, seed):
    """starting_model(seed) holds the random init row's backbone (torch seeded, then built), in both
    encoders, and the pretraining model of that seed (train._train seeds the same way)."""
    p, split = settings(tmp_path)
    model = ablation.starting_model(tmp_path, p, seed, split)
    torch.manual_seed(seed)
    random_init = build_backbone(p["backbone"]).state_dict()
    for encoder in (model.encoder_q, model.encoder_k):
        assert all(torch.equal(random_init[k], v) for k, v in encoder.backbone.state_dict().items())
    other = ablation.starting_model(tmp_path, p, seed + 1, split)
    # Another seed draws other heads: the heads are the seed's, not fixed.
    assert not torch.equal(next(other.encoder_q.head.parameters()), next(model.encoder_q.head.parameters()))


def test_the_bn_statistics_row_puts_its_backbone_in_both_encoders(tmp_path):
    p, split = settings(tmp_path)
    torch.manual_seed(0)
    net = build_backbone(p["backbone"])
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
    model = ablation.starting_model(tmp_path, p, 0, split, backbone=net)
    for encoder in (model.encoder_q, model.encoder_k):
        assert all(torch.equal(net.state_dict()[k], v) for k, v in encoder.backbone.state_dict().items())


def test_the_image_moco_row_is_measured_on_the_inflated_warm_start(tmp_path):
    from test_warm_start import random_2d_checkpoint

    random_2d_checkpoint(tmp_path / "tiny2d.pt")
    p, split = settings(tmp_path)
    p["inflate"] = "repeat"
    model = ablation.starting_model(tmp_path, p, 0, split, init=tmp_path / "tiny2d.pt")
    inflated = build_backbone("tiny", init=str(tmp_path / "tiny2d.pt"), inflate="repeat").state_dict()
    assert all(torch.equal(inflated[k], v) for k, v in model.encoder_q.backbone.state_dict().items())
