"""The import contracts in setup.cfg (import-linter): DESIGN.md's layers and no cycles inside mcl_fast."""
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
])
def test_a_broken_contract_fails(tmp_path, module, line, broken):
    shutil.copytree(REPO / "mcl_fast", tmp_path / "mcl_fast", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "mcl_fast" / module, "a", encoding="utf-8") as f:
        f.write("\n" + line + "\n")
    result = lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert " broken." in result.stdout and broken in result.stdout.split("Broken contracts")[1]
