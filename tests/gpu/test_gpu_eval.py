"""GPU checks of the evaluation path (skip without a GPU): NVDEC clips match PyAV, CUDA features and Grad-CAM."""
from __future__ import annotations

import numpy as np
import pytest

from mcl_fast._backend import HAS_DALI, has_gpu

pytestmark = pytest.mark.skipif(not (has_gpu() and HAS_DALI), reason="needs a CUDA GPU, CuPy and DALI")


def test_nvdec_eval_clips_match_pyav(synthetic_mp4):
    import torch

    from mcl_fast.eval.features import ClipSettings, batch_clips, clip_loader, eval_clips, extract_features
    from mcl_fast.models import build_backbone

    settings = ClipSettings(num_clips=3, clip_len=8, stride=2, crop_size=48)
    (clips, index), = [batch_clips(b) for b in clip_loader([synthetic_mp4.path], settings, decoder="dali",
                                                            device="cuda")]
    clips = clips[0]
    assert index.tolist() == [0] and clips.is_cuda and clips.shape == (3, 3, 8, 48, 48)
    ref = eval_clips(synthetic_mp4.path, settings)
    got = clips.float().cpu().numpy()
    assert np.abs(got - ref).mean() < 0.2
    assert np.abs(got - ref).mean() < np.abs(got[:, :, 1:] - ref[:, :, :-1]).mean()  # frame-aligned
    torch.manual_seed(0)
    net = build_backbone("tiny")
    a = extract_features(net, [synthetic_mp4.path], settings, decoder="dali", device="cuda", progress=False)
    b = extract_features(net, [synthetic_mp4.path], settings, decoder="pyav", device="cpu", progress=False)
    assert float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b)) > 0.98


def test_gradcam_on_cuda(tmp_path, synthetic_mp4):
    from mcl_fast.eval.gradcam import gradcam_video
    from mcl_fast.models import build_backbone

    out = gradcam_video(build_backbone("tiny"), synthetic_mp4.path, tmp_path / "cam.png", clip_len=8,
                        crop_size=56, device="cuda")
    assert (tmp_path / "cam.png").is_file() and out["cam"].ndim == 3 and np.isfinite(out["cam"]).all()
