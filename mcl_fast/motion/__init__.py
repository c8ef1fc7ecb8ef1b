"""Motion estimation: optical flow, motion maps (eq. 1-2), the motion store and `prepare`."""
from .flow import FLOW_METHODS, compute_flow
from .maps import motion_map, pool_motion

__all__ = ["FLOW_METHODS", "compute_flow", "motion_map", "pool_motion", "MotionStore"]


def __getattr__(name):  # the store pulls in more; import it on first use
    if name == "MotionStore":
        from .store import MotionStore

        return MotionStore
    raise AttributeError(name)
