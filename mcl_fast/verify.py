"""`mcl-fast verify PATH [PATH ...]`: check stored data against its checksums and list what is damaged.

A folder is a motion store (mcl_fast.motion.store.check_store): every video's maps (and its flows
and clip magnitudes, where the store holds them) against their checksums, the index's entries and
extents against the shard files, and shard bytes the index does not account for. A file is a
checkpoint (mcl_fast.checkpoint.verify_checkpoint). Exit status: 0 when everything is sound, 1
when anything is damaged or cannot be checked.
"""
from __future__ import annotations

import os
import sys

from .motion.store import check_store, repair_command


def add_args(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="a motion store folder or a checkpoint file (several may be given)")
    parser.add_argument("--quiet", action="store_true", help="print only what is damaged")


def verify_store(path, quiet: bool = False) -> bool:
    """Check one store and print the result; True when sound."""
    report = check_store(path, progress=not quiet)
    for damage in report.damage:
        what = f"video {damage.video!r} in {damage.file}" if damage.video is not None else damage.file
        print(f"{path}: DAMAGED: {what}: {damage.reason}")
    if not quiet:
        for note in report.notes:
            print(f"{path}: note: {note}")
    if report.damage:
        if any(d.video is not None for d in report.damage):
            print(f"{path}: {sum(d.video is not None for d in report.damage)} of {report.checked} videos damaged; "
                  f"`{repair_command(path)}` recomputes them")
        return False
    if not quiet:
        print(f"{path}: ok ({report.checked} videos checked)")
    return True


def verify_checkpoint_file(path, quiet: bool = False) -> bool:
    """Check one checkpoint (mcl_fast.checkpoint.verify_checkpoint) and print the result; True when sound."""
    try:
        from .checkpoint import verify_checkpoint  # imports torch: only when a checkpoint is given
    except ImportError as e:
        print(f"{path}: cannot be checked: this installation cannot read checkpoints ({e})", file=sys.stderr)
        return False
    problems = verify_checkpoint(path)
    for problem in problems:
        print(f"{path}: DAMAGED: {problem}")
    if not problems and not quiet:
        print(f"{path}: ok")
    return not problems


def run(args) -> int:
    sound = True
    for path in args.paths:
        if os.path.isdir(path):
            sound &= verify_store(path, args.quiet)
        elif os.path.isfile(path):
            sound &= verify_checkpoint_file(path, args.quiet)
        else:
            print(f"{path}: cannot be checked: no such file or folder", file=sys.stderr)
            sound = False
    return 0 if sound else 1
