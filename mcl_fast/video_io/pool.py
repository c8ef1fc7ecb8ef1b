"""A process pool that survives its workers dying: what `prepare` and `transcode` run files in."""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Iterator

CRASH_REASON = "the worker process died on this video (crashed, or killed: out of memory?)"


def _init_worker() -> None:
    import signal

    import cv2

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
