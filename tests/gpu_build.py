"""What the GPU build compiles, reproduced on the CPU: NVRTC (pip nvidia-cuda-nvrtc or the system's)
through ctypes, behind the same functions as CuPy's binding (cupy.cuda.nvrtc), so
mcl_fast.gpu._module's own compile path (load_module -> NVRTC -> file -> RawModule(path=...))
runs here unchanged and its PTX can be inspected: the floating-point flags the GPU will use are
read off the instructions, not assumed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import sys
import types

FTZ_INSTRUCTION = re.compile(r"\.ftz\b")


def find_nvrtc():
    """ctypes handle of libnvrtc (pip nvidia-cuda-nvrtc, or the system's), or None."""
    candidates = []
    for base in sys.path:
        for sub in ("nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"):
            candidates += sorted(glob.glob(os.path.join(base, sub, "libnvrtc.so*")))
    candidates = [c for c in candidates if "builtins" not in c and "alt" not in os.path.basename(c)]
    system = ctypes.util.find_library("nvrtc")
    if system:
        candidates.append(system)
    for path in candidates:
        folder = os.path.dirname(path)
        for builtins in sorted(glob.glob(os.path.join(folder, "libnvrtc-builtins.so*"))):
            if "alt" not in os.path.basename(builtins):
                try:  # NVRTC dlopens its builtins by soname: load them first
                    ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
                except OSError:
                    pass
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


class CtypesNVRTC:
    """The functions of cupy.cuda.nvrtc that mcl_fast.gpu._module calls, over libnvrtc."""

    def __init__(self, lib):
        self.lib = lib

    def getVersion(self):
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        return major.value, minor.value

    def getSupportedArchs(self):
        n = ctypes.c_int()
        self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(n))
        archs = (ctypes.c_int * n.value)()
        self.lib.nvrtcGetSupportedArchs(archs)
        return tuple(archs)

    def createProgram(self, src, name, headers, include_names):
        prog = ctypes.c_void_p()
        status = self.lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None)
        assert status == 0, f"nvrtcCreateProgram: status {status}"
        return prog.value

    def compileProgram(self, prog, options):
        opts = [o.encode() for o in options]
        status = self.lib.nvrtcCompileProgram(ctypes.c_void_p(prog), len(opts), (ctypes.c_char_p * len(opts))(*opts))
        if status != 0:
            raise RuntimeError(f"NVRTC_ERROR {status}")

    def getProgramLog(self, prog) -> str:
        size = ctypes.c_size_t()
        self.lib.nvrtcGetProgramLogSize(ctypes.c_void_p(prog), ctypes.byref(size))
        log = ctypes.create_string_buffer(max(size.value, 1))
        self.lib.nvrtcGetProgramLog(ctypes.c_void_p(prog), log)
        return log.value.decode(errors="replace")

    def _get(self, prog, what: str) -> bytes:
        size = ctypes.c_size_t()
        assert getattr(self.lib, f"nvrtcGet{what}Size")(ctypes.c_void_p(prog), ctypes.byref(size)) == 0
        buf = ctypes.create_string_buffer(size.value)
        assert getattr(self.lib, f"nvrtcGet{what}")(ctypes.c_void_p(prog), buf) == 0
        return buf.raw

    def getPTX(self, prog) -> bytes:
        return self._get(prog, "PTX")[:-1]  # without the trailing NUL, as CuPy returns it

    def getCUBIN(self, prog) -> bytes:
        return self._get(prog, "CUBIN")[:-1]

    def destroyProgram(self, prog):
        p = ctypes.c_void_p(prog)
        self.lib.nvrtcDestroyProgram(ctypes.byref(p))


class RecordingRawModule:
    """Stands in for cupy.RawModule: records how _module loads the compiled file."""

    def __init__(self, code=None, path=None, options=(), **kwargs):
        self.code, self.path, self.options = code, path, options


def fake_cupy_for_compiling(nvrtc: CtypesNVRTC, compute_capability: str = "1000") -> types.SimpleNamespace:
    """A CuPy stand-in for _module: by default a device NVRTC does not know, so _module compiles
    PTX (readable); with a known compute capability it compiles a cubin."""
    device = types.SimpleNamespace(compute_capability=compute_capability)
    cuda = types.SimpleNamespace(nvrtc=nvrtc, Device=lambda *a: device)
    return types.SimpleNamespace(cuda=cuda, RawModule=RecordingRawModule)


def module_file(monkeypatch, tmp_path, nvrtc: CtypesNVRTC, name: str, options=(),
                compute_capability: str = "1000") -> bytes:
    """The bytes of the file mcl_fast.gpu._module.load_module(name, options) loads, through its own
    code path (PTX for an unknown device, a cubin for a known one such as "90")."""
    from mcl_fast.gpu import _module

    monkeypatch.setenv(_module.CACHE_ENV, str(tmp_path / "kernel_cache"))
    monkeypatch.setattr(_module, "require_cupy", lambda: fake_cupy_for_compiling(nvrtc, compute_capability))
    _module.load_module.cache_clear()
    try:
        module = _module.load_module(name, tuple(options))
    finally:
        _module.load_module.cache_clear()
    assert module.code is None and module.path, "load_module must load the file it compiled (RawModule(path=...))"
    with open(module.path, "rb") as f:
        return f.read()


def module_ptx(monkeypatch, tmp_path, nvrtc: CtypesNVRTC, name: str, options=()) -> str:
    """The PTX mcl_fast.gpu._module.load_module(name, options) produces, through its own code path."""
    return module_file(monkeypatch, tmp_path, nvrtc, name, options).decode()


def elf_extent_problems(data: bytes) -> list[str]:
    """What of a 64-bit ELF lies past the end of `data`: the program-header table, the
    section-header table, any section's contents (an independent reading, for the tests)."""
    import struct

    assert data[:4] == b"\x7fELF" and data[4] == 2, "not a 64-bit ELF"
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    problems = []
    if phoff + phentsize * phnum > len(data):
        problems.append(f"program headers end at {phoff + phentsize * phnum}, data at {len(data)}")
    if shoff + shentsize * shnum > len(data):
        problems.append(f"section headers end at {shoff + shentsize * shnum}, data at {len(data)}")
    else:
        for i in range(shnum):
            sh_type, = struct.unpack_from("<I", data, shoff + i * shentsize + 4)
            offset, size = struct.unpack_from("<QQ", data, shoff + i * shentsize + 0x18)
            if sh_type != 8 and offset + size > len(data):  # 8: SHT_NOBITS occupies no file bytes
                problems.append(f"section {i} ends at {offset + size}, data at {len(data)}")
    return problems


def flushes_denormals(ptx: str) -> bool:
    """True when the PTX holds a flush-to-zero instruction (what -ftz=true compiles to)."""
    return bool(FTZ_INSTRUCTION.search(ptx))
