"""TV-L1 optical flow on the GPU: the driver of the kernels in kernels/tvl1.cu.

`compute_flow(frames)` has the contract of `mcl_fast.motion.compute_flow` and returns CuPy;
`tvl1_pairs(prev, nxt)` takes two stacks. Many frame pairs run in one launch (the grid's z axis
is the pair); the launch schedule is described at the top of kernels/tvl1.cu. The arithmetic is
that of cv::optflow::DualTVL1OpticalFlow with its defaults (`TVL1Params()`), and the module is
compiled without FMA contraction so the result equals the CPU twin `mcl_fast.gpu.tvl1_host`.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .._backend import is_cupy_array, register_gpu_twin, require_cupy
from .tvl1_host import TVL1Params

# No FMA contraction: the host twin (g++ -ffp-contract=off) then rounds exactly like the GPU.
_OPTIONS = ("--fmad=false",)
_BLOCK = (32, 8, 1)  # element-wise kernels
_TILE = (32, 16, 1)  # the fused iteration kernel: MCL_TVL1_TILE_X x MCL_TVL1_TILE_Y (tvl1.cuh)
MAX_CHUNK = 6  # MCL_TVL1_MAX_CHUNK: most inner iterations per launch (the tile's halo)
# Inner iterations per launch: 6 divides OpenCV's 30; more per launch = less memory traffic
# (the tile and a 6-px halo stay in shared memory) but more redundant halo work.
DEFAULT_CHUNK = 6
# Pairs per batch: ~21 float planes per pair (pyramid, u, p, warped data) -> ~1.7 GB at 320x240.
DEFAULT_MAX_PAIRS = 256


@functools.lru_cache(maxsize=None)
def _kernel(name: str):
    from ._module import get_kernel

    return get_kernel("tvl1", name, _OPTIONS)


def _grid(w: int, h: int, z: int, block=_BLOCK) -> tuple[int, int, int]:
    return (math.ceil(w / block[0]), math.ceil(h / block[1]), z)


def _to_gray_float(cp, frames) -> "cp.ndarray":
    """(F, H, W[, 3]) uint8 (CuPy or NumPy) -> (F, H, W) float32 on the GPU (cv2 RGB2GRAY)."""
    frames = cp.ascontiguousarray(cp.asarray(frames))
    if frames.dtype != cp.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    if not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise ValueError(f"frames must be (N, H, W) gray or (N, H, W, 3) RGB uint8, got {frames.shape}")
    if frames.shape[1] < 3 or frames.shape[2] < 3:
        raise ValueError(f"frames must be at least 3x3 pixels, got {frames.shape[1:3]}")
    out = cp.empty(frames.shape[:3], cp.float32)
    n_px = out.size
    blocks = min(max(1, (n_px + 255) // 256), 65535)
    _kernel("mcl_tvl1_to_float")((blocks,), (256,), (frames, np.int32(3 if frames.ndim == 4 else 1),
                                                      np.int64(n_px), out))
    return out


def _pyramid_sizes(h: int, w: int, prm: TVL1Params) -> list[tuple[int, int]]:
    """Level sizes as the host twin computes them (round half to even, stop below 16 px)."""
    sizes = [(h, w)]
    for _ in range(1, int(prm.nscales)):
        nh, nw = int(np.rint(sizes[-1][0] * prm.scale_step)), int(np.rint(sizes[-1][1] * prm.scale_step))
        if nh < 16 or nw < 16:
            break
        sizes.append((nh, nw))
    return sizes


def _build_pyramid(cp, level0, sizes, prm: TVL1Params):
    """[(F, h_s, w_s) float32] for every level, by cv::resize INTER_LINEAR with fx = scale_step."""
    levels = [level0]
    inv = 1.0 / prm.scale_step  # OpenCV: scale = 1 / fx
    for (sh, sw), (dh, dw) in zip(sizes[:-1], sizes[1:]):
        src = levels[-1]
        dst = cp.empty((src.shape[0], dh, dw), cp.float32)
        _kernel("mcl_tvl1_resize")(_grid(dw, dh, src.shape[0]), _BLOCK,
                                   (src, np.int32(sw), np.int32(sh), dst, np.int32(dw), np.int32(dh),
                                    np.float64(inv), np.float64(inv), np.float32(1.0)))
        levels.append(dst)
    return levels


def _solve(cp, lv0, lv1, sizes, prm: TVL1Params, chunk: int):
    """Flow of pairs (lv0[s][k] -> lv1[s][k]) over the pyramid; returns (P, 2, H, W) float32.

    lv0/lv1: per level (P, h, w) float32 views (may overlap: consecutive frames share planes).
    chunk: inner iterations per launch of the fused kernel (1..MAX_CHUNK).
    """
    p = lv0[0].shape[0]
    k_grad, k_warp, k_med = _kernel("mcl_tvl1_gradient"), _kernel("mcl_tvl1_warp"), _kernel("mcl_tvl1_median")
    k_iter, k_decide, k_resize = _kernel("mcl_tvl1_iterate"), _kernel("mcl_tvl1_decide"), _kernel("mcl_tvl1_resize")
    l_t = np.float32(prm.lambda_ * prm.theta)
    taut = np.float32(prm.tau / prm.theta)
    theta = np.float32(prm.theta)
    state = cp.zeros(p, cp.int32)  # per pair: MCL_TVL1_RUN 0 / STOP_COPY 1 / STOP_IDLE 2
    redo = cp.zeros(p, cp.int32)
    decide_grid = (math.ceil(p / 8),)  # 8 warps per block, one warp per pair
    h, w = sizes[-1]
    u = cp.zeros((p, 2, h, w), cp.float32)
    for s in range(len(sizes) - 1, -1, -1):
        h, w = sizes[s]
        hw = h * w
        i0, i1 = lv0[s], lv1[s]
        img_stride = np.int64(hw)  # planes of (P, h, w), contiguous per pair
        grid = _grid(w, h, p)
        tiles = _grid(w, h, p, _TILE)
        n_tiles = np.int32(tiles[0] * tiles[1])
        eps = np.float32(prm.epsilon * prm.epsilon * float(hw))
        i1x = cp.empty((p, h, w), cp.float32)
        i1y = cp.empty((p, h, w), cp.float32)
        k_grad(grid, _BLOCK, (i1, img_stride, np.int32(w), np.int32(h), i1x, i1y))
        p_cur, p_nxt = cp.zeros((p, 4, h, w), cp.float32), cp.empty((p, 4, h, w), cp.float32)
        u_nxt = cp.empty_like(u)
        wd = cp.empty((p, 3, h, w), cp.float32)
        err = cp.zeros((p, MAX_CHUNK, int(n_tiles)), cp.float32)
        for _warp in range(int(prm.warps)):
            k_warp(grid, _BLOCK, (i0, i1, img_stride, i1x, i1y, u, wd, np.int32(w), np.int32(h)))
            state.fill(0)
            for outer in range(int(prm.outer_iterations)):
                if outer > 0 and not bool((state == 0).any()):  # every pair stopped: warp done
                    break
                if int(prm.median_filtering) > 1:
                    k_med(_grid(w, h, 2 * p), _BLOCK, (u, u_nxt, np.int32(w), np.int32(h), state))
                    u, u_nxt = u_nxt, u
                done = 0
                while done < int(prm.inner_iterations):
                    k = min(chunk, int(prm.inner_iterations) - done)
                    args = [wd, u, u_nxt, p_cur, p_nxt, np.int32(w), np.int32(h), np.int32(k), state, redo,
                            np.int32(0), err, n_tiles, l_t, theta, taut]
                    k_iter(tiles, _TILE, tuple(args))
                    k_decide(decide_grid, (256,), (err, np.int32(k), n_tiles, eps, state, redo, np.int32(p)))
                    if k > 1:  # a pair that stopped inside the chunk redoes it with fewer iterations
                        args[10] = np.int32(1)
                        k_iter(tiles, _TILE, tuple(args))
                    u, u_nxt = u_nxt, u
                    p_cur, p_nxt = p_nxt, p_cur
                    done += k
        if s > 0:  # upsample to the next finer level (OpenCV: dsize given, scale = 1 / (dst / src))
            fh, fw = sizes[s - 1]
            up = cp.empty((p, 2, fh, fw), cp.float32)
            k_resize(_grid(fw, fh, 2 * p), _BLOCK,
                     (u, np.int32(w), np.int32(h), up, np.int32(fw), np.int32(fh),
                      np.float64(1.0 / (fw / w)), np.float64(1.0 / (fh / h)),
                      np.float32(1.0 / prm.scale_step)))
            u = up
    return u


def _pack(cp, u) -> "cp.ndarray":
    p, _, h, w = u.shape
    flow = cp.empty((p, h, w, 2), cp.float32)
    total = p * h * w
    _kernel("mcl_tvl1_pack")((min(max(1, (total + 255) // 256), 65535),), (256,),
                             (u, np.int64(h * w), np.int64(p), flow))
    return flow


def _check_frames_shape(shape, name: str) -> None:
    if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] == 3)):
        raise ValueError(f"{name} must be (N, H, W) gray or (N, H, W, 3) RGB uint8, got {tuple(shape)}")


def _check_batching(max_pairs: int, chunk: int) -> None:
    if not 1 <= max_pairs <= 32767:  # the median kernel's grid z is 2 x pairs (CUDA: <= 65535)
        raise ValueError(f"max_pairs must be in [1, 32767], got {max_pairs}")
    if not 1 <= chunk <= MAX_CHUNK:
        raise ValueError(f"chunk (inner iterations per launch) must be in [1, {MAX_CHUNK}], got {chunk}")


def tvl1_pairs(prev, nxt, params: TVL1Params | None = None, max_pairs: int = DEFAULT_MAX_PAIRS,
               chunk: int = DEFAULT_CHUNK):
    """TV-L1 flow prev[k] -> nxt[k] on the GPU: (P, H, W[, 3]) uint8 -> CuPy (P, H, W, 2) float32.

    max_pairs: pairs per batch (memory: ~21 float planes per pair); chunk: inner iterations per
    launch of the fused kernel (the result does not depend on it).
    """
    cp = require_cupy()
    prm = (params or TVL1Params()).validate()
    _check_batching(max_pairs, chunk)
    prev = prev if is_cupy_array(prev) else np.asarray(prev)
    nxt = nxt if is_cupy_array(nxt) else np.asarray(nxt)
    _check_frames_shape(prev.shape, "prev")
    if tuple(prev.shape) != tuple(nxt.shape):
        raise ValueError(f"prev {prev.shape} and nxt {nxt.shape} must have the same shape")
    p = prev.shape[0]
    h, w = prev.shape[1], prev.shape[2]
    out = cp.empty((p, h, w, 2), cp.float32)
    if p == 0:
        return out
    sizes = _pyramid_sizes(h, w, prm)
    for a in range(0, p, max_pairs):
        b = min(p, a + max_pairs)
        lv0 = _build_pyramid(cp, _to_gray_float(cp, prev[a:b]), sizes, prm)
        lv1 = _build_pyramid(cp, _to_gray_float(cp, nxt[a:b]), sizes, prm)
        out[a:b] = _pack(cp, _solve(cp, lv0, lv1, sizes, prm, chunk))
    return out


@register_gpu_twin("motion.compute_flow")
def compute_flow(frames, method: str = "tvl1", params: TVL1Params | None = None,
                 max_pairs: int = DEFAULT_MAX_PAIRS, chunk: int = DEFAULT_CHUNK):
    """Dense TV-L1 flow of consecutive frames on the GPU.

    frames: (N, H, W, 3) uint8 RGB or (N, H, W) uint8 gray, CuPy or NumPy, N >= 2.
    Returns CuPy (N, H, W, 2) float32; flow[i] goes from frame i to i + 1 and flow[N-1] repeats
    flow[N-2]. Each frame's pyramid is built once and shared by its two pairs. max_pairs and
    chunk as in tvl1_pairs.
    """
    if method == "farneback":
        raise NotImplementedError("Farneback flow has no GPU kernel: use method='tvl1' on the GPU, "
                                  "or mcl_fast.motion.compute_flow(frames, 'farneback', device='cpu')")
    if method != "tvl1":
        raise ValueError(f"unknown flow method {method!r}; the GPU implements 'tvl1'")
    cp = require_cupy()
    prm = (params or TVL1Params()).validate()
    _check_batching(max_pairs, chunk)
    if not is_cupy_array(frames):
        frames = np.asarray(frames)
    _check_frames_shape(frames.shape, "frames")
    n = frames.shape[0]
    if n < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {n}")
    h, w = frames.shape[1], frames.shape[2]
    sizes = _pyramid_sizes(h, w, prm)
    flow = cp.empty((n, h, w, 2), cp.float32)
    for a in range(0, n - 1, max_pairs):
        b = min(n - 1, a + max_pairs)  # pairs a..b-1 use frames a..b
        levels = _build_pyramid(cp, _to_gray_float(cp, frames[a:b + 1]), sizes, prm)
        lv0 = [lv[:-1] for lv in levels]
        lv1 = [lv[1:] for lv in levels]
        flow[a:b] = _pack(cp, _solve(cp, lv0, lv1, sizes, prm, chunk))
    flow[-1] = flow[-2]
    return flow
