"""TorchVideoLoader: the same plans and the same dicts as MotionFocusedLoader, from a PyTorch
DataLoader over a CPU decoder (PyAV; decord when installed and asked for).

It is the baseline of the loader benchmark and the CPU path for H.264 (DALI's CPU decoder reads
VP8/VP9/MJPEG only). Each worker plans its batches with the same Planner and seeds as the DALI
loader, decodes exactly the planned frames (mcl_fast.video_io.read_frames: the frames a
sequential decode numbers so, in every container; the union of a sample's clips once) and
applies the torch twin of the DALI pipeline (augment.py) and the output format. Workers persist
across epochs, so the planner's per-video caches do too.
"""
from __future__ import annotations

import contextlib
import copy
import faulthandler
import logging
import pickle
import sys
from typing import Callable

import numpy as np
import torch

from ..video_io import read_frames
from ..video_io.container import decoder_threads
from ..video_io.pool import die_with_parent
from .augment import render_into
from .base import PLAN_CHUNK, LoaderBase, failure_reason
from .options import LoaderOptions
from .output import OutputFormat
from .plan import SamplePlan

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- decoders


def read_frames_decord(path: str, indices, num_frames: int | None = None) -> np.ndarray:
    """video_io.read_frames with decord (optional; `pip install decord`); num_frames is unused."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return reader.get_batch(list(np.asarray(indices, np.int64))).asnumpy()


def read_frames_torchcodec(path: str, indices, num_frames: int | None = None) -> np.ndarray:
    """video_io.read_frames with torchcodec (optional; needs FFmpeg's shared libraries); num_frames is unused."""
    from torchcodec.decoders import VideoDecoder

    frames = VideoDecoder(str(path), seek_mode="exact").get_frames_at([int(i) for i in indices]).data  # (N, 3, H, W)
    return frames.permute(0, 2, 3, 1).numpy()


DECODERS = {"pyav": read_frames, "decord": read_frames_decord, "torchcodec": read_frames_torchcodec}
_MODULES = {"decord": "decord", "torchcodec": "torchcodec.decoders"}


def decoder_problem(decoder: str) -> str | None:
    """Why `decoder` cannot run here (its package is missing or does not load), or None.

    decord is only looked up, not imported: its bundled FFmpeg 4 libraries, once loaded, break
    PyAV's VP9 encoder in the same process (avcodec_open2 "Invalid argument"; found while
    benchmarking), so it is imported where it decodes. torchcodec is imported: whether FFmpeg's
    shared libraries load is the question (it leaves PyAV working)."""
    if decoder not in _MODULES:
        return None
    if decoder == "decord":
        import importlib.util

        if importlib.util.find_spec("decord") is None:
            return "decoder='decord' needs decord (pip install decord)"
        return None
    try:
        __import__(_MODULES[decoder])
    except Exception as err:  # noqa: BLE001 (torchcodec raises RuntimeError when FFmpeg's libraries are missing)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"decoder={decoder!r} needs {decoder} (pip install {decoder}): {first}"[:300]
    return None


def available_decoders() -> list[str]:
    """The DECODERS that run here."""
    return [d for d in DECODERS if decoder_problem(d) is None]


# ------------------------------------------------------------------------------------ dataset


def decode_clips(plan: SamplePlan, read: Callable = read_frames, num_frames: int | None = None,
                 threads: int | None = None) -> list[np.ndarray]:
    """A plan's clips as (T, H, W, 3) uint8 arrays: the union of their frames decoded once.
    threads: PyAV's decoding threads in the main process (None: FFmpeg's choice, about one per
    core). In a DataLoader worker PyAV decodes on the worker's thread alone (decord is given one
    thread too): the workers are the parallelism, and frame threads there cost CPU for nothing."""
    uniq, inverse = np.unique(np.concatenate(plan.clips), return_inverse=True)
    with decoder_threads(1 if torch.utils.data.get_worker_info() is not None else threads):
        decoded = read(plan.path, uniq, num_frames)
    clips, at, every = [], 0, np.arange(len(decoded))
    for frames in plan.clips:
        rows = inverse[at:at + len(frames)]
        # A clip that is the whole decode in order (the usual case: both views cut from one clip)
        # is the decoded array itself, not a copy (~2.5 MB of new pages per clip at 320x240).
        clips.append(decoded if np.array_equal(rows, every) else decoded[rows])
        at += len(frames)
    return clips


def view_shapes(plan: SamplePlan, size: int, output: OutputFormat) -> list[tuple[int, ...]]:
    """The shape of each of a plan's views in `output`'s per-sample layout."""
    return [output.sample_shape(len(plan.clips[v.clip]), v.size or size) for v in plan.views]


def render_plan(plan: SamplePlan, size: int, read: Callable = read_frames, num_frames: int | None = None,
                output: OutputFormat | None = None, out: list[torch.Tensor] | None = None,
                decode_threads: int | None = None) -> list[torch.Tensor]:
    """Decode a plan's frames (the union of its clips, once) and render every view: a list with one
    tensor per view in `output`'s format (default ImageNet-normalised (3, T, S, S) float32).
    read(path, indices, num_frames) decodes; num_frames: the video's frame count (the store's);
    size: the views' side where the plan does not say; out: one tensor per view to write into
    (view_shapes; e.g. a sample of a batch buffer), fresh ones when None; decode_threads:
    decode_clips' threads."""
    output = output or OutputFormat()
    clips = decode_clips(plan, read, num_frames, decode_threads)
    if out is None:
        out = [torch.empty(shape, dtype=output.torch_dtype) for shape in view_shapes(plan, size, output)]
    return [render_into(clips[v.clip], v.box, v.aug, v.size or size, o, output) for v, o in zip(plan.views, out)]


@contextlib.contextmanager
def render_threads(threads: int | None):
    """torch's and OpenCV's thread counts set to `threads` while a batch renders, then restored
    (None: leave them). One thread is the cheapest per clip: a view's ops are a few milliseconds
    each, and on shared cores a second thread mostly spins and waits (issue 20 measured 0.236 ->
    0.082 CPU-s/clip at 112² with one); the process's own setting (training's) comes back after."""
    if threads is None:
        yield
        return
    import cv2

    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


class BatchBuffers:
    """The per-view batch tensors a loading process renders into.

    In a worker (shared=True) every batch gets new shared-memory tensors: they travel to the main
    process, which owns them from then on, so none is reused; allocating them shared saves the
    copy into shared memory that sending a private tensor costs. In the main process (num_workers
    0) up to `keep` sets are reused: a fresh 2 x 8 x 3 x 16 x 224² float batch is ~150 MB of new
    pages, whose faults cost ~5 ms per clip. A set is reused only when nothing but this pool refers
    to its tensors or their memory (no batch dict, view, NumPy array or other tensor on them:
    in_use), so a batch a user holds is never overwritten."""

    def __init__(self, output: OutputFormat, *, shared: bool, pinned: bool = False, keep: int = 3):
        self.output, self.shared, self.pinned, self.keep = output, shared, pinned, keep
        self.pool: list[list[torch.Tensor]] = []

    def take(self, batch: int, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """One (batch, *shape) tensor per view shape, not referenced by anything outside this pool."""
        want = [(batch, *shape) for shape in shapes]
        if not self.shared:
            for views in self.pool:
                if [tuple(t.shape) for t in views] == want and not self.in_use(views):
                    return list(views)
        views = [self._empty(shape) for shape in want]
        if not self.shared:  # newest in, oldest out: a set a user keeps leaves the pool, and stays theirs
            self.pool.append(views)
            del self.pool[:max(0, len(self.pool) - self.keep)]
        return list(views)

    def _empty(self, shape) -> torch.Tensor:
        frames, size = shape[1:][self.output.from_nhwc.index(0)], shape[1:][self.output.from_nhwc.index(1)]
        return self.output.empty_batch(shape[0], frames, size, shared=self.shared, pinned=self.pinned)

    @staticmethod
    def in_use(views: list[torch.Tensor]) -> bool:
        """True when anything besides the pool's list refers to one of `views`: a reference to the
        tensor object (getrefcount: the list, the loop variable and the call's argument are the
        pool's own three) or another tensor on its memory (a view, a slice: the storage's count
        beyond what the tensor alone gives, _storage_refs(torch.empty(0)))."""
        alone = _storage_refs(torch.empty(0))
        return any(sys.getrefcount(t) > 3 or _storage_refs(t) > alone for t in views)


def _storage_refs(tensor: torch.Tensor) -> int:
    """How many references the tensor's memory has (the tensor's own, and the temporary storage
    object asked, included)."""
    return torch._C._storage_Use_Count(tensor.untyped_storage()._cdata)


class _BatchDataset(torch.utils.data.Dataset):
    """Item (epoch, positions, indices) = that batch, planned and rendered in a worker (so the plan's
    batched structure and the failure bookkeeping stay in one place)."""

    def __init__(self, loader: "TorchVideoLoader"):
        self.loader = loader
        self.buffers: BatchBuffers | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __getitem__(self, item) -> dict:
        loader = self.loader
        epoch, positions, indices = item
        plans = loader.plan_chunk(epoch, [(positions, indices)])[0]
        with render_threads(loader.render_threads):
            return self._render_batch(epoch, positions, indices, plans)

    def _render_batch(self, epoch, positions, indices, plans) -> dict:
        loader = self.loader
        read = DECODERS[loader.decoder]
        if self.buffers is None:  # made in the process that renders: a worker or the main one
            self.buffers = BatchBuffers(loader.output, shared=torch.utils.data.get_worker_info() is not None,
                                        pinned=loader.pin_memory and torch.cuda.is_available())
        shapes = view_shapes(plans[0], loader.size, loader.output)
        views = self.buffers.take(len(plans), shapes)
        kept = []
        for b, (plan, pos, idx) in enumerate(zip(plans, positions, indices)):
            for _ in range(loader.planner.MAX_ATTEMPTS):
                own = view_shapes(plan, loader.size, loader.output)
                if own != shapes:  # not a decoding failure: say so
                    raise ValueError(f"the views of {plan.path} have shapes {own}, the batch's first sample {shapes}: "
                                     f"a batch needs equal clip lengths and sizes")
                try:
                    render_plan(plan, loader.size, read, int(loader.store.info(plan.video)["num_frames"]),
                                loader.output, out=[v[b] for v in views], decode_threads=loader.render_threads)
                except Exception as err:  # noqa: BLE001 (mark the file bad; the replan replaces it)
                    log.debug("reading %s failed", plan.path, exc_info=err)
                    loader.report_failure(plan.path, failure_reason(err))
                    plan = loader.planner.plan(epoch, int(pos), int(idx))  # now resolves to a replacement
                    continue
                break
            else:
                raise RuntimeError(f"{loader.planner.MAX_ATTEMPTS} videos in a row failed to decode near "
                                   f"position {pos} of epoch {epoch}")
            kept.append(plan)
        batch = loader.finish_batch(loader.batch_dict(views, kept, "cpu"))
        # Replacements travel to the main process, which counts them and reports each file once.
        batch["_failures"] = [list(p.failures) for p in kept]
        return batch


class _WorkerInit:
    """The DataLoader's worker_init_fn: the loader's own set-up, then the user's worker_init_fn."""

    def __init__(self, user_fn: Callable | None = None):
        self.user_fn = user_fn

    def __call__(self, worker_id: int) -> None:
        # Torch's own check (is os.getppid() still the same?) sees the forkserver, not the training
        # process: without this a SIGKILLed run left its workers, and so their forkserver, running.
        die_with_parent()
        # A native crash in a decoder then names the Python frame it happened under in the worker's
        # stderr (the DataLoader's own handler only says "segmentation fault").
        faulthandler.enable(all_threads=True)
        if self.user_fn is not None:
            self.user_fn(worker_id)


def _check_picklable(name: str, value) -> None:
    """TypeError now, naming the option, when `value` cannot travel to the worker processes."""
    if value is None:
        return
    try:
        pickle.dumps(value)
    except Exception as err:  # noqa: BLE001 (pickle raises several kinds)
        raise TypeError(f"{name} must be picklable to run in the worker processes (num_workers > 0): a module-level "
                        f"function or an instance of a module-level class, not a lambda or a local function; "
                        f"{type(err).__name__}: {err}") from None


def torch_device(device) -> torch.device:
    """torch.device of a user's device: "cpu", "cuda", "cuda:N", or "gpu" (the DALI loader's name, an alias of "cuda")."""
    return torch.device("cuda" if str(device) == "gpu" else device)


def _private_generator(seed: int, shard_id: int) -> torch.Generator:
    """The DataLoader's own generator, a function of (seed, shard).

    A DataLoader draws its workers' base seed from `generator` each time it makes an iterator
    (every epoch without workers, once with persistent workers); left None, that draw comes from
    torch's global generator, which training shares (MoCo's shuffle-BN permutation). The global
    stream then depended on how many iterators this process had made: a resumed run (one fresh
    iterator mid-epoch) drew the permutations of the straight run shifted by one, so --resume was
    not exact. With its own generator the loader never touches the global stream, and its
    workers' seeds are the same in every run."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, shard_id]).generate_state(1)[0]))


class _BatchSampler:
    """The DataLoader's sampler: yields (epoch, positions, indices) for each batch of the iteration
    in progress, which TorchVideoLoader.__iter__ sets (`items`) before it iterates the DataLoader.

    Iterating it has no side effect, and must not: a multi-process DataLoader calls iter(sampler)
    twice when it makes its iterator (in _BaseDataLoaderIter.__init__ and again in _reset), so a
    sampler that consumed the loader's skip point there lost it to the first call, and a resumed
    run with workers restarted the epoch from its first batch."""

    def __init__(self, batches: int):
        self.batches = batches
        self.items: list[tuple[int, np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        return iter(self.items)


class TorchVideoLoader(LoaderBase):
    """Same options and outputs as MotionFocusedLoader (options.LoaderOptions), plus:

    num_workers: DataLoader worker processes (0: decode in the main process); with num_workers > 0
    a script must start under `if __name__ == "__main__":` (workers start a fresh interpreter that
    imports it). decoder: "pyav" (default), "decord" or "torchcodec" (each installed separately;
    available_decoders() lists those that run here). device: where the tensors go ("cpu",
    "cuda", "cuda:N"; "gpu" is an alias of "cuda"). The DataLoader's own options, passed to it:
    pin_memory, prefetch_factor, persistent_workers (default True: workers and the planner's
    per-video caches live across epochs; False starts them each epoch), timeout (seconds to wait
    for a batch), worker_init_fn (run in each worker after the loader's own set-up).
    multiprocessing_context: how workers start, "forkserver" (default: from a clean process, so
    no thread pool, lock or CUDA state of the training process is inherited half-copied; ~1-2 s
    per worker, once, as workers persist) or "fork" / "spawn". The batch_transform and
    worker_init_fn must be picklable (checked at construction when num_workers > 0).
    render_threads: torch's and OpenCV's threads while a batch renders in a loading process
    (default 1, the cheapest per clip: each worker, and with num_workers=0 the main process, which
    gets its own setting back after each batch), and with num_workers=0 PyAV's decoding threads
    too (a worker decodes on one); None leaves the process's setting and FFmpeg's own choice.
    With num_workers=0 batches are rendered into a few reused buffers, never one a batch you
    still hold (or any tensor or array on it) refers to; with workers each batch is new.
    """

    OWN_OPTIONS = ("num_workers", "decoder", "device", "pin_memory", "prefetch_factor", "persistent_workers",
                   "timeout", "worker_init_fn", "multiprocessing_context", "render_threads")

    def __init__(self, videos, store, batch_size: int, *, num_workers: int = 4, decoder: str = "pyav",
                 device: str = "cpu", pin_memory: bool = False, prefetch_factor: int = 2,
                 persistent_workers: bool = True, timeout: float = 0, worker_init_fn: Callable | None = None,
                 multiprocessing_context: str = "forkserver", render_threads: int | None = 1, **options):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        problem = decoder_problem(decoder)
        if problem:
            raise ImportError(problem)
        options = LoaderOptions.from_kwargs("TorchVideoLoader", options, self.OWN_OPTIONS)
        if int(num_workers) > 0:
            _check_picklable("batch_transform", options.batch_transform)
            _check_picklable("worker_init_fn", worker_init_fn)
        super().__init__(videos, store, batch_size, options)
        self.num_workers, self.decoder, self.device = int(num_workers), decoder, torch_device(device)
        self.pin_memory, self.prefetch_factor = pin_memory, int(prefetch_factor)
        self.persistent_workers, self.timeout, self.worker_init_fn = bool(persistent_workers), timeout, worker_init_fn
        if multiprocessing_context not in ("forkserver", "fork", "spawn"):
            raise ValueError(f"multiprocessing_context must be 'forkserver', 'fork' or 'spawn', got "
                             f"{multiprocessing_context!r}")
        self.multiprocessing_context = multiprocessing_context
        if render_threads is not None and int(render_threads) < 1:
            raise ValueError(f"render_threads must be >= 1 or None, got {render_threads!r}")
        self.render_threads = None if render_threads is None else int(render_threads)
        self._data = None

    def _dataloader(self):
        if self._data is None:
            kwargs = {"prefetch_factor": self.prefetch_factor, "persistent_workers": self.persistent_workers,
                      "multiprocessing_context": self.multiprocessing_context, "timeout": self.timeout,
                      "worker_init_fn": _WorkerInit(self.worker_init_fn)} if self.num_workers > 0 else {}
            # batch_size=None: each item already is a batch (planned together, like the DALI loader).
            # No reference cycle through the DataLoader: the dataset holds a copy of this loader
            # without it and the sampler no loader at all, so dropping the loader stops its workers.
            self._data = torch.utils.data.DataLoader(_BatchDataset(copy.copy(self)), batch_size=None,
                                                     sampler=_BatchSampler(len(self)),
                                                     num_workers=self.num_workers, pin_memory=self.pin_memory,
                                                     generator=_private_generator(self.seed, self.shard_id),
                                                     **kwargs)
        return self._data

    def __iter__(self):
        data = self._dataloader()
        epoch, batches = self._begin_pass()  # consumes the skip, once
        data.sampler.items = [(epoch, p, i) for p, i in batches]
        for batch in data:
            failures = batch.pop("_failures")  # per sample: [(path, reason)] of the videos it replaced
            self.num_replaced += sum(1 for f in failures if f)
            for path, reason in (f for sample in failures for f in sample):
                self.report_failure(path, reason)
            if self.device.type != "cpu":
                batch = {k: [t.to(self.device, non_blocking=True) for t in v] if isinstance(v, list)
                         else v.to(self.device, non_blocking=True) for k, v in batch.items()}
            yield batch

    def close(self) -> None:
        """Stop the worker processes now (they persist across epochs; the next iteration starts new ones)."""
        data, self._data = self._data, None
        iterator = getattr(data, "_iterator", None) if data is not None else None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_data"] = None  # workers do not carry the DataLoader (and its worker handles)
        if self.options.labels is not None:  # resolved into self.labels: not a second per-video copy
            state["options"] = self.options.replace(labels=None)
        return state


__all__ = ["TorchVideoLoader", "render_plan", "decode_clips", "view_shapes", "BatchBuffers", "DECODERS",
           "available_decoders", "decoder_problem", "PLAN_CHUNK",
           "torch_device"]
