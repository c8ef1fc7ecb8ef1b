"""`mcl-fast prepare`: videos -> optical flow -> motion maps -> a motion store, resumable.

One pass per video with bounded memory (frames stream from the decoder; only the small maps are
kept); workers compute, one process writes, so a SIGKILL leaves a valid store and a rerun skips
finished videos. Under torchrun the ranks share the videos and write their own shards. A rerun
checks the store and `--repair` recomputes damaged and stale videos; `--maps` picks the kind of
maps (store_kinds.py: the paper's, or the release's, CPU only). How it works: docs/store.md
("How `prepare` fills a store").
"""
from __future__ import annotations

import errno
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .._io import run_command
from .._backend import gpu_twin
from ..video_io import (CRASH_REASON, VideoError, VideoListError, VideoReader, collect_videos, crash_tolerant_map,
                        file_fingerprint, target_size)
from .flow import FLOW_METHODS
from .maps import downsample_mean, motion_map
from ..ranks import JobProgress, RankError, Ranks, balanced_slices, container_frames
from .store import (ERRORS, PART_JOURNAL_GLOB, MotionStore, PartWriter, StoreError, StoreWriter, VideoMaps,
                    store_errors, store_state)
from .store_kind import PAPER
from .store_kinds import KINDS, MAPS_KINDS
from .store_verified import VerifiedRecord, shard_digests, shard_files
from .video_maps import pair_flow as _pair_flow, source_fingerprint  # _pair_flow: the GPU tests swap it

DEVICES = ("cpu", "cuda")
WINDOWED = [kind for kind in KINDS.values() if "window" in kind.option_choices]  # the kinds --window sets
CHECK_BAR_MIN = 200  # show a bar while checking the store's videos from this many on (about 1 s)


class PrepareError(Exception):
    """prepare could not do its job as asked (base class of InputError and PrepareFailed)."""


class InputError(PrepareError, ValueError):
    """The videos argument or a setting is unusable (as opposed to one bad video)."""


class PrepareFailed(PrepareError):
    """strict=True and some inputs are errors; `.report` is the full PrepareReport (the store
    was still completed for every good video)."""

    def __init__(self, report: "PrepareReport"):
        self.report = report
        super().__init__(report.summary())


@dataclass
class PrepareReport:
    """done: videos prepared by this run (repaired ones included); skipped_existing: videos
    already in the store, sound; errors: [{"path", "reason"}] of this run's inputs that are
    errors (new or from earlier runs); damaged: videos of the list whose stored bytes fail their
    checksum; stale: videos whose source file changed since their maps were made (fingerprint);
    repaired: whether this run recomputed the damaged and stale ones (--repair) or kept them;
    orphaned: the shard tails of videos the index does not know that --repair kept aside.
    Under torchrun, damaged, stale and orphaned are rank 0's (it checks the store)."""

    done: int = 0
    skipped_existing: int = 0
    errors: list = field(default_factory=list)
    store: str = ""
    damaged: list = field(default_factory=list)
    stale: list = field(default_factory=list)
    repaired: bool = False
    orphaned: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def needs_repair(self) -> bool:
        """True when damaged or stale videos were found and kept as they are (no --repair)."""
        return bool(self.damaged or self.stale) and not self.repaired

    def summary(self) -> str:
        text = (f"prepared {self.done}, skipped {self.skipped_existing} already done, "
                f"{len(self.errors)} errors (see {os.path.join(self.store, ERRORS)})")
        suspect = f"{len(self.damaged)} damaged (checksum mismatch) and {len(self.stale)} stale (source changed)"
        if self.repaired and (self.damaged or self.stale):
            text += f"; repaired {suspect} videos"
        elif self.needs_repair:
            text += (f"; {suspect} videos kept as they are: rerun with --repair to recompute them "
                     f"(e.g. `mcl-fast prepare --out {self.store} --repair`)")
        for tail in self.orphaned:
            text += f"; kept in place and marked orphaned: {tail}"
        return text


# ------------------------------------------------------------------------ one video's maps

def compute_video_maps(path, *, flow: str = "tvl1", size: int = 128, map_downsample: int = 4) -> VideoMaps:
    """Decode `path` (gray, short side `size`), flow of each consecutive pair, motion map (eq. 1),
    block mean over map_downsample x map_downsample; the last frame repeats the map before it
    (paper 3.1); a single-frame video has one all-zero map (nothing moves). Returns VideoMaps
    quantised per video (|read - exact| <= scale / 510), with the file's fingerprint.

    Memory is bounded by the downsampled maps (a 128x171 flow gives 32x42 float maps).
    Raises VideoError for every unusable input (the verdict of mcl_fast.video_io).
    """
    path = os.fspath(path)
    if flow not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {flow!r}; choose one of {FLOW_METHODS}")
    pair = _pair_flow(flow)
    maps: list[np.ndarray] = []
    with VideoReader(path) as reader:  # VideoError for a missing or unreadable file first
        fingerprint = source_fingerprint(path)
        prev = None
        for frame in reader.frames(size=size, gray=True):
            if prev is not None:
                m = motion_map(pair(prev, frame)[None])
                maps.append(downsample_mean(m, map_downsample)[0])
            prev = frame
        n, fps = reader.decoded, reader.info["fps"]
        height, width = reader.frame_size or (reader.info["height"], reader.info["width"])
    if n == 1:
        return VideoMaps.without_motion(1, still_map_shape(height, width, size, map_downsample), fps=fps,
                                        height=height, width=width, fingerprint=fingerprint)
    maps.append(maps[-1])
    try:
        return VideoMaps.from_maps(np.stack(maps), fps=fps, height=height, width=width, fingerprint=fingerprint)
    except ValueError as e:  # non-finite flow
        raise VideoError(path, f"motion maps unusable: {e}") from None


def _source_changed(path: str, recorded: str | None) -> bool:
    """True when the file at `path` is not the one whose fingerprint was recorded (False when
    nothing was recorded, or the file cannot be read: there is nothing to recompute from)."""
    if recorded is None:
        return False
    try:
        return file_fingerprint(path) != recorded
    except OSError:
        return False


def still_map_shape(height: int, width: int, size: int, map_downsample: int) -> tuple[int, int]:
    """(map_h, map_w) of a video of height x width frames: what its flow would be block-averaged to."""
    th, tw = target_size(height, width, size)
    return max(1, th // map_downsample), max(1, tw // map_downsample)


# --------------------------------------------------------------------------------- workers


def _compute(path, flow: str, size: int, map_downsample: int, maps: str = PAPER.name, window: int | None = None):
    kind = KINDS[maps]
    if kind.compute is None:  # the paper's maps: this module's pass
        return compute_video_maps(path, flow=flow, size=size, map_downsample=map_downsample)
    return kind.compute(path, flow=flow, size=size, window=window)


def _work(task):
    """(abs path, relpath, flow, size, map_downsample, maps, window) -> (relpath, VideoMaps or None, reason)."""
    path, rel, *settings = task
    try:
        return rel, _compute(path, *settings), None
    except VideoError as e:
        return rel, None, e.reason
    except Exception as e:  # one video's failure must not stop the run
        return rel, None, f"internal error: {type(e).__name__}: {e}"


def _crashed(task):
    return task[1], None, CRASH_REASON


def _gpu_compute(local_rank: int | None = None):
    """The GPU twin of the per-video work (mcl_fast.gpu.video_maps), after checking once that it
    can run here; local_rank (torchrun): make cuda:local_rank this process's device first."""
    try:
        gpu_twin("prepare.require_gpu_stack")()  # fail once, now, rather than once per video
        if local_rank is not None:
            from .._backend import require_cupy

            cp = require_cupy()
            count = cp.cuda.runtime.getDeviceCount()
            if local_rank >= count:
                raise InputError(f"--device cuda: LOCAL_RANK {local_rank} but {count} CUDA device(s) visible; "
                                 "start at most one process per GPU (torchrun --nproc-per-node)")
            cp.cuda.Device(local_rank).use()  # the twin's CuPy work and DALI decoder follow it
        return gpu_twin("prepare.compute_video_maps")
    except (ImportError, AttributeError) as e:
        raise InputError(f"--device cuda cannot run here: {e}") from None


def _gpu_results(tasks, compute):
    for path, rel, flow, size, map_downsample, *_ in tasks:  # paper maps only (other kinds refuse cuda)
        try:
            maps = compute(path, flow=flow, size=size, map_downsample=map_downsample)
            maps.fingerprint = source_fingerprint(path)
            yield rel, maps, None
        except VideoError as e:
            yield rel, None, e.reason
        except Exception as e:
            if _is_device_error(e):
                raise  # a sticky CUDA error or out of memory is the machine's, not this video's
            yield rel, None, f"internal error: {type(e).__name__}: {e}"


def _is_device_error(e: Exception) -> bool:
    """CUDA runtime/driver errors and device out-of-memory (CuPy's classes, matched by name so
    this module never imports CuPy)."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"CUDARuntimeError", "CUDADriverError", "OutOfMemoryError", "CompileException"})


def _results(tasks, workers: int, gpu_compute=None):
    if gpu_compute is not None:  # in this process: no GPU work in forked or spawned workers
        return _gpu_results(tasks, gpu_compute)
    if workers <= 0:
        return (_work(t) for t in tasks)
    return crash_tolerant_map(_work, tasks, workers, on_crash=_crashed)


# --------------------------------------------------------------------------------- prepare


def prepare(videos, out, *, flow: str = "tvl1", size: int = 128, workers: int = 1, device: str = "cpu",
            strict: bool = False, map_downsample: int = 4, retry_errors: bool = False, progress: bool = True,
            root=None, maps: str = PAPER.name, window: int | None = None, distributed: bool | None = None,
            repair: bool = False, verify_all: bool = False) -> PrepareReport:
    """Build or resume the motion store `out` from `videos` (a folder, a list/split file, one
    video file, or a list of paths relative to `root`).

    maps="paper" (default): the paper's motion maps (eq. 1), block-averaged by map_downsample.
    Another kind of maps (store_kinds.KINDS) computes its own (MapsKind.compute) and checks its
    settings (MapsKind.prepare_settings): the release's takes `window`, 8 for UCF101 (the default)
    or 4 for Kinetics, leaves map_downsample unused, runs on the CPU only, and its store also keeps
    each video's clip magnitudes and encoded flows.

    Finished videos are never recomputed, except, with `repair`, those of the list whose stored
    bytes fail their checksum (damaged) or whose source changed since (stale: its fingerprint);
    without `repair` they are counted in the report (report.needs_repair) and kept. The check
    reads only the shards and sources changed since the last one (mcl_fast/motion/store_verified.py);
    `verify_all` reads every held video and source. repair also
    lets the store be opened when its shards hold complete blocks of videos the index does not
    know (an older index.json restored): they are kept in place, marked orphaned (StoreWriter);
    without it that is a StoreError and nothing is changed. Videos recorded as errors are skipped
    unless `retry_errors`. workers: CPU processes (0 computes in this process); device="cuda" computes
    with mcl_fast.gpu.video_maps in this process. progress: a progress bar (stderr) and the
    one-line summary (stdout). strict: raise PrepareFailed at the end (after the store is
    complete for every good video) when any input is an error.

    Under torchrun (WORLD_SIZE > 1) every rank calls prepare with the same arguments and the job
    shares the work (see the module docstring): `workers` are per rank, device="cuda" uses
    cuda:LOCAL_RANK, rank 0 prints the job's bar and summary, and every rank returns the job's
    report (done and skipped_existing over all ranks, errors of the merged store).
    distributed: None (default) shares the work when torchrun started this process with
    WORLD_SIZE > 1; False runs this process alone even then (a call on one rank only).
    """
    if flow not in FLOW_METHODS:
        raise InputError(f"unknown flow method {flow!r}; choose one of {', '.join(FLOW_METHODS)}")
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if maps not in MAPS_KINDS:
        raise InputError(f"unknown maps {maps!r}; choose one of {', '.join(MAPS_KINDS)}")
    kind = KINDS[maps]
    size, map_downsample, workers = int(size), int(map_downsample), int(workers)
    if kind.uses_map_downsample and (map_downsample < 1 or size < 2 * map_downsample):
        raise InputError(f"need map_downsample >= 1 and size >= 2 * map_downsample, got size {size}, "
                         f"map_downsample {map_downsample}")
    if workers < 0:
        raise InputError(f"workers must be >= 0, got {workers}")
    if device == "cuda" and flow != "tvl1":
        # Checked before the store opens: per-video errors would make a rerun skip every video.
        raise InputError(f"--device cuda computes TV-L1 flow only; use --flow tvl1, or --device cpu for {flow}")
    if window is not None and kind not in WINDOWED:
        takers = " or ".join(f"--maps {k.name}" for k in WINDOWED)
        raise InputError(f"--window sets the window of flows of {'/'.join(k.name for k in WINDOWED)} maps; it needs "
                         f"{takers}")
    try:
        window = kind.prepare_settings({"window": window} if kind in WINDOWED else {}, device).get("window")
    except ValueError as e:
        raise InputError(str(e)) from None
    if not kind.uses_map_downsample:
        map_downsample = None
    ranks = Ranks.from_env() if distributed is not False else Ranks()
    gpu_compute = None
    if device == "cuda":
        gpu_compute = _gpu_compute(ranks.local_rank if ranks.distributed else None)
    try:
        root, rels = collect_videos(videos, root)
    except VideoListError as e:
        raise InputError(str(e)) from None
    settings = dict(root=root, flow=flow, size=size, map_downsample=map_downsample, maps=maps, window=window)
    work = _Run(flow=flow, size=size, map_downsample=map_downsample, maps=maps, window=window, workers=workers,
               gpu_compute=gpu_compute, retry_errors=retry_errors, progress=progress, repair=bool(repair),
               verify_all=bool(verify_all))
    if ranks.distributed:
        report = _prepare_ranks(ranks, rels, out, settings, work)
    else:
        report = PrepareReport(store=os.fspath(out))
        try:
            writer = StoreWriter(out, repair=repair, **settings)
        except OSError as e:
            if e.errno not in _CANNOT_WRITE or not _is_store(out):
                raise
            report = _read_only(out, rels, settings, work, report, e)
        else:
            with writer:
                suspect = work.check_store(out, rels, writer, report)
                todo = work.todo(rels, writer.videos, writer.errors, report, suspect)
                try:
                    work.compute(todo, root, writer, report)
                finally:
                    writer.compact()  # on KeyboardInterrupt too: the journal is folded in either way
                report.errors = [{"path": rel, "reason": writer.errors[rel]} for rel in rels if rel in writer.errors]
    if progress and ranks.is_main:
        print(report.summary(), flush=True)
    if strict and report.errors:
        raise PrepareFailed(report)
    return report


_CANNOT_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _is_store(out) -> bool:
    from .store import INDEX

    return os.path.isfile(os.path.join(out, INDEX))


def _read_only(out, rels, settings: dict, work: "_Run", report: PrepareReport, err: OSError) -> PrepareReport:
    """prepare on a store this process cannot write: done when nothing is left to do (every
    video of the list in the store or recorded as an error, and nothing to repair), else one
    PrepareError sentence saying what is left and why it cannot be done."""
    store = MotionStore(out, verify=False)
    asked = {"flow": settings["flow"], "size": settings["size"], "map_downsample": settings["map_downsample"],
             "maps": settings["maps"], "window": settings["window"]}
    found = {"flow": store.flow, "size": store.size, "map_downsample": store.map_downsample, "maps": store.maps,
             "window": store.window}
    if asked != found:
        differ = ", ".join(f"{k} {found[k]!r} (asked for {v!r})" for k, v in asked.items() if found[k] != v)
        raise StoreError(f"{out} was prepared with {differ}; use the store's settings, or another output folder")
    errors = {e["path"]: e["reason"] for e in store.errors}
    suspect = work.find_suspects(store, rels, settings["root"], report)
    todo = work.todo(rels, store.names, errors, report, suspect)
    left = len(todo) + (len(suspect) if work.repair else 0)
    if left:
        raise PrepareError(f"{out} cannot be written ({os.strerror(err.errno)}: {err.filename}) and {left} videos "
                           "are left to prepare or repair; make the store writable or choose another --out")
    report.errors = [{"path": rel, "reason": errors[rel]} for rel in rels if rel in errors]
    return report


@dataclass
class _Run:
    """What prepare computes and how (one process, or one torchrun rank)."""

    flow: str
    size: int
    map_downsample: int | None
    maps: str
    window: int | None
    workers: int
    gpu_compute: object
    retry_errors: bool
    progress: bool
    repair: bool = False
    verify_all: bool = False  # check every held video and source, not only what changed since the last check

    def todo(self, rels, videos: dict, errors: dict, report: PrepareReport, suspect=frozenset()) -> list[str]:
        """The videos of `rels` still to compute (counting the sound ones already in the store in
        report; `suspect`: the damaged and stale ones, counted apart)."""
        todo = []
        for rel in rels:
            if rel in videos:
                report.skipped_existing += rel not in suspect
            elif rel not in errors or self.retry_errors:
                todo.append(rel)
        return todo

    def find_suspects(self, store, rels, root: str, report: PrepareReport, record: bool = False) -> set[str]:
        """The videos of `rels` in the store whose bytes fail their checksum (report.damaged) or
        whose source file is no longer the one their maps were made from (report.stale). `store`:
        a MotionStore or the StoreWriter holding it (`in`, check, index_columns). Shards and
        sources unchanged since the last check are not read again (store_verified; not with
        verify_all); `record`: write what this check verified into the store."""
        started = time.time_ns()
        held = [rel for rel in rels if rel in store]
        columns = store.index_columns()
        rows = columns.names.rows(held)
        last = VerifiedRecord.load(store.path)
        known = VerifiedRecord(store.path) if self.verify_all else last
        digests = shard_digests(columns)
        sound = known.sound_shards(digests)
        files = shard_files(columns, rows)
        paths = [os.path.join(root, rel) for rel in held]
        fingerprints = [columns.fingerprints[r] if columns.has(r, "fingerprint") else None for r in rows.tolist()]
        fresh = known.sound_sources(held, paths, fingerprints)
        to_read = [i for i in range(len(held)) if not sound.issuperset(files[i])]
        bar = None
        if self.progress and len(to_read) >= CHECK_BAR_MIN:
            from tqdm import tqdm

            bar = tqdm(total=len(to_read), unit="video", desc="checking the store", dynamic_ncols=True,
                       file=sys.stderr)
        damaged = set()
        try:
            for i in to_read:
                try:
                    store.check(held[i])
                except StoreError:
                    damaged.add(i)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        stale = {i for i in range(len(held)) if i not in damaged and not fresh[i]
                 and _source_changed(paths[i], fingerprints[i])}
        report.damaged += [held[i] for i in sorted(damaged)]
        report.stale += [held[i] for i in sorted(stale)]
        if record:
            self._record(last, started, digests, sound, files, damaged, held, paths, fingerprints, stale)
        return set(report.damaged) | set(report.stale)

    @staticmethod
    def _record(last, started, digests, sound, files, damaged, held, paths, fingerprints, stale) -> None:
        """Write what a check verified (store_verified): the shards all of whose videos matched
        (sound before, or every video in them read now) and the sources that matched."""
        matched: dict[str, int] = {}
        for i, names in enumerate(files):
            if i not in damaged:
                for name in set(names):
                    matched[name] = matched.get(name, 0) + 1
        bad = {name for i in damaged for name in files[i]}
        passed = {name for name, (count, _) in digests.items() if name not in bad
                  and (name in sound or matched.get(name, 0) == count)}
        good = [i for i in range(len(held)) if i not in damaged and i not in stale]
        new = last.updated(started, digests, passed, [held[i] for i in good], [paths[i] for i in good],
                           [fingerprints[i] for i in good])
        if not new.same_as(last):
            new.write()

    def check_store(self, out, rels, writer: StoreWriter, report: PrepareReport) -> set[str]:
        """Find the damaged and stale videos of `rels` (find_suspects); with repair, take them out
        of the store (to be computed again) and return nothing, else return them."""
        report.orphaned = [t.describe() for t in writer.orphaned]
        suspect = self.find_suspects(writer, rels, writer.root, report, record=True)  # the writer's entries
        if self.repair:
            writer.drop(sorted(suspect))
            report.repaired = True
            return set()
        return suspect

    def compute(self, rels, root: str, writer, report: PrepareReport, *, desc: str = "prepare",
                position: int = 0) -> None:
        """Compute `rels` and add each to `writer` (maps or error), with a progress bar."""
        tasks = [(os.path.join(root, rel), rel, self.flow, self.size, self.map_downsample, self.maps, self.window)
                 for rel in rels]
        bar = None
        if self.progress and tasks:
            from tqdm import tqdm

            bar = tqdm(total=len(tasks), unit="video", desc=desc, position=position, dynamic_ncols=True,
                       file=sys.stderr)
        new_errors = 0
        workers = min(self.workers, len(tasks)) if self.workers > 0 else 0
        results = _results(tasks, workers, self.gpu_compute)
        try:
            for rel, maps, reason in results:
                if maps is not None:
                    writer.add(rel, maps)
                    report.done += 1
                else:
                    writer.add_error(rel, reason)
                    new_errors += 1
                if bar is not None:
                    bar.set_postfix(errors=new_errors, refresh=False)
                    bar.update(1)
        finally:
            if hasattr(results, "close"):
                results.close()  # stop the workers if the loop ended early
            if bar is not None:
                bar.close()


def _prepare_ranks(ranks: Ranks, rels: list[str], out, settings: dict, work: _Run) -> PrepareReport:
    """prepare as one rank of a torchrun job (see the module docstring). Every rank returns the
    job's report: done and skipped_existing summed over ranks, errors from the merged store."""
    start = time.perf_counter()
    with ranks:
        main = None

        report = PrepareReport(store=os.fspath(out))
        suspect: set[str] = set()

        def open_store() -> int:
            # rank 0: lock the store, fold a killed job's journals, check it (with repair: drop the
            # damaged and stale videos, which every rank then finds to do), first free shard
            nonlocal main, suspect
            main = StoreWriter(out, repair=work.repair, **settings)
            main.fold_parts()
            suspect = work.check_store(out, rels, main, report)
            return main.next_free_shard()

        try:
            first_shard = ranks.on_rank0(open_store, error=PrepareError)
            # as rank 0 left it: the same on every rank (rank 0 holds it already)
            videos, errors = (main.videos, main.errors) if main is not None else store_state(out)
            todo = work.todo(rels, videos, errors, report, suspect)
            root = settings["root"]
            frames = ranks.by_stride(len(todo), lambda i: container_frames(os.path.join(root, todo[i])))
            mine = [todo[i] for i in balanced_slices(frames, ranks.world)[ranks.rank]]
            if work.workers == 0 and work.gpu_compute is None:  # this rank computes: its share of the node's cores
                import cv2

                cv2.setNumThreads(max(1, (os.cpu_count() or 1) // ranks.local_world))
            job = JobProgress(out, PART_JOURNAL_GLOB, len(todo), desc=f"prepare job ({ranks.world} ranks)",
                              position=ranks.local_world, enabled=work.progress and ranks.is_main)
            with job, PartWriter(out, rank=ranks.rank, world=ranks.world, first_shard=first_shard,
                                 known=(videos.copy(), dict(errors)), **settings) as writer:
                work.compute(mine, root, writer, report, desc=f"prepare rank {ranks.rank}", position=ranks.local_rank)
                writer.compact()
                report.done, = ranks.all_sum([report.done])  # the barrier: every rank has written its part
            ranks.on_rank0(lambda: main.fold_parts() or 0, error=PrepareError)
        finally:
            if main is not None:
                main.close()  # releases the store's lock
    errors = store_errors(out)  # the merged store's (rank 0 folded every rank's): errors.json only
    report.errors = [{"path": rel, "reason": errors[rel]} for rel in rels if rel in errors]
    if work.progress and ranks.is_main:
        seconds = time.perf_counter() - start
        print(f"prepare job: {report.done} videos on {ranks.world} ranks in {seconds:.1f} s "
              f"({report.done / max(seconds, 1e-9):.2f} videos/s)", flush=True)
    return report


# ------------------------------------------------------------------------------------- CLI


def add_args(parser) -> None:
    parser.add_argument("--videos", metavar="DIR_OR_LIST",
                        help="a folder (scanned recursively for video files) or a list/split file "
                             "(one path per line; extra tokens such as UCF101 labels are ignored); with --repair it "
                             "may be left out: the store's own videos, with the store's settings")
    parser.add_argument("--out", required=True, metavar="STORE", help="the motion store folder (created or resumed)")
    parser.add_argument("--flow", choices=FLOW_METHODS, default=None, help="optical flow (default tvl1)")
    parser.add_argument("--size", type=int, default=None,
                        help="short side of the frames the flow runs on (default 128)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (default 1; 0 computes in the main process); under torchrun, per rank")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where to compute flow and maps (cuda under torchrun: cuda:LOCAL_RANK)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if any input is an error")
    parser.add_argument("--map-downsample", type=int, default=None,
                        help="average motion maps over NxN blocks before storing (default 4)")
    parser.add_argument("--maps", choices=MAPS_KINDS, default=None,
                        help="; ".join(f"{k.name}{' (default)' if k is PAPER else ''}: {k.summary}"
                                       for k in KINDS.values()))
    parser.add_argument("--window", type=int, default=None,
                        choices=sorted({w for k in WINDOWED for w in k.option_choices["window"]}, reverse=True),
                        help=f"{' or '.join(f'--maps {k.name}' for k in WINDOWED)}: flows per frame map, 8 for "
                             "UCF101 (default) or 4 for Kinetics")
    parser.add_argument("--retry-errors", action="store_true", help="retry inputs recorded as errors by earlier runs")
    parser.add_argument("--repair", action="store_true",
                        help="recompute the videos whose stored bytes fail their checksum (damaged) or whose source "
                             "file changed since (stale), and nothing else; keep shard bytes of videos the index does "
                             "not know (an older index.json restored) in place, marked orphaned, instead of refusing")
    parser.add_argument("--verify-all", action="store_true",
                        help="check every video already in the store against its checksum and every source against "
                             "its fingerprint (default: only the shards and sources changed since the last check)")
    parser.add_argument("--root", default=None,
                        help="folder the listed paths are relative to (default: the list file's folder)")


_SETTINGS = ("flow", "size", "map_downsample", "maps", "window")


def _resolve_args(args) -> tuple[object, object, dict]:
    """(videos, root, settings) of the command line (prepare's defaults for the settings it does
    not name). Without --videos (only with --repair): the store's videos and root, and the store's
    settings wherever the command line names none."""
    given = {k: getattr(args, k) for k in _SETTINGS}
    if args.videos is None:
        if not args.repair:
            raise InputError("--videos is required (without it, --repair repairs the store's own videos)")
        store = MotionStore(args.out, verify=False)
        given = {k: getattr(store, k) if v is None else v for k, v in given.items()}
        videos, root = store.videos, store.root
    else:
        videos, root = args.videos, args.root
    return videos, root, {k: v for k, v in given.items() if v is not None}


def run(args) -> int:
    try:
        videos, root, s = _resolve_args(args)
        report = prepare(videos, args.out, workers=args.workers, device=args.device, strict=args.strict,
                         retry_errors=args.retry_errors, progress=True, root=root, repair=args.repair,
                         verify_all=args.verify_all, **s)
    except PrepareFailed:
        return 1  # the summary is already printed
    except (PrepareError, StoreError, RankError) as e:
        print(f"mcl-fast prepare: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mcl-fast prepare: interrupted; the store is valid and a rerun resumes it", file=sys.stderr)
        return 130
    return 1 if report.needs_repair else 0


def main(argv=None) -> int:
    """`python -m mcl_fast.motion.prepare ...` (the same options as `mcl-fast prepare`; torchrun's entry point)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mcl_fast.motion.prepare", description=__doc__.splitlines()[0])
    add_args(parser)
    return run_command("mcl-fast prepare", run, parser.parse_args(argv))


__all__ = ["prepare", "compute_video_maps", "PrepareReport", "PrepareError", "InputError", "PrepareFailed", "VideoMaps",
           "add_args", "run"]


if __name__ == "__main__":
    sys.exit(main())
