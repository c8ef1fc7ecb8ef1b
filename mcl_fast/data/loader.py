"""MotionFocusedLoader: motion-focused clips from a DALI pipeline, as dicts of torch tensors.

    loader = MotionFocusedLoader(store.videos, store, batch_size=8, size=112, device="cuda")
    for epoch in range(epochs):
        loader.set_epoch(epoch)     # optional (each pass moves on by itself); pins the epoch for resume
        for batch in loader:        # views: [query, key] (B, 3, T, S, S); motion (B, T', H', W'); index (B,)
            ...

The planner (planner.py) plans clips, crops and augmentation from (seed, epoch, position); a DALI
pipeline (pipeline.py) decodes exactly those frames on NVDEC or DALI's CPU decoder and applies the
views. Bad files are replaced and reported once; construction checks the files against the store.
The batches, options and checks: docs/loader.md; bad input: docs/faults.md.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..video_io import read_frames
from .base import PLAN_CHUNK, LoaderBase, UnsupportedCodec, failure_reason, meta_fields, resolve_store
from .checks import PROBE_THREADS
from .nvdec import dali_only_culprits, refuse_unsupported
from .options import LoaderOptions
from .plan import MotionSampler, SamplePlan
from .torch_loader import BatchBuffers

log = logging.getLogger(__name__)

DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})  # what fn.decoders.video reads without a GPU

__all__ = ["MotionFocusedLoader", "LoaderBase", "UnsupportedCodec", "failure_reason", "meta_fields", "resolve_store",
           "DALI_CPU_CODECS", "dali_device"]


# --------------------------------------------------------------------------------- the loader


class MotionFocusedLoader(LoaderBase):
    """Motion-focused clips decoded by DALI (see the module docstring and docs/loader.md).

    videos: store keys; store: a MotionStore or its path; batch_size: per shard (a config's global
    batch divided by the number of ranks).
    device: "cuda" (or "gpu", "cuda:N"; NVDEC, H.264/HEVC/VP9/AV1..., outputs on the current CUDA
      device: call torch.cuda.set_device(local_rank) first, or pass device_id / "cuda:N") or "cpu"
      (DALI's CPU decoder: VP8, VP9, MJPEG only; transcode H.264 with `mcl-fast transcode --codec
      vp9`). `loader.device` is DALI's name of it: "gpu" or "cpu".
    num_threads, prefetch: DALI worker threads and prefetch depth (batches); device_id: the GPU.
    **options: the options both loaders share (options.LoaderOptions): clip_len, stride, size,
      augment, sampling, preset, clip_sampler, two_clips, views, motion_size, normalize, dtype,
      layout, labels, seed, shard_id, num_shards (default: the process group's), shuffle,
      drop_last (default True), return_meta, batch_transform, video_root, verify,
      check_fingerprints, min_frames.

    verify (default "lazy"): check each file against the store the first time this process plans
    it, a failing file being replaced and reported by name; "eager" (or True): the files of this
    rank's first-epoch shard at construction, a failure being an error (checks.check_files): its content fingerprint is the one the maps were made from
    (check_fingerprints=False opts out: use files that changed since), its frame count (where the
    container declares one) and frame size agree, on the CPU its codec is one DALI's CPU decoder
    reads, and on the GPU its stream is one NVDEC decodes (video_io.nvdec_support: codec, profile,
    chroma format, bit depth, size; a second header read per file, eager only). It opens the
    file's header and reads three 64 KiB ranges of it (~1 ms a file; eager: checks.PROBE_THREADS
    threads, a progress bar past checks.PROGRESS_MIN videos). verify=False: sizes are read lazily,
    the first time each video is planned, and a file NVDEC cannot decode is replaced when DALI
    first fails on it. This loader also decodes each file's first frame before it first plans it.
    min_frames: videos shorter than a clip ((clip_len - 1) * stride + 1 frames) are kept and their
    last frame repeats (counted in one notice, listed in `short_videos`); min_frames=N drops the
    videos shorter than N frames instead (listed in `dropped_videos`; `videos` and `index` then
    refer to the videos kept).
    """

    OWN_OPTIONS = ("device", "num_threads", "prefetch", "device_id")
    FIRST_FRAME_CHECK = True  # a file failing inside the DALI pipeline costs a rebuild: found before

    def __init__(self, videos, store, batch_size: int, *, device: str = "cuda", num_threads: int = 4,
                 prefetch: int = 2, device_id: int | None = None, **options):
        from mcl_fast._backend import has_gpu, require_dali

        device, device_id = dali_device(device, device_id)
        require_dali()
        if device == "gpu" and not has_gpu():
            raise RuntimeError("device='cuda' needs a CUDA GPU (and CuPy); none found. Use device='cpu' with "
                               "VP9 videos (`mcl-fast transcode --codec vp9`) or TorchVideoLoader")
        super().__init__(videos, store, batch_size,
                         LoaderOptions.from_kwargs("MotionFocusedLoader", options, self.OWN_OPTIONS),
                         codecs=DALI_CPU_CODECS if device == "cpu" else None,
                         nvdec=device == "gpu")  # the file scan checks NVDEC's minimum frame sizes
        if self.nvdec and self.options.check_mode == "eager":  # NVDEC's formats (codec, profile, chroma, bit depth): named now
            refuse_unsupported([self.paths(v) for v in self.videos], "MotionFocusedLoader(device='gpu')",
                               PROBE_THREADS)
        self.device, self.num_threads, self.prefetch, self.device_id = device, int(num_threads), int(prefetch), device_id
        # CPU: DALI decodes, crops and resizes (uint8); colour, blur, flip and the output format run
        # on the host (augment.finish_view), ~3x cheaper than DALI's CPU operators for them. Set it
        # False before iterating to run DALI's whole graph on the CPU (the GPU's; tests compare them).
        self.host_views = device == "cpu"
        self._buffers = None  # the CPU mode's reused batch tensors (torch_loader.BatchBuffers)
        self._pipe = None
        self._feed: _Feeder | None = None
        if device == "gpu":  # the planner's batched steps on the GPU, given to it once
            self.planner = self._planner(_gpu_box_selector(self.clip_sampler), _gpu_clip_scorer(self.clip_sampler))

    @property
    def torch_device(self) -> torch.device:
        if self.device == "gpu":
            return torch.device("cuda", self.device_id if self.device_id is not None else torch.cuda.current_device())
        return torch.device("cpu")

    def _source(self):
        return self._feed()

    def _build(self):
        from .pipeline import PipelineSpec, build_view_pipeline

        self._spec = PipelineSpec.from_layout(self.layout, self.output, host_views=self.host_views)
        self._pipe = build_view_pipeline(self._source, self._spec, batch_size=self.batch_size, device=self.device,
                                         num_threads=self.num_threads, device_id=self.device_id,
                                         prefetch=self.prefetch, seed=self.seed)

    def __iter__(self):
        from .pipeline import to_torch

        epoch, batches = self._begin_pass()
        if self._pipe is None:
            self._build()
        self._feed = _Feeder(self, epoch, batches)
        dtype = self.output.torch_dtype if self.output.dtype == "bfloat16" else None
        finished = False
        try:
            done = 0
            while done < len(batches):
                try:
                    outputs = self._pipe.run()
                except StopIteration:
                    raise RuntimeError("the DALI pipeline ended the epoch early") from None
                except Exception as err:  # a decode failure inside DALI: find it, replace it, go on
                    if self._feed.error is not None:
                        raise self._feed.error from None
                    self._recover(done, err)
                    continue
                plans = self._feed.served.pop(done)
                self.count_replacements(plans)
                if self._spec.host_views:
                    if self._buffers is None:
                        self._buffers = BatchBuffers(self.output, shared=False)
                    views = finish_views(outputs, plans, self.output, self._buffers)
                else:
                    views = [to_torch(v, self.torch_device, dtype) for v in outputs]
                done += 1
                yield self.finish_batch(self.batch_dict(views, plans, self.torch_device))
            try:  # the source raised StopIteration after the last batch: drain it, rewind
                self._pipe.run()
            except StopIteration:
                self._pipe.reset()
                finished = True
        finally:
            if not finished:  # left mid-epoch: prefetched batches would leak into the next epoch
                self._pipe = None

    def _recover(self, batch_no: int, err: Exception) -> None:
        """A batch failed inside DALI: find the bad files among the batches in flight, mark them,
        rebuild the pipeline and restart feeding at `batch_no` (its plans now replace those files).
        Bad files are those PyAV cannot decode; when PyAV decodes them all (device="gpu"), those
        NVDEC cannot (nvdec.dali_only_culprits). Each is reported once, like any bad file."""
        in_flight = [plan for number in sorted(k for k in self._feed.served if k >= batch_no)
                     for plan in self._feed.served[number]]
        culprits = _pyav_culprits(in_flight, self.store)
        if not culprits and self.device == "gpu":
            culprits = dali_only_culprits(in_flight, self.torch_device.index)
        if not culprits:
            alone = " or alone with NVDEC" if self.device == "gpu" else ""
            raise RuntimeError(f"the DALI pipeline failed on batch {batch_no} and no video in it fails to "
                               f"decode with PyAV{alone}: {err}") from err
        log.debug("DALI failed on batch %d (files %s)", batch_no, ", ".join(culprits), exc_info=err)
        for path, reason in culprits.items():
            self.report_failure(path, reason)
        self._feed.restart(batch_no)
        self._build()


def finish_views(outputs, plans, output, buffers: BatchBuffers) -> list[torch.Tensor]:
    """The host half of the CPU mode: each pipeline output, (B, T, S, S, 3) uint8 resized crops in
    DALI's buffers (valid until the next run), coloured, blurred, flipped and laid out as `output`
    into a batch tensor per view taken from `buffers` (reused once nothing refers to them: a fresh
    2 x 8 x 16 x 224² float batch is ~150 MB of new pages), with the plans' draws (augment.finish_view)."""
    from .augment import finish_view, opencv_threads

    pixels = [np.asarray(resized.as_tensor()) for resized in outputs]  # no copy: DALI's own buffers
    views = buffers.take(len(plans), [output.sample_shape(p.shape[1], p.shape[2]) for p in pixels])
    with opencv_threads(1):  # a view's OpenCV ops take ~1 ms each: a second thread mostly waits
        for k, (resized, batch) in enumerate(zip(pixels, views)):
            for b, plan in enumerate(plans):
                finish_view(resized[b], plan.views[k].aug, batch[b], output)
    return views


def dali_device(device: str, device_id: int | None) -> tuple[str, int | None]:
    """DALI's ("gpu" | "cpu", device_id) for a user's device: "cuda", "gpu" (an alias), "cuda:N"
    (device_id N) or "cpu"; anything else is a ValueError."""
    name = str(device)
    if name.startswith("cuda:") and name[5:].isdigit():
        if device_id is not None and int(device_id) != int(name[5:]):
            raise ValueError(f"device={device!r} and device_id={device_id} name different GPUs")
        return "gpu", int(name[5:])
    if name in ("cuda", "gpu", "cpu"):
        return ("cpu" if name == "cpu" else "gpu"), device_id
    raise ValueError(f"device must be 'cuda' (or 'gpu', 'cuda:N') or 'cpu', got {device!r}")


def _pyav_culprits(plans, store) -> dict[str, str]:
    """{path: reason} of the files among `plans` whose planned frames PyAV cannot decode."""
    culprits = {}
    for plan in plans:
        if plan.path in culprits:
            continue
        try:
            read_frames(plan.path, np.unique(np.concatenate(plan.clips)),
                        num_frames=int(store.info(plan.video)["num_frames"]))
        except Exception as exc:  # noqa: BLE001 (any failure marks the file)
            culprits[plan.path] = failure_reason(exc)
    return culprits


class _Feeder:
    """The external_source callback: plans batch after batch of one epoch and returns DALI inputs.

    It plans a chunk of batches (base.PLAN_CHUNK samples) per planner call. DALI calls it ahead of
    the consumer (prefetch), so served batches wait in `served` until the iterator pairs them with
    the pipeline's outputs. Raises StopIteration after the last batch.
    """

    def __init__(self, loader: MotionFocusedLoader, epoch: int, batches):
        self.loader, self.epoch, self.batches = loader, epoch, batches
        self.next = 0
        self.served: dict[int, list[SamplePlan]] = {}
        self.planned: dict[int, list[SamplePlan]] = {}  # planned ahead, not served yet
        self.error: Exception | None = None
        self.per_chunk = max(1, PLAN_CHUNK // loader.batch_size)

    def restart(self, batch_no: int) -> None:
        self.served = {k: v for k, v in self.served.items() if k < batch_no}
        self.planned = {}  # replans: the failed files are now replaced
        self.next = batch_no

    def __call__(self):
        if self.next >= len(self.batches):
            raise StopIteration
        loader = self.loader
        try:
            if self.next not in self.planned:
                chunk = list(range(self.next, min(self.next + self.per_chunk, len(self.batches))))
                plans = loader.plan_chunk(self.epoch, [self.batches[i] for i in chunk])
                self.planned = dict(zip(chunk, plans))
            plans = self.planned.pop(self.next)
            encoded = [np.fromfile(p.path, dtype=np.uint8) for p in plans]
        except Exception as err:  # surfaced by the iterator as itself, not as a DALI error
            self.error = err
            raise
        self.served[self.next] = plans
        self.next += 1
        return loader._spec.batch_inputs(plans, encoded)


def _gpu_box_selector(sampler):
    """Batched box selection in the GPU kernel (mcl_fast.gpu.sampling.select_box_index_batch) for
    the MotionSampler's motion-focused crop ("motion", "spatial"): one call per group of samples
    sharing a map shape. Returns None (the NumPy path) for other samplers and modes."""
    if not isinstance(sampler, MotionSampler) or not sampler.motion_crop:
        return None
    from mcl_fast._backend import require_cupy
    from mcl_fast.gpu.sampling import select_box_index_batch

    cp = require_cupy()
    cfg = sampler.config

    def select(proposals):
        # Flatten (sample, view) pairs and group by map shape so each group is one (G, h, w) batch.
        views = len(proposals[0]["m_s"]) if proposals else 0
        chosen = np.zeros((len(proposals), views), np.int64)
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for i, p in enumerate(proposals):
            for v in range(len(p["m_s"])):
                groups.setdefault(p["m_s"][v].shape, []).append((i, v))
        for shape, members in groups.items():
            maps = cp.asarray(np.stack([proposals[i]["m_s"][v] for i, v in members]).astype(np.float32))
            boxes = cp.asarray(np.stack([proposals[i]["judged"][v] for i, v in members]))
            picks = cp.asnumpy(select_box_index_batch(maps, boxes, percentile=cfg.percentile,
                                                      coverage=cfg.coverage))
            for (i, v), pick in zip(members, picks):
                chosen[i, v] = int(pick)
        return chosen

    return select


def _gpu_clip_scorer(sampler):
    """Batched clip scores in the GPU kernel (mcl_fast.gpu.sampling.clip_scores_batch, bit-equal
    to sampling.clip_scores) for the MotionSampler's motion-focused clip ("motion", "temporal"):
    one call per group of samples whose videos have the same length (the kernel takes (B, N)
    rows). Returns None for other samplers and modes.
    The median and the draws stay on the host, from the same float64 scores, so the clips are
    the CPU path's."""
    if not isinstance(sampler, MotionSampler) or not sampler.motion_clip:
        return None
    from mcl_fast._backend import require_cupy
    from mcl_fast.gpu.sampling import clip_scores_batch

    cp = require_cupy()

    def score(m_ts):
        out: list = [None] * len(m_ts)
        groups: dict[int, list[int]] = {}
        for i, m_t in enumerate(m_ts):
            groups.setdefault(len(m_t), []).append(i)
        for members in groups.values():
            starts, scores = clip_scores_batch(cp.asarray(np.stack([m_ts[i] for i in members])),
                                               sampler.clip_len, sampler.stride)
            scores = cp.asnumpy(scores)
            for row, i in enumerate(members):
                out[i] = (starts, scores[row])
        return out

    return score
