"""Motion maps of the authors' released code (the `official` preset), NumPy/OpenCV reference.

Written from a description in words of what the release computes, not from its code. Everything
works on *encoded* flow (clipped to +-20 px, mapped to 0..255 as uint8, as the release stores it),
so every derivative is in encoded units.

Conventions (Prewitt kernels, reflected borders, block means) and the steps: docs/release.md.

What this module gives (shapes; F encoded flows of H x W for a video of N = F + 1 frames):
- encode_flow: (..., 2) float flow in pixels -> the same shape uint8.
- official_frame_maps: (N, 7, 7) float32 per-frame maps (window of ws flows centred on each
  frame, bicubic to 224, (mag_u + mag_v) / 2, 8-px border zeroed, 32x32 block mean);
  frame_maps_to_uint8 stores them.
- official_clip_magnitudes: (starts (K,), magnitudes (K,)) for temporal sampling, K = F - 31.
- OfficialMapAccumulator: both of the above from flows fed one at a time (memory: 32 flows).
- crop_resize_flows and mal_target: the (4, 7, 7) motion-alignment target of a query clip.
"""
from __future__ import annotations

from collections import deque

import numpy as np

FLOW_CLIP = 20.0  # px: flow is clipped to +-FLOW_CLIP before encoding
ENCODE_SCALE = 255.0 / (2 * FLOW_CLIP)  # encoded units per pixel of flow
MAP_SIZE = 224  # each magnitude channel is resized to MAP_SIZE x MAP_SIZE (bicubic)
MAP_BORDER = 8  # px of the MAP_SIZE map zeroed at each edge
MAP_GRID = 7  # cells per side of the stored maps (MAP_SIZE / MAP_GRID = 32-px blocks)
CLIP_FLOWS = 32  # flows in a clip's span for its magnitude: 16 frames x stride 2
WINDOW = {"ucf101": 8, "kinetics": 4}  # ws: flows per frame map, by dataset
MAL_CHUNKS = 4  # the MAL target splits the query's 16 flows into 4 chunks of 4

_PREWITT_X = np.array([[-1, 0, 1]] * 3, np.float32)
_PREWITT_Y = np.ascontiguousarray(_PREWITT_X.T)


def encode_flow(flow) -> np.ndarray:
    """Flow in pixels -> the release's uint8 encoding.

    flow: (..., 2) float (u, v) px (any shape). Returns the same shape uint8:
    rint((clip(f, -20, 20) + 20) * 255 / 40), computed in float64, halves to even
    (so 0 px -> 128, -20 -> 0, +20 -> 255). The release then stores this in JPEG quality 100;
    here that step is taken as lossless.
    """
    f = np.clip(np.asarray(flow, np.float64), -FLOW_CLIP, FLOW_CLIP)
    return np.rint((f + FLOW_CLIP) * ENCODE_SCALE).astype(np.uint8)


def _check_encoded(flows, name: str = "flows") -> np.ndarray:
    flows = np.asarray(flows)
    if flows.ndim != 4 or flows.shape[-1] != 2:
        raise ValueError(f"{name} must be (F, H, W, 2) encoded flows, got shape {flows.shape}")
    if len(flows) == 0:
        raise ValueError(f"{name} is empty: a video needs at least one flow (two frames)")
    if flows.shape[1] < 2 or flows.shape[2] < 2:
        raise ValueError(f"{name} must be at least 2x2 pixels, got {flows.shape[1:3]}")
    return flows


def prewitt_magnitudes(summed) -> np.ndarray:
    """Per-channel Prewitt gradient magnitude of (H, W, 2) summed encoded flows.

    Returns (H, W, 2) float32: sqrt(dx**2 + dy**2) for u (channel 0) and v (channel 1),
    reflected borders (BORDER_REFLECT, the edge pixel repeats).
    """
    import cv2

    img = np.ascontiguousarray(summed, np.float32)
    dx = cv2.filter2D(img, cv2.CV_32F, _PREWITT_X, borderType=cv2.BORDER_REFLECT)
    dy = cv2.filter2D(img, cv2.CV_32F, _PREWITT_Y, borderType=cv2.BORDER_REFLECT)
    return np.sqrt(dx * dx + dy * dy)


def block_mean(img, grid: int = MAP_GRID) -> np.ndarray:
    """(S, S, ...) -> (grid, grid, ...) float32 means of non-overlapping (S/grid)-px blocks.

    S must be a multiple of grid (224 = 7 x 32 in the release).
    """
    img = np.asarray(img, np.float32)
    s0, s1 = img.shape[:2]
    if s0 % grid or s1 % grid:
        raise ValueError(f"a {s0}x{s1} image does not split into {grid}x{grid} equal blocks")
    b0, b1 = s0 // grid, s1 // grid
    blocks = img.reshape((grid, b0, grid, b1) + img.shape[2:])
    # two single-axis sums: ~10x faster than one mean over axes (1, 3) on NumPy 2.4
    return (blocks.sum(axis=1, dtype=np.float64).sum(axis=2) / (b0 * b1)).astype(np.float32)


def _frame_map(summed, size: int, border: int, grid: int) -> np.ndarray:
    """(grid, grid) float32 map of one window's summed flows (see official_frame_maps)."""
    import cv2

    mags = prewitt_magnitudes(summed)
    resized = cv2.resize(mags, (size, size), interpolation=cv2.INTER_CUBIC)  # Keys a=-0.75, edge replicate
    combined = (resized[..., 0] + resized[..., 1]) / 2
    if border:
        combined[:border] = 0
        combined[-border:] = 0
        combined[:, :border] = 0
        combined[:, -border:] = 0
    return block_mean(combined, grid)


def _clip_magnitude(summed) -> float:
    """Mean over all pixels of (mag_u + mag_v) / 2 of one span's summed flows (native size)."""
    mags = prewitt_magnitudes(summed)
    return float(mags.mean(dtype=np.float64))  # the mean of (u + v) / 2 is the mean over both channels


class OfficialMapAccumulator:
    """Per-frame official maps and clip magnitudes from encoded flows fed one at a time.

    Memory holds the last max(ws, clip_flows) flows, not the video. Feed flow j (the flow from
    frame j to j + 1, (H, W, 2) uint8 encoded, all the same size) with add(); finish() returns
    (maps, starts, magnitudes) exactly as official_frame_maps and official_clip_magnitudes
    (frame_maps=False skips the maps: finish() then returns (0, grid, grid) maps).

    Frame windows: frame i of N = F + 1 frames combines flows [s_i, s_i + ws) with
    s_i = clip(i - ws // 2, 0, F - ws): centred (for ws = 8, flows i-4 .. i+3 span frames
    i-4 .. i+4) and shifted, not shortened, at the video's ends; a video with F < ws flows uses
    all F for every frame.
    Clip spans: start s (step 1) combines flows [s, s + clip_flows), s = 0 .. F - clip_flows;
    with F < clip_flows the single start 0 combines all F flows.
    """

    def __init__(self, ws: int = WINDOW["ucf101"], *, clip_flows: int = CLIP_FLOWS, size: int = MAP_SIZE,
                 border: int = MAP_BORDER, grid: int = MAP_GRID, frame_maps: bool = True):
        if ws < 1 or clip_flows < 1:
            raise ValueError(f"ws and clip_flows must be >= 1, got {ws}, {clip_flows}")
        if size % grid or 2 * border >= size:
            raise ValueError(f"size {size} must split into {grid} blocks and exceed twice the border {border}")
        self.ws, self.clip_flows, self.size, self.border, self.grid = int(ws), int(clip_flows), size, border, grid
        self.frame_maps = frame_maps
        self._recent: deque = deque(maxlen=max(self.ws, self.clip_flows))  # int32 (H, W, 2)
        self._sum_ws = self._sum_clip = None
        self._count = 0
        self._maps: list[np.ndarray] = []  # maps of frames ws//2, ws//2 + 1, ... (one per full window)
        self._first_map = None  # the window [0, ws): frames 0 .. ws//2 - 1 share it
        self._magnitudes: list[float] = []

    def add(self, encoded_flow) -> None:
        flow = np.asarray(encoded_flow)
        if flow.ndim != 3 or flow.shape[-1] != 2 or flow.shape[0] < 2 or flow.shape[1] < 2:
            raise ValueError(f"an encoded flow must be (H, W, 2) with H, W >= 2, got {flow.shape}")
        if flow.dtype != np.uint8:
            raise ValueError(f"encoded flows are uint8 (encode_flow of the flow in pixels), got {flow.dtype}")
        if self._sum_ws is not None and flow.shape != self._sum_ws.shape:
            raise ValueError(f"flow {self._count} is {flow.shape[:2]}, the earlier ones {self._sum_ws.shape[:2]}")
        flow = flow.astype(np.int32)
        if self._sum_ws is None:
            self._sum_ws = np.zeros_like(flow)
            self._sum_clip = np.zeros_like(flow)
        # Running window sums in int32: exact, so order of summation does not matter.
        self._sum_ws += flow
        self._sum_clip += flow
        if self._count >= self.ws:
            self._sum_ws -= self._recent[-self.ws]
        if self._count >= self.clip_flows:
            self._sum_clip -= self._recent[-self.clip_flows]
        self._recent.append(flow)
        self._count += 1
        if self.frame_maps and self._count >= self.ws:  # the window [count - ws, count) is complete
            m = _frame_map(self._sum_ws, self.size, self.border, self.grid)
            if self._first_map is None:
                self._first_map = m
            self._maps.append(m)
        if self._count >= self.clip_flows:
            self._magnitudes.append(_clip_magnitude(self._sum_clip))

    def finish(self):
        """(maps (F + 1, grid, grid) float32, starts (K,) int64, magnitudes (K,) float64)."""
        f = self._count
        if f == 0:
            raise ValueError("no flows were added: a video needs at least two frames")
        half = self.ws // 2
        if not self.frame_maps:
            maps = []
        elif f < self.ws:  # every frame shares the window of all F flows
            maps = [_frame_map(self._sum_ws, self.size, self.border, self.grid)] * (f + 1)
        else:
            # window s serves frame s + ws//2; window 0 also frames 0 .. ws//2 - 1, the last
            # window (s = F - ws) also frames F - ws + ws//2 + 1 .. F.
            maps = [self._first_map] * half + self._maps
            maps += [self._maps[-1]] * (f + 1 - len(maps))
        if f < self.clip_flows:
            mags = [_clip_magnitude(self._sum_clip)]
        else:
            mags = self._magnitudes
        maps = np.stack(maps).astype(np.float32) if maps else np.zeros((0, self.grid, self.grid), np.float32)
        return (maps, np.arange(len(mags), dtype=np.int64),
                np.asarray(mags, np.float64))


def official_frame_maps(encoded_flows, ws: int = WINDOW["ucf101"], *, size: int = MAP_SIZE,
                        border: int = MAP_BORDER, grid: int = MAP_GRID) -> np.ndarray:
    """The release's per-frame motion maps.

    encoded_flows: (F, H, W, 2) uint8 (encode_flow of the F = N - 1 flows of an N-frame video,
    flow j from frame j to j + 1; not compute_flow's repeated last flow). ws: flows per frame
    (8 UCF101, 4 Kinetics; windows as in OfficialMapAccumulator).
    Returns (N, grid, grid) float32 in encoded-flow units: for each frame, the window's Prewitt
    x and y derivatives summed, magnitude per channel, each channel resized to size x size
    (OpenCV bicubic: Keys a = -0.75, half-pixel centres, edge replicate, no antialiasing),
    (mag_u + mag_v) / 2, a `border`-px frame zeroed, (size/grid)-px block means.
    """
    flows = _check_encoded(encoded_flows, "encoded_flows")
    acc = OfficialMapAccumulator(ws, size=size, border=border, grid=grid)
    for flow in flows:
        acc.add(flow)
    return acc.finish()[0]


def official_clip_magnitudes(encoded_flows, clip_flows: int = CLIP_FLOWS):
    """Motion of every candidate clip start for the release's temporal sampling.

    encoded_flows: (F, H, W, 2) uint8 as in official_frame_maps. clip_flows: 32 (16 frames x
    stride 2, every flow in the span). Returns (starts (K,) int64, magnitudes (K,) float64),
    starts = 0 .. F - clip_flows (K = F - clip_flows + 1 = N - 32), each the mean over all
    pixels (native size, no border zeroing) of (mag_u + mag_v) / 2 of the span's summed Prewitt
    derivatives. F < clip_flows: the single start 0 over all F flows.
    """
    flows = _check_encoded(encoded_flows, "encoded_flows")
    acc = OfficialMapAccumulator(clip_flows=clip_flows, frame_maps=False)
    for flow in flows:
        acc.add(flow)
    _, starts, magnitudes = acc.finish()
    return starts, magnitudes


def frame_maps_to_uint8(maps) -> np.ndarray:
    """Store official maps as uint8: truncation toward zero (a uint8 cast), saturated to 0..255.

    The release casts without normalising or clipping. A value above 255 would overflow its
    cast (platform-dependent in C, wraps in NumPy); here it saturates instead, and bicubic
    undershoot below 0 becomes 0.
    """
    return np.clip(np.trunc(np.asarray(maps, np.float64)), 0, 255).astype(np.uint8)


def crop_resize_flows(encoded_flows, box, size: int = MAP_SIZE, flip: bool = False) -> np.ndarray:
    """The query's flows under its crop: (T, H, W, 2) encoded -> (T, size, size, 2) float32.

    box: (y0, x0, h, w) in the flows' pixels (the frame crop; the release's flows have the
    frames' size). Bilinear resize (OpenCV INTER_LINEAR, half-pixel centres), kept in float
    (no rounding back to uint8). flip mirrors the width; u is not negated: the MAL target
    depends on |derivatives| only, so negating u would not change it.
    """
    import cv2

    flows = _check_encoded(encoded_flows, "encoded_flows")
    y0, x0, h, w = (int(v) for v in box)
    if h < 1 or w < 1 or y0 < 0 or x0 < 0 or y0 + h > flows.shape[1] or x0 + w > flows.shape[2]:
        raise ValueError(f"box {box} is outside the {flows.shape[1]}x{flows.shape[2]} flows")
    out = np.stack([cv2.resize(np.ascontiguousarray(f[y0:y0 + h, x0:x0 + w], np.float32), (size, size),
                               interpolation=cv2.INTER_LINEAR) for f in flows])
    return np.ascontiguousarray(out[:, :, ::-1]) if flip else out


def mal_target(cropped_flows, chunks: int = MAL_CHUNKS, grid: int = MAP_GRID) -> np.ndarray:
    """The release's motion-alignment target of a query clip: (chunks, grid, grid) float32.

    cropped_flows: (T, S, S, 2) encoded flows under the query's crop (crop_resize_flows; T = 16,
    S = 224 in the release: the flow at each of the clip's frames). The T flows split into
    `chunks` consecutive chunks of T / chunks; per chunk the Prewitt x and y derivatives are
    summed over its flows, magnitude per channel, (S/grid)-px block mean, and the u and v block
    means are added (not averaged). No border zeroing, no normalisation: raw encoded-unit
    magnitudes (the ST weighting takes a softmax of the per-chunk sums of these).
    """
    flows = np.asarray(cropped_flows, np.float32)
    if flows.ndim != 4 or flows.shape[-1] != 2:
        raise ValueError(f"cropped_flows must be (T, S, S, 2), got shape {flows.shape}")
    t = len(flows)
    if t == 0 or t % chunks:
        raise ValueError(f"{t} flows do not split into {chunks} equal chunks")
    per = t // chunks
    out = []
    for c in range(chunks):
        mags = prewitt_magnitudes(flows[c * per:(c + 1) * per].sum(axis=0, dtype=np.float64))
        cells = block_mean(mags, grid)  # (grid, grid, 2)
        out.append(cells[..., 0] + cells[..., 1])
    return np.stack(out).astype(np.float32)
