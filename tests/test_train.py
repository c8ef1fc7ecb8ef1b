"""The training loop: configs, schedule, checkpoints, exact resume after SIGKILL, load_backbone."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mcl_fast import checkpoint as ckpt
from mcl_fast.engine import WarmupCosine
from mcl_fast.train import CONFIG_DIR, ConfigError, get_args_parser, load_config, run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.loader=synthetic", "data.synthetic_batches=3", "data.batch_size=4", "data.size=32",
        "data.clip_len=4", "optim.epochs=3", "optim.warmup_epochs=1", "checkpoint.every_steps=2",
        "train.tensorboard=false", "train.progress=false", "train.deterministic=true", "train.log_every=1",
        "model.queue_size=8"]  # a queue: its exact resume is part of the test


def test_shipped_configs_load_with_paper_settings():
    names = {p.stem for p in CONFIG_DIR.glob("*.json")}
    assert names >= {"ucf101_r2plus1d", "ucf101_s3d", "kinetics400_r2plus1d", "demo_cpu"}
    for name in ("ucf101_r2plus1d", "ucf101_s3d", "kinetics400_r2plus1d"):
        c = load_config(name)
        assert (c["data"]["batch_size"], c["data"]["clip_len"], c["data"]["size"]) == (64, 16, 224)
        assert (c["model"]["queue_size"], c["optim"]["lr"], c["model"]["tau"]) == (131072, 0.01, 0.1)
        assert c["loss"]["variant"] == "v3" and c["loss"]["terms"] == ["s", "t", "st"]
    assert load_config("ucf101_s3d")["model"]["backbone"] == "s3d"
    assert load_config("ucf101_r2plus1d")["optim"]["epochs"] == 200
    assert load_config("kinetics400_r2plus1d")["optim"]["epochs"] == 400
    assert load_config("demo_cpu")["model"]["backbone"] == "tiny"


def test_overrides_and_errors(tmp_path):
    c = load_config("demo_cpu", ["optim.lr=0.5", "loss.terms=[\"st\"]", "data.store=x/y", "output=o",
                                 "model.backbone_kwargs.width=8"])
    assert c["optim"]["lr"] == 0.5 and c["loss"]["terms"] == ["st"] and c["data"]["store"] == "x/y"
    assert c["model"]["backbone_kwargs"] == {"width": 8}
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_config("demo_cpu", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="loss.variant"):
        load_config("demo_cpu", ["loss.variant=v9"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"backbone": "tiny"}, "typo": 1}')
    with pytest.raises(ConfigError, match=r"bad.json: unknown config key 'typo'"):
        load_config(str(bad))
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="neither a file"):
        load_config("no_such_config")
    args = get_args_parser().parse_args(["--config", str(tmp_path / "nothing.json")])
    assert run(args) == 2


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    s = WarmupCosine(opt, 0.1, total=100, warmup=10, start_factor=0.01, min_lr=0.0)
    lrs = []
    for _ in range(100):
        lrs.append(s.get_last_lr())
        s.step()
    assert lrs[0] == pytest.approx(0.001) and lrs[10] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert s.lr_at(100) == pytest.approx(0.0, abs=1e-12) and lrs[55] == pytest.approx(0.05, rel=1e-6)
    s2 = WarmupCosine(opt, 0.1, total=100, warmup=10)
    s2.load_state_dict(s.state_dict())
    assert s2.get_last_lr() == s.get_last_lr()


def _pretrain(out, *extra, launcher=("-m", "mcl_fast.train"), kill_after=None):
    """A pretraining process; kill_after=N runs this file as the entry point instead, which SIGKILLs
    the process right after step N (once: not again after an elastic restart)."""
    if kill_after is not None:
        launcher = (*launcher, str(Path(__file__).resolve()), "--kill-after", str(kill_after))
    cmd = [sys.executable, *launcher, "--config", "demo_cpu", *TINY, f"output={out}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.timeout(230)
def test_kill_and_resume_equals_straight_run(tmp_path):
    straight, killed, elastic = tmp_path / "straight", tmp_path / "killed", tmp_path / "elastic"
    # 3 batches / epoch, 7 steps: crosses two epoch ends. Kill after step 5 (checkpoints at 2, 3, 4).
    # The third run is killed the same way under torchrun, whose elastic restart must resume it.
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "--max-restarts", "1")
    procs = [_pretrain(straight, "train.max_steps=7"),
             _pretrain(killed, "train.max_steps=7", launcher=(), kill_after=5),
             _pretrain(elastic, "train.max_steps=7", launcher=torchrun, kill_after=5)]
    logs = [p.communicate(timeout=180)[0] for p in procs]
    assert procs[0].returncode == 0, logs[0][-3000:]
    assert procs[1].returncode == -signal.SIGKILL, logs[1][-3000:]
    assert procs[2].returncode == 0, logs[2][-3000:]
    assert "resuming from" in logs[2] and "ckpt_00000004.pt" in logs[2], logs[2][-3000:]
    assert [p.name for p in ckpt.list_checkpoints(killed)] == ["ckpt_00000003.pt", "ckpt_00000004.pt"]
    assert not list(killed.glob(".*.tmp")), "a finished checkpoint leaves no temp file"

    resumed = _pretrain(killed, "train.max_steps=7", "--resume")
    log = resumed.communicate(timeout=150)[0]
    assert resumed.returncode == 0, log[-3000:]
    assert "resuming from" in log and "ckpt_00000004.pt" in log
    a = ckpt.load_checkpoint(straight / "ckpt_00000007.pt")
    b = ckpt.load_checkpoint(killed / "ckpt_00000007.pt")
    c = ckpt.load_checkpoint(elastic / "ckpt_00000007.pt")
    assert a["step"] == b["step"] == 7 and b["epoch"] == 2 and b["loader"]["batch"] == 1
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=0, atol=0, msg=name)  # queue included
        torch.testing.assert_close(c["model"][name], value, rtol=0, atol=0, msg=f"elastic: {name}")
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for i, state in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][i]["momentum_buffer"], state["momentum_buffer"],
                                   rtol=0, atol=0)
    assert a["scheduler"] == b["scheduler"]
    hist = json.loads((killed / "history.json").read_text())
    assert [h["step"] for h in hist] == list(range(1, 8))
    diagnostics = {"loss", "nce", "mal", "acc1", "acc5", "queue_cos", "emb_std", "feat_std", "key_cos", "lr"}
    assert diagnostics <= set(hist[-1]), set(hist[-1])
    assert 0 <= hist[-1]["acc1"] <= hist[-1]["acc5"] <= 100 and -1 <= hist[-1]["queue_cos"] <= 1
    assert (straight / "loss_curves.png").stat().st_size > 0

    # checkpoint contents and evaluation loading
    assert {"model", "optimizer", "scaler", "scheduler", "step", "epoch", "rng", "loader", "config"} <= set(a)
    assert any(k.startswith("encoder_k.") for k in a["model"]) and "queue" in a["model"]
    backbone, config = ckpt.load_backbone(straight / "ckpt_00000007.pt")
    assert config["model"]["backbone"] == "tiny" and not backbone.training
    for name, value in backbone.state_dict().items():
        torch.testing.assert_close(value, a["model"][f"encoder_q.backbone.{name}"])


def test_atomic_save_keeps_last_two_and_skips_a_corrupt_newest(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_checkpoint({"model": {"w": torch.full((2,), float(step))}, "step": step, "run_id": "a"}, tmp_path,
                             step, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt_00000002.pt", "ckpt_00000003.pt"]
    (tmp_path / "ckpt_00000004.pt").write_bytes(b"torn")  # not written by us: a foreign, broken file
    with pytest.warns(UserWarning, match="ckpt_00000004.pt"):
        path, state = ckpt.load_latest(tmp_path)
    assert path.name == "ckpt_00000003.pt" and state["step"] == 3
    with pytest.raises(ValueError, match="ckpt_00000004.pt"):
        ckpt.load_checkpoint(tmp_path / "ckpt_00000004.pt")


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    import random

    import numpy as np

    state = ckpt.rng_state()
    torch.save(state, tmp_path / "rng.pt")
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def _kill_after_main(argv) -> int:
    """Entry point for the kill test: `python tests/test_train.py --kill-after N --config ... [key=value]`."""

    from mcl_fast import train

    parser = train.get_args_parser()
    parser.add_argument("--kill-after", type=int, required=True)
    args = parser.parse_args(argv)
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0

    def kill(step: int) -> None:
        if step == args.kill_after and not restarted:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash right after this step's checkpoint

    config = train.load_config(args.config, args.overrides)
    train.train(config, resume="auto" if args.resume else None, on_step=kill)
    return 0


if __name__ == "__main__":
    sys.exit(_kill_after_main(sys.argv[1:]))
