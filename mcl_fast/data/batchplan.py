"""Vectorised pieces of the batched planner (planner.py): the same numbers as the per-sample
references (mcl_fast.sampling, plan.py, tests/plan_reference.py), for a whole batch at once.

- `SampleStreams`: the generator of each sample, numpy.random.default_rng([seed, epoch, position,
  attempt]), without building a SeedSequence and a PCG64 per sample: the SeedSequence hash of a
  batch of seeds is computed in NumPy and loaded into one reused PCG64 (its state setter). The
  draws are those of default_rng (tests compare them over many seeds).
- `draw_doubles`: consecutive double draws (uniform, random) merged into one `random(n)` call and
  mapped with `low + (high - low) * u`, numpy's own formula, when this platform's numpy computes
  uniform that way (checked once, `UNIFORM_IS_AFFINE`); otherwise one uniform call per draw.
- `color_affines`: colour jitter + greyscale as one affine per view, for a batch of views.
- `adaptive_avg_pool`: torch's adaptive average pooling (the motion target's resampling) with
  float64 prefix sums, about 5x faster than the torch call on a clip-sized tube.
"""
from __future__ import annotations

import functools

import numpy as np

# numpy.random.SeedSequence's constants (bit_generator.pyx): its hash is part of numpy's stream
# compatibility promise.
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_XSHIFT = 16
_POOL_SIZE = 4
_MASK32 = 0xFFFFFFFF
_MASK128 = (1 << 128) - 1
_PCG_MULT = (0x2360ED051FC65DA4 << 64) + 0x4385DF649FCCF645  # PCG64's 128-bit LCG multiplier


def _int_words(n: int) -> list[int]:
    """SeedSequence's coercion of one non-negative int to little-endian uint32 words."""
    if n < 0:
        raise ValueError(f"seed entries must be non-negative, got {n}")
    words = [0] if n == 0 else []
    while n > 0:
        words.append(n & _MASK32)
        n >>= 32
    return words


# SeedSequence's arithmetic on "words" that are Python ints (the same for the whole batch: seed,
# epoch, attempt 0) or uint32 arrays (one per sample): constants stay cheap Python ints.

def _xorshift(v):
    return v ^ (v >> 16) if isinstance(v, int) else v ^ (v >> np.uint32(_XSHIFT))


def _hashmix(value, consts: tuple[int, int]):
    """SeedSequence.hashmix: xor with the running multiplier, advance it, multiply by the new one.
    consts: (old, new) multipliers of this step (_hash_steps)."""
    old, new = consts
    if isinstance(value, int):
        return _xorshift(((value ^ old) * new) & _MASK32)
    return _xorshift((value ^ np.uint32(old)) * np.uint32(new))


def _mix(x, y):
    if isinstance(x, int) and isinstance(y, int):
        return _xorshift((_MIX_MULT_L * x - _MIX_MULT_R * y) & _MASK32)
    return _xorshift(np.uint32(_MIX_MULT_L) * np.asarray(x, np.uint32) - np.uint32(_MIX_MULT_R) * np.asarray(y, np.uint32))


def _hash_steps(init: int, mult: int, n: int) -> list[tuple[int, int]]:
    """(old, new) multipliers of the first n hashmix calls of a run (data-independent)."""
    out, c = [], init
    for _ in range(n):
        out.append((c, (c * mult) & _MASK32))
        c = out[-1][1]
    return out


_MIX_STEPS = _hash_steps(_INIT_A, _MULT_A, 4 + 12 + 4 * 16)  # pool init, mixing, up to 16 more entropy words


def seed_pools(entropy: list) -> list:
    """SeedSequence(entropy words).pool: entropy is a list of words (ints, or (B,) uint32 arrays);
    returns the 4 pool words (ints or arrays)."""
    consts = iter(_MIX_STEPS)
    pool = [_hashmix(entropy[i] if i < len(entropy) else 0, next(consts)) for i in range(_POOL_SIZE)]
    for src in range(_POOL_SIZE):
        for dst in range(_POOL_SIZE):
            if src != dst:
                pool[dst] = _mix(pool[dst], _hashmix(pool[src], next(consts)))
    for src in range(_POOL_SIZE, len(entropy)):
        for dst in range(_POOL_SIZE):
            pool[dst] = _mix(pool[dst], _hashmix(entropy[src], next(consts)))
    return pool


def pcg64_seeds(pool: list, b: int) -> np.ndarray:
    """SeedSequence.generate_state(4, uint64) of a batch: pool words -> (B, 4) uint64."""
    hash_const = _INIT_B
    words = []
    with np.errstate(over="ignore"):
        for i in range(8):
            value = np.broadcast_to(np.asarray(pool[i % _POOL_SIZE], np.uint32), (b,)) ^ np.uint32(hash_const)
            hash_const = (hash_const * _MULT_B) & _MASK32
            value = value * np.uint32(hash_const)
            words.append(value ^ (value >> np.uint32(_XSHIFT)))
    low, high = np.stack(words[0::2], axis=1).astype(np.uint64), np.stack(words[1::2], axis=1).astype(np.uint64)
    return low | (high << np.uint64(32))  # little-endian pairs of words


def _pcg64_state(seed: np.ndarray) -> tuple[int, int]:
    """PCG64's (state, inc) after seeding with generate_state's four words (pcg64_set_seed)."""
    init_state = (int(seed[0]) << 64) | int(seed[1])
    inc = (((int(seed[2]) << 64) | int(seed[3])) << 1 | 1) & _MASK128
    state = inc  # 0 * mult + inc
    state = (state + init_state) & _MASK128
    state = (state * _PCG_MULT + inc) & _MASK128
    return state, inc


class SampleStreams:
    """The samples' generators of one batch: `generator(i)` is numpy.random.default_rng(
    [seed, epoch, position_i, attempt_i]) in the state default_rng starts in, in one reused
    PCG64 (valid until the next call; copy nothing out of it)."""

    def __init__(self):
        self._bitgen = np.random.PCG64(0)
        self.rng = np.random.Generator(self._bitgen)
        self._states: list[tuple[int, int]] = []

    def prepare(self, seed: int, epoch: int, positions, attempts=None) -> None:
        """Hash the seeds of a batch; positions (B,), attempts (B,) (default 0)."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        attempts = np.zeros_like(positions) if attempts is None else np.asarray(attempts, np.int64).reshape(-1)
        b = len(positions)
        if b == 0:
            self._states = []
            return
        if positions.min() < 0 or attempts.min() < 0:
            raise ValueError("positions and attempts must be non-negative")
        head = _int_words(int(seed)) + _int_words(int(epoch))
        if positions.max() > _MASK32 or attempts.max() > _MASK32:  # several words each: exact, per sample
            rows = [seed_pools(head + _int_words(int(p)) + _int_words(int(a))) for p, a in zip(positions, attempts)]
            seeds = np.concatenate([pcg64_seeds(pool, 1) for pool in rows])
        else:
            tail = [positions.astype(np.uint32), int(attempts[0]) if (attempts == attempts[0]).all()
                    else attempts.astype(np.uint32)]
            with np.errstate(over="ignore"):
                seeds = pcg64_seeds(seed_pools(head + tail), b)
        self._states = [_pcg64_state(s) for s in seeds]

    def generator(self, i: int) -> np.random.Generator:
        state, inc = self._states[i]
        self._bitgen.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": inc},
                              "has_uint32": 0, "uinteger": 0}
        return self.rng


@functools.lru_cache(maxsize=1)
def uniform_is_affine() -> bool:
    """True when Generator.uniform(low, high, n) equals low + (high - low) * random(n) bit for bit
    here (numpy's C code computes exactly that; a compiler that fuses it into one multiply-add
    would not), so consecutive double draws can be one random() call."""
    lows = np.array([0.3, -0.1, 0.6, 0.1, np.log(0.5), np.log(3 / 4), 0.2])
    highs = np.array([1.0, 0.1, 1.4, 2.0, np.log(2.0), np.log(4 / 3), 1.0])
    a, b = np.random.default_rng(20211001), np.random.default_rng(20211001)
    for _ in range(64):
        for lo, hi in zip(lows, highs):
            lo, hi = float(lo), float(hi)
            if not np.array_equal(a.uniform(lo, hi, 16), lo + (hi - lo) * b.random(16)):
                return False
    return True


# ---------------------------------------------------------------------------------- colour

# RGB <-> YIQ: saturation scales I and Q, hue rotates them; Y is the grey value.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], np.float64)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def color_affines(brightness, contrast, saturation, hue, grayscale, order, center: float):
    """The colour jitter + greyscale of V views at once (tests/plan_reference.color_affine is one view): ((V, 3, 3) float32 matrices, (V, 3) float32 offsets).

    brightness, contrast, saturation, hue (V,) float64; grayscale (V,) bool; order (V, 4) int;
    center: the contrast pivot. The same 4x4 products in the same order as the per-view function
    (numpy's matmul runs one GEMM per stacked matrix), so the results are identical.
    """
    v = len(brightness)
    eye3 = np.eye(3)
    steps = np.zeros((v, 4, 4, 4))
    steps[:, :, 3, 3] = 1.0
    steps[:, 0, :3, :3] = eye3 * brightness[:, None, None]
    steps[:, 1, :3, :3] = eye3 * contrast[:, None, None]
    steps[:, 1, :3, 3] = ((1.0 - contrast) * center)[:, None]
    diag = np.zeros((v, 3, 3))
    diag[:, 0, 0] = 1.0
    diag[:, 1, 1] = diag[:, 2, 2] = saturation
    steps[:, 2, :3, :3] = YIQ_TO_RGB @ diag @ RGB_TO_YIQ
    theta = 2.0 * np.pi * hue
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.zeros((v, 3, 3))
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    steps[:, 3, :3, :3] = YIQ_TO_RGB @ rot @ RGB_TO_YIQ
    total = np.broadcast_to(np.eye(4), (v, 4, 4)).copy()
    rows = np.arange(v)
    for k in range(4):
        total = steps[rows, order[:, k]] @ total
    if grayscale.any():
        grey = np.eye(4)
        grey[:3, :3] = np.repeat(RGB_TO_YIQ[:1], 3, axis=0)
        total[grayscale] = grey @ total[grayscale]
    return total[:, :3, :3].astype(np.float32), total[:, :3, 3].astype(np.float32)


# ------------------------------------------------------------------------------- pooling


@functools.lru_cache(maxsize=4096)
def pool_windows(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive pooling windows: (starts, ends) (n_out,) int64, [floor(o n_in / n_out), ceil((o+1) n_in / n_out))."""
    o = np.arange(n_out, dtype=np.int64)
    return (o * n_in) // n_out, -((-(o + 1) * n_in) // n_out)


@functools.lru_cache(maxsize=4096)
def pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32: row o averages its window (pool_windows), 1/k on each of its k inputs."""
    start, end = pool_windows(n_in, n_out)
    out = np.zeros((n_out, n_in), np.float32)
    for o, (a, b) in enumerate(zip(start, end)):
        out[o, a:b] = 1.0 / (b - a)
    out.setflags(write=False)
    return out


def adaptive_avg_pool(x: np.ndarray, out_size, scale: float | None = None) -> np.ndarray:
    """torch.nn.functional.adaptive_avg_pool3d of one (T, H, W) array -> (T', H', W') float32,
    times `scale` when given (the dequantising factor of uint8 maps, applied after pooling).

    Output cell o of an axis of n_in -> n_out averages inputs [floor(o n_in / n_out),
    ceil((o + 1) n_in / n_out)) (torch's windows; they overlap when upsampling). Each axis is one
    float32 matrix product with its averaging matrix (pool_matrix; an axis of equal size is
    passed through untouched), a few times faster than the torch call on a clip-sized tube; the
    results differ from torch's running sums in the last bits only (relative 1e-6).
    """
    x = x.astype(np.float32)  # a contiguous copy: the reshapes below are views
    t, h, w = x.shape
    to, ho, wo = out_size
    if wo != w:
        x = (x.reshape(t * h, w) @ pool_matrix(w, wo).T).reshape(t, h, wo)
    if ho != h:
        x = np.matmul(pool_matrix(h, ho), x)  # (ho, h) @ (t, h, wo) -> (t, ho, wo)
    if to != t:
        x = (pool_matrix(t, to) @ x.reshape(t, ho * wo)).reshape(to, ho, wo)
    if scale is not None:
        x *= np.float32(scale)
    return x
