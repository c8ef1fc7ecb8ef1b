"""DALI pipelines that execute sampling plans (plan.py): decode exactly the planned frames, crop,
resize, augment, normalise.

Small builders in the style of solo-learn's dali_dataloader. Every random choice was made in
Python (the plan) and arrives per sample through fn.external_source, so runs are reproducible
and the torch twin (augment.py) can apply the identical operations. Per view:

    decoders.video(frames=...)           (F, H, W, 3) uint8, CPU (VP8/VP9/MJPEG) or mixed (NVDEC)
    slice(start=(y0, x0), shape=(h, w))  the crop box, in pixels, on the H and W axes
    resize(size=(S, S))                  bilinear with antialiasing, float
    coord_transform(M, T) + clamp        colour jitter and greyscale as one affine map on RGB
    gaussian_blur(sigma, window_size)    window 1 = no blur
    crop_mirror_normalize(mirror=flip)   ImageNet mean/std, layout CFHW -> (3, T, S, S)

With one clip (the default) the clip is decoded once and cropped twice.
nvidia.dali (fn, types, pipeline, math, plugin.pytorch) is reached only as attributes of the module
mcl_fast._backend.require_dali() returns, inside the builders: no DALI import here.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from mcl_fast._backend import require_dali

from .plan import MEAN_255, STD_255, SamplePlan, ViewPlan

VIEW_FIELDS_PLAIN = ("frames", "start", "shape")
VIEW_FIELDS_AUG = ("matrix", "offset", "sigma", "window", "flip")


def input_names(two_clips: bool, augment: bool) -> list[str]:
    """Names of the external_source outputs, in the order source callbacks return them."""
    names = ["encoded"]
    for view in ("query", "key"):
        fields = list(VIEW_FIELDS_PLAIN) + (list(VIEW_FIELDS_AUG) if augment else [])
        if view == "key" and not two_clips:
            fields.remove("frames")  # the key is cut from the query's decoded clip
        names += [f"{view}_{f}" for f in fields]
    return names


def _view_arrays(view: ViewPlan) -> dict:
    y0, x0, h, w = view.box
    a = view.aug
    return {"frames": view.frames.astype(np.int32), "start": np.array([y0, x0], np.int32),
            "shape": np.array([h, w], np.int32), "matrix": np.ascontiguousarray(a.color_matrix, np.float32),
            "offset": np.ascontiguousarray(a.color_offset, np.float32),
            "sigma": np.array(max(a.blur_sigma, 1e-3), np.float32),  # DALI wants sigma > 0 even for window 1
            "window": np.array(a.blur_window, np.int32), "flip": np.array(int(a.flip), np.int32)}


def plan_inputs(plans: Sequence[SamplePlan], encoded: Sequence[np.ndarray], two_clips: bool,
                augment: bool) -> tuple[list, ...]:
    """The per-sample arrays a source callback returns for `plans`, ordered like input_names."""
    columns = {name: [] for name in input_names(two_clips, augment)}
    for plan, data in zip(plans, encoded):
        columns["encoded"].append(data)
        for view_name, view in (("query", plan.query), ("key", plan.key)):
            arrays = _view_arrays(view)
            for field, value in arrays.items():
                name = f"{view_name}_{field}"
                if name in columns:
                    columns[name].append(value)
    return tuple(columns.values())


def decode(encoded, frames, device: str):
    """Decode exactly `frames` (per-sample int32 indices, already clamped to the video) -> FHWC uint8."""
    fn = require_dali().fn
    return fn.decoders.video(encoded, frames=frames, device="mixed" if device == "gpu" else "cpu", pad_mode="none")


def crop_resize(video, start, shape, size: int):
    """Crop (start=(y0, x0), shape=(h, w) in pixels, per sample) then resize to size x size, float."""
    dali = require_dali()
    crop = dali.fn.slice(video, start=start, shape=shape, axis_names="HW")
    return dali.fn.resize(crop, size=[size, size], dtype=dali.types.FLOAT)


def color_and_blur(video, matrix, offset, sigma, window):
    """Colour jitter + greyscale as one affine map on the channel axis, clipped, then the blur."""
    dali = require_dali()  # its submodules, math included, are imported by _backend
    video = dali.fn.coord_transform(video, M=matrix, T=offset, dtype=dali.types.FLOAT)
    video = dali.math.clamp(video, 0.0, 255.0)
    return dali.fn.gaussian_blur(video, sigma=sigma, window_size=window)


def flip_normalize(video, flip):
    """Mirror (flip per sample, 0/1) and ImageNet-normalise -> CFHW float."""
    dali = require_dali()
    return dali.fn.crop_mirror_normalize(video, mirror=flip, mean=list(MEAN_255), std=list(STD_255),
                                         output_layout="CFHW", dtype=dali.types.FLOAT)


def view_branch(video, inputs: dict, view: str, size: int, augment: bool):
    """One view from a decoded clip: crop, resize, [augment], flip, normalise."""
    x = crop_resize(video, inputs[f"{view}_start"], inputs[f"{view}_shape"], size)
    if not augment:
        return flip_normalize(x, 0)
    x = color_and_blur(x, inputs[f"{view}_matrix"], inputs[f"{view}_offset"], inputs[f"{view}_sigma"],
                       inputs[f"{view}_window"])
    return flip_normalize(x, inputs[f"{view}_flip"])


def _device_id(device: str, device_id):
    if device == "cpu":
        return None
    if device_id is not None:
        return int(device_id)
    import torch

    return torch.cuda.current_device()


def build_view_pipeline(source: Callable, *, batch_size: int, size: int, device: str = "cpu",
                        two_clips: bool = False, augment: bool = True, num_threads: int = 2,
                        device_id=None, prefetch: int = 2, seed: int = 0):
    """Pipeline with outputs (query, key), each per sample (3, T, S, S) float.

    source: a batch callback returning the arrays of plan_inputs (raise StopIteration at the end
    of an epoch; then call pipe.reset()). device: "cpu" (DALI CPU operators, VP8/VP9/MJPEG) or
    "gpu" (NVDEC through device="mixed", then GPU operators: no frame returns to the host).
    """
    dali = require_dali()
    names = input_names(two_clips, augment)
    pipe = dali.pipeline.Pipeline(batch_size=batch_size, num_threads=num_threads,
                                  device_id=_device_id(device, device_id), prefetch_queue_depth=prefetch,
                                  seed=seed)
    with pipe:
        outputs = dali.fn.external_source(source=source, num_outputs=len(names), batch=True)
        inputs = dict(zip(names, outputs))
        query_clip = decode(inputs["encoded"], inputs["query_frames"], device)
        key_clip = decode(inputs["encoded"], inputs["key_frames"], device) if two_clips else query_clip
        query = view_branch(query_clip, inputs, "query", size, augment)
        key = view_branch(key_clip, inputs, "key", size, augment)
        pipe.set_outputs(query, key)
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


def to_torch(tensor_list, device="cpu"):
    """A DALI TensorList of equal-shape samples -> a torch tensor that owns its memory, on
    `device` ("cpu", "gpu" = the current CUDA device, or a torch.device).

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
        return out
    return torch.from_numpy(np.array(tensor_list.as_tensor(), copy=True))
