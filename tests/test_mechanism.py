"""The held-out mechanism measure (mcl_fast.eval.mechanism): the trainer's MAL and InfoNCE, no update."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from mcl_fast.eval.mechanism import (batch_mechanism, held_out_batches, held_out_mechanism, initial_model,
                                     mal_criterion)
from mcl_fast.train import load_config, pretrain_loss

BATCH = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Ten small action videos (two classes) and their Farneback store; the demo_cpu config on them."""
    from mcl_fast.eval.actions import make_action_dataset
    from mcl_fast.motion.prepare import prepare
    from mcl_fast.motion.store import MotionStore

    root = tmp_path_factory.mktemp("mechanism")
    make_action_dataset(root / "videos", classes=("horizontal", "circle"), videos_per_class=5, num_frames=24,
                        height=32, width=40, object_size=8, pan_max=0.0, active_fraction=0.75, scene_seed=0,
                        progress=False)
    prepare(str(root / "videos"), str(root / "store"), flow="farneback", size=32, workers=1, progress=False)
    videos = sorted(MotionStore(root / "store").videos)
    config = load_config("demo_cpu", [f"data.store={root / 'store'}", f"data.batch_size={BATCH}", "data.clip_len=4",
                                      "data.size=32", "model.init=null"])
    config["data"]["videos"] = videos
    return SimpleNamespace(config=config, videos=videos)


def test_held_out_batches_are_pinned_by_the_seed(data):
    a = held_out_batches(data.config, data.videos, seed=3, epochs=2)
    b = held_out_batches(data.config, data.videos, seed=3, epochs=2)
    c = held_out_batches(data.config, data.videos, seed=4, epochs=2)
    assert len(a) == 2 * (len(data.videos) // BATCH)  # full batches only, as in training
    assert a[0]["views"][0].shape == (BATCH, 3, 4, 32, 32) and a[0]["motion"].shape[0] == BATCH
    for x, y in zip(a, b):
        torch.testing.assert_close(x["views"][0], y["views"][0], rtol=0, atol=0)
        torch.testing.assert_close(x["motion"], y["motion"], rtol=0, atol=0)
    assert not all(torch.equal(x["views"][0], z["views"][0]) for x, z in zip(a, c))


def test_it_changes_no_weight_buffer_or_gradient_and_keeps_the_mode(data):
    model = initial_model(data.config, seed=0).train()
    criterion, batches = mal_criterion(data.config), held_out_batches(data.config, data.videos)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = held_out_mechanism(model, criterion, batches)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # queue, BN statistics too
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert set(result) == {"nce", "chance", "mal", "mal_s", "mal_t", "mal_st", "below_chance"}
    assert result["chance"] == pytest.approx(math.log(BATCH))  # no queue: the batch's keys are the negatives
    assert result["below_chance"] == pytest.approx(result["chance"] - result["nce"])
    assert result["mal"] == pytest.approx(result["mal_s"] + result["mal_t"] + result["mal_st"])


def test_it_reproduces_the_training_loss_on_a_batch(data):
    """In training mode, with a key encoder the momentum update leaves alone (momentum 1) and one BN
    batch (no shuffle), a batch's values are the trainer's own (train.pretrain_loss, MAL weight 1)."""
    config = {**data.config, "model": {**data.config["model"], "momentum": 1.0, "split_bn": 1}}
    model = initial_model(config, seed=1).train()
    criterion = mal_criterion(config)
    batch = held_out_batches(config, data.videos)[0]
    ours = batch_mechanism(model, criterion, batch)
    trainer = pretrain_loss(model, batch, criterion, 1.0)
    for name in ("nce", "mal", "mal_s", "mal_t", "mal_st"):
        assert ours[name] == pytest.approx(trainer[name].item(), rel=1e-5), name


def test_evaluation_mode_differs_from_training_mode(data):
    """The held-out numbers use BN's running statistics, not the batch's (which training mode uses)."""
    model = initial_model(data.config, seed=1)
    criterion, batches = mal_criterion(data.config), held_out_batches(data.config, data.videos)[:1]
    evaluated = held_out_mechanism(model, criterion, batches)
    with torch.random.fork_rng(devices=[]):
        trained = batch_mechanism(model.train(), criterion, batches[0])
    assert evaluated["mal"] != pytest.approx(trained["mal"], rel=1e-4)
