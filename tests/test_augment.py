"""The torch loader's view ops against a straightforward float reference of the same plan.

The fast path resizes uint8 pixels and blurs with OpenCV; the reference below converts the
source-sized crop to float, resizes in float and blurs with two plain convolutions. Speed work on
augment.py must keep the two within 50 dB PSNR on real footage with the paper's augmentations.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcl_fast.data.augment import blur, gaussian_kernel, render_view
from mcl_fast.data.plan import ViewAug
from plan_reference import draw_view_aug
from videotools import decode_all, psnr


def reference_view(frames: np.ndarray, box, aug: ViewAug, size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, S, S) float32 0..255, every step in float."""
    y0, x0, h, w = box
    x = torch.from_numpy(frames[:, y0:y0 + h, x0:x0 + w]).permute(0, 3, 1, 2).double()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    m = torch.as_tensor(aug.color_matrix, dtype=torch.float64)
    t = torch.as_tensor(aug.color_offset, dtype=torch.float64)
    x = (torch.einsum("ij,njhw->nihw", m, x) + t.view(1, 3, 1, 1)).clamp(0.0, 255.0)
    if aug.blur_window > 1:
        k = gaussian_kernel(aug.blur_sigma, aug.blur_window).double()
        n, c = x.shape[:2]
        pad = aug.blur_window // 2
        y = F.pad(x.reshape(n * c, 1, *x.shape[2:]), (pad, pad, pad, pad), mode="reflect")
        y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
        x = y.reshape(x.shape)
    return (x.flip(-1) if aug.flip else x).float()


@pytest.mark.parametrize("size", [112, 224])
def test_views_match_the_float_reference_on_real_footage(bikes_path, size):
    frames = decode_all(bikes_path)[40:48]  # 8 frames of 272x640
    rng = np.random.default_rng(size)
    worst = np.inf
    for _ in range(6):
        h, w = int(rng.integers(120, 272)), int(rng.integers(160, 640))
        box = (int(rng.integers(0, 272 - h + 1)), int(rng.integers(0, 640 - w + 1)), h, w)
        aug = draw_view_aug(rng, size)
        got = render_view(frames, box, aug, size)
        want = reference_view(frames, box, aug, size)
        assert got.shape == want.shape == (8, 3, size, size) and got.dtype == torch.float32
        worst = min(worst, psnr(got.numpy(), want.numpy()))
    assert worst >= 50.0, f"fast view path drifted from the float reference: {worst:.1f} dB"


def test_blur_equals_two_convolutions_with_reflect101_borders():
    x = torch.rand(3, 3, 37, 29) * 255
    for sigma, window in ((0.5, 3), (1.7, 9), (2.0, 23)):
        k = gaussian_kernel(sigma, window)
        pad = window // 2
        y = F.pad(x.reshape(9, 1, 37, 29), (pad, pad, pad, pad), mode="reflect")
        want = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1)).reshape(x.shape)
        torch.testing.assert_close(blur(x, sigma, window), want, atol=2e-3, rtol=0)
    assert blur(x, 1.0, 1) is x


def test_finish_view_is_render_into_after_the_resize(bikes_path):
    """The DALI loader's CPU mode hands finish_view DALI's uint8 resize; given torch's, it is the
    torch loader's render_into bit for bit (one code path for both loaders)."""
    from mcl_fast.data.augment import crop_resize, finish_view, render_into
    from mcl_fast.data.output import OutputFormat

    frames = decode_all(bikes_path)[40:44]
    rng = np.random.default_rng(7)
    for output in (OutputFormat(), OutputFormat(normalize=None, dtype="uint8", layout="NTHWC")):
        for _ in range(4):
            box, aug = (10, 30, 200, 300), draw_view_aug(rng, 32)
            resized = crop_resize(torch.from_numpy(frames), box, 32).permute(0, 2, 3, 1).numpy()  # (T, S, S, 3)
            got = finish_view(resized, aug, torch.empty(output.sample_shape(4, 32), dtype=output.torch_dtype), output)
            want = render_into(frames, box, aug, 32, torch.empty_like(got), output)
            assert torch.equal(got, want)



FAULTS_PER_VIEW = """
import resource, numpy as np, torch
from mcl_fast.data.augment import render_into
from mcl_fast.data.output import OutputFormat
from plan_reference import draw_view_aug
frames = np.random.default_rng(0).integers(0, 256, (16, 240, 320, 3), dtype=np.uint8)
rng, output = np.random.default_rng(1), OutputFormat()
out = torch.empty(output.sample_shape(16, 224))
for _ in range(4):  # warm-up: each kind of draw (blur, greyscale, flip) has met its buffers
    render_into(frames, (0, 0, 240, 300), draw_view_aug(rng, 224), 224, out, output)
rounds = []  # the quietest of 3 rounds: a busy machine's thread pools fault in pages of their own
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        render_into(frames, (0, 0, 240, 300), draw_view_aug(rng, 224), 224, out, output)
    rounds.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
print(min(rounds))
"""


def test_rendering_a_view_reuses_its_working_memory():
    """A 16x224² view's float32 working copy (~10 MB) is this thread's scratch, not a new array: in
    a fresh process (a loader's worker) new ones came back from the kernel as ~2400 fresh pages per
    view (minor faults, ~4 ms of a view's ~15)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run([sys.executable, "-c", FAULTS_PER_VIEW], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    faults = float(run.stdout.split()[-1])
    assert faults < 1000, f"{faults:.0f} minor page faults per view"


@pytest.mark.parametrize("flip", [False, True])
def test_planes_split_by_opencv_equal_numpys_transposing_copy(flip):
    """store_view's OpenCV path (default format) writes what the strided NumPy copy writes, bit
    for bit, odd widths included."""
    from mcl_fast.data.augment import store_view
    from mcl_fast.data.output import OutputFormat

    x = np.random.default_rng(3).standard_normal((3, 5, 7, 3)).astype(np.float32)
    want = np.ascontiguousarray((x[:, :, ::-1] if flip else x).transpose(3, 0, 1, 2))
    got = store_view(x.copy(), flip, torch.full((3, 3, 5, 7), np.nan), OutputFormat())
    assert np.array_equal(got.numpy(), want)
