"""Video data: the motion-focused DALI loader, the baseline torch loader, transcoding, synthetic videos.

`import mcl_fast.data` works without DALI: the loaders are imported on first use.

    from mcl_fast.data import MotionFocusedLoader, TorchVideoLoader, ViewSpec, Augmentation, WEAK, NONE
    from mcl_fast.data import MotionTubeMask   # a batch_transform: VideoMAE's (B, N) tube mask, motion-guided
"""
from .views import NONE, PAPER, WEAK, Augmentation, ViewSpec

__all__ = ["MotionFocusedLoader", "TorchVideoLoader", "ViewSpec", "Augmentation", "PAPER", "WEAK", "NONE",
           "OutputFormat", "LoaderOptions", "Choice", "Clips", "MotionTubeMask"]


def __getattr__(name):
    if name == "MotionFocusedLoader":
        from .loader import MotionFocusedLoader

        return MotionFocusedLoader
    if name == "TorchVideoLoader":
        from .torch_loader import TorchVideoLoader

        return TorchVideoLoader
    if name == "OutputFormat":
        from .output import OutputFormat

        return OutputFormat
    if name == "LoaderOptions":
        from .options import LoaderOptions

        return LoaderOptions
    if name == "MotionTubeMask":
        from .masking import MotionTubeMask

        return MotionTubeMask
    if name in ("Choice", "Clips"):
        from . import plan

        return getattr(plan, name)
    raise AttributeError(f"module 'mcl_fast.data' has no attribute {name!r}")
