"""The demo's evaluation numbers: the paired noise band of the SVM gap, the per-video SVM that
feeds it, the held-out set that grows without touching the training videos, and the
once-per-epoch history rows the demo's learning criteria read."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mcl_fast.eval.demo_eval import gap_and_noise, make_demo_actions, svm_correct, verdict


def rows(right_a: list[int], right_b: list[int]) -> tuple[dict, dict]:
    """Two probe rows scored on the same videos (1: the SVM is right on that video)."""
    return ({"svm_top1": float(np.mean(right_a)), "svm_correct": right_a},
            {"svm_top1": float(np.mean(right_b)), "svm_correct": right_b})


def test_paired_noise_counts_only_the_videos_where_the_two_disagree():
    # 100 videos: random init right on 70, pretrained right on those and 20 more (nested errors).
    pretrained, random_init = rows([1] * 90 + [0] * 10, [1] * 70 + [0] * 30)
    gap, noise = gap_and_noise(pretrained, random_init, 100)
    d = np.array(pretrained["svm_correct"]) - np.array(random_init["svm_correct"])
    assert gap == pytest.approx(20.0)
    assert noise == pytest.approx(200 * d.std(ddof=1) / math.sqrt(100))  # 2 standard errors of the mean difference
    assert noise == pytest.approx(8.04, abs=0.01)
    unpaired = 200 * math.sqrt((0.9 * 0.1 + 0.7 * 0.3) / 100)  # ~10.95: the band the demo printed before
    assert noise < unpaired
    # The same accuracies with the errors apart (pretrained wrong on 10 videos random init gets right)
    # disagree on 40 videos: a wider band, wider than the unpaired one. Pairing is not always narrower.
    apart_p, apart_r = rows([0] * 10 + [1] * 90, [1] * 70 + [0] * 30)
    gap_apart, noise_apart = gap_and_noise(apart_p, apart_r, 100)
    assert gap_apart == pytest.approx(20.0) and noise_apart > unpaired > noise


def test_the_noise_band_stays_unpaired_without_per_video_results():
    gap, noise = gap_and_noise({"svm_top1": 0.9}, {"svm_top1": 0.7}, 100)
    assert (gap, noise) == pytest.approx((20.0, 200 * math.sqrt((0.09 + 0.21) / 100)))
    with pytest.raises(ValueError):  # rows scored on different test sets cannot be paired
        gap_and_noise(*rows([1, 0, 1], [1, 1]), 3)


def test_verdict_names_the_paired_band_and_its_multiple():
    pretrained, random_init = rows([1] * 90 + [0] * 10, [1] * 70 + [0] * 30)
    text = verdict(pretrained, random_init, 100)
    assert text.startswith("pretrained beats random init by 20.0 points")
    assert "paired over 100 test videos" in text and "2.5x the noise" in text
    same = [1] * 50 + [0] * 50
    assert "NOT better" in verdict(*rows(same, same), 100)  # identical features: no gap, no band


def test_svm_correct_is_the_linear_protocols_svm_per_video():
    from mcl_fast.eval.linear import linear_svm_top1

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    train_y, test_y = np.repeat(np.arange(4), 20), np.repeat(np.arange(4), 10)
    train_x = centres[train_y] + rng.normal(scale=2.0, size=(80, 16))
    test_x = centres[test_y] + rng.normal(scale=2.0, size=(40, 16))
    correct = svm_correct(train_x, train_y, test_x, test_y)
    assert correct.shape == (40,) and set(np.unique(correct)) <= {0, 1}
    assert 0.25 < correct.mean() < 1.0  # a test that can tell the two apart: not all right
    assert correct.mean() == pytest.approx(linear_svm_top1(train_x, train_y, test_x, test_y, standardize=True))


def test_more_held_out_videos_leave_the_training_set_as_it_was(tmp_path):
    small = make_demo_actions(tmp_path / "a", videos_per_class=3, progress=False)
    large = make_demo_actions(tmp_path / "b", videos_per_class=3, test_per_class=3, progress=False)
    assert small["train_list"].read_text() == large["train_list"].read_text()
    assert len(small["train_list"].read_text().split()) == 8  # 2 per class
    small_test = small["test_csv"].read_text().splitlines()[1:]
    large_test = large["test_csv"].read_text().splitlines()[1:]
    assert len(small_test) == 4 and len(large_test) == 12 and set(small_test) <= set(large_test)
    # the same video index is the same video: the training files are byte for byte the same
    first = small["train_list"].read_text().split()[0]
    assert (small["videos"] / first).read_bytes() == (large["videos"] / first).read_bytes()
    with pytest.raises(ValueError, match="needs training and test videos"):
        make_demo_actions(tmp_path / "c", videos_per_class=1, progress=False)


def test_the_demo_logs_one_history_row_per_epoch(tmp_path):
    from mcl_fast.demo import epoch_steps

    listing = tmp_path / "train_videos.txt"
    listing.write_text("".join(f"a/v{i}.mp4\n" for i in range(204)))
    assert epoch_steps(listing, 16) == 12  # the demo: 204 videos, batch 16, drop_last -> 360 steps in 30 epochs
    listing.write_text("a/v0.mp4\n")
    assert epoch_steps(listing, 16) == 1
