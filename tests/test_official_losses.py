"""The `official` method's loss and model side against NumPy transcriptions of the release's facts (docs/release.md).

Release facts tested here (each written out below in NumPy, not taken from mcl_fast):
- MAL: prediction ReLU(sum_c w_ct g_ct) with w the gradient's mean over space per channel and
  time step; ST = per-chunk cosine (49-d) weighted by a softmax over the 4 chunks of the target's
  raw per-chunk sums; T = cosine of the 4 per-chunk sums; S = cosine of the means over chunks;
  loss (1 - ST) + (1 - S) + (1 - T), batch means; weight 2 for the first 5 epochs, then 1.
- InfoNCE over 3B rows (q with each of k1, k2, k3 against one queue, tau 0.1), all three keys
  enqueued; intra-video logits [q.k1, q.k_other] / 0.1 for each other clip; the order loss, a
  linear layer on the normalised concatenation of q's and the two other clips' embeddings,
  weighted epoch / epochs (1-based), off for Kinetics.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcl_fast.engine import setup_runtime
from mcl_fast.losses import info_nce, motion_alignment_loss
from mcl_fast.losses_official import (OfficialLoss, intra_video_logits, order_loss, official_alignment_loss,
                                      official_alignment_terms)
from mcl_fast.models import build_backbone
from mcl_fast.moco_official import OfficialMoCo
from mcl_fast.train import ConfigError, build_criterion, build_model, load_config, mal_weight

# The paper's MAL with the release's weighting and distance: what the release's terms are told apart from.
PAPER_MAL_COSINE = dict(variant="v3", weighting="per_time", distance="cosine")


# ---- NumPy transcriptions --------------------------------------------------------------------
def np_unit(x, axis=-1):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def np_cos(a, b):
    return (np_unit(a) * np_unit(b)).sum(-1)


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_release_terms(pred, target):
    """pred, target (B, T, H, W): the release's three alignment terms (1 - cosine, batch means)."""
    b, t = pred.shape[:2]
    p, m = pred.reshape(b, t, -1), target.reshape(b, t, -1)
    w = np_softmax(m.sum(-1), axis=1)
    st = (np_cos(p, m) * w).sum(1)
    tt = np_cos(p.sum(-1), m.sum(-1))
    ss = np_cos(p.mean(1), m.mean(1))
    return {"st": float((1 - st).mean()), "s": float((1 - ss).mean()), "t": float((1 - tt).mean())}


def np_prediction(g):
    """g (B, C, T, H, W) the gradient: ReLU(sum_c mean_hw(g) * g) -> (B, T, H, W)."""
    w = g.mean(axis=(3, 4), keepdims=True)
    return np.maximum((w * g).sum(1), 0.0)


def np_cross_entropy(logits, labels):
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


# ---- the motion alignment loss ----------------------------------------------------------------
def _mal_inputs(seed, shape=(3, 6, 4, 7, 7), target_scale=80.0):
    """feat (B, C, T, H, W) float64 with grad; A fixed; score = 0.5 sum A feat^2, so d score / d feat
    = A feat (known in NumPy); a raw target (B, 4, 7, 7) of cells uniform in [0, target_scale)."""
    rng = np.random.default_rng(seed)
    feat_np = rng.normal(size=shape)
    a_np = rng.normal(size=shape) + 0.3  # mostly positive weights: a non-trivial ReLU map
    target_np = rng.uniform(0, target_scale, size=(shape[0], 4, 7, 7))
    feat = torch.tensor(feat_np, requires_grad=True)
    score = 0.5 * (torch.tensor(a_np) * feat.pow(2)).flatten(1).sum(1)
    return feat, score, torch.tensor(target_np), feat_np, a_np, target_np


@pytest.mark.parametrize("scale", [80.0, 0.02])
def test_release_mal_matches_numpy(scale):
    """At the raw scale (cells of tens of encoded units) and at a tiny one, where the softmax is far
    from one-hot: the full loss and each term equal the transcription."""
    feat, score, target, feat_np, a_np, target_np = _mal_inputs(0, target_scale=scale)
    loss, parts = official_alignment_loss(feat, score, target, return_terms=True)
    want = np_release_terms(np_prediction(a_np * feat_np), target_np)
    for name in ("st", "s", "t"):
        assert parts[name].item() == pytest.approx(want[name], rel=1e-10, abs=1e-12), name
    assert loss.item() == pytest.approx(sum(want.values()), rel=1e-10)
    if scale < 1:  # the weighting is really in play: the ST term is not the argmax chunk's alone
        w = np_softmax(target_np.reshape(3, 4, -1).sum(-1), axis=1)
        assert w.max() < 0.9


def test_release_mal_gradient_matches_finite_differences_of_the_transcription():
    """The second-order path: d loss / d feat by autograd equals central differences of the NumPy
    loss (where the gradient A feat moves with feat)."""
    feat, score, target, feat_np, a_np, target_np = _mal_inputs(1, shape=(2, 3, 4, 7, 7), target_scale=0.05)
    loss = official_alignment_loss(feat, score, target)
    (grad,) = torch.autograd.grad(loss, feat)

    def np_loss(f):
        return sum(np_release_terms(np_prediction(a_np * f), target_np).values())

    rng = np.random.default_rng(2)
    eps = 1e-6
    for _ in range(12):
        idx = tuple(int(rng.integers(0, n)) for n in feat_np.shape)
        up, down = feat_np.copy(), feat_np.copy()
        up[idx] += eps
        down[idx] -= eps
        fd = (np_loss(up) - np_loss(down)) / (2 * eps)
        assert grad[idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), idx


def test_softmax_over_raw_chunk_sums_is_one_hot_so_st_is_the_top_chunk():
    """The release's consequence, documented in docs/release.md: at the raw scale (sums of ~49 x 40
    encoded units) the weights are one-hot to float64, and the ST term is 1 - the cosine of the
    chunk with the largest target sum."""
    feat, score, target, feat_np, a_np, target_np = _mal_inputs(3)
    sums = target_np.reshape(3, 4, -1).sum(-1)
    assert np.sort(sums, axis=1)[:, -1].min() > 1000
    assert np_softmax(sums, axis=1).max(1).min() > 1 - 1e-6
    _, parts = official_alignment_loss(feat, score, target, return_terms=True)
    pred = np_prediction(a_np * feat_np).reshape(3, 4, -1)
    top = sums.argmax(1)
    cos_top = np_cos(pred[np.arange(3), top], target_np.reshape(3, 4, -1)[np.arange(3), top])
    assert parts["st"].item() == pytest.approx(float((1 - cos_top).mean()), abs=1e-6)


def test_release_terms_differ_from_the_paper_st_and_pool_a_larger_map_to_the_target():
    feat, score, target, feat_np, a_np, target_np = _mal_inputs(4, target_scale=0.02)
    _, release = official_alignment_loss(feat, score, target, return_terms=True)
    _, uniform = motion_alignment_loss(feat, score, target, return_terms=True, **PAPER_MAL_COSINE)
    assert abs(release["st"].item() - uniform["st"].item()) > 1e-3  # the test can tell them apart
    # S and T with the cosine distance were already the release's (cosines are scale-free)
    assert release["s"].item() == pytest.approx(uniform["s"].item(), rel=1e-9)
    assert release["t"].item() == pytest.approx(uniform["t"].item(), rel=1e-9)
    # a (8, 14, 14) map (another backbone or clip size) is block-averaged to the (4, 7, 7) target
    feat, score, target, feat_np, a_np, target_np = _mal_inputs(5, shape=(2, 3, 8, 14, 14), target_scale=0.02)
    _, parts = official_alignment_loss(feat, score, target, return_terms=True)
    p = np_prediction(a_np * feat_np).reshape(2, 4, 2, 7, 2, 7, 2).mean(axis=(2, 4, 6))
    want = np_release_terms(p, target_np)
    for name in ("st", "s", "t"):
        assert parts[name].item() == pytest.approx(want[name], rel=1e-10), name


def test_release_terms_function_and_errors():
    rng = np.random.default_rng(6)
    pred, target = rng.uniform(0, 1, (2, 4, 7, 7)), rng.uniform(0, 0.03, (2, 4, 7, 7))
    pred[0, 2] = 0.0  # a chunk the ReLU zeroed: cosine 0, as F.normalize-then-dot
    got = official_alignment_terms(torch.tensor(pred), torch.tensor(target))
    want = np_release_terms(pred, target)
    assert {k: v.item() for k, v in got.items()} == pytest.approx(want, rel=1e-12)
    feat, score, target_t, *_ = _mal_inputs(7)
    with pytest.raises(ValueError, match="unknown MAL variant"):
        official_alignment_loss(feat, score, target_t, variant="v4")
    with pytest.raises(ValueError, match="MAL terms"):
        official_alignment_loss(feat, score, target_t, terms=("st", "xy"))
    with pytest.raises(ValueError, match=r"motion must be \(B, T', H', W'\)"):
        official_alignment_loss(feat, score, target_t[:, 0])
    with pytest.raises(ValueError, match="same|both"):
        official_alignment_terms(torch.zeros(2, 4, 7, 7), torch.zeros(2, 4, 7, 6))


# ---- logits, order loss, MCLLoss ----------------------------------------------------------------
def test_intra_logits_and_order_loss_match_numpy():
    rng = np.random.default_rng(8)
    q, k1, k2, k3 = (np_unit(rng.normal(size=(5, 8))) for _ in range(4))
    got = intra_video_logits(*(torch.tensor(x) for x in (q, k1)), [torch.tensor(k2), torch.tensor(k3)], 0.1)
    rows = [np.stack([(q * k1).sum(1), (q * k).sum(1)], 1) / 0.1 for k in (k2, k3)]
    np.testing.assert_allclose(got.numpy(), np.concatenate(rows), rtol=1e-12)
    assert info_nce(got).item() == pytest.approx(np_cross_entropy(np.concatenate(rows), np.zeros(10, int)),
                                                 rel=1e-12)
    logits = rng.normal(size=(5, 2))
    first = np.array([True, False, False, True, True])
    assert order_loss(torch.tensor(logits), torch.tensor(first)).item() == pytest.approx(
        np_cross_entropy(logits, first.astype(int)), rel=1e-12)  # class 1: the query clip is first
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        order_loss(torch.zeros(5, 3), torch.tensor(first))


def test_official_loss_adds_the_release_terms_in_its_order():
    """loss = inter + intra + order_weight x order (+ mal_weight x MAL), each from its own key."""
    rng = np.random.default_rng(9)
    b, k = 4, 6
    logits, intra, order = rng.normal(size=(3 * b, 1 + k)), rng.normal(size=(2 * b, 2)), rng.normal(size=(b, 2))
    first = rng.random(b) < 0.5
    out = {"logits": torch.tensor(logits), "intra_logits": torch.tensor(intra), "order_logits": torch.tensor(order)}
    terms = OfficialLoss()(out, order_weight=0.25, query_first=torch.tensor(first))
    want = {"nce": np_cross_entropy(logits, np.zeros(3 * b, int)), "intra": np_cross_entropy(intra, np.zeros(2 * b, int)),
            "order": np_cross_entropy(order, first.astype(int))}
    for name, value in want.items():
        assert terms[name].item() == pytest.approx(value, rel=1e-12), name
    assert terms["loss"].item() == pytest.approx(want["nce"] + want["intra"] + 0.25 * want["order"], rel=1e-12)
    with pytest.raises(ValueError, match="query_first"):
        OfficialLoss()(out)


# ---- MoCo: 3B rows, all keys enqueued, intra and order logits ----------------------------------
def _official_moco(k=40, **kw):
    torch.manual_seed(0)
    backbone = build_backbone("tiny", width=4).double()
    return OfficialMoCo(backbone, dim=8, hidden=16, queue_size=k, momentum=0.9, tau=0.1, split_bn=1, order=True,
                        tau_intra=0.1, **kw).double()


def test_moco_official_forward_matches_numpy_and_enqueues_all_three_keys():
    model = _official_moco()
    b = 3
    gen = torch.Generator().manual_seed(1)
    clips = [torch.randn(b, 3, 4, 16, 16, generator=gen, dtype=torch.float64) for _ in range(4)]
    queue_before, ptr = model.queue.clone().numpy(), int(model.queue_ptr)
    first = torch.tensor([True, False, True])
    out = model(*clips[:2], key2=clips[2], key3=clips[3], return_features=True)
    # the embeddings, re-encoded with the same (already momentum-updated) encoders; split_bn=1: no shuffle
    with torch.no_grad():
        qe = model.encoder_q.embed(clips[0])
        ke = [model.encoder_k.embed(x) for x in clips[1:]]
    q, qi, qo = (qe[n].numpy() for n in ("z", "z_intra", "z_order"))
    k = [e["z"].numpy() for e in ke]
    ki = [e["z_intra"].numpy() for e in ke]
    ko = [e["z_order"].numpy() for e in ke]
    # InfoNCE over 3B rows: [q.k_j, q.queue] / tau for j = 1, 2, 3, blocks in that order
    want = np.concatenate([np.concatenate([(q * kj).sum(1, keepdims=True), q @ queue_before.T], 1) / 0.1 for kj in k])
    np.testing.assert_allclose(out["logits"].detach().numpy(), want, rtol=1e-10, atol=1e-12)
    # intra: [qi.k1i, qi.k2i] then [qi.k1i, qi.k3i]
    intra = np.concatenate([np.stack([(qi * ki[0]).sum(1), (qi * kj).sum(1)], 1) for kj in ki[1:]]) / 0.1
    np.testing.assert_allclose(out["intra_logits"].detach().numpy(), intra, rtol=1e-10, atol=1e-12)
    # order: a linear layer on the normalised concatenation [q_order, k2_order, k3_order]
    lin = model.encoder_q.order_classifier
    cat = np_unit(np.concatenate([qo, ko[1], ko[2]], 1))
    order = cat @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
    np.testing.assert_allclose(out["order_logits"].detach().numpy(), order, rtol=1e-10, atol=1e-12)
    # all three keys enqueued, k1 block then k2 then k3, at the pointer
    ring = model.queue.numpy()
    np.testing.assert_allclose(ring[ptr:ptr + 3 * b], np.concatenate(k), rtol=1e-10, atol=1e-12)
    assert int(model.queue_ptr) == ptr + 3 * b
    np.testing.assert_array_equal(ring[ptr + 3 * b:], queue_before[ptr + 3 * b:])
    # the whole objective: the release's sum, and gradients reach the query side's heads only
    motion = torch.rand(b, 4, 7, 7, generator=gen, dtype=torch.float64) * 50
    criterion = OfficialLoss({"variant": "v3"})
    terms = criterion(out, motion, mal_weight=2.0, query_first=first, order_weight=0.5)
    want_loss = (np_cross_entropy(want, np.zeros(3 * b, int)) + np_cross_entropy(intra, np.zeros(2 * b, int))
                 + 0.5 * np_cross_entropy(order, first.numpy().astype(int)) + 2.0 * terms["mal"].item())
    assert terms["loss"].item() == pytest.approx(want_loss, rel=1e-10)
    terms["loss"].backward()
    for name in ("head", "intra_head", "order_head", "order_classifier"):
        grads = [p.grad for p in getattr(model.encoder_q, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is None for p in model.encoder_k.parameters())


def test_enqueue_of_three_keys_follows_the_release_across_ranks(monkeypatch):
    """Under DDP the release enqueues [k1 of every rank, k2 of every rank, k3 of every rank]; a
    gather that appends a second rank's keys (-x here) shows the order without processes."""
    from mcl_fast import moco as moco_module

    model = _official_moco(k=20)
    monkeypatch.setattr(moco_module.dist, "concat_all_gather", lambda x: torch.cat([x, -x]))
    keys = [torch.full((2, 8), float(v), dtype=torch.float64) for v in (1, 2, 3)]
    model.enqueue(*keys)
    want = torch.cat([torch.cat([k, -k]) for k in keys])
    torch.testing.assert_close(model.queue[:12], want)
    assert int(model.queue_ptr) == 12


def test_moco_official_options_are_checked():
    backbone = build_backbone("tiny", width=4)
    with pytest.raises(ValueError, match="needs a queue"):
        OfficialMoCo(backbone, dim=8, hidden=16, queue_size=0)
    model = OfficialMoCo(backbone, dim=8, hidden=16, queue_size=8, order=False)
    x = torch.randn(2, 3, 4, 16, 16)
    with pytest.raises(ValueError, match="needs key2 and key3"):
        model(x, x)
    # order off (the release's Kinetics runs): no order head or logits; 3B InfoNCE rows, 2B intra rows
    out = model(x, x, key2=x, key3=x)
    assert out["logits"].shape == (6, 9) and out["intra_logits"].shape == (4, 2) and int(model.queue_ptr) == 6
    assert "order_logits" not in out and not hasattr(model.encoder_q, "order_head")


# ---- the trainer's schedules and the shipped config ---------------------------------------------
def test_official_config_uses_every_release_term_and_its_schedules():
    from mcl_fast.losses import MCLLoss
    from mcl_fast.moco import MoCo

    c = load_config("ucf101_r2plus1d_official", ["model.backbone=tiny"])
    data = c["data"]
    assert c["method"] == "official" and c["official"] == {"order": True, "intra_tau": 0.1}
    assert data["preset"] == "official" and (data["clip_len"], data["stride"]) == (16, 2)
    assert (c["model"]["tau"], c["model"]["queue_size"], c["model"]["momentum"]) == (0.1, 131072, 0.999)
    # method=official builds the release's model and objective (every term, order on, tau_intra 0.1)
    runtime = setup_runtime("cpu", "off", False)
    model, criterion = build_model(c), build_criterion(c, runtime)
    assert type(model) is OfficialMoCo and model.positives == 3 and model.order and model.tau_intra == 0.1
    assert type(criterion) is OfficialLoss and criterion.mal == {"variant": "v3", "terms": ("s", "t", "st")}
    # the release: MAL x2 while its 1-based epoch <= 5, then x1; order weight epoch / epochs (1-based)
    assert [mal_weight(c, e) for e in range(7)] == [2.0] * 5 + [1.0] * 2
    epochs = c["optim"]["epochs"]
    assert [criterion.epoch_weights(e)["order_weight"] for e in (0, 99, epochs - 1)] == [1 / epochs, 100 / epochs, 1.0]
    kinetics = load_config("ucf101_r2plus1d_official", ["official.order=false"])  # the release's Kinetics runs
    assert build_criterion(kinetics, runtime).epoch_weights(10) == {"order_weight": 0.0}
    paper = load_config("ucf101_r2plus1d", ["model.backbone=tiny"])
    assert paper["method"] == "paper" and type(build_model(paper)) is MoCo and type(build_criterion(paper, runtime)) is MCLLoss
    assert build_model(paper).positives == 1 and build_criterion(paper, runtime).epoch_weights(3) == {}


@pytest.mark.parametrize("overrides, message", [
    (["data.preset=paper"], "needs data.preset=official"),
    (["loss.distance=cosine"], "loss.distance applies to the paper's MAL"),
    (["method=release"], "method must be one of"),
    (["model.queue_size=0"], "needs model.queue_size > 0"),
    (["loss.positives=3"], r"unknown config key 'loss.positives' \(replaced by method"),
    (["loss.order=false"], r"unknown config key 'loss.order' \(replaced by official.order"),
])
def test_official_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("ucf101_r2plus1d_official", overrides)


# ---- a CPU smoke test: the official config through mcl_fast.train.train on a tiny official store ----
@pytest.fixture(scope="module")
def tiny_official_store(tmp_path_factory):
    """Four VP9 videos (48x64, 40-46 frames) and their official store (Kinetics window 4, flows at
    short side 32), as tests/test_official_loader.py makes them."""
    from mcl_fast.data.synthetic import make_video
    from mcl_fast.motion.prepare import prepare

    root = tmp_path_factory.mktemp("official_losses")
    for i, n in enumerate((40, 44, 42, 46)):
        make_video(root / "videos" / f"v{i}.webm", num_frames=n, height=48, width=64, object_size=12, gop=8,
                   seed=90 + i, speed=2.0)
    prepare(str(root / "videos"), str(root / "store"), flow="farneback", size=32, workers=0, progress=False,
            maps="official", window=4)
    return root / "store"


def test_official_config_pretrains_a_few_steps_on_cpu(tiny_official_store, tmp_path):
    import json

    from mcl_fast.checkpoint import load_latest
    from mcl_fast.train import train

    steps, batch, queue = 3, 2, 64
    config = load_config("ucf101_r2plus1d_official", [
        f"data.store={tiny_official_store}", "data.loader=torch", f"data.batch_size={batch}", "data.size=32",
        "data.verify=false", "data.num_workers=0",
        "model.backbone=tiny", "model.backbone_kwargs.width=8", "model.hidden=16", "model.dim=8",
        f"model.queue_size={queue}", "optim.epochs=4", "optim.warmup_epochs=1", f"train.max_steps={steps}",
        "train.log_every=1", "train.tensorboard=false", "train.progress=false", "train.plot=false",
        "train.collapse_warning=false", f"output={tmp_path / 'run'}"])
    seen = []
    summary = train(config, on_step=seen.append)
    assert summary["step"] == steps == len(seen)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == steps
    for row in history:
        for name in ("loss", "nce", "intra", "order", "mal", "mal_st", "mal_s", "mal_t"):
            assert np.isfinite(row[name]), (name, row)
        # the logged total is the release's sum: MAL x2 (first 5 epochs), order x (epoch + 1) / epochs
        # (two batches per epoch here: the third step is in epoch 1)
        want = row["nce"] + row["intra"] + (row["epoch"] + 1) / 4 * row["order"] + 2 * row["mal"]
        assert row["loss"] == pytest.approx(want, rel=1e-4)
    assert [row["epoch"] for row in history] == [0, 0, 1]
    _, ckpt = load_latest(tmp_path / "run")
    assert int(ckpt["model"]["queue_ptr"]) == steps * 3 * batch % queue  # three keys per query enqueued
    assert "encoder_q.order_classifier.weight" in ckpt["model"] and "encoder_q.intra_head.0.weight" in ckpt["model"]


# ---- configs of the version before `method` --------------------------------------------------------
_OLD_OFFICIAL_LOSS = {"mal": True, "variant": "v3", "terms": ["s", "t", "st"], "weight": 1.0, "warmup_weight": 2.0,
                      "warmup_weight_epochs": 5, "distance": "cosine", "weighting": "per_time",
                      "st_weighting": "softmax", "positives": 3, "intra": True, "intra_tau": 0.1, "order": True}


def _old_official_file(tmp_path, **loss):
    """ucf101_r2plus1d_official.json as the earlier version wrote it (the release's terms as loss keys)."""
    from mcl_fast.train import config_path

    data = json.loads(config_path("ucf101_r2plus1d_official").read_text())
    del data["method"], data["official"]
    data["loss"] = {**_OLD_OFFICIAL_LOSS, **loss}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    return path


def test_a_config_with_the_earlier_release_keys_loads_as_method_official(tmp_path):
    with pytest.warns(UserWarning, match=r"read as method=official, official.order=true, official.intra_tau=0.1"):
        old = load_config(str(_old_official_file(tmp_path)))
    assert old == load_config("ucf101_r2plus1d_official")
    with pytest.warns(UserWarning, match="official.order=false"):  # the release's Kinetics runs
        assert load_config(str(_old_official_file(tmp_path, order=False)))["official"]["order"] is False


@pytest.mark.parametrize("loss, message", [
    ({"st_weighting": "uniform"}, 'loss.st_weighting="uniform" with others of the release\'s terms'),
    ({"positives": 1}, "loss.positives=1 with others"),
    ({"intra": False}, "loss.intra=false with others"),
    ({"weighting": "global"}, 'loss.weighting="global" with others'),
])
def test_a_mix_of_the_earlier_release_keys_is_refused_naming_the_key(tmp_path, loss, message):
    with pytest.raises(ConfigError, match=re.escape(message) + ".*method=official"):
        load_config(str(_old_official_file(tmp_path, **loss)))


def test_method_paper_on_the_official_batch_trains_the_paper_objective(tmp_path):
    """data.preset=official with method=paper: the paper's MoCo takes query and key only (key2, key3
    and query_first are left aside), as before `method`."""
    from mcl_fast.moco import MoCo
    from mcl_fast.data.official import OfficialSyntheticBatches
    from mcl_fast.train import pretrain_loss

    c = load_config("demo_cpu", ["data.preset=official", "model.queue_size=8"])
    model, criterion = build_model(c), build_criterion(c, setup_runtime("cpu", "off", False))
    batch = OfficialSyntheticBatches(4, clip_len=4, size=32).batch(0, 0)
    assert type(model) is MoCo and len(batch["views"]) == 4 and "query_first" in batch
    terms = pretrain_loss(model, batch, criterion, mal_weight=1.0, **criterion.epoch_weights(0))
    assert set(terms) >= {"loss", "nce", "mal"} and "intra" not in terms and torch.isfinite(terms["loss"])
    assert terms["loss"].item() == pytest.approx(terms["nce"].item() + terms["mal"].item(), rel=1e-6)
