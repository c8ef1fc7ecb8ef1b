"""What NVDEC (the GPU's video decoder, driven by DALI's "mixed" decoder) can decode, read off a
file's stream header: codec, profile, chroma format, bit depth and frame size.

PyAV decodes nearly anything; NVDEC does not. A 4:4:4 or 10-bit H.264 file opens and decodes on the
CPU and fails inside DALI on the GPU, so `device="gpu"`/`--device cuda` callers check files here
first and tell the user which ones and why (`stream_problem`), and what to do (`FIX_HINT`).

The facts are NVIDIA's, from the Video Codec SDK documentation (13.0): the "NVDEC Application Note"
(table "NVDEC Hardware Capabilities", per GPU generation) and the "NVDEC Video Decoder API
Programming Guide" (chapter "Video Decoder Capabilities": bit depths, chroma formats, minimum
sizes). The project's GPUs (A100, H100, H200) are in the "Turing / GA100 / Hopper" column; the
other columns are used where the device's compute capability says so (`nvdec_generation`).
"""
from __future__ import annotations

import dataclasses

from .container import open_video
from .errors import VideoError

# GPU generations, as the Application Note's columns group them.
TURING_GA100_HOPPER = "Turing/GA100/Hopper"  # sm_75, sm_80, sm_90: T4, A100, H100, H200
GA10X_ADA = "GA10x/Ada"  # sm_86, sm_87, sm_89
BLACKWELL = "Blackwell"  # sm_100 and later
DEFAULT_GENERATION = TURING_GA100_HOPPER  # the project's GPUs; used when no device is visible

_420_8 = frozenset({("4:2:0", 8)})
# (chroma format, bit depth) NVDEC decodes, per FFmpeg codec name, on Turing/GA100/Hopper.
_BASE_FORMATS = {
    "h264": _420_8,  # Baseline, Main, High profiles: 8-bit 4:2:0 only
    "hevc": frozenset((c, d) for c in ("4:2:0", "4:4:4") for d in (8, 10, 12)),  # Main, Main 10, 4:4:4 (Turing on)
    "vp9": frozenset(("4:2:0", d) for d in (8, 10, 12)),  # profiles 0 and 2
    "vp8": _420_8,
    "mpeg1video": _420_8,
    "mpeg2video": _420_8,
    "mpeg4": _420_8,
    "vc1": _420_8,
}
# What later generations add.
_ADDED_FORMATS = {
    GA10X_ADA: {"av1": frozenset(("4:2:0", d) for d in (8, 10))},  # AV1 Main profile
    BLACKWELL: {"h264": frozenset({("4:2:0", 10), ("4:2:2", 8), ("4:2:2", 10)}),  # High 10, High 4:2:2
                "hevc": frozenset({("4:2:2", 10), ("4:2:2", 12)})},  # Main 4:2:2 10/12
}
_GENERATION_ORDER = (TURING_GA100_HOPPER, GA10X_ADA, BLACKWELL)

# Profiles NVDEC decodes, for the codecs whose profile can exclude a stream that the chroma format
# and bit depth allow (e.g. H.264 "High 4:4:4 Predictive" on 8-bit 4:2:0, x264's lossless mode).
# FFmpeg's profile names; a stream whose profile FFmpeg does not name is not refused for it.
_BASE_PROFILES = {
    "h264": frozenset({"Baseline", "Constrained Baseline", "Main", "High"}),
    "mpeg2video": frozenset({"Simple", "Main"}),
    "mpeg4": frozenset({"Simple Profile", "Advanced Simple Profile"}),
    "vc1": frozenset({"Simple", "Main", "Advanced"}),
    "av1": frozenset({"Main"}),
}
_ADDED_PROFILES = {BLACKWELL: {"h264": frozenset({"High 10", "High 4:2:2"})}}

# (min width, min height) NVDEC decodes, per codec (Programming Guide, Turing and later).
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
# Codecs the GPU loader accepted before this matrix, which the SDK's codec list does not name:
# only the size rule applies here; whether DALI's GPU decoder reads them is left to it (a failure
# replaces the file, as any bad one).
_SIZE_RULE_ONLY = frozenset({"mjpeg"})
# FFmpeg decoder names that PyAV may report for the same codecs.
_ALIASES = {"libvpx": "vp8", "libvpx-vp8": "vp8", "libvpx-vp9": "vp9", "libdav1d": "av1", "libaom-av1": "av1",
            "h265": "hevc"}

FIX_HINT = ("re-encode them as 8-bit 4:2:0 H.264, which every NVDEC reads from 48x16 (`mcl-fast transcode "
            "--videos ... --out DIR --codec h264`, add `--short-side 128` for tiny ones, then use DIR), "
            "or decode on the CPU (device='cpu' / --device cpu)")


@dataclasses.dataclass(frozen=True)
class StreamFormat:
    """What a video stream's header says about its coding: FFmpeg's codec and profile names, the
    chroma format ("4:2:0", "4:2:2", "4:4:4", "4:4:0", "4:0:0", "RGB", or "?"), bits per sample, size."""

    codec: str
    profile: str | None
    chroma: str
    bit_depth: int
    width: int
    height: int

    def describe(self) -> str:
        profile = f" {self.profile}" if self.profile else ""
        return f"{self.codec}{profile} {self.chroma} {self.bit_depth}-bit {self.width}x{self.height}"


def canonical_codec(codec: str) -> str:
    name = str(codec).lower()
    return _ALIASES.get(name, name)


def nvdec_generation(compute_capability: tuple[int, int] | None = None) -> str:
    """The Application Note's column for a device of compute capability (major, minor); with None,
    the current CUDA device's (through torch, when it sees one), else DEFAULT_GENERATION."""
    if compute_capability is None:
        compute_capability = _current_compute_capability()
        if compute_capability is None:
            return DEFAULT_GENERATION
    major, minor = compute_capability
    if major >= 10:
        return BLACKWELL
    if (major, minor) in {(8, 6), (8, 7), (8, 9)}:
        return GA10X_ADA
    return TURING_GA100_HOPPER


def _current_compute_capability() -> tuple[int, int] | None:
    try:
        import torch

        return tuple(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 (no torch, no driver: fall back to the project's GPUs)
        return None


def _table(base: dict, added: dict, generation: str) -> dict:
    """base plus what every generation up to `generation` adds."""
    if generation not in _GENERATION_ORDER:
        raise ValueError(f"unknown NVDEC generation {generation!r}; one of {', '.join(_GENERATION_ORDER)}")
    table = dict(base)
    for gen in _GENERATION_ORDER[1:_GENERATION_ORDER.index(generation) + 1]:
        for codec, extra in added.get(gen, {}).items():
            table[codec] = table.get(codec, frozenset()) | extra
    return table


def supported_formats(generation: str = DEFAULT_GENERATION) -> dict:
    """{codec: {(chroma, bit depth), ...}} NVDEC decodes on `generation`."""
    return _table(_BASE_FORMATS, _ADDED_FORMATS, generation)


def chroma_and_depth(video_format) -> tuple[str, int]:
    """(chroma format, bit depth) of a PyAV VideoFormat, from its planes' sizes (not its name)."""
    if video_format is None:
        return "?", 0
    sized = type(video_format)(video_format.name, 16, 16)  # plane sizes need a frame size
    parts = sized.components
    depth = int(parts[0].bits)
    if sized.is_rgb:
        return "RGB", depth
    if len(parts) == 1:
        return "4:0:0", depth
    ratio = (16 // max(parts[1].width, 1), 16 // max(parts[1].height, 1))
    return {(2, 2): "4:2:0", (2, 1): "4:2:2", (1, 1): "4:4:4", (1, 2): "4:4:0"}.get(ratio, "?"), depth


def stream_format(path) -> StreamFormat:
    """The StreamFormat of `path`'s first video stream (header only, no decoding); raises VideoError."""
    container, stream = open_video(path)
    try:
        cc = stream.codec_context
        chroma, depth = chroma_and_depth(cc.format)
        profile = cc.profile if cc.profile and cc.profile.lower() != "unknown" else None
        return StreamFormat(canonical_codec(cc.name), profile, chroma, depth, int(cc.width or 0), int(cc.height or 0))
    finally:
        container.close()


def size_problem(codec: str, height: int, width: int) -> str | None:
    """None when NVDEC decodes `codec` frames of height x width (or the codec or size is unknown),
    else the reason as a phrase, e.g. "vp9 64x80 (w x h), NVDEC needs at least 128x128"."""
    least = NVDEC_MIN_SIZE.get(canonical_codec(codec))
    if least is None or height <= 0 or width <= 0 or (width >= least[0] and height >= least[1]):
        return None
    return f"{codec} {width}x{height} (w x h), NVDEC needs at least {least[0]}x{least[1]}"


def format_problem(fmt: StreamFormat, generation: str = DEFAULT_GENERATION) -> str | None:
    """None when NVDEC on `generation` decodes a stream of this format, else why not (a phrase)."""
    formats = supported_formats(generation)
    if fmt.codec in _SIZE_RULE_ONLY:
        return size_problem(fmt.codec, fmt.height, fmt.width)
    if fmt.codec not in formats:
        known = ", ".join(sorted(formats))
        return f"codec {fmt.codec} is not decoded by NVDEC on {generation} GPUs (it decodes {known})"
    if (fmt.chroma, fmt.bit_depth) not in formats[fmt.codec]:
        allowed = ", ".join(f"{c} {d}-bit" for c, d in sorted(formats[fmt.codec]))
        return (f"{fmt.codec} {fmt.chroma} {fmt.bit_depth}-bit is not decoded by NVDEC on {generation} GPUs "
                f"(it decodes {fmt.codec} {allowed})")
    profiles = _table(_BASE_PROFILES, _ADDED_PROFILES, generation).get(fmt.codec)
    if profiles is not None and fmt.profile is not None and fmt.profile not in profiles:
        return (f"{fmt.codec} profile {fmt.profile!r} is not decoded by NVDEC on {generation} GPUs "
                f"(it decodes {', '.join(sorted(profiles))})")
    return size_problem(fmt.codec, fmt.height, fmt.width)


def stream_problem(path, generation: str | None = None) -> str | None:
    """Why NVDEC cannot decode `path` (a phrase naming its format), or None; generation None: the
    current device's (nvdec_generation). A file that does not open is not this check's business
    (None): the readers reject it with their own reason."""
    try:
        fmt = stream_format(path)
    except VideoError:
        return None
    problem = format_problem(fmt, generation or nvdec_generation())
    return None if problem is None else f"{problem} [{fmt.describe()}]"
