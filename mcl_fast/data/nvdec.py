"""What device="gpu" (NVDEC through DALI) cannot decode, checked before a GPU loader or evaluation
starts, and said per file with the way out.

The rules (codec, profile, chroma format, bit depth, minimum size per NVIDIA's support matrix) live
in mcl_fast.video_io.nvdec_support, the lowest layer, so that `prepare --device cuda` uses the same
ones; this module applies them to a list of files and words the error. The names below are kept
for the loaders' file scan (checks.py), which checks the sizes from the headers it reads anyway.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ..video_io.nvdec_support import FIX_HINT, NVDEC_MIN_SIZE, canonical_codec, nvdec_generation, size_problem
from ..video_io.nvdec_support import stream_problem

SHOWN = 20  # files listed in the error (all of them are in NvdecUnsupported.problems)

__all__ = ["FIX_HINT", "NVDEC_MIN_SIZE", "nvdec_min_size", "nvdec_size_problem", "nvdec_problems",
           "NvdecUnsupported", "refuse_unsupported", "unsupported_reason", "dali_only_culprits"]


def nvdec_min_size(codec: str) -> tuple[int, int] | None:
    """(min width, min height) NVDEC decodes for an FFmpeg codec name, or None when unknown."""
    return NVDEC_MIN_SIZE.get(canonical_codec(codec))


def nvdec_size_problem(codec: str, height: int, width: int) -> str | None:
    """None when NVDEC can decode `codec` frames of height x width (or the codec is unknown), else why not."""
    return size_problem(codec, height, width)


class NvdecUnsupported(ValueError):
    """Files NVDEC cannot decode (a setup error: re-encode them or decode on the CPU); `problems`
    maps each file to the reason."""

    def __init__(self, problems: dict[str, str], who: str):
        self.problems = dict(problems)
        lines = [f"  {path}: {reason}" for path, reason in list(self.problems.items())[:SHOWN]]
        if len(self.problems) > SHOWN:
            lines.append(f"  ... and {len(self.problems) - SHOWN} more")
        super().__init__(f"{who} decodes with NVDEC, which cannot decode {len(self.problems)} of these videos:\n"
                         + "\n".join(lines) + f"\nWhat to do: {FIX_HINT}")


def nvdec_problems(paths, threads: int = 16, generation: str | None = None) -> dict[str, str]:
    """{path: why NVDEC cannot decode it} over `paths` (stream headers read by `threads` threads;
    files that do not open are left to the readers). generation None: the current device's."""
    generation = generation or nvdec_generation()
    paths = [str(p) for p in paths]
    with ThreadPoolExecutor(max(1, min(threads, len(paths)))) as pool:
        reasons = pool.map(lambda p: stream_problem(p, generation), paths)
        return {p: r for p, r in zip(paths, reasons) if r is not None}


def refuse_unsupported(paths, who: str, threads: int = 16, generation: str | None = None) -> None:
    """NvdecUnsupported naming every file of `paths` NVDEC cannot decode (and why), if any."""
    problems = nvdec_problems(paths, threads, generation)
    if problems:
        raise NvdecUnsupported(problems, who)


def unsupported_reason(problem: str) -> str:
    """The failure reason of a file NVDEC cannot decode: the problem and the way out."""
    return f"NVDEC cannot decode it: {problem}; {FIX_HINT}"


def dali_only_culprits(plans, device_id: int) -> dict[str, str]:
    """{path: reason} of the files among `plans` (SamplePlans of a failed GPU batch, all of which
    PyAV decodes) that DALI's GPU decoder refuses: those the support matrix rules out, else those
    that fail a decode of their planned frames on their own (one small DALI pipeline)."""
    import numpy as np

    from ..gpu.video_maps import nvdec_trial

    by_path = {}
    for plan in plans:
        by_path.setdefault(plan.path, []).append(np.concatenate(plan.clips))
    culprits = {p: unsupported_reason(r) for p in by_path if (r := stream_problem(p)) is not None}
    if culprits:
        return culprits
    for path, frames in by_path.items():
        failed = nvdec_trial(path, np.unique(np.concatenate(frames)), device_id)
        if failed is not None:
            culprits[path] = unsupported_reason(f"DALI's GPU decoder fails on it though PyAV decodes it ({failed})")
    return culprits
