"""`prepare --device cuda` for one video (mcl_fast.gpu.video_maps: NVDEC decode, GPU TV-L1, fused
maps) against the CPU path on the same H.264 file. The CPU reference runs the project's CPU twin of
TV-L1 (libmcl_host), not OpenCV's: GPU machines ship opencv-python without the contrib module.
Skips without CuPy, DALI, PyAV or a CUDA device."""
from __future__ import annotations

import numpy as np
import pytest

from gpu.compare_prepare import MIN_CORRELATION
from mcl_fast._backend import has_gpu

pytest.importorskip("cupy")
pytest.importorskip("nvidia.dali")
pytest.importorskip("av")
if not has_gpu():
    pytest.skip("no CUDA device visible to CuPy", allow_module_level=True)


def test_video_maps_gpu_agree_with_the_cpu_path(pan_video, monkeypatch):
    from host_library import library_or_skip
    from mcl_fast.gpu import tvl1_host as th
    from mcl_fast.gpu.video_maps import compute_video_maps_gpu
    from mcl_fast.motion import prepare

    library_or_skip()
    monkeypatch.setattr(prepare, "_pair_flow", lambda method: lambda prev, nxt: th.tvl1_pairs(prev[None], nxt[None])[0])
    path = str(pan_video.path)
    cpu = prepare.compute_video_maps(path, flow="tvl1", size=64, map_downsample=4)
    gpu = compute_video_maps_gpu(path, flow="tvl1", size=64, map_downsample=4, chunk_frames=10)  # 3 chunks
    assert (gpu.num_frames, gpu.height, gpu.width) == (cpu.num_frames, cpu.height, cpu.width)
    assert gpu.maps_u8.shape == cpu.maps_u8.shape and gpu.maps_u8.dtype == np.uint8
    a, b = gpu.dequantized().ravel(), cpu.dequantized().ravel()
    corr = float(np.corrcoef(a, b)[0, 1])
    # different resizers (DALI linear+antialias vs OpenCV area), the same TV-L1
    assert corr >= MIN_CORRELATION, f"GPU and CPU motion maps correlate only {corr:.3f}"
