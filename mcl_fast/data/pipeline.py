"""DALI pipelines that execute sampling plans (plan.py): decode exactly the planned frames, crop,
resize, augment, normalise, in the requested output format.

Small builders in the style of solo-learn's dali_dataloader. Every random choice was made in
Python (the plan) and arrives per sample through fn.external_source, so runs are reproducible
and the torch twin (augment.py) can apply the identical operations. Per sample:

    decoders.video(frames=...)           (F, H, W, 3) uint8, CPU (VP8/VP9/MJPEG) or mixed (NVDEC):
                                         the clip's frames, or with several clips the sorted union of
                                         their frames, decoded once
    sequence_rearrange(new_order=...)    several clips: each clip's frames out of the union
per view:
    slice(start=(y0, x0), shape=(h, w))  the crop box, in pixels, on the H and W axes
    resize(size=(S, S))                  bilinear with antialiasing, float
    coord_transform(M, T) + clamp        colour jitter and greyscale as one affine map on RGB
    gaussian_blur(sigma, window_size)    window 1 = no blur
    crop_mirror_normalize(mirror=flip)   the output format: (x - mean) / std, dtype, layout

A view whose augmentation cannot change colour (or blur, or flip) skips that operator: its
inputs are identities then, so the pixels are the same either way.

With host_views (the loader's CPU mode) each view branch stops after the crop and a resize to
uint8, (T, S, S, 3) per sample, and the loader applies colour, blur, flip and the output format on
the host (augment.finish_view, the torch loader's path): DALI's CPU colour, blur and normalise
operators cost about 3x that path per clip (docs/loader.md). On the GPU the whole chain stays here.
nvidia.dali (fn, types, pipeline, math, plugin.pytorch) is reached only as attributes of the module
mcl_fast._backend.require_dali() returns, inside the builders: no DALI import here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from mcl_fast._backend import require_dali

from .output import OutputFormat
from .plan import MEAN_255, STD_255, SamplePlan
from .views import ViewLayout


@dataclass(frozen=True)
class ViewOps:
    """The static shape of one view's branch: output size and which augmentation operators it has."""

    clip: int
    size: int
    colour: bool
    blur: bool
    flip: bool


@dataclass(frozen=True)
class PipelineSpec:
    """What the DALI graph looks like for a loader: one ViewOps per view, the number of clips, the
    output format. Built from the loader's views (from_layout)."""

    views: tuple[ViewOps, ...]
    num_clips: int
    output: OutputFormat = OutputFormat()
    host_views: bool = False  # the graph ends at the uint8 resize; the host does the rest

    @classmethod
    def from_layout(cls, layout: ViewLayout, output: OutputFormat, host_views: bool = False) -> "PipelineSpec":
        if host_views:  # the pipeline has no augmentation operator: no per-sample inputs for them
            ops = tuple(ViewOps(v.clip, v.size, False, False, False) for v in layout.views)
        else:
            ops = tuple(ViewOps(v.clip, v.size, bool(v.aug and v.aug.colour), bool(v.aug and v.aug.blur),
                                bool(v.aug and v.aug.flip)) for v in layout.views)
        return cls(views=ops, num_clips=layout.num_clips, output=output, host_views=host_views)

    def input_names(self) -> list[str]:
        """Names of the external_source outputs, in the order the source callback returns them."""
        names = ["encoded", "frames"] + [f"order{c}" for c in range(self.num_clips) if self.num_clips > 1]
        for k, v in enumerate(self.views):
            names += [f"v{k}_start", f"v{k}_shape"]
            names += [f"v{k}_matrix", f"v{k}_offset"] if v.colour else []
            names += [f"v{k}_sigma", f"v{k}_window"] if v.blur else []
            names += [f"v{k}_flip"] if v.flip else []
        return names

    def sample_arrays(self, plan: SamplePlan, encoded: np.ndarray) -> dict:
        """The per-sample arrays of one plan, by input name."""
        out = {"encoded": encoded}
        if self.num_clips == 1:
            out["frames"] = plan.clips[0].astype(np.int32)
        else:  # the union of the clips' frames, decoded once; each clip gathers its frames from it
            union, inverse = np.unique(np.concatenate(plan.clips), return_inverse=True)
            out["frames"] = union.astype(np.int32)
            at = 0
            for c, frames in enumerate(plan.clips):
                out[f"order{c}"] = inverse[at:at + len(frames)].astype(np.int32)
                at += len(frames)
        for k, (ops, view) in enumerate(zip(self.views, plan.views)):
            y0, x0, h, w = view.box
            a = view.aug
            out[f"v{k}_start"], out[f"v{k}_shape"] = np.array([y0, x0], np.int32), np.array([h, w], np.int32)
            if ops.colour:
                out[f"v{k}_matrix"] = np.ascontiguousarray(a.color_matrix, np.float32)
                out[f"v{k}_offset"] = np.ascontiguousarray(a.color_offset, np.float32)
            if ops.blur:
                out[f"v{k}_sigma"] = np.array(max(a.blur_sigma, 1e-3), np.float32)  # DALI wants sigma > 0 even for window 1
                out[f"v{k}_window"] = np.array(a.blur_window, np.int32)
            if ops.flip:
                out[f"v{k}_flip"] = np.array(int(a.flip), np.int32)
        return out

    def batch_inputs(self, plans: Sequence[SamplePlan], encoded: Sequence[np.ndarray]) -> tuple[list, ...]:
        """The per-sample arrays a source callback returns for `plans`, ordered like input_names."""
        names = self.input_names()
        columns = {name: [] for name in names}
        for plan, data in zip(plans, encoded):
            for name, value in self.sample_arrays(plan, data).items():
                columns[name].append(value)
        return tuple(columns[name] for name in names)


# ------------------------------------------------------------------------------- operators


def decode(encoded, frames, device: str):
    """Decode exactly `frames` (per-sample int32 indices, already clamped to the video) -> FHWC uint8."""
    fn = require_dali().fn
    return fn.decoders.video(encoded, frames=frames, device="mixed" if device == "gpu" else "cpu", pad_mode="none")


def crop_resize(video, start, shape, size: int, uint8: bool = False):
    """Crop (start=(y0, x0), shape=(h, w) in pixels, per sample) then resize to size x size, float
    (uint8: rounded to uint8, what the host path reads)."""
    dali = require_dali()
    crop = dali.fn.slice(video, start=start, shape=shape, axis_names="HW")
    return dali.fn.resize(crop, size=[size, size], dtype=dali.types.UINT8 if uint8 else dali.types.FLOAT)


def colour(video, matrix, offset):
    """Colour jitter + greyscale as one affine map on the channel axis, clipped to 0..255."""
    dali = require_dali()  # its submodules, math included, are imported by _backend
    video = dali.fn.coord_transform(video, M=matrix, T=offset, dtype=dali.types.FLOAT)
    return dali.math.clamp(video, 0.0, 255.0)


def blur(video, sigma, window):
    return require_dali().fn.gaussian_blur(video, sigma=sigma, window_size=window)


def _dali_dtype(output: OutputFormat):
    types = require_dali().types
    # DALI has no bfloat16: the pipeline gives float32 and to_torch converts on the same device
    return {"float32": types.FLOAT, "float16": types.FLOAT16, "bfloat16": types.FLOAT, "uint8": types.UINT8}[output.dtype]


def flip_normalize(video, flip, output: OutputFormat | None = None):
    """Mirror (flip per sample, 0/1) and convert to the output format (default: ImageNet-normalised
    float32, CFHW): crop_mirror_normalize computes (x - mean) / std, rounds and clamps for uint8."""
    dali = require_dali()
    if output is None:
        return dali.fn.crop_mirror_normalize(video, mirror=flip, mean=list(MEAN_255), std=list(STD_255),
                                             output_layout="CFHW", dtype=dali.types.FLOAT)
    return dali.fn.crop_mirror_normalize(video, mirror=flip, mean=list(output.mean_255), std=list(output.std_255),
                                         output_layout=output.dali_layout, dtype=_dali_dtype(output))


def view_branch(clip, inputs: dict, k: int, ops: ViewOps, output: OutputFormat):
    """View k from its decoded clip: crop, resize, [colour], [blur], flip, output format."""
    x = crop_resize(clip, inputs[f"v{k}_start"], inputs[f"v{k}_shape"], ops.size)
    if ops.colour:
        x = colour(x, inputs[f"v{k}_matrix"], inputs[f"v{k}_offset"])
    if ops.blur:
        x = blur(x, inputs[f"v{k}_sigma"], inputs[f"v{k}_window"])
    return flip_normalize(x, inputs[f"v{k}_flip"] if ops.flip else 0, output)


def _device_id(device: str, device_id):
    if device == "cpu":
        return None
    if device_id is not None:
        return int(device_id)
    import torch

    return torch.cuda.current_device()


def build_view_pipeline(source: Callable, spec: PipelineSpec, *, batch_size: int, device: str = "cpu",
                        num_threads: int = 2, device_id=None, prefetch: int = 2, seed: int = 0):
    """Pipeline with one output per view of `spec`, each per sample a view in spec.output's format.

    source: a batch callback returning spec.batch_inputs(...) (raise StopIteration at the end of
    an epoch; then call pipe.reset()). With spec.host_views each output is the view's (T, S, S, 3)
    uint8 resized crop instead. device: "cpu" (DALI CPU operators, VP8/VP9/MJPEG) or
    "gpu" (NVDEC through device="mixed", then GPU operators: no frame returns to the host).
    """
    dali = require_dali()
    names = spec.input_names()
    pipe = dali.pipeline.Pipeline(batch_size=batch_size, num_threads=num_threads,
                                  device_id=_device_id(device, device_id), prefetch_queue_depth=prefetch,
                                  seed=seed)
    with pipe:
        outputs = dali.fn.external_source(source=source, num_outputs=len(names), batch=True)
        inputs = dict(zip(names, outputs))
        decoded = decode(inputs["encoded"], inputs["frames"], device)
        if spec.num_clips == 1:
            clips = [decoded]
        else:
            clips = [dali.fn.sequence_rearrange(decoded, new_order=inputs[f"order{c}"]) for c in range(spec.num_clips)]
        if spec.host_views:  # (T, S, S, 3) uint8 per view: augment.finish_view does the rest
            pipe.set_outputs(*(crop_resize(clips[ops.clip], inputs[f"v{k}_start"], inputs[f"v{k}_shape"], ops.size,
                                           uint8=True) for k, ops in enumerate(spec.views)))
        else:
            pipe.set_outputs(*(view_branch(clips[ops.clip], inputs, k, ops, spec.output)
                               for k, ops in enumerate(spec.views)))
    pipe.build()
    return pipe


def build_decode_pipeline(source: Callable, *, batch_size: int, device: str = "cpu", num_threads: int = 2,
                          device_id=None, prefetch: int = 2):
    """Decode-only pipeline (the benchmark's ceiling): source returns (encoded, frames) per sample;
    output (F, H, W, 3) uint8 frames, nothing else done to them."""
    dali = require_dali()
    pipe = dali.pipeline.Pipeline(batch_size=batch_size, num_threads=num_threads,
                                  device_id=_device_id(device, device_id), prefetch_queue_depth=prefetch)
    with pipe:
        encoded, frames = dali.fn.external_source(source=source, num_outputs=2, batch=True)
        pipe.set_outputs(decode(encoded, frames, device))
    pipe.build()
    return pipe


def to_torch(tensor_list, device="cpu", dtype=None):
    """A DALI TensorList of equal-shape samples -> a torch tensor that owns its memory, on
    `device` ("cpu", "gpu" = the current CUDA device, or a torch.device); dtype: a torch dtype to
    convert to on that device (bfloat16, which DALI has no type for).

    DALI reuses its output buffers on the next run, so this always copies: on the GPU with
    feed_ndarray on torch's current stream (device to device), on the CPU through NumPy.
    """
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if device == "gpu" else torch.device(device)
    if device.type == "cuda":
        dali_torch = require_dali().plugin.pytorch  # imported by _backend.require_dali()
        dense = tensor_list.as_tensor()
        out = torch.empty(dense.shape(), dtype=dali_torch.to_torch_type[dense.dtype], device=device)
        dali_torch.feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(device))
    else:
        out = torch.from_numpy(np.array(tensor_list.as_tensor(), copy=True))
    return out if dtype is None or out.dtype == dtype else out.to(dtype)
