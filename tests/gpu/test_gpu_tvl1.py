"""GPU TV-L1 (kernels/tvl1.cu via mcl_fast.gpu.flow) against its CPU twin and OpenCV.

Skipped without CuPy and a GPU. The GPU module is compiled without FMA contraction, so it
should reproduce the host twin (tests/test_tvl1_host.py checks that one against OpenCV) bit
for bit; the tolerances below still allow last-bit differences amplified where TV-L1 is
ill-conditioned (the image border, see tests/test_tvl1_host.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcl_fast._backend import has_gpu

cp = pytest.importorskip("cupy")
if not has_gpu():
    pytest.skip("no CUDA device visible to CuPy", allow_module_level=True)

from mcl_fast.gpu import flow as gpu_flow  # noqa: E402
from host_library import library_or_skip  # noqa: E402
from mcl_fast.gpu import tvl1_host as th  # noqa: E402
from mcl_fast.motion import compute_flow, motion_map  # noqa: E402
from mcl_fast.motion.maps import downsample_mean  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tvl1" / "cases.npz"
BORDER = 8


@pytest.fixture(scope="module")
def cases():
    with np.load(FIXTURES) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def gpu_flows(cases):
    """GPU flow of every fixture case, through the public dispatch (frames -> CuPy flow)."""
    out = {}
    for name in ("smooth", "pan", "bikes"):
        flow = compute_flow(cp.asarray(cases[f"{name}_frames"]), "tvl1", device="cuda")
        assert isinstance(flow, cp.ndarray) and flow.dtype == cp.float32
        out[name] = cp.asnumpy(flow)[:-1]  # drop the repeated last flow
    return out


def epe(flow, gt, mask):
    return float(np.sqrt(((flow - gt) ** 2).sum(-1))[mask].mean())


def map_correlations(flow_a, flow_b, block=1):
    ma, mb = motion_map(flow_a), motion_map(flow_b)
    ma, mb = ma[:, BORDER:-BORDER, BORDER:-BORDER], mb[:, BORDER:-BORDER, BORDER:-BORDER]
    ma, mb = downsample_mean(ma, block), downsample_mean(mb, block)
    return [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(ma, mb)]


@pytest.mark.parametrize("name", ["smooth", "pan", "bikes"])
def test_gpu_equals_host_twin(cases, gpu_flows, name):
    library_or_skip()
    frames = cases[f"{name}_frames"]
    ref = th.tvl1_pairs(frames[:-1], frames[1:])
    got = gpu_flows[name]
    diff = np.sqrt(((got - ref) ** 2).sum(-1))
    exact = float(np.mean(got == ref))
    assert float(np.quantile(diff, 0.99)) < 1e-3, (exact, diff.max())
    assert float(diff.mean()) < 0.01, (exact, diff.mean())


@pytest.mark.parametrize("name", ["smooth", "pan"])
def test_gpu_ground_truth_error_no_worse_than_opencv(cases, gpu_flows, name):
    gt, mask, cv_flow = cases[f"{name}_gt"], cases[f"{name}_mask"], cases[f"{name}_cv"]
    ours, theirs = epe(gpu_flows[name], gt, mask), epe(cv_flow, gt, mask)
    assert ours <= 1.10 * theirs, (ours, theirs)


@pytest.mark.parametrize("name", ["smooth", "pan", "bikes"])
def test_gpu_motion_maps_correlate_with_opencv(cases, gpu_flows, name):
    cv_flow = cases[f"{name}_cv"]
    assert min(map_correlations(gpu_flows[name], cv_flow)) >= 0.9
    assert min(map_correlations(gpu_flows[name], cv_flow, block=4)) >= 0.95


def test_batching_does_not_mix_pairs(cases):
    """All pairs in one launch == one pair per launch (the grid's z axis is the pair)."""
    frames = cp.asarray(cases["pan_frames"])
    prm = th.TVL1Params(nscales=3, warps=2, outer_iterations=3)
    together = gpu_flow.compute_flow(frames, params=prm)
    alone = gpu_flow.compute_flow(frames, params=prm, max_pairs=1)
    cp.testing.assert_array_equal(together, alone)
    pairs = gpu_flow.tvl1_pairs(frames[:-1], frames[1:], params=prm)
    cp.testing.assert_array_equal(pairs, together[:-1])


def test_iterations_per_launch_do_not_change_the_flow(cases):
    """chunk = inner iterations per launch (shared-memory tile + halo): same flow for any value."""
    frames = cp.asarray(cases["bikes_frames"])
    prm = th.TVL1Params(warps=2, outer_iterations=4, inner_iterations=10)
    ref = gpu_flow.compute_flow(frames, params=prm, chunk=1)
    for chunk in (4, 6):
        cp.testing.assert_array_equal(gpu_flow.compute_flow(frames, params=prm, chunk=chunk), ref)


def test_numpy_input_and_contract(cases):
    frames = cases["smooth_frames"]
    prm = th.TVL1Params(nscales=2, warps=1, outer_iterations=1, inner_iterations=5)
    flow = gpu_flow.compute_flow(frames, params=prm)  # NumPy in, CuPy out
    assert isinstance(flow, cp.ndarray) and flow.shape == frames.shape[:3] + (2,)
    cp.testing.assert_array_equal(flow[-1], flow[-2])
    gray = th.rgb_to_gray(frames)
    cp.testing.assert_array_equal(flow, gpu_flow.compute_flow(cp.asarray(gray), params=prm))


def test_farneback_on_gpu_names_the_alternative():
    with pytest.raises(NotImplementedError, match="tvl1"):
        gpu_flow.compute_flow(np.zeros((2, 16, 16), np.uint8), method="farneback")
