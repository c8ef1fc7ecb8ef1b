"""benchmarks/store_scale.py runs end to end on tiny stores and its JSON holds every row and number."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

REAL_KEYS = ("build_s", "index_mb", "open_s", "open_private_mib", "open_private_b_per_video", "construct_on_s",
             "first_batch_0_s", "plan_cold_on_ms", "plan_warm_on_ms", "cache_kib_per_video", "construct_off_s",
             "plan_cold_off_ms", "plan_warm_off_ms", "construct_on_rank0_s", "first_batch_1_s",
             "worker_1_pss_mib", "worker_1_private_mib", "noop_prepare_s", "noop_prepare_wrote", "fold_s",
             "rank_open_s")
INDEX_ONLY_KEYS = ("build_s", "index_mb", "open_s", "open_private_mib", "open_private_b_per_video", "fold_s",
                   "rank_open_s")


def _run(tmp_path, *flags) -> tuple[dict, str]:
    out = tmp_path / "store_scale.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "store_scale.py"), "--frames", "40",
                          "--dir", str(tmp_path), "--json", str(out), *flags], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["complete"] is True and not [p for p in tmp_path.iterdir() if p.name.startswith("store_scale-")]
    return doc, res.stdout


def _numbers(measured: dict, keys) -> None:
    assert not [k for k in measured if k.endswith("_error")], measured
    for key in keys:
        assert isinstance(measured.get(key), (int, float)), (key, measured)


def test_every_row_and_number(tmp_path):
    doc, printed = _run(tmp_path, "--sizes", "50", "200", "--index-only", "1000", "--workers", "0", "1",
                        "--samples", "8")
    assert [(r["videos"], r["real"]) for r in doc["rows"]] == [(50, True), (200, True), (1000, False)]
    for row in doc["rows"]:
        _numbers(row["after"], REAL_KEYS if row["real"] else INDEX_ONLY_KEYS)
        assert "before" not in row
    assert doc["maps"]["num_frames"] == 40
    fitted = doc["extrapolation"]["after"]
    assert {"open_s", "open_private_mib", "construct_on_s", "worker_private_mib", "fold_s"} <= set(fitted)
    assert set(fitted["open_s"]["at"]) == {"Kinetics-400", "Kinetics-700", "HowTo100M", "WebVid-10M"}
    assert fitted["per_node_gib"]
    assert fitted["worker_growth"] > 0
    for line in ("| 50 |", "| 200 |", "| 1,000 (index only) |", "y(N) = a + b * N", "| open, s |"):
        assert line in printed, line
    again = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "store_scale.py"), "--print",
                            str(tmp_path / "store_scale.json")], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip() in printed, again.stderr[-2000:]


def test_before_is_measured_up_to_its_limit(tmp_path):
    """--before runs the same steps with another checkout (here this one) and skips the sizes over
    --before-max-videos; the table shows both, side by side."""
    doc, printed = _run(tmp_path, "--sizes", "--index-only", "300", "1000", "--before", str(ROOT),
                        "--before-max-videos", "500")
    small, big = doc["rows"]
    _numbers(small["before"], INDEX_ONLY_KEYS)
    _numbers(small["after"], INDEX_ONLY_KEYS)
    assert "skipped" in big["before"] and isinstance(big["after"]["open_s"], float)
    assert "Each cell: before → after." in printed and " → " in printed.split("| 300 (index only) |")[1]


def test_fit_is_the_least_squares_line():
    from store_scale import fit

    assert fit([(1, 3.0), (3, 7.0), (2, 5.0)]) == pytest.approx((1.0, 2.0))
    assert fit([(5, 1.0), (5, 2.0)]) is None and fit([(1, None), (2, 1.0)]) is None
