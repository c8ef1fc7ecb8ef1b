"""Atomic file writes, used by every module that writes results people keep.

A crash (or SIGKILL) at any moment leaves either the old file or the new one, never a partial
file: the bytes go to a temporary file beside the target, are fsynced, renamed over the target,
and the folder is fsynced so the rename itself survives a power loss.
"""
from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, IO


def fsync_path(path) -> None:
    """fsync a file or a folder by path (best effort for folders some filesystems cannot open)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if os.path.isdir(path):
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def new_file_mode() -> int:
    """The mode open(path, "w") would give a new file: 0o666 less the umask."""
    return 0o666 & ~_umask()


def atomic_write(path, write: Callable[[IO[bytes]], object], *, suffix: str = ".tmp") -> Path:
    """Call write(binary file object) on a temporary file beside `path`, then make it `path` atomically.

    `suffix` is the temporary file's extension (e.g. ".mp4" when an encoder picks the format
    from the name). Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        # mkstemp creates 0600; a shared store or run folder must read like any file its owner writes
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None:  # a write or fsync on the descriptor: name the file the user knows
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def atomic_write_json(path, obj, *, indent: int = 1) -> Path:
    """json.dump(obj) to `path` atomically (UTF-8, a trailing newline)."""
    text = json.dumps(obj, indent=indent) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_copy(src, dst) -> Path:
    """Copy a file to dst atomically."""
    import shutil

    with open(src, "rb") as source:
        return atomic_write(dst, lambda f: shutil.copyfileobj(source, f, 1 << 20))


class FolderBusy(Exception):
    """Another process holds the folder's lock; `holder` is its pid as it wrote it ("?" if unknown)."""

    def __init__(self, holder: str):
        super().__init__(f"locked by pid {holder}")
        self.holder = holder


def lock_folder(folder, name: str = ".lock") -> int:
    """Hold an exclusive flock on folder/name (created with the umask's mode) and write our pid in it;
    the lock lasts until the returned descriptor is closed or the process dies (even by SIGKILL).
    FolderBusy when another process holds it; an OSError where the filesystem has no flock."""
    import fcntl

    fd = os.open(Path(folder) / name, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        raise FolderBusy(holder or "?") from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


# -- failures of the machine, not of the program: one line and exit 1 instead of a traceback --------
# errno -> what to do
MACHINE_ADVICE = {
    errno.ENOSPC: "free space there (or choose another output folder) and run the same command again: finished work is kept",
    errno.EDQUOT: "the disk quota is exhausted: free space and run the same command again",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "check the permissions of that file and its folder",
    errno.EPERM: "check the permissions of that file and its folder",
}
MACHINE_ERRNOS = frozenset(MACHINE_ADVICE)


def os_error_in(e: BaseException) -> OSError | None:
    """The first OSError with an errno in e's cause/context chain, e included (torch.save reports
    ENOSPC as a RuntimeError raised while handling the OSError)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e
        e = e.__cause__ or e.__context__
    return None


def machine_error_line(e: BaseException) -> str | None:
    """One line for an error the user must fix on the machine (disk full, read-only, permissions),
    found in e or its chain (torch.save reports ENOSPC as a RuntimeError); None for anything else."""
    if not isinstance(e, (OSError, RuntimeError)):
        return None
    cause = os_error_in(e)
    if cause is None or cause.errno not in MACHINE_ADVICE:
        return None
    where = cause.filename or "(file not named by the system)"
    return f"{os.strerror(cause.errno)}: {where}: {MACHINE_ADVICE[cause.errno]}"


def run_command(name: str, run: Callable, args) -> int:
    """run(args) as a command's exit code: a machine's failure (machine_error_line) becomes one line
    on stderr and 1; every other error keeps its traceback."""
    try:
        return int(run(args) or 0)
    except (OSError, RuntimeError) as e:
        line = machine_error_line(e)
        if line is None:
            raise
        print(f"{name}: {line}", file=sys.stderr)
        return 1
