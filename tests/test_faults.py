"""Faults every tool shares: the CLI's one line for a machine's failure, file modes, checksums.

Each tool's own faults live beside this module: tests/test_faults_transcode.py,
test_faults_store.py, test_faults_train.py, test_faults_resume.py.
"""
from __future__ import annotations

import errno
import os
import sys
import types

import numpy as np
import pytest

from mcl_fast import cli
from mcl_fast._checksum import digest, matches
from mcl_fast._io import atomic_write_json


def _fake_command(monkeypatch, raise_it):
    module = types.ModuleType("mcl_fast_fake_command")
    module.add_args = lambda parser: None

    def run(args):
        raise_it()

    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "fake", (module.__name__, "a command that fails"))


def _disk_full():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/ckpt_00000010.pt")


def _torch_save_disk_full():
    # torch.save reports ENOSPC as a RuntimeError ("enforce fail at inline_container.cc") raised
    # while handling the OSError of the file object's write
    try:
        _disk_full()
    except OSError as e:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from e


@pytest.mark.parametrize("failure", [_disk_full, _torch_save_disk_full])
def test_disk_full_is_one_line_naming_the_file_and_exit_1(monkeypatch, capsys, failure):
    _fake_command(monkeypatch, failure)
    assert cli.main(["fake"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "No space left on device" in err and "/data/out/ckpt_00000010.pt" in err and "Traceback" not in err


def test_a_program_error_still_shows_its_traceback(monkeypatch):
    def bug():
        raise OSError(errno.EBADF, "bad file descriptor")

    _fake_command(monkeypatch, bug)
    with pytest.raises(OSError):
        cli.main(["fake"])
    _fake_command(monkeypatch, lambda: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError):
        cli.main(["fake"])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_take_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = atomic_write_json(tmp_path / "index.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_a_flipped_byte_changes_the_checksum():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 1 << 16, dtype=np.uint8)
    expected = digest(data)
    assert matches(data, expected)
    for position in rng.integers(0, data.size, 20):
        damaged = data.copy()
        damaged[position] ^= 1 << int(rng.integers(0, 8))
        assert not matches(damaged, expected)
    with pytest.raises(ValueError, match="unknown checksum algorithm"):
        matches(data, "md5:0123")


def test_a_failed_atomic_write_names_its_target_and_leaves_nothing(tmp_path):
    def full(f):
        f.write(b"x" * 10)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() on a full disk raises it

    from mcl_fast._io import atomic_write

    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "history.json", full)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "history.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module_name", ["mcl_fast.motion.prepare", "mcl_fast.data.transcode", "mcl_fast.train"])
def test_torchrun_entry_points_give_the_same_one_line(monkeypatch, capsys, module_name):
    """`torchrun -m mcl_fast.motion.prepare ...` (and transcode, train) skip cli.main: their own
    main() must turn a full disk into the same one line."""
    import importlib

    module = importlib.import_module(module_name)
    monkeypatch.setattr(module, "run", lambda args: _disk_full())
    argv = {"mcl_fast.train": ["--config", "demo_cpu"]}.get(module_name, ["--videos", "v", "--out", "o"])
    assert module.main(argv) == 1
    assert "No space left on device: /data/out/ckpt_00000010.pt" in capsys.readouterr().err
