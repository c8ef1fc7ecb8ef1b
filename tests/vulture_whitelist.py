"""Names vulture reports as unused that are used, each with the reason (tests/test_dead_code.py).

Never imported: vulture reads it as if it were more source that uses these names.
"""
_ = object()

# Module-level __getattr__ (PEP 562): the packages' lazy imports, called by Python itself.
__getattr__  # mcl_fast/data/__init__.py, mcl_fast/gpu/__init__.py, mcl_fast/motion/__init__.py

# Attributes set on other libraries' objects, read by those libraries.
_.gop_size  # a PyAV stream's GOP (mcl_fast/data/synthetic.py, mcl_fast/data/transcode.py)
_.thread_type  # a PyAV codec context's threading (mcl_fast/video_io/container.py)
_.description  # argparse's sub-command description (mcl_fast/demo.py)
_.benchmark  # torch.backends.cudnn.benchmark (mcl_fast/train.py)
_.__class__  # SplitBatchNorm3d swapped in for BatchNorm3d in place (mcl_fast/moco.py)

# Kept to hold the folder's flock for the writer's lifetime (mcl_fast/motion/store.py).
_._lock_fd

# Registered with @register_gpu_twin and called through _backend.gpu_twin (mcl_fast/gpu/video_maps.py).
require_gpu_stack
