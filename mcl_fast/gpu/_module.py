"""Load kernels/<name>.cu as a cupy.RawModule (NVRTC), once per (name, options).

The sources ship as package data (`mcl_fast.kernels`, mapped to the top-level kernels/ directory
by setup.py); in a source checkout the repository's kernels/ is used. `#include "x.cuh"` lines are
inlined (each header once) with `#line` markers, so NVRTC needs no include path and its errors
name `kernels/<file>:<line>` of the real source.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

from .._backend import require_cupy

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
_PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once\s*$")


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


@functools.lru_cache(maxsize=None)
def load_module(name: str, options: tuple[str, ...] = ()):
    """cupy.RawModule of kernels/<name>.cu, compiled by NVRTC with `options` (plus -std=c++17), cached."""
    cp = require_cupy()
    source = preprocess(name)
    opts = ("-std=c++17",) + tuple(options)
    module = cp.RawModule(code=source, options=opts)
    module.compile()  # compile now, so a syntax error surfaces here with the file and line
    return module


@functools.lru_cache(maxsize=None)
def get_kernel(name: str, kernel: str, options: tuple[str, ...] = ()):
    """One `extern "C"` kernel of kernels/<name>.cu as a cupy.RawKernel (cached: launches stay cheap)."""
    return load_module(name, tuple(options)).get_function(kernel)
