"""Compile kernels/<name>.cu with NVRTC and load it as a cupy.RawModule, once per (name, options).

The sources ship as package data (`mcl_fast.kernels`, mapped to the top-level kernels/ directory
by setup.py); in a source checkout the repository's kernels/ is used. `#include "x.cuh"` lines are
inlined (each header once) with `#line` markers, so NVRTC needs no include path and its errors
name `kernels/<file>:<line>` of the real source.

Why not `cupy.RawModule(code=...)`: CuPy appends `-ftz=true` to every NVRTC compile, after the
caller's options, so single-precision denormals would flush to zero on the GPU while NumPy and the
CPU twin (libmcl_host) keep them; a percentile of tiny values or `mcl_is_hot` on a denormal pixel
would then differ from the reference. Here the module is compiled by NVRTC itself with
COMPILE_OPTIONS (`--ftz=false`: IEEE denormals), to a cubin for the device's architecture (PTX for
the driver to finish when NVRTC does not know the device yet), written to a cache folder and loaded
with `cupy.RawModule(path=...)`. tests/test_cmake_build.py compiles every kernel through this very
path on the CPU and checks that the PTX has no flushing instruction.

CuPy's `nvrtc.getCUBIN` drops the cubin's last byte as if it were a C string's NUL, but a cubin is
an ELF file whose program-header table ends at its last byte; `whole_cubin` restores it before
the file is written, so the driver (`cuModuleLoad`) and compute-sanitizer read a complete ELF.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import struct
import tempfile
from pathlib import Path

from .._backend import require_cupy

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
_PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once\s*$")

# Every kernel module gets these NVRTC options first (plus the architecture, plus its own).
COMPILE_OPTIONS = ("-std=c++17", "--ftz=false")
CACHE_ENV = "MCL_FAST_KERNEL_CACHE"
# Part of the cache key: bump it when the bytes written for the same compile change (2: whole cubins).
CACHE_FORMAT = "2"


class KernelCompileError(RuntimeError):
    """NVRTC rejected a kernel source; the message holds NVRTC's log (file(line): error ...)."""


def kernels_dir() -> Path:
    """The directory holding the .cu/.cuh sources (installed package data, else the repo's kernels/)."""
    try:
        from importlib.resources import files

        path = Path(str(files("mcl_fast.kernels")))
        if (path / "common.cuh").is_file():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    path = Path(__file__).resolve().parents[2] / "kernels"
    if not (path / "common.cuh").is_file():
        raise FileNotFoundError(f"CUDA sources not found: neither package mcl_fast.kernels nor {path} has common.cuh")
    return path


def preprocess(name: str, root: Path | None = None) -> str:
    """The full source of kernels/<name>.cu with its quoted includes inlined (each file once)."""
    root = root or kernels_dir()
    seen: set[str] = set()

    def expand(file_name: str) -> list[str]:
        path = root / file_name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: CUDA source not found")
        seen.add(file_name)
        out = [f'#line 1 "{path}"']
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            m = _INCLUDE.match(line)
            if m:
                included = m.group(1)
                if included not in seen:
                    out += expand(included)
                out.append(f'#line {number + 1} "{path}"')
            elif _PRAGMA_ONCE.match(line):
                out.append("")  # the single inclusion is done here; NVRTC warns on it in a main file
            else:
                out.append(line)
        return out

    return "\n".join(expand(f"{name}.cu")) + "\n"


def compile_options(options=()) -> tuple[str, ...]:
    """The NVRTC options a module is compiled with (the architecture is added by nvrtc_compile)."""
    return COMPILE_OPTIONS + tuple(options)


def nvrtc_compile(nvrtc, source: str, filename: str, options, arch: str) -> bytes:
    """Compile `source` with NVRTC: a cubin for arch "sm_XY", PTX for "compute_XY".

    `nvrtc` is CuPy's binding (cupy.cuda.nvrtc) or one with the same functions. Raises
    KernelCompileError with NVRTC's log, whose file(line) locations come from the #line markers.
    """
    prog = nvrtc.createProgram(source, filename, (), ())
    try:
        try:
            nvrtc.compileProgram(prog, list(options) + [f"--gpu-architecture={arch}"])
        except Exception as exc:  # CuPy raises NVRTCError; the log says why
            log = nvrtc.getProgramLog(prog)
            raise KernelCompileError(f"NVRTC could not compile {filename} ({exc}):\n{log}") from None
        return whole_cubin(nvrtc.getCUBIN(prog), filename) if arch.startswith("sm_") else nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)


def elf_tables_end(data: bytes) -> int:
    """Where a 64-bit little-endian ELF's program- and section-header tables end (bytes from the start)."""
    if data[:4] != b"\x7fELF" or len(data) < 64 or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    return max(phoff + phentsize * phnum if phnum else 0, shoff + shentsize * shnum if shnum else 0)


def whole_cubin(cubin: bytes, filename: str = "cubin") -> bytes:
    """The cubin with the bytes its header tables need: CuPy's getCUBIN strips the last byte as if
    it were a trailing NUL (it is the last program header's zero top byte of p_align), so zeros
    are appended up to the tables' end. A cubin already whole (another binding) is returned as is;
    one short by more than that byte is an error naming the module."""
    missing = elf_tables_end(cubin) - len(cubin)
    if missing > 1:
        raise KernelCompileError(f"NVRTC returned an incomplete cubin for {filename}: "
                                 f"{len(cubin)} bytes, its header tables need {len(cubin) + missing}")
    return cubin + b"\0" * max(missing, 0)


def target_arch(cp) -> str:
    """sm_XY of the current device when NVRTC can build for it, else the newest compute_XY it knows."""
    cc = int(cp.cuda.Device().compute_capability)
    supported = [int(a) for a in cp.cuda.nvrtc.getSupportedArchs()]
    if cc in supported:
        return f"sm_{cc}"
    return f"compute_{max([a for a in supported if a <= cc] or [min(supported)])}"


def cache_dir() -> Path:
    """Where compiled modules are kept: $MCL_FAST_KERNEL_CACHE, else ~/.cache/mcl_fast/kernels."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "mcl_fast" / "kernels"


def _cached_binary(name: str, source: str, options, arch: str, nvrtc) -> Path:
    """The compiled module's file, compiled now unless a file for the same inputs exists."""
    from .._io import atomic_write

    version = ".".join(str(v) for v in nvrtc.getVersion())
    key = hashlib.sha256("\0".join([CACHE_FORMAT, source, *options, arch, version]).encode()).hexdigest()[:24]
    suffix = ".cubin" if arch.startswith("sm_") else ".ptx"
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / f"mcl_fast_kernels_{os.getuid()}"):
        path = folder / f"{name}-{arch}-{key}{suffix}"
        if path.is_file() and path.stat().st_size > 0:
            return path
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue  # read-only home: fall back to the temporary folder
        binary = nvrtc_compile(nvrtc, source, f"{name}.cu", options, arch)
        return atomic_write(path, lambda f: f.write(binary))
    raise OSError(f"no writable folder for compiled kernels (set {CACHE_ENV})")


@functools.lru_cache(maxsize=None)
def load_module(name: str, options: tuple[str, ...] = ()):
    """cupy.RawModule of kernels/<name>.cu compiled with compile_options(options), cached."""
    cp = require_cupy()
    path = _cached_binary(name, preprocess(name), compile_options(options), target_arch(cp), cp.cuda.nvrtc)
    return cp.RawModule(path=str(path))


@functools.lru_cache(maxsize=None)
def get_kernel(name: str, kernel: str, options: tuple[str, ...] = ()):
    """One `extern "C"` kernel of kernels/<name>.cu as a cupy.RawKernel (cached: launches stay cheap)."""
    return load_module(name, tuple(options)).get_function(kernel)
