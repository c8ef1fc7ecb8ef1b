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

import copy
import faulthandler
import logging
import pickle
from typing import Callable

import numpy as np
import torch

from ..video_io import read_frames
from ..video_io.pool import die_with_parent
from .augment import render_view
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


def render_plan(plan: SamplePlan, size: int, read: Callable = read_frames, num_frames: int | None = None,
                output: OutputFormat | None = None) -> list[torch.Tensor]:
    """Decode a plan's frames (the union of its clips, once) and render every view: a list with one
    tensor per view in `output`'s format (default ImageNet-normalised (3, T, S, S) float32).
    read(path, indices, num_frames) decodes; num_frames: the video's frame count (the store's);
    size: the views' side where the plan does not say."""
    output = output or OutputFormat()
    uniq, inverse = np.unique(np.concatenate(plan.clips), return_inverse=True)
    decoded = read(plan.path, uniq, num_frames)
    clips, at = [], 0
    for frames in plan.clips:
        clips.append(decoded[inverse[at:at + len(frames)]])
        at += len(frames)
    return [output.apply(render_view(clips[v.clip], v.box, v.aug, v.size or size)) for v in plan.views]


class _BatchDataset(torch.utils.data.Dataset):
    """Item (epoch, positions, indices) = that batch, planned and rendered in a worker (so the plan's
    batched structure and the failure bookkeeping stay in one place)."""

    def __init__(self, loader: "TorchVideoLoader"):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __getitem__(self, item) -> dict:
        loader = self.loader
        epoch, positions, indices = item
        read = DECODERS[loader.decoder]
        plans = loader.plan_chunk(epoch, [(positions, indices)])[0]
        views, kept = [], []
        for plan, pos, idx in zip(plans, positions, indices):
            for _ in range(loader.planner.MAX_ATTEMPTS):
                try:
                    rendered = render_plan(plan, loader.size, read, int(loader.store.info(plan.video)["num_frames"]),
                                           loader.output)
                except Exception as err:  # noqa: BLE001 (mark the file bad; the replan replaces it)
                    log.debug("reading %s failed", plan.path, exc_info=err)
                    loader.report_failure(plan.path, failure_reason(err))
                    plan = loader.planner.plan(epoch, int(pos), int(idx))  # now resolves to a replacement
                    continue
                break
            else:
                raise RuntimeError(f"{loader.planner.MAX_ATTEMPTS} videos in a row failed to decode near "
                                   f"position {pos} of epoch {epoch}")
            views.append(rendered)
            kept.append(plan)
        batch = loader.finish_batch(loader.batch_dict([torch.stack(v) for v in zip(*views)], kept, "cpu"))
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
    """

    OWN_OPTIONS = ("num_workers", "decoder", "device", "pin_memory", "prefetch_factor", "persistent_workers",
                   "timeout", "worker_init_fn", "multiprocessing_context")

    def __init__(self, videos, store, batch_size: int, *, num_workers: int = 4, decoder: str = "pyav",
                 device: str = "cpu", pin_memory: bool = False, prefetch_factor: int = 2,
                 persistent_workers: bool = True, timeout: float = 0, worker_init_fn: Callable | None = None,
                 multiprocessing_context: str = "forkserver", **options):
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
        return state


__all__ = ["TorchVideoLoader", "render_plan", "DECODERS", "available_decoders", "decoder_problem", "PLAN_CHUNK",
           "torch_device"]
