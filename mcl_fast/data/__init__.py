"""Video data: the motion-focused DALI loader, the baseline torch loader, transcoding, synthetic videos.

`import mcl_fast.data` works without DALI: the loaders are imported on first use.
"""
__all__ = ["MotionFocusedLoader", "TorchVideoLoader"]


def __getattr__(name):
    if name == "MotionFocusedLoader":
        from .loader import MotionFocusedLoader

        return MotionFocusedLoader
    if name == "TorchVideoLoader":
        from .torch_loader import TorchVideoLoader

        return TorchVideoLoader
    raise AttributeError(f"module 'mcl_fast.data' has no attribute {name!r}")
