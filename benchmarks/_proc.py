"""The CPU time and processes of this process's tree, read from /proc (Linux): what a benchmark
with DataLoader workers must count, since getrusage(RUSAGE_CHILDREN) misses live workers."""
from __future__ import annotations

import os


def tree_pids(pid: int) -> list[int]:
    """pid and every descendant alive now."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return pids


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds of a process tree: utime + stime, and cutime + cstime (children it has reaped),
    of `root` (default this process) and every descendant alive now, from /proc/<pid>/stat.

    getrusage(RUSAGE_CHILDREN) only counts children this process has waited for: DataLoader
    workers started by a forkserver are the forkserver's children, alive while measured, so it
    saw none of their time. A worker that exits and is reaped moves its time into its parent's
    cutime, so a difference of two readings keeps it."""
    total = 0
    for pid in tree_pids(os.getpid() if root is None else root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime (fields 14-17)
    return total / CLOCK_TICKS
