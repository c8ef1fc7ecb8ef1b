"""The dead-code check (vulture): nothing in mcl_fast/ is left that nothing calls.

A name counts as used when mcl_fast, the tests, the benchmarks or the examples use it (a NumPy
reference used only by the tests that check its GPU twin is not dead). Real false positives go
into tests/vulture_whitelist.py with their reason.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["mcl_fast", "tests", "benchmarks", "examples", "tests/vulture_whitelist.py"]


def _vulture(*paths, cwd=ROOT) -> list[str]:
    """vulture's findings (lines "path:line: unused ..."); skips without vulture, fails in CI."""
    try:
        import vulture  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("vulture is missing: the dev extra installs it (pip install -e '.[dev]')", pytrace=False)
        pytest.skip("the dead-code check needs the dev extra: pip install -e '.[dev]'")
    proc = subprocess.run([sys.executable, "-m", "vulture", *map(str, paths), "--min-confidence", "60"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 3), proc.stderr  # 3: vulture found dead code (listed on stdout)
    return proc.stdout.splitlines()


def test_the_check_finds_a_function_nothing_calls(tmp_path):
    (tmp_path / "pkg.py").write_text("def used():\n    return 1\n\n\ndef forgotten():\n    return 2\n\n\nused()\n")
    assert [line.split(": ", 1)[1] for line in _vulture("pkg.py", cwd=tmp_path)] == [
        "unused function 'forgotten' (60% confidence)"]


def test_nothing_in_the_package_is_unused():
    dead = [line for line in _vulture(*SOURCES) if line.startswith("mcl_fast/")]
    assert not dead, ("unused code in mcl_fast/ (delete it, or whitelist a false positive with its reason in "
                      "tests/vulture_whitelist.py):\n" + "\n".join(dead))
