"""examples/: the VideoMAE-style and MoCo/CoCLR-style loops run as a user runs them (a fresh
interpreter, the torch loader's forkserver workers, torchrun with no shard arguments), on 4 tiny
clips; and docs/loader.md's "Drop it into your training loop" shows their code as it is."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NUM_VIDEOS = 4  # examples/videomae_style.tiny_store


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run(script: str, *args, ranks: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    """python examples/SCRIPT ARGS (or torchrun --standalone --nproc-per-node RANKS ...)."""
    launch = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                   "--nproc-per-node", str(ranks)]
    proc = subprocess.run([*launch, str(EXAMPLES / script), *map(str, args)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=240)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def ranks_seen(out: Path, ranks: int) -> list[list[dict]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The tiny store the VideoMAE example makes with --tiny-data."""
    sys.path.insert(0, str(EXAMPLES))  # as when the script runs: its folder first (examples/_report.py)
    try:
        spec = importlib.util.spec_from_file_location("videomae_style", EXAMPLES / "videomae_style.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module.tiny_store(str(tmp_path_factory.mktemp("examples")))


def _check_videomae_batches(epochs: list[dict], batch: int = 2, frames: int = 4, size: int = 32) -> None:
    """Every batch: float32 (B, 3, T, H, W) clips and a bool (B, N) mask, N = T/2 * H/16 * W/16."""
    for epoch in epochs:
        for shapes in epoch["shapes"]:
            assert shapes["videos"] == ["torch.float32", [batch, 3, frames, size, size]]
            assert shapes["mask"] == ["torch.bool", [batch, frames // 2 * (size // 16) * (size // 16)]]


@pytest.mark.timeout(300)
def test_the_videomae_example_in_one_process_with_workers(store, tmp_path):
    run("videomae_style.py", "--store", store.path, "--num-workers", "2", "--epochs", "2", "--out", tmp_path)
    (epochs,) = ranks_seen(tmp_path, 1)
    _check_videomae_batches(epochs)
    assert [sorted(e["indices"]) for e in epochs] == [list(range(NUM_VIDEOS))] * 2
    assert epochs[0]["indices"] != epochs[1]["indices"]  # no set_epoch in one process, yet a new epoch


@pytest.mark.timeout(300)
def test_the_videomae_example_under_torchrun_without_shard_arguments(store, tmp_path):
    run("videomae_style.py", "--store", store.path, "--epochs", "2", "--out", tmp_path, ranks=2)
    seen = ranks_seen(tmp_path, 2)
    for r in seen:
        _check_videomae_batches(r)
    for epoch in range(2):
        a, b = (r[epoch]["indices"] for r in seen)
        assert len(a) == len(b) == NUM_VIDEOS // 2 and sorted(a + b) == list(range(NUM_VIDEOS)), (epoch, a, b)


@pytest.mark.timeout(300)
def test_the_videomae_example_with_per_rank_loader_seeds_stops_with_the_seed_message(store):
    proc = run("videomae_style.py", "--store", store.path, "--loader-seed-per-rank", ranks=2, check=False)
    assert proc.returncode != 0
    assert "different seeds (rank 0: seed=0, rank 1: seed=1)" in proc.stdout + proc.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("loader,views", [("torch", "moco"), ("dali", "coclr")])
def test_the_moco_example(store, tmp_path, loader, views):
    if loader == "dali":
        pytest.importorskip("nvidia.dali")
    run("moco_style.py", "--store", store.path, "--loader", loader, "--views", views, "--epochs", "2",
        "--out", tmp_path)
    (epochs,) = ranks_seen(tmp_path, 1)
    assert [e["views"] for e in epochs] == [["query", "key"] if views == "moco" else ["view0", "view1"]] * 2
    assert all(sorted(e["indices"]) == list(range(NUM_VIDEOS)) for e in epochs)
    assert all(e["loss"] == e["loss"] for e in epochs)  # finite: not NaN


def test_the_readme_shows_the_examples_as_they_are():
    """Each Python block of docs/loader.md's "Drop it into your training loop" (the README links it)
    is a verbatim excerpt of the example file its first line names."""
    text = (ROOT / "docs" / "loader.md").read_text(encoding="utf-8")
    section = text.split("## Drop it into your training loop", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    for block in blocks:
        name = re.match(r"# examples/(\w+\.py)", block).group(1)
        source = (EXAMPLES / name).read_text(encoding="utf-8")
        for part in block.split("\n# ...\n"):
            body = part.split("\n", 1)[1] if part.startswith("# examples/") else part
            assert body.strip() and body in source, (name, body[:200])
