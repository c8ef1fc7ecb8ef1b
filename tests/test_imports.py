"""The import contracts in setup.cfg (import-linter): the layers of docs/architecture.md and no cycles inside mcl_fast."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")


def lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports with setup.cfg's contracts on the mcl_fast package found in `root`."""
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(LINT_IMPORTS), "--config", str(REPO / "setup.cfg"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_import_contracts():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module,line,broken", [
    # video_io must stay below its users
    ("video_io/errors.py", "from mcl_fast.data import loader  # noqa", "imports point one way"),
    # the cycle this contract removed: the two loaders importing each other
    ("data/checks.py", "from mcl_fast.data import torch_loader  # noqa", "no import cycles"),
    # a NumPy reference importing its GPU twin instead of asking _backend.gpu_twin for it
    ("sampling.py", "from mcl_fast.gpu import sampling as gpu_sampling  # noqa", "imports point one way"),
])
def test_a_broken_contract_fails(tmp_path, module, line, broken):
    shutil.copytree(REPO / "mcl_fast", tmp_path / "mcl_fast", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "mcl_fast" / module, "a", encoding="utf-8") as f:
        f.write("\n" + line + "\n")
    result = lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert " broken." in result.stdout and broken in result.stdout.split("Broken contracts")[1]


def test_references_reach_their_gpu_twins_through_the_registry():
    """Every twin a reference asks for is registered by mcl_fast.gpu, is that module's function,
    and loading them imports neither CuPy nor DALI."""
    code = """
import sys
from mcl_fast import _backend
names = ["motion.compute_flow", "motion.motion_map", "prepare.require_gpu_stack", "prepare.compute_video_maps",
         "sampling.clip_scores", "sampling.sample_clip_start", "sampling.select_box", "sampling.select_box_index_batch",
         "sampling.sample_crop_box"]
import mcl_fast.gpu.flow, mcl_fast.gpu.motion, mcl_fast.gpu.sampling, mcl_fast.gpu.video_maps
owners = {"motion.compute_flow": mcl_fast.gpu.flow.compute_flow, "motion.motion_map": mcl_fast.gpu.motion.motion_map,
          "prepare.compute_video_maps": mcl_fast.gpu.video_maps.compute_video_maps_gpu,
          "sampling.select_box": mcl_fast.gpu.sampling.select_box}
for n in names:
    fn = _backend.gpu_twin(n)
    assert callable(fn), n
    assert n not in owners or fn is owners[n], n
assert "cupy" not in sys.modules and "nvidia.dali" not in sys.modules
try:
    _backend.gpu_twin("sampling.no_such_function")
except LookupError as e:
    assert "sampling.select_box" in str(e)
else:
    raise AssertionError("unknown twin accepted")
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
