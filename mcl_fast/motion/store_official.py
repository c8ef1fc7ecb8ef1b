"""The release's kind of motion store (`prepare --maps official`, read by the `official` preset).

Per video it keeps the release's per-frame (7, 7) maps as their uint8 values (scale 255), plus
two streams of its own: the encoded flows (flows-NNNNN.bin, (N - 1, fh, fw, 2) uint8) and the clip
magnitudes (mags-NNNNN.bin, (K,) float64). Its header records window, map_grid and clip_flows
(map_downsample is null). The format: docs/store.md ("Official stores"); the maths:
mcl_fast.motion.official.

What it gives: OfficialKind (the description the store modules read, store_kind.MapsKind),
OfficialVideoMaps (a VideoMaps with flows and magnitudes), OfficialReading (MotionStore's accessors
of them) and compute_official_video_maps (prepare's per-video pass).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..video_io import VideoError, VideoReader, target_size
from .flow import FLOW_METHODS
from .official import CLIP_FLOWS, MAP_GRID, WINDOW, OfficialMapAccumulator, encode_flow, frame_maps_to_uint8
from .store_kind import MAPS_STREAM, MapsKind, Stream, StoreError, a_store
from .video_maps import VideoMaps, pair_flow, source_fingerprint

NAME = "official"  # index.json's "maps"
OFFICIAL_VERSION, LEGACY_VERSION = 4, 2  # the columnar index; one JSON entry per video
OFFICIAL_SCALE = 255.0  # maps are stored as the release's uint8 values: read() returns them exactly
OFFICIAL_PREPARE = "mcl-fast prepare --videos DIR --out STORE --maps official --window 8"  # (4 for Kinetics)
WINDOWS = tuple(sorted(set(WINDOW.values()), reverse=True))  # the release's ws: 8 (UCF101), 4 (Kinetics)

FLOWS_STREAM = Stream("flows", "flow_shard", "flow_offset", "flow_checksum", "flows",
                      ("num_flows", "flow_height", "flow_width"), 2)
MAGS_STREAM = Stream("mags", "mag_shard", "mag_offset", "mag_checksum", "clip magnitudes", ("num_starts",), 8)


@dataclass
class OfficialVideoMaps(VideoMaps):
    """VideoMaps plus the release's data: magnitudes (K,) float64, the clip magnitudes of starts
    0 .. K-1, and flows (num_frames - 1, fh, fw, 2) uint8, the encoded flows. Without them (both
    None) they are paper maps."""

    magnitudes: np.ndarray | None = None
    flows: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return NAME if self.flows is not None or self.magnitudes is not None else super().kind

    @classmethod
    def official(cls, maps_u8, magnitudes, flows, *, fps: float, height: int, width: int,
                 fingerprint: str | None = None) -> "OfficialVideoMaps":
        """The release's maps of one video: maps_u8 (N, g, g) uint8 as stored by
        motion.official.frame_maps_to_uint8 (scale 255: read() returns them exactly), magnitudes
        (K,) clip magnitudes, flows (N - 1, fh, fw, 2) encoded uint8 flows."""
        maps_u8 = np.ascontiguousarray(maps_u8)
        return cls(num_frames=len(maps_u8), fps=float(fps), height=int(height), width=int(width), maps_u8=maps_u8,
                   scale=OFFICIAL_SCALE, fingerprint=fingerprint,
                   magnitudes=np.ascontiguousarray(magnitudes, np.float64), flows=np.ascontiguousarray(flows))


class OfficialKind(MapsKind):
    """The release's kind of store (see the module docstring)."""

    name = NAME
    version, legacy_version = OFFICIAL_VERSION, LEGACY_VERSION
    settings = ("window", "map_grid", "clip_flows")  # flows per frame map, the maps' grid, the flows a magnitude spans
    ranges = {"num_flows": (0, True), "flow_height": (1, True), "flow_width": (1, True), "flow_shard": (0, True),
              "flow_offset": (0, True), "num_starts": (1, True), "mag_shard": (0, True), "mag_offset": (0, True)}
    streams = (MAPS_STREAM, FLOWS_STREAM, MAGS_STREAM)
    uses_map_downsample = False
    option_choices = {"window": WINDOWS}
    summary = ("the authors' release's 7x7 maps, clip magnitudes and encoded flows, for preset='official' (CPU "
               "only; stores 2 bytes per flow pixel: ~44 kB a frame at --size 128)")

    def header(self, settings: dict) -> dict:
        return {"maps": self.name, **{k: settings[k] for k in self.settings}}

    def writer_settings(self, map_downsample, settings: dict) -> tuple[None, dict]:
        unknown = sorted(k for k, v in settings.items() if k not in self.settings and v is not None)
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a setting of {a_store(self.name)}")
        window = settings.get("window")
        if window is None or int(window) < 1:
            raise ValueError(f"{a_store(self.name)} needs window >= 1 (8 UCF101, 4 Kinetics), got {window}")
        map_grid, clip_flows = settings.get("map_grid"), settings.get("clip_flows")
        return None, {"window": int(window), "map_grid": MAP_GRID if map_grid is None else int(map_grid),
                      "clip_flows": CLIP_FLOWS if clip_flows is None else int(clip_flows)}

    def prepare_settings(self, settings: dict, device: str) -> dict:
        window = WINDOW["ucf101"] if settings.get("window") is None else int(settings["window"])
        if window < 1:
            raise ValueError(f"--window must be >= 1 (the release: 8 for UCF101, 4 for Kinetics), got {window}")
        if device == "cuda":
            raise ValueError(f"--maps {self.name} runs on the CPU only (--device cpu): its maps, clip magnitudes and "
                             "encoded flows come from OpenCV's flow and filters, and the GPU path computes the "
                             "paper's maps only")
        return {"window": window}

    def check_entry(self, entry: dict, where: str) -> None:
        if entry["num_flows"] != max(entry["num_frames"] - 1, 0):
            raise StoreError(f"{where}: the field num_flows is {entry['num_flows']!r}, expected num_frames - 1 = "
                             f"{entry['num_frames'] - 1}; the store is damaged")

    def check_maps(self, relpath: str, maps, settings: dict, where) -> tuple[np.ndarray, np.ndarray]:
        """(flows, magnitudes) of an OfficialVideoMaps, checked against the store's settings."""
        if getattr(maps, "flows", None) is None or getattr(maps, "magnitudes", None) is None:
            raise ValueError(f"{relpath}: {a_store(self.name)} needs the video's flows and clip magnitudes "
                             "(OfficialVideoMaps.official)")
        g = settings["map_grid"]
        if maps.maps_u8.shape[1:] != (g, g):
            raise ValueError(f"{relpath}: {self.name} maps must be (N, {g}, {g}), got {maps.maps_u8.shape}")
        flows = np.ascontiguousarray(maps.flows)
        if flows.dtype != np.uint8 or flows.ndim != 4 or flows.shape[-1] != 2 \
                or len(flows) != max(int(maps.num_frames) - 1, 0):
            raise ValueError(f"{relpath}: flows must be ({int(maps.num_frames) - 1}, h, w, 2) uint8 (one per frame "
                             f"pair), got {flows.shape} {flows.dtype}")
        mags = np.ascontiguousarray(maps.magnitudes, "<f8")
        if mags.ndim != 1 or len(mags) < 1 or not np.isfinite(mags).all() or (mags < 0).any():
            raise ValueError(f"{relpath}: clip magnitudes must be a non-empty (K,) array of finite values >= 0")
        return flows, mags

    def entry_fields(self, arrays: tuple, append) -> dict:
        flows, mags = arrays
        flow_shard, flow_offset, flow_checksum = append(FLOWS_STREAM, flows)
        mag_shard, mag_offset, mag_checksum = append(MAGS_STREAM, mags)
        return dict(num_flows=len(flows), flow_height=int(flows.shape[1]), flow_width=int(flows.shape[2]),
                    flow_shard=flow_shard, flow_offset=flow_offset, num_starts=len(mags), mag_shard=mag_shard,
                    mag_offset=mag_offset, flow_checksum=flow_checksum, mag_checksum=mag_checksum)

    def max_abs_error(self, scale: float) -> float:
        return 1.0  # the release's truncation to uint8; `read` returns its uint8 values exactly

    def cells_per_pixel(self, height: int, width: int, settings: dict) -> tuple[float, float]:
        g = settings["map_grid"]  # the maps resize the whole frame to 224 before the 7 x 7 block means
        return g / height, g / width

    def describe(self, settings: dict) -> str:
        return f", maps={self.name}, window={settings['window']}"

    def compute(self, path, *, flow: str, size: int, window: int) -> OfficialVideoMaps:
        return compute_official_video_maps(path, flow=flow, size=size, window=window)


KIND = OfficialKind()


class OfficialReading:
    """MotionStore's accessors of the release's data. Every store has them (store_kinds.KindReaders):
    another kind's store is not official, has no window, map_grid or clip_flows (None), and its
    read_flows and clip_magnitudes raise StoreError naming the command that builds an official one."""

    @property
    def official(self) -> bool:
        """True for a store of the release's maps with flows and clip magnitudes (prepare --maps official)."""
        return self.maps == NAME

    @property
    def window(self) -> int | None:
        """Flows per frame map (8 UCF101, 4 Kinetics); None in other stores."""
        return self.settings.get("window")

    @property
    def map_grid(self) -> int | None:
        """Cells per side of the maps (7); None in other stores."""
        return self.settings.get("map_grid")

    @property
    def clip_flows(self) -> int | None:
        """The flows a clip magnitude spans (32); None in other stores."""
        return self.settings.get("clip_flows")

    def _require_official(self, what: str) -> None:
        if not self.official:
            raise StoreError(f"{self.path} holds {self.maps} motion maps, not {what}; build {a_store(NAME)} "
                             f"with `{OFFICIAL_PREPARE}`")

    def read_flows(self, video) -> np.ndarray:
        """(F, fh, fw, 2) uint8: the video's encoded flows (motion.official.encode_flow), F = num_frames - 1,
        flow j from frame j to j + 1, at the flow's resolution (the frames resized to short side
        `size`); a read-only view of the memory map. Official stores only."""
        self._require_official("the flows the official preset needs")
        row = self.row(video)
        e = self._index.entries[row]
        return self._bytes(row, FLOWS_STREAM).reshape(int(e["num_flows"]), int(e["flow_height"]),
                                                      int(e["flow_width"]), 2)

    def clip_magnitudes(self, video) -> np.ndarray:
        """(K,) float64 clip magnitudes of starts 0 .. K-1 (motion.official.official_clip_magnitudes;
        K = num_frames - clip_flows, at least 1). Official stores only."""
        self._require_official("the clip magnitudes the official preset needs")
        return self._bytes(self.row(video), MAGS_STREAM).view("<f8")


def compute_official_video_maps(path, *, flow: str = "tvl1", size: int = 128, window: int = WINDOW["ucf101"]
                                ) -> OfficialVideoMaps:
    """The release's maps of one video (the `official` preset, mcl_fast.motion.official): decode
    `path` (gray, short side `size`), flow of each consecutive pair, encode it to uint8
    (encode_flow: clipped to +-20 px), feed it to OfficialMapAccumulator (window `window`).
    Returns OfficialVideoMaps.official: maps (N, 7, 7) uint8 (frame_maps_to_uint8), clip
    magnitudes (K,) (K = N - 32, at least 1) and the encoded flows (N - 1, h, w, 2) uint8 at the
    flow's resolution, with the file's fingerprint. A one-frame video has zero maps, one zero
    magnitude and no flows.

    Memory: the video's encoded flows (2 bytes per flow pixel: 44 kB a frame at 128x171) plus
    the accumulator's last 32 flows. Raises VideoError for every unusable input.
    """
    path = os.fspath(path)
    if flow not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {flow!r}; choose one of {FLOW_METHODS}")
    pair = pair_flow(flow)
    acc = OfficialMapAccumulator(int(window))
    flows: list[np.ndarray] = []
    with VideoReader(path) as reader:
        fingerprint = source_fingerprint(path)
        prev = None
        for frame in reader.frames(size=size, gray=True):
            if prev is not None:
                f = pair(prev, frame)
                if not np.isfinite(f).all():
                    raise VideoError(path, "motion maps unusable: the optical flow holds non-finite values")
                flows.append(encode_flow(f))
                acc.add(flows[-1])
            prev = frame
        n, fps = reader.decoded, reader.info["fps"]
        height, width = reader.frame_size or (reader.info["height"], reader.info["width"])
    if n == 1:
        th, tw = target_size(height, width, size)
        g = acc.grid
        return OfficialVideoMaps.official(np.zeros((1, g, g), np.uint8), np.zeros(1),
                                          np.zeros((0, th, tw, 2), np.uint8), fps=fps, height=height, width=width,
                                          fingerprint=fingerprint)
    maps, _, magnitudes = acc.finish()
    return OfficialVideoMaps.official(frame_maps_to_uint8(maps), magnitudes, np.stack(flows), fps=fps, height=height,
                                      width=width, fingerprint=fingerprint)
