"""The GPU test modules themselves, run before any GPU does: tests/gpu/test_gpu_kernels.py and the
batched-sampling tests of tests/gpu/test_gpu_loader.py, in a separate process where `cupy` is NumPy
with its kernels on the CPU CUDA emulator (tests/emulated_cupy.py). Not run here: the TV-L1 GPU tests
(the full OpenCV schedule is too slow emulated; tests/test_tvl1_emulated.py covers those kernels) and
the tests that decode video with NVDEC."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_kernel_and_sampling_tests_pass_on_the_emulator():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "emulated_cupy", "-p", "no:cacheprovider",
                          "tests/gpu/test_gpu_kernels.py", "tests/gpu/test_gpu_loader.py", "-k", "not loaders_agree"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", res.stdout).group(1))
    assert passed >= 48 and "skipped" not in res.stdout.splitlines()[-1], res.stdout[-500:]
