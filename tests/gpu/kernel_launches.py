"""One small launch of every kernel in kernels/*.cu through the real Python wrappers, for
`compute-sanitizer --tool memcheck|racecheck python tests/gpu/kernel_launches.py` (gpu_check.sh stage 1).

Exits 1 if a kernel was not launched (so the sanitizer cannot pass by checking nothing) and prints
which ran. `--emulate` runs the same launches on the CPU CUDA emulator (tests/cuda_emulator.py):
gpu_check.sh's dry run uses it, so this script cannot rot where there is no GPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
for p in (str(ROOT), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

MODULES = ("motion_map", "select_box", "tvl1")


class _Patch:
    """Minimal monkeypatch (setattr) for the emulator's install()."""

    def setattr(self, obj, name, value):
        setattr(obj, name, value)


def all_kernels() -> set[str]:
    from cuda_emulator import signatures
    from mcl_fast.gpu import _module

    return {k for m in MODULES for k in signatures(_module.preprocess(m))}


def record_launches(launched: set, emulate: bool):
    """Wrap the wrappers' kernel getters so every launch is recorded; returns the array module."""
    from mcl_fast.gpu import flow, motion, sampling

    if emulate:
        import cuda_emulator as ce

        cp = ce.install(_Patch(), {m: ce.build(m) for m in MODULES})
    else:
        from mcl_fast._backend import require_cupy

        cp = require_cupy()
        # One cudaMalloc per array instead of CuPy's pool, whose big arenas would hide an
        # out-of-bounds access from memcheck.
        cp.cuda.set_allocator(None)

    def recording(get):
        def wrapped(*key):
            kernel = get(*key)
            name = key[1] if len(key) > 1 else key[0]

            def launch(grid, block, args):
                launched.add(name)
                return kernel(grid, block, args)

            return launch
        return wrapped

    motion.get_kernel = recording(motion.get_kernel)
    sampling.get_kernel = recording(sampling.get_kernel)
    flow._kernel = recording(flow._kernel)
    return cp


def launch_all(cp) -> None:
    from mcl_fast import sampling as ref
    from mcl_fast.gpu import flow, motion, sampling
    from mcl_fast.gpu.tvl1_host import TVL1Params

    rng = np.random.default_rng(0)
    f = cp.asarray(rng.normal(0, 2, (2, 9, 13, 2)).astype(np.float32))
    motion.motion_map(f)
    motion.motion_maps_fused(f, 2, scale=1.0)
    motion.quantize(cp.asarray(rng.random((2, 3, 4)).astype(np.float32)), 1.0)
    maps = cp.asarray(rng.random((2, 6, 7)).astype(np.float32))
    sampling.select_box_index_batch(maps, np.stack([ref.draw_boxes(rng, 5, 6, 7) for _ in range(2)]))
    sampling.clip_scores_batch(cp.asarray(rng.random((1, 20))), 4, 2)
    frames = (rng.random((3, 40, 48)) * 255).astype(np.uint8)  # 2 pyramid levels (40x48, 32x38)
    flow.compute_flow(frames, params=TVL1Params(nscales=2, warps=1, outer_iterations=1, inner_iterations=2), chunk=2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--emulate", action="store_true", help="run the launches on the CPU emulator (no GPU)")
    args = p.parse_args(argv)
    launched: set[str] = set()
    cp = record_launches(launched, args.emulate)
    launch_all(cp)
    if not args.emulate:
        cp.cuda.Device().synchronize()
    missing = sorted(all_kernels() - launched)
    print("kernel_launches: " + ", ".join(sorted(launched)))
    print(f"{len(launched)} kernels launched ({'emulator' if args.emulate else 'GPU'})")
    if missing:
        print("kernel_launches: NOT launched: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
