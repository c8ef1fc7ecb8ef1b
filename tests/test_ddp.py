"""Distributed MoCo on CPU (gloo), launched with torchrun: two processes, then two "nodes".

Checks: queues stay identical on both ranks; with a BN-free model, loss and gradients equal one
process on the same global batch (MAL included); shuffle BN hands the keys back in input order
(and really sends them to other ranks); a two-node torchrun rendezvous on localhost trains.
This file is also the worker script: `torchrun ... tests/test_ddp.py OUT`.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH, STEPS = 4, 3


def _model(norm: bool, split_bn: int = 2, queue_size: int = 10):
    from mcl_fast.models import build_backbone
    from mcl_fast.moco import MoCo

    torch.manual_seed(0)
    return MoCo(build_backbone("tiny", width=4, norm=norm), dim=8, hidden=16, queue_size=queue_size,
                split_bn=split_bn, momentum=0.9)


def _global_batch(step: int):
    g = torch.Generator().manual_seed(100 + step)
    return (torch.randn(GLOBAL_BATCH, 3, 4, 16, 16, generator=g), torch.randn(GLOBAL_BATCH, 3, 4, 16, 16, generator=g),
            torch.rand(GLOBAL_BATCH, 4, 8, 8, generator=g))


def _train(model, forward, shard):
    """STEPS SGD steps of InfoNCE + MAL (weight 1); returns per-step (loss, grads) as the optimiser saw them."""
    from mcl_fast.losses import MCLLoss

    criterion = MCLLoss()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    record = []
    for step in range(STEPS):
        q, k, m = (t[shard] for t in _global_batch(step))
        out = criterion(forward(q, k, return_features=True), m, mal_weight=1.0)
        opt.zero_grad()
        out["loss"].backward()
        grads = [p.grad.clone() for p in model.encoder_q.parameters()]
        record.append((out["loss"].detach(), grads))
        opt.step()
    return record


def worker(out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from mcl_fast import dist as mdist
    from mcl_fast.moco import MoCo

    torch.set_num_threads(1)
    mdist.init_distributed("cpu")
    rank, world = mdist.get_rank(), mdist.get_world_size()
    per = GLOBAL_BATCH // world
    shard = slice(rank * per, (rank + 1) * per)

    # 1) BN-free model: DDP == one process on the global batch. Loss reported = mean over ranks.
    model = _model(norm=False)
    assert model.split_bn == 1, "split BN must switch off under DDP"
    ddp = DDP(model, broadcast_buffers=False)
    record = _train(model, ddp, shard)
    losses = [mdist.all_reduce_mean(loss) for loss, _ in record]
    queues = [torch.empty_like(model.queue) for _ in range(world)]
    dist.all_gather(queues, model.queue)

    # 1b) No queue (negatives: every rank's keys of the step): DDP == one process as well.
    batch_model = _model(norm=False, queue_size=0)
    batch_record = _train(batch_model, DDP(batch_model, broadcast_buffers=False), shard)
    batch_losses = [mdist.all_reduce_mean(loss) for loss, _ in batch_record]

    # 2) BatchNorm model with shuffle BN for a few steps: queues must still agree.
    bn_model = _model(norm=True)
    bn_ddp = DDP(bn_model, broadcast_buffers=False)
    _train(bn_model, bn_ddp, shard)
    bn_queues = [torch.empty_like(bn_model.queue) for _ in range(world)]
    dist.all_gather(bn_queues, bn_model.queue)

    # 3) Shuffle BN order: a per-sample key encoder must give each rank its own keys back,
    # while the encoder itself sees other ranks' clips.
    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, x):
            self.seen.append(x[:, 0, 0, 0, 0].clone())
            return x[:, 0, 0, 0, :2]

    spy_model = MoCo.__new__(MoCo)
    torch.nn.Module.__init__(spy_model)
    spy_model.encoder_k = Spy()
    spy_model.split_bn = 1
    tags = torch.arange(GLOBAL_BATCH, dtype=torch.float32)
    keys = torch.zeros(GLOBAL_BATCH, 3, 1, 1, 2)
    keys[:, 0, 0, 0, 0] = tags
    keys[:, 0, 0, 0, 1] = tags * 10
    order_ok, foreign = True, False
    torch.manual_seed(1234)  # rank 0 draws the permutation; other ranks' seeds must not matter
    for _ in range(6):
        back = spy_model.shuffled_keys(keys[shard])
        order_ok &= torch.equal(back, keys[shard][:, 0, 0, 0, :2])
        foreign |= not set(spy_model.encoder_k.seen[-1].tolist()) <= set(tags[shard].tolist())

    if rank == 0:
        torch.save({"losses": losses, "grads": [g for _, g in record], "queues": queues, "bn_queues": bn_queues,
                    "batch_losses": batch_losses,
                    "batch_grads": [g for _, g in batch_record],
                    "order_ok": order_ok, "foreign": foreign, "world": world,
                    "weights": {k: v for k, v in model.state_dict().items()}},
                   Path(out_dir) / "ddp.pt")
    mdist.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.timeout(180)
def test_two_process_gloo_matches_one_process(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(Path(__file__).resolve()), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert got["world"] == 2
    # queues identical on both ranks, with and without BN
    torch.testing.assert_close(got["queues"][0], got["queues"][1], rtol=0, atol=0)
    torch.testing.assert_close(got["bn_queues"][0], got["bn_queues"][1], rtol=0, atol=0)
    assert got["order_ok"], "shuffle BN did not hand the keys back in input order"
    assert got["foreign"], "shuffle BN never sent a clip to another rank"

    # one process, same global batch, same initial weights
    model = _model(norm=False)
    record = _train(model, model, slice(None))
    for step, ((loss, grads), ddp_loss, ddp_grads) in enumerate(zip(record, got["losses"], got["grads"])):
        torch.testing.assert_close(ddp_loss, loss, rtol=1e-5, atol=1e-6, msg=f"loss at step {step}")
        for g1, g2 in zip(grads, ddp_grads):
            torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-6, msg=f"gradient at step {step}")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(got["weights"][name], value, rtol=1e-4, atol=1e-6, msg=name)
    batch_model = _model(norm=False, queue_size=0)
    record = _train(batch_model, batch_model, slice(None))
    for step, ((loss, grads), ddp_loss, ddp_grads) in enumerate(zip(record, got["batch_losses"], got["batch_grads"])):
        torch.testing.assert_close(ddp_loss, loss, rtol=1e-5, atol=1e-6, msg=f"no-queue loss at step {step}")
        for g1, g2 in zip(grads, ddp_grads):
            torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-6, msg=f"no-queue gradient at step {step}")


@pytest.mark.timeout(200)
def test_two_node_torchrun_on_localhost(tmp_path):
    port = _free_port()
    out = tmp_path / "run"
    common = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
              "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"mcl{port}",
              "--local-addr", "127.0.0.1", "--max-restarts", "0",
              "-m", "mcl_fast.train", "--config", "demo_cpu", "data.loader=synthetic", f"output={out}",
              "data.synthetic_batches=2", "data.batch_size=4", "data.size=32", "data.clip_len=4", "optim.epochs=1",
              "train.tensorboard=false", "train.plot=false", "train.progress=false"]
    nodes = [subprocess.Popen(common, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    logs = []
    for p in nodes:
        try:
            logs.append(p.communicate(timeout=180)[0])
        finally:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in nodes), "\n----\n".join(log[-3000:] for log in logs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 2
    assert (out / "ckpt_00000002.pt").is_file()


if __name__ == "__main__":
    worker(sys.argv[1])
