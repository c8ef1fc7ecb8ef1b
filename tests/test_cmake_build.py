"""The kernels build without a GPU: nvcc objects for sm_80/sm_90 (from `make kernels`), the NVRTC
compile that mcl_fast.gpu._module does at run time (through its own code path, with the GPU's
floating-point flags read off the PTX), and error locations through the #line markers."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from gpu_build import flushes_denormals, module_ptx
from mcl_fast.gpu import _module

REPO = Path(__file__).resolve().parents[1]
KERNELS = sorted(p.stem for p in (REPO / "kernels").glob("*.cu"))


def build_dir() -> Path:
    env = os.environ.get("MCL_FAST_HOST_LIB")
    path = Path(env) if env else REPO / "build"
    return path if path.is_dir() else path.parent


def test_nvcc_objects_hold_ampere_and_hopper_code():
    cache = build_dir() / "CMakeCache.txt"
    if not cache.is_file():
        if os.environ.get("CI") or os.environ.get("MCL_FAST_HOST_LIB"):
            pytest.fail(f"{cache} missing: run `make kernels` first", pytrace=False)
        pytest.skip(f"no CMake build at {cache.parent} (run `make kernels`)")
    text = cache.read_text()
    m = re.search(r"^CMAKE_CUDA_COMPILER:\w+=(.+)$", text, re.M)
    if not m or "NOTFOUND" in m.group(1) or not m.group(1).strip():
        pytest.skip("CMake found no CUDA compiler here: the nvcc check was skipped")
    objects = build_dir() / "CMakeFiles" / "mcl_kernels_check.dir" / "kernels"
    for name in KERNELS:
        obj = objects / f"{name}.cu.o"
        assert obj.is_file(), f"{obj} missing: kernels/{name}.cu was not compiled by nvcc"
        data = obj.read_bytes()
        for arch in (b"sm_80", b"sm_90"):
            assert arch in data, f"{obj} holds no {arch.decode()} code"


# ------------------------------------------------------------------ NVRTC (what the GPU compiles, flags included; fixture nvrtc: conftest)


def module_options(name: str) -> tuple:
    """The options each kernel's Python driver passes to load_module."""
    from mcl_fast.gpu import flow

    return flow._OPTIONS if name == "tvl1" else ()


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_compiles_as_the_gpu_loads_it_and_keeps_denormals(nvrtc, monkeypatch, tmp_path, name):
    # mcl_fast.gpu._module's own path (NVRTC -> file -> RawModule(path=...)), so the flags checked
    # here are the GPU's. NVRTC has no C++ standard headers: this also catches an unguarded include.
    ptx = module_ptx(monkeypatch, tmp_path, nvrtc, name, module_options(name))
    kernels = set(re.findall(r"\.entry\s+(\w+)", ptx))
    assert kernels == set(kernel_signatures(name)), kernels
    # Denormals kept (NumPy and the CPU twin keep them): no flush-to-zero instruction anywhere.
    assert not flushes_denormals(ptx), f"kernels/{name}.cu compiles to flush-to-zero instructions"
    if name == "tvl1":  # --fmad=false: no contraction, the host twin's rounding (kernels/tvl1.cuh)
        assert not re.search(r"\bfma\.rn\.f32\b", ptx), "tvl1 PTX holds contracted multiply-adds"


def test_a_known_device_gets_a_cubin_in_the_cache(nvrtc, monkeypatch, tmp_path):
    """An sm_90 device (H100/H200): a cubin for it, in $MCL_FAST_KERNEL_CACHE, loaded by path; the
    second load of the same source reuses the file."""
    from gpu_build import fake_cupy_for_compiling

    monkeypatch.setenv(_module.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(_module, "require_cupy", lambda: fake_cupy_for_compiling(nvrtc, "90"))
    _module.load_module.cache_clear()
    try:
        first = _module.load_module("select_box")
        _module.load_module.cache_clear()
        again = _module.load_module("select_box")
    finally:
        _module.load_module.cache_clear()
    path = Path(first.path)
    assert path.parent == tmp_path and path.name.startswith("select_box-sm_90-") and path.suffix == ".cubin"
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and b"mcl_select_box_percentile" in data
    assert again.path == first.path and len(list(tmp_path.iterdir())) == 1


def test_cupys_own_compile_flags_would_flush_denormals(nvrtc):
    """What the check above guards against: CuPy's RawModule(code=...) appends -ftz=true after the
    caller's options, and NVRTC then flushes single-precision denormals (select_box's percentile of
    tiny values and its hot-pixel test would differ from NumPy)."""
    src = _module.preprocess("select_box")
    cupy_like = _module.nvrtc_compile(nvrtc, src, "select_box.cu", ("-std=c++17", "-ftz=true"), "compute_80")
    ours = _module.nvrtc_compile(nvrtc, src, "select_box.cu", _module.compile_options(), "compute_80")
    assert flushes_denormals(cupy_like.decode()) and not flushes_denormals(ours.decode())


def _broken_tree(tmp_path: Path) -> Path:
    (tmp_path / "common.cuh").write_text((REPO / "kernels" / "common.cuh").read_text())
    (tmp_path / "helper.cuh").write_text('#pragma once\n#include "common.cuh"\nMCL_HD int f() { return undefined_name; }\n')
    (tmp_path / "broken.cu").write_text('#include "common.cuh"\n#include "helper.cuh"\n\n'
                                        'extern "C" __global__ void k(int* x) { x[0] = f() + missing; }\n')
    return tmp_path


def test_preprocess_inlines_each_header_once_with_line_markers(tmp_path):
    root = _broken_tree(tmp_path)
    src = _module.preprocess("broken", root)
    assert src.count("#define MCL_HD") == 2  # common.cuh's two branches, inlined once
    assert f'#line 1 "{root / "helper.cuh"}"' in src
    assert f'#line 3 "{root / "broken.cu"}"' in src  # back in broken.cu after its 2nd line
    assert "#include" not in src.replace("#include <", "")


def test_compile_errors_name_the_source_file_and_line(nvrtc, tmp_path):
    root = _broken_tree(tmp_path)
    with pytest.raises(_module.KernelCompileError) as err:
        _module.nvrtc_compile(nvrtc, _module.preprocess("broken", root), "broken.cu", _module.compile_options(),
                              "compute_80")
    log = str(err.value)
    assert f'{root / "helper.cuh"}(3)' in log, log
    assert f'{root / "broken.cu"}(4)' in log, log


def test_missing_include_is_a_clear_error(tmp_path):
    (tmp_path / "lonely.cu").write_text('#include "nowhere.cuh"\n')
    with pytest.raises(FileNotFoundError, match="nowhere.cuh"):
        _module.preprocess("lonely", tmp_path)


# ------------------------------------------------------------------ launches match the kernel signatures
# On the GPU a wrong scalar type (np.int64 for an `int`) silently shifts every later argument; here
# the Python wrappers run against a NumPy stand-in for CuPy and kernels that check each argument
# against the parameter list parsed from the .cu source.

_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(([^)]*)\)')
_SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32, "double": np.float64,
            "unsigned int": np.uint32, "unsigned char": np.uint8}


def kernel_signatures(name: str) -> dict:
    """{kernel: [(base type, is_pointer, is_const), ...]} of kernels/<name>.cu."""
    out = {}
    for kernel, params in _SIGNATURE.findall(_module.preprocess(name)):
        parsed = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", " ").split())
            is_pointer = "*" in p
            is_const = p.startswith("const ")
            base = p.replace("const ", "").split("*")[0].strip() if is_pointer else p.rsplit(" ", 1)[0].strip()
            parsed.append((base, is_pointer, is_const))
        out[kernel] = parsed
    return out


class CheckedKernel:
    def __init__(self, module: str, name: str, params, calls: list):
        self.module, self.name, self.params, self.calls = module, name, params, calls

    def __call__(self, grid, block, args):
        where = f"kernels/{self.module}.cu:{self.name}"
        assert len(grid) in (1, 2, 3) and len(block) in (1, 2, 3), where
        assert all(isinstance(g, int) and g >= 1 for g in grid), f"{where}: grid {grid}"
        assert grid[0] < 2**31 and all(g <= 65535 for g in grid[1:]), f"{where}: grid {grid}"
        assert int(np.prod(block)) <= 1024, f"{where}: block {block}"
        assert len(args) == len(self.params), f"{where}: {len(args)} arguments for {len(self.params)} parameters"
        for i, (arg, (base, is_pointer, is_const)) in enumerate(zip(args, self.params)):
            if is_pointer:
                assert isinstance(arg, np.ndarray), f"{where} arg {i}: {type(arg)} for {base}*"
                assert arg.dtype == _SCALARS[base], f"{where} arg {i}: {arg.dtype} array for {base}*"
                assert arg.flags.c_contiguous, f"{where} arg {i}: not C-contiguous"
                if not is_const:
                    arg[...] = 0  # a defined output, so the wrapper's code after the launch runs
            else:
                assert type(arg) is _SCALARS[base], f"{where} arg {i}: {type(arg).__name__} for {base}"
        self.calls.append(self.name)


@pytest.fixture
def numpy_as_cupy(monkeypatch):
    """Runs mcl_fast.gpu.motion/sampling on NumPy with signature-checking kernels; yields the launch log."""
    import types

    from mcl_fast.gpu import motion, sampling

    fake = types.ModuleType("cupy_stand_in")
    fake.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    fake.asnumpy = np.asarray
    calls: list = []
    signatures = {m: kernel_signatures(m) for m in ("motion_map", "select_box")}

    def get_kernel(module, kernel, options=()):
        assert kernel in signatures[module], f"kernels/{module}.cu has no kernel {kernel}"
        return CheckedKernel(module, kernel, signatures[module][kernel], calls)

    for mod in (motion, sampling):
        monkeypatch.setattr(mod, "require_cupy", lambda: fake)
        monkeypatch.setattr(mod, "get_kernel", get_kernel)
    return calls


def test_launches_match_kernel_signatures(numpy_as_cupy):
    from mcl_fast.gpu import motion, sampling

    rng = np.random.default_rng(0)
    flow = rng.normal(size=(3, 20, 30, 2)).astype(np.float32)
    motion.motion_map(flow)
    motion.motion_maps_fused(flow, 4, scale=2.0)
    motion.motion_maps_downsampled(flow, 3)
    motion.quantize(np.ones((2, 5, 5), np.float32), 2.0)
    maps = rng.random((4, 8, 10)).astype(np.float32)
    sampling.percentile_batch(maps, 90.0)
    sampling.select_box_index_batch(maps, np.stack([ref_boxes(rng, 8, 10) for _ in range(4)]))
    sampling.clip_scores_batch(rng.random((2, 40)), 16, 2)
    sampling.sample_clip_start(rng.random(40), 16, 2, np.random.default_rng(0))
    sampling.sample_crop_box(maps[0], np.random.default_rng(0), frame_size=(32, 40))
    kernels = set(kernel_signatures("motion_map")) | set(kernel_signatures("select_box"))
    assert set(numpy_as_cupy) == kernels  # every kernel was launched and checked


def ref_boxes(rng, h, w):
    from mcl_fast.sampling import draw_boxes

    return draw_boxes(rng, 6, h, w)


# ------------------------------------------------------------------ whole cubins (CuPy's getCUBIN drops a byte)


def test_the_stand_in_drops_the_last_cubin_byte_as_cupy_does(nvrtc):
    """The stand-in keeps CuPy's semantics (nvrtc.getCUBIN strips one byte as if a NUL): without the
    fix below, every cubin written by _module would be one byte short of its program headers."""
    from gpu_build import elf_extent_problems

    src = _module.preprocess("select_box")
    prog = nvrtc.createProgram(src, "select_box.cu", (), ())
    try:
        nvrtc.compileProgram(prog, list(_module.compile_options()) + ["--gpu-architecture=sm_90"])
        raw = nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    assert elf_extent_problems(raw), "the stand-in no longer drops the last byte: it no longer tests CuPy's case"
    assert not elf_extent_problems(_module.whole_cubin(raw))


@pytest.mark.parametrize("name", KERNELS)
def test_the_loaded_cubin_is_a_whole_elf(nvrtc, monkeypatch, tmp_path, name):
    """An sm_90 device: the file RawModule(path=...) loads holds every byte of its ELF tables and
    sections, through _module's own path with CuPy's byte semantics."""
    from gpu_build import elf_extent_problems, module_file

    data = module_file(monkeypatch, tmp_path, nvrtc, name, module_options(name), compute_capability="90")
    assert data[:4] == b"\x7fELF"
    assert elf_extent_problems(data) == [], f"kernels/{name}.cu's cubin is cut short"


def test_cubins_cached_before_the_fix_are_not_reused(nvrtc, monkeypatch, tmp_path):
    """Caches written before the fix hold short cubins: CACHE_FORMAT is part of the file's key, so
    the same source compiles to a new file instead of loading the old one."""
    from gpu_build import fake_cupy_for_compiling

    monkeypatch.setenv(_module.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(_module, "require_cupy", lambda: fake_cupy_for_compiling(nvrtc, "90"))
    paths = []
    for version in ("1", _module.CACHE_FORMAT):
        monkeypatch.setattr(_module, "CACHE_FORMAT", version)
        _module.load_module.cache_clear()
        paths.append(_module.load_module("motion_map").path)
    _module.load_module.cache_clear()
    assert paths[0] != paths[1]


def test_an_incomplete_cubin_is_a_clear_error():
    with pytest.raises(_module.KernelCompileError, match="incomplete cubin for x.cu"):
        _module.whole_cubin(_tiny_elf()[:-3], "x.cu")
    with pytest.raises(ValueError, match="not a 64-bit"):
        _module.elf_tables_end(b"PTX")
    assert _module.whole_cubin(_tiny_elf()[:-1]) == _tiny_elf() == _module.whole_cubin(_tiny_elf())


def _tiny_elf() -> bytes:
    """An ELF header with one 56-byte program header at 64: the tables end at 120."""
    import struct

    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<QQ", head, 0x20, 64, 0)
    struct.pack_into("<HHHH", head, 0x36, 56, 1, 64, 0)
    return bytes(head) + bytes(56)
