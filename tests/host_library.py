"""For the tests of the kernels' CPU twin: the host library, or a skip (a failure where it must exist)."""
from __future__ import annotations

import ctypes
import os

import pytest

from mcl_fast.gpu import host


def library_or_skip() -> ctypes.CDLL:
    """host.library(); if it is missing, fail when CI or MCL_FAST_HOST_LIB is set, else skip."""
    try:
        return host.library()
    except host.HostLibraryMissing as err:
        if os.environ.get("CI") or os.environ.get(host.ENV_VAR):
            pytest.fail(f"host library required here (CI or {host.ENV_VAR} is set): {err}", pytrace=False)
        pytest.skip(str(err))
