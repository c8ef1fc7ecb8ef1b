"""A process pool that survives its workers dying: what `prepare` and `transcode` run files in;
and `die_with_parent`, which ends a worker process (of this pool, of a DataLoader) with the
process that started it."""
from __future__ import annotations

import os
import signal
import threading
from collections import deque
from typing import Callable, Iterable, Iterator

CRASH_REASON = "the worker process died on this video (crashed, or killed: out of memory?)"
POLL_S = 1.0  # how often process_exit_waiter looks, where it has no pidfd to wait on


def die_with_parent() -> None:
    """End this process (SIGKILL) as soon as the process that started it ends, however it ends.

    Call it first thing in a worker. The kernel leaves children running when their parent is
    SIGKILLed: a killed `prepare` left its worker decoding, a killed `pretrain` its DataLoader
    workers (~300 MB each) and their forkserver (which lives while a child of its holds its
    "alive" pipe). The parent watched is multiprocessing's parent process: the one that asked for
    this process, also when a forkserver forked it. Not PR_SET_PDEATHSIG: that fires when the
    parent *thread* that forked ends (a pool started from a short-lived thread would lose its
    workers), and a forkserver child's parent is the forkserver, not the training process.
    A daemon thread waits on the parent (process_exit_waiter); on Windows nothing is done."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    wait = process_exit_waiter(parent.pid if parent is not None else os.getppid())
    if wait is not None:
        threading.Thread(target=_kill_self_after, args=(wait,), name="die-with-parent", daemon=True).start()


def process_exit_waiter(pid: int) -> Callable[[], None] | None:
    """A function that returns once process `pid` has ended: it waits on a pidfd (Linux >= 5.3),
    else polls every POLL_S. None on Windows (no pidfd, and os.kill(pid, 0) is no probe there)."""
    if os.name != "posix":
        return None
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone
            return lambda: None
        except OSError:  # a kernel before 5.3: poll instead
            pass
        else:
            import select

            return lambda: select.select([fd], [], [])  # readable once the process has exited
    return lambda: _poll_until_gone(pid)


def _poll_until_gone(pid: int) -> None:
    import time

    while True:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):  # gone (PermissionError: its pid now is another user's)
            return
        time.sleep(POLL_S)


def _kill_self_after(wait: Callable[[], None]) -> None:
    wait()
    os.kill(os.getpid(), signal.SIGKILL)  # not sys.exit: the main thread may be blocked in a decoder


def _init_worker() -> None:
    import cv2

    die_with_parent()
    cv2.setNumThreads(1)  # one file per process; the processes are the parallelism
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's business


def crash_tolerant_map(fn: Callable, tasks: Iterable, workers: int, on_crash: Callable) -> Iterator:
    """Yield fn(task) for every task, computed by `workers` spawned processes, in completion order.

    fn: a picklable top-level function of one task. A worker that dies (a decoder crash, the OOM
    killer) breaks the pool: the tasks in flight then run again one by one in fresh processes,
    and for the one that kills its process again on_crash(task) is yielded instead; the rest go on.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    pending = deque(tasks)
    while pending:
        suspects = []
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
        clean = False
        try:
            inflight = {}
            while pending or inflight:
                while pending and len(inflight) < 2 * workers:
                    task = pending.popleft()
                    try:
                        inflight[ex.submit(fn, task)] = task
                    except BrokenProcessPool:
                        suspects.append(task)
                        break
                if suspects:
                    break
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = inflight.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        suspects.append(task)
                        continue
                    yield result
                if suspects:
                    break
            suspects.extend(inflight.values())
            clean = not suspects
        finally:
            ex.shutdown(wait=clean, cancel_futures=True)
        # The tasks in flight when the pool broke run again one at a time, so the one that kills
        # its process is known; a single-worker pool is kept until it breaks.
        ex1 = None
        try:
            for task in suspects:
                if ex1 is None:
                    ex1 = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker)
                try:
                    result = ex1.submit(fn, task).result()
                except BrokenProcessPool:
                    ex1.shutdown(wait=False)
                    ex1 = None
                    result = on_crash(task)
                yield result
        finally:
            if ex1 is not None:
                ex1.shutdown(wait=False, cancel_futures=True)
