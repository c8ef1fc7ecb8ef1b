"""NVDEC's smallest decodable frames, checked before a GPU loader starts.

NVDEC (the GPU's video decoder, which DALI's "mixed" decoder drives) refuses streams below a
per-codec minimum size: VP9 and AV1 below 128x128 and HEVC below 144x144 cannot be decoded at all,
so a dataset of small VP9 clips fails on every batch with `device="gpu"`. The loader checks the
sizes when it scans the files (container headers only) and names the files and the way out.
"""
from __future__ import annotations

# (min width, min height) per FFmpeg codec name: NVIDIA Video Codec SDK, NVDEC Video Decoder
# API programming guide, "Video Decoder Capabilities" (Turing and later: A100, H100, H200).
NVDEC_MIN_SIZE = {
    "h264": (48, 16),
    "hevc": (144, 144),
    "vp8": (48, 16),
    "vp9": (128, 128),
    "av1": (128, 128),
    "mpeg1video": (48, 16),
    "mpeg2video": (48, 16),
    "mpeg4": (48, 16),
    "vc1": (48, 16),
    "mjpeg": (64, 64),
}
# FFmpeg decoder names that PyAV may report for the same codecs.
_ALIASES = {"libvpx": "vp8", "libvpx-vp8": "vp8", "libvpx-vp9": "vp9", "libdav1d": "av1", "libaom-av1": "av1",
            "h265": "hevc"}

FIX_HINT = ("re-encode them as H.264, which NVDEC reads from 48x16 (`mcl-fast transcode --videos ... --out DIR "
            "--codec h264`, add `--short-side 128` for tinier ones, then pass video_root=DIR), "
            "or use device='cpu'")


def nvdec_min_size(codec: str) -> tuple[int, int] | None:
    """(min width, min height) NVDEC decodes for an FFmpeg codec name, or None when unknown."""
    name = str(codec).lower()
    return NVDEC_MIN_SIZE.get(_ALIASES.get(name, name))


def nvdec_size_problem(codec: str, height: int, width: int) -> str | None:
    """None when NVDEC can decode `codec` frames of height x width (or the codec is unknown),
    else the reason as a phrase, e.g. "vp9 64x80 (w x h), NVDEC needs at least 128x128"."""
    least = nvdec_min_size(codec)
    if least is None or height <= 0 or width <= 0:
        return None
    if width >= least[0] and height >= least[1]:
        return None
    return f"{codec} {width}x{height} (w x h), NVDEC needs at least {least[0]}x{least[1]}"
