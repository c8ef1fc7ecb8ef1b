"""torchrun entry point for tests/test_prepare_distributed.py: `python -m mcl_fast.motion.prepare`
whose rank MCL_TEST_DIE_RANK kills itself with SIGKILL at its journal line number
MCL_TEST_DIE_AT (0-based), that is after that video's shard bytes are written and fsynced and
before its line is: a rank that dies mid-video, at the worst moment for the store."""
from __future__ import annotations

import os
import signal
import sys

from mcl_fast.motion import prepare, store

if int(os.environ["RANK"]) == int(os.environ["MCL_TEST_DIE_RANK"]):
    _die_at = int(os.environ["MCL_TEST_DIE_AT"])
    _journal = store.PartWriter._journal
    _lines = []

    def _journal_or_die(self, op):
        if len(_lines) == _die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        _lines.append(op["path"])
        _journal(self, op)

    store.PartWriter._journal = _journal_or_die

sys.exit(prepare.main(sys.argv[1:]))
