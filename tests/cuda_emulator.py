"""Run the real __global__ kernels of kernels/<name>.cu on the CPU (tests/fixtures/cuda_emu/cuda_emu.h).

build(name) compiles a kernel file, as it is or edited (`edit`: a function of the source text, for
the tests that remove a barrier), with g++ over the emulator and returns an Emulator: one
EmuKernel per `extern "C" __global__` function, called like a CuPy RawKernel
`kernel(grid, block, args)`. The only change to the source is mechanical: each `__shared__`
declaration becomes an emu::Shared object, whose element accesses are bounds-checked switch points
of the randomised scheduler (see the header). Scalars must be NumPy scalars of the parameter's
exact type, arrays C-contiguous of its element type (a wrong width shifts every later argument on
a GPU; here it is an error).

fake_cupy() is the part of CuPy's API the Python wrappers use, on NumPy; `install` points the
wrappers of mcl_fast.gpu.motion / sampling / flow at the emulated kernels.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
EMU_HEADER_DIR = ROOT / "tests" / "fixtures" / "cuda_emu"
BUILD_DIR = Path(os.environ.get("MCL_FAST_EMU_BUILD", Path(tempfile.gettempdir()) / f"mcl_fast_emu_{os.getuid()}"))

SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(([^)]*)\)')
SHARED_DECL = re.compile(r"^(\s*)__shared__\s+(.+?)\s+(\w+)\s*((?:\[[^\]]+\])*)\s*;", re.M)
SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32, "double": np.float64,
           "unsigned int": np.uint32, "unsigned char": np.uint8}
_CTYPE = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.float32: ctypes.c_float,
          np.float64: ctypes.c_double, np.uint32: ctypes.c_uint32, np.uint8: ctypes.c_uint8}


def signatures(source: str) -> dict:
    """{kernel: [(base type, is_pointer), ...]} of the extern "C" __global__ functions in `source`."""
    out = {}
    for kernel, params in SIGNATURE.findall(source):
        parsed = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", " ").replace("const ", " ").split())
            if "*" in p:
                parsed.append((p.split("*")[0].strip(), True))
            else:
                parsed.append((p.rsplit(" ", 1)[0].strip(), False))
        out[kernel] = parsed
    return out


def rewrite_shared(source: str) -> str:
    """Each `__shared__ T x[a][b];` -> `static emu::Shared<T[a][b]> x{"x"};` (line numbers kept)."""
    return SHARED_DECL.sub(lambda m: f'{m[1]}static emu::Shared<{m[2]}{m[4]}> {m[3]}{{"{m[3]}"}};', source)


def remove_barrier_before(source: str, anchor: str) -> str:
    """`source` without the last `__syncthreads();` before the first `anchor` (a kernel made racy)."""
    at = source.rindex("__syncthreads();", 0, source.index(anchor))
    return source[:at] + "/* barrier removed */" + source[at + len("__syncthreads();"):]


def translation_unit(name: str, edit=None) -> tuple[str, dict]:
    path = KERNELS / f"{name}.cu"
    source = path.read_text()
    if edit is not None:
        source = edit(source)
    sigs = signatures(source)
    body = rewrite_shared(source)
    exports = "\n".join(f"EMU_EXPORT({k})" for k in sigs)
    return f'#include "cuda_emu.h"\n#line 1 "{path}"\n{body}\n{exports}\n', sigs


def build(name: str, edit=None) -> "Emulator":
    """Compile kernels/<name>.cu (after `edit`) over the emulator; cached by content in BUILD_DIR."""
    gxx = shutil.which("g++")
    if gxx is None:
        import pytest

        pytest.skip("g++ not found: the CUDA emulator compiles the kernels with it")
    unit, sigs = translation_unit(name, edit)
    headers = sorted(KERNELS.glob("*.cuh")) + [EMU_HEADER_DIR / "cuda_emu.h"]
    key = hashlib.sha256((unit + "".join(h.read_text() for h in headers)).encode()).hexdigest()[:20]
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    lib = BUILD_DIR / f"emu_{name}_{key}.so"
    if not lib.is_file():
        src = BUILD_DIR / f"emu_{name}_{key}.cpp"
        src.write_text(unit)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        cmd = [gxx, "-O1", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared",
               "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-Wno-unknown-pragmas",
               "-I", str(KERNELS), "-I", str(EMU_HEADER_DIR), "-o", str(tmp), str(src)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"emulator build of kernels/{name}.cu failed:\n{res.stderr[-4000:]}")
        os.replace(tmp, lib)
    return Emulator(ctypes.CDLL(str(lib)), name, sigs)


class EmulatorError(RuntimeError):
    """A launch failed in the emulator: deadlock, shared array out of bounds, bad shuffle."""


class Emulator:
    def __init__(self, lib, name: str, sigs: dict):
        self.lib, self.name, self.signatures = lib, name, sigs
        self.lib.emu_configure.argtypes = [ctypes.c_ulonglong, ctypes.c_double, ctypes.c_int]
        self.lib.emu_configure.restype = None
        self.configure()

    def configure(self, seed: int = 1, switch_prob: float = 0.5, ftz: bool = False) -> "Emulator":
        """Scheduler seed, probability of a thread switch at each shared access, flush-to-zero."""
        self.lib.emu_configure(seed, switch_prob, int(ftz))
        return self

    def stats(self) -> dict:
        out = (ctypes.c_ulonglong * 4)()
        self.lib.emu_stats(out)
        return dict(zip(("launches", "blocks", "switches", "accesses"), list(out)))

    def kernel(self, kernel: str) -> "EmuKernel":
        if kernel not in self.signatures:
            raise KeyError(f"kernels/{self.name}.cu has no kernel {kernel}")
        return EmuKernel(self, kernel)


class EmuKernel:
    def __init__(self, emulator: Emulator, name: str):
        self.name, self.params = name, emulator.signatures[name]
        self.where = f"kernels/{emulator.name}.cu:{name}"
        self.fn = getattr(emulator.lib, f"emu_{name}")
        self.fn.restype = ctypes.c_int

    def __call__(self, grid, block, args):
        assert len(args) == len(self.params), f"{self.where}: {len(args)} arguments for {len(self.params)} parameters"
        holders = []
        for i, (a, (base, is_pointer)) in enumerate(zip(args, self.params)):
            if is_pointer:
                assert isinstance(a, np.ndarray), f"{self.where} arg {i}: {type(a).__name__} for {base}*"
                assert a.dtype == SCALARS[base], f"{self.where} arg {i}: {a.dtype} array for {base}*"
                assert a.flags.c_contiguous, f"{self.where} arg {i}: not C-contiguous"
                holders.append(ctypes.c_void_p(a.ctypes.data))
            else:
                assert type(a) is SCALARS[base], f"{self.where} arg {i}: {type(a).__name__} for {base}"
                holders.append(_CTYPE[type(a)](a))
        argv = (ctypes.c_void_p * len(holders))(*[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p) for h in holders])
        g = (ctypes.c_uint * 3)(*(tuple(int(v) for v in grid) + (1, 1))[:3])
        b = (ctypes.c_uint * 3)(*(tuple(int(v) for v in block) + (1, 1))[:3])
        assert all(v >= 1 for v in g) and all(v >= 1 for v in b), f"{self.where}: grid {tuple(g)} block {tuple(b)}"
        assert b[0] * b[1] * b[2] <= 1024, f"{self.where}: block {tuple(b)} has more than 1024 threads"
        err = ctypes.create_string_buffer(512)
        if self.fn(g, b, argv, err, len(err)) != 0:
            raise EmulatorError(f"{self.where}: {err.value.decode()}")


# ------------------------------------------------------------------ CuPy stand-in

class EmuArray(np.ndarray):
    """A NumPy array with CuPy's .get()."""

    def get(self):
        return np.asarray(self).copy()


def _emu(a):
    return np.asarray(a).view(EmuArray)


def fake_cupy() -> types.ModuleType:
    """NumPy under CuPy's names; `empty` fills floats with NaN and integers with a marker, so a
    kernel output that is never written shows."""
    cp = types.ModuleType("cupy_on_numpy")
    cp.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})

    def empty(shape, dtype=np.float32):
        dtype = np.dtype(dtype)
        fill = np.nan if dtype.kind == "f" else (0x5A if dtype.kind in "ui" else 0)
        return _emu(np.full(shape, fill, dtype))

    cp.ndarray = EmuArray
    cp.asarray = lambda a, dtype=None: _emu(np.asarray(a, dtype=dtype))
    cp.ascontiguousarray = lambda a, dtype=None: _emu(np.ascontiguousarray(a, dtype=dtype))
    cp.empty = empty
    cp.empty_like = lambda a, dtype=None: empty(a.shape, dtype or a.dtype)
    cp.zeros = lambda shape, dtype=np.float32: _emu(np.zeros(shape, dtype))
    cp.asnumpy = lambda a: np.asarray(a).copy()
    return cp


def install(monkeypatch, emulators: dict, cp=None):
    """Point mcl_fast.gpu.{motion, sampling, flow} at `emulators` ({"motion_map": Emulator, ...})."""
    from mcl_fast.gpu import flow, motion, sampling

    cp = cp or fake_cupy()

    def get_kernel(module, kernel, options=()):
        return emulators[module].kernel(kernel)

    for mod in (motion, sampling):
        monkeypatch.setattr(mod, "require_cupy", lambda: cp)
        monkeypatch.setattr(mod, "get_kernel", get_kernel)
    monkeypatch.setattr(flow, "require_cupy", lambda: cp)
    monkeypatch.setattr(flow, "is_cupy_array", lambda a: isinstance(a, EmuArray))
    monkeypatch.setattr(flow, "_kernel", lambda name: get_kernel("tvl1", name))
    return cp
