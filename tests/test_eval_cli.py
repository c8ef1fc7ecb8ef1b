"""`mcl-fast eval ...` end to end on a tiny synthetic dataset, and the evaluation clips and cache."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mcl_fast.checkpoint import atomic_torch_save
from mcl_fast.cli import main as cli_main
from mcl_fast.data.synthetic import make_video
from mcl_fast.eval.features import (ClipSettings, cached_features, eval_clips, extract_features,
                                    uniform_clip_starts)
from mcl_fast.models import build_backbone

CLIP = ["--clip-len", "4", "--stride", "2", "--num-clips", "3", "--no-progress"]


def main(argv) -> int:
    """`mcl-fast ARGV` in this process (paths given as Path objects become strings)."""
    return cli_main([str(a) for a in argv])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 videos (20 frames of 64x80) in two classes: a moving object vs a still one; train/test CSVs."""
    root = tmp_path_factory.mktemp("evalset")
    rows = []
    for i in range(8):
        cls = "moving" if i % 2 else "still"
        rel = f"{cls}/v{i}.mp4"
        make_video(root / rel, num_frames=20, height=64, width=80, object_size=16, speed=3.0,
                   active=None if i % 2 else (0, 0), seed=40 + i)
        rows.append((rel, cls))
    (root / "train.csv").write_text("path,label\n" + "".join(f"{p},{c}\n" for p, c in rows[:4]))
    (root / "test.csv").write_text("path,label\n" + "".join(f"{p},{c}\n" for p, c in rows[4:]))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A file in the trainer's checkpoint layout: the query encoder's tiny backbone + config."""
    torch.manual_seed(0)
    net = build_backbone("tiny")
    state = {"model": {f"encoder_q.backbone.{k}": v for k, v in net.state_dict().items()},
             "config": {"model": {"backbone": "tiny"}, "data": {"size": 48, "clip_len": 4, "stride": 2}}}
    path = tmp_path_factory.mktemp("ckpt") / "ckpt_00000010.pt"
    return atomic_torch_save(state, path)  # as the trainer writes it: with checksums, checked on every load


def test_eval_clip_geometry(synthetic_mp4):
    starts = uniform_clip_starts(32, 5, 8, 2)
    assert starts.tolist() == [0, 4, 9, 13, 17]  # last start 32 - 15 = 17, evenly spaced
    assert uniform_clip_starts(5, 3, 8, 2).tolist() == [0, 0, 0]  # too short: all from 0
    settings = ClipSettings(num_clips=3, clip_len=8, stride=2, crop_size=56)
    assert settings.resize_to == 64  # 56 · 256 / 224
    clips = eval_clips(synthetic_mp4.path, settings)
    assert clips.shape == (3, 3, 8, 56, 56) and clips.dtype == np.float32
    assert abs(float(clips.mean())) < 2.0  # ImageNet-normalised, not 0..255
    with pytest.raises(ValueError, match="smaller than crop_size"):
        ClipSettings(crop_size=224, short_side=200)
    with pytest.raises(ValueError, match="nope.mp4: file not found"):
        eval_clips(synthetic_mp4.path.parent / "nope.mp4", settings)


def test_features_mean_over_clips_and_cache(tmp_path, synthetic_mp4):
    torch.manual_seed(0)
    net = build_backbone("tiny")
    settings = ClipSettings(num_clips=3, clip_len=4, stride=2, crop_size=48)
    feats = extract_features(net, [synthetic_mp4.path] * 2, settings, batch_size=3, progress=False)
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(eval_clips(synthetic_mp4.path, settings))).mean(0).numpy()
    assert feats.shape == (2, net.feature_dim)
    np.testing.assert_allclose(feats[1], expected, rtol=1e-4, atol=1e-5)
    calls = []

    def compute():
        calls.append(1)
        return feats

    meta = {"checkpoint": "abc", "clips": settings.to_dict()}
    a, hit_a = cached_features(tmp_path, meta, compute)
    b, hit_b = cached_features(tmp_path, meta, compute)
    c, hit_c = cached_features(tmp_path, {**meta, "checkpoint": "other"}, compute)
    assert (hit_a, hit_b, hit_c) == (False, True, False) and len(calls) == 2
    np.testing.assert_array_equal(a, b)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json", ".npy", ".npy"]


def _cached(cache_dir, split_name):
    """The cached feature array of the split the CLI named `split_name` (read from the .json beside it)."""
    found = [js.with_suffix(".npy") for js in cache_dir.glob("*.json")
             if json.loads(js.read_text())["meta"]["split"] == split_name]
    assert len(found) == 1, (split_name, found)
    return np.load(found[0], allow_pickle=False)


def _svm_top1(train_x, train_y, test_x, test_y):
    """The paper's SVM probe (liblinear, C = 1, primal) fitted here, not through mcl_fast."""
    import warnings

    from sklearn.svm import LinearSVC

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svm = LinearSVC(C=1.0, dual=False, max_iter=5000).fit(train_x, train_y)
    return float(np.mean(svm.predict(test_x) == test_y))


def _cosine_ranking(query, gallery):
    """(Q, G) gallery indices, most cosine-similar first."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    return np.argsort(-(q @ g.T), axis=1, kind="stable")


def test_eval_linear_and_retrieval_cli(dataset, checkpoint, tmp_path, capsys):
    out = tmp_path / "linear.json"
    args = ["eval", "linear", "--checkpoint", checkpoint, "--train-split", dataset / "train.csv",
            "--test-split", dataset / "test.csv", "--videos", dataset, "--cache", tmp_path / "cache",
            "--fc-epochs", "5", "--retrieval", "--json", out, *CLIP]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["num_train"] == 4 and result["num_test"] == 4 and result["num_classes"] == 2
    assert result["clips"]["crop_size"] == 48 and result["clips"]["clip_len"] == 4  # from the checkpoint config
    printed = capsys.readouterr().out
    assert "SVM top-1" in printed and "R@1" in printed
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # train and test features cached
    # Recompute every metric from the cached features, independently of the CLI's wiring: a swap
    # of train and test, of labels, of query and gallery or a wrong probe setting shows up here.
    train_x, test_x = _cached(tmp_path / "cache", "csv/train"), _cached(tmp_path / "cache", "csv/test")
    assert train_x.shape == (4, result["feature_dim"]) and test_x.shape == (4, result["feature_dim"])
    assert np.ptp(test_x, axis=0).max() > 1e-6  # the videos' features differ
    train_y, test_y = np.array([1, 0, 1, 0]), np.array([1, 0, 1, 0])  # classes sorted: moving 0, still 1
    assert result["svm_top1"] == pytest.approx(_svm_top1(train_x, train_y, test_x, test_y))
    from mcl_fast.eval.linear import fc_softmax_top1

    assert result["fc_top1"] == pytest.approx(fc_softmax_top1(train_x, train_y, test_x, test_y, num_classes=2,
                                                              epochs=5, lr=16.0, seed=0))
    ranked = _cosine_ranking(test_x, train_x)
    assert set(result["recall"]) == {"1", "5", "10", "20"}
    assert result["recall"]["1"] == pytest.approx(np.mean(train_y[ranked[:, 0]] == test_y))

    out2 = tmp_path / "retrieval.json"
    assert main(["eval", "retrieval", "--checkpoint", checkpoint, "--train-split", dataset / "train.csv",
                 "--test-split", dataset / "test.csv", "--videos", dataset, "--cache", tmp_path / "cache",
                 "--ks", "1,2", "--json", out2, *CLIP]) == 0
    recall = json.loads(out2.read_text())["recall"]
    assert recall["1"] == result["recall"]["1"]  # same cached features, same metric
    top2_hit = (train_y[ranked[:, :2]] == test_y[:, None]).any(1)
    assert recall["2"] == pytest.approx(np.mean(top2_hit))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2  # served from the cache


def test_eval_reports_bad_split_line(dataset, checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nstill/v0.mp4,still\nmoving/v1.mp4\n")
    code = main(["eval", "linear", "--checkpoint", checkpoint, "--train-split", bad, "--test-split",
                 dataset / "test.csv", "--videos", dataset, *CLIP])
    assert code == 1
    assert "bad.csv:3: expected 'path,label'" in capsys.readouterr().err
    missing = tmp_path / "missing.csv"
    missing.write_text("path,label\nstill/v0.mp4,still\nmoving/gone.mp4,moving\n")
    code = main(["eval", "retrieval", "--checkpoint", checkpoint, "--train-split", missing, "--test-split",
                 dataset / "test.csv", "--videos", dataset, *CLIP])
    assert code == 1
    assert "missing.csv:3: video 'moving/gone.mp4' not found" in capsys.readouterr().err


def test_eval_finetune_and_gradcam_cli(dataset, checkpoint, tmp_path, capsys):
    from mcl_fast.eval.finetune import load_classifier

    ft = tmp_path / "ft.pt"
    assert main(["eval", "finetune", "--checkpoint", checkpoint, "--train-split", dataset / "train.csv",
                 "--test-split", dataset / "test.csv", "--videos", dataset, "--epochs", "2", "--train-batch", "2",
                 "--num-test-clips", "2", "--out", ft, "--json", tmp_path / "ft.json", *CLIP]) == 0
    result = json.loads((tmp_path / "ft.json").read_text())
    assert len(result["history"]) == 2 and np.isfinite(result["history"][-1]["loss"])
    assert 0.0 <= result["top1"] <= 1.0 and result["skipped"] == [] and result["num_evaluated"] == 4
    saved = torch.load(ft, weights_only=True)["finetune"]
    assert saved["top1"] == result["top1"] and saved["skipped"] == []  # rewritten with the test result
    backbone, head, classes, config = load_classifier(ft)
    assert classes == ["moving", "still"] and head.out_features == 2
    assert config["model"]["backbone"] == "tiny"

    png = tmp_path / "cam.png"
    assert main(["eval", "gradcam", "--checkpoint", ft, "--video", dataset / "moving/v1.mp4", "--out", png,
                 "--target", "pred", "--clip-len", "8", "--no-progress"]) == 0
    assert png.is_file() and png.stat().st_size > 1000
    assert main(["eval", "gradcam", "--checkpoint", checkpoint, "--video", dataset / "moving/v1.mp4",
                 "--out", png, "--target", "1"]) == 1
    assert "needs a fine-tuned checkpoint" in capsys.readouterr().err


def test_dali_cpu_clips_match_pyav(synthetic_webm):
    """DALI's CPU decoder (VP9) gives the PyAV clips up to interpolation, frame-aligned."""
    from mcl_fast._backend import HAS_DALI
    from mcl_fast.eval.features import batch_clips, clip_loader

    if not HAS_DALI:
        pytest.skip("nvidia-dali is not installed")
    settings = ClipSettings(num_clips=3, clip_len=4, stride=2, crop_size=48)
    out = [batch_clips(b) for b in clip_loader([synthetic_webm.path] * 2, settings, decoder="dali", device="cpu")]
    assert [int(i) for _, index in out for i in index] == [0, 1]
    ref = eval_clips(synthetic_webm.path, settings)
    clips = out[-1][0][-1].numpy()
    assert clips.shape == ref.shape
    aligned = np.abs(clips - ref).mean()
    shifted = np.abs(clips[:, :, 1:] - ref[:, :, :-1]).mean()
    assert aligned < 0.2 and aligned < shifted
    torch.manual_seed(0)
    net = build_backbone("tiny")
    a = extract_features(net, [synthetic_webm.path], settings, decoder="dali", progress=False)
    b = extract_features(net, [synthetic_webm.path], settings, decoder="pyav", progress=False)
    cos = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos > 0.98


def test_evaluate_checkpoint_api(dataset, checkpoint):
    """The one-call API `make demo` uses: linear probes and R@k from split specs."""
    from mcl_fast.eval.linear import evaluate_checkpoint

    settings = ClipSettings(num_clips=2, clip_len=4, stride=2, crop_size=48)
    result = evaluate_checkpoint(checkpoint, dataset / "train.csv", dataset / "test.csv", dataset, settings=settings,
                                 fc_epochs=3, ks=(1, 3), progress=False)
    assert result["num_train"] == 4 and result["num_test"] == 4
    assert set(result["recall"]) == {1, 3} and result["recall"][1] <= result["recall"][3] == 1.0
    assert 0.0 <= result["svm_top1"] <= 1.0 and 0.0 <= result["fc_top1"] <= 1.0


def test_action_dataset(tmp_path):
    """The synthetic action classes: object inside the frame, moving only in its window, as its class says."""
    from mcl_fast.data.splits import load_split
    from mcl_fast.eval.actions import ACTION_CLASSES, make_action_dataset, render_action

    travel = {}
    for cls in ACTION_CLASSES:
        frames, boxes = render_action(cls, num_frames=24, height=32, width=40, object_size=6, active_fraction=0.5,
                                      seed=3)
        assert frames.shape == (24, 32, 40, 3) and frames.dtype == np.uint8
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 0] + 6 <= 32).all() and (boxes[:, 1] + 6 <= 40).all()
        steps = np.abs(np.diff(boxes[:, :2], axis=0)).sum(1)
        assert (steps > 0).sum() <= 12  # moves only inside the active window (half of 24 frames)
        travel[cls] = steps.sum()
    assert travel["still"] == 0 and travel["fast"] > travel["slow"] > 0 and travel["circle"] > 0
    h_frames, h_boxes = render_action("horizontal", num_frames=24, height=32, width=40, object_size=6, seed=5)
    assert np.ptp(h_boxes[:, 0]) == 0 and np.ptp(h_boxes[:, 1]) > 0  # horizontal: x changes, y does not
    with pytest.raises(ValueError, match="unknown action class"):
        render_action("moonwalk")
    train_csv, test_csv = make_action_dataset(tmp_path, classes=("vertical", "circle"), videos_per_class=3,
                                              num_frames=12, height=32, width=40, object_size=6, progress=False)
    train = load_split(train_csv, videos_root=tmp_path)
    test = load_split(test_csv, videos_root=tmp_path, classes=train.classes)
    assert len(train) == 4 and len(test) == 2 and train.classes == ["circle", "vertical"]


def test_demo_evaluation_step(checkpoint, tmp_path):
    from mcl_fast.eval.demo_eval import make_demo_actions, run_demo_evaluation

    data = make_demo_actions(tmp_path / "actions", videos_per_class=3, progress=False)
    assert data["train_list"].read_text().split() == [p.split(",")[0] for p in
                                                      data["train_csv"].read_text().splitlines()[1:]]
    from mcl_fast.models.tiny import TinyNet2d

    torch.manual_seed(3)
    torch.save({"state_dict": TinyNet2d().state_dict()}, tmp_path / "tiny2d.pt")
    result = run_demo_evaluation(checkpoint, data, tmp_path, num_clips=2, supervised_epochs=1, progress=False,
                                 init=tmp_path / "tiny2d.pt")
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["num_train"] == 8 and saved["num_test"] == 4
    assert set(saved) >= {"pretrained", "random_init", "random_init_bn", "image_init", "supervised", "verdict", "table",
                          "gap_svm", "noise_svm"}
    assert "image-MoCo init" in saved["table"] and saved["gap_svm"] == pytest.approx(
        100 * (saved["pretrained"]["svm_top1"] - max(saved["random_init"]["svm_top1"],
                                                     saved["random_init_bn"]["svm_top1"])))
    # Grad-CAM before (random init, the warm start) beside after, with each map's cosine to the S-motion.
    assert list(saved["gradcam_motion_alignment"]) == ["random init", "image-MoCo init", "pretrained"]
    assert all(-1 <= v <= 1 for v in saved["gradcam_motion_alignment"].values())
    assert saved["pretrained"]["r1"] == result["pretrained"]["r1"]
    # the fixture checkpoint holds a seed-0 random tiny backbone: the same features as "random init"
    assert saved["pretrained"]["svm_top1"] == saved["random_init"]["svm_top1"]
    assert "NOT better" in saved["verdict"] and "random init" in saved["table"]
    assert 0 <= saved["supervised"]["classifier_top1"] <= 1
    assert (tmp_path / "figures" / "gradcam.png").stat().st_size > 1000


# ------------------------------------------------------------------ fine-tuning: test-time robustness

_EVAL_SETTINGS = dict(num_clips=2, clip_len=4, stride=2, crop_size=48)


def _test_videos(dataset, tmp_path):
    """Five test entries: three good videos, an undecodable file and a missing one; their labels."""
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    paths = [dataset / "still/v4.mp4", bad, dataset / "moving/v5.mp4", tmp_path / "gone.mp4",
             dataset / "still/v6.mp4"]
    return paths, [1, 0, 0, 1, 1]


def _classifier(seed=0):
    from mcl_fast.eval.finetune import VideoClassifier

    torch.manual_seed(seed)
    return VideoClassifier(build_backbone("tiny"), 2).eval()


def test_evaluate_classifier_skips_undecodable_videos(dataset, tmp_path, capsys):
    from mcl_fast.eval.finetune import evaluate_classifier

    paths, labels = _test_videos(dataset, tmp_path)
    model = _classifier()
    settings = ClipSettings(**_EVAL_SETTINGS)
    result = evaluate_classifier(model, paths, labels, settings, batch_size=4, progress=False)
    assert result["skipped"] == [str(paths[1]), str(paths[3])] and result["num_evaluated"] == 3
    err = capsys.readouterr().err
    assert "corrupt.mp4" in err and "gone.mp4: file not found" in err
    expected = []
    with torch.no_grad():
        for p in (paths[0], paths[2], paths[4]):
            expected.append(int(model(torch.from_numpy(eval_clips(p, settings))).softmax(-1).mean(0).argmax()))
    pred = result["predictions"]
    assert [pred[0], pred[2], pred[4]] == expected and pred[1] == pred[3] == -1
    assert result["top1"] == pytest.approx(np.mean(np.array(expected) == np.array([1, 0, 1])))


_RANK_SCRIPT = """
import json, sys
import torch
from mcl_fast import dist
from mcl_fast.eval.features import ClipSettings
from mcl_fast.eval.finetune import VideoClassifier, evaluate_classifier
from mcl_fast.models import build_backbone

paths, labels, settings, weights, out = json.loads(sys.argv[1])
dev, rank, world = dist.init_distributed("cpu", timeout_s=60)
assert world == 2, world
model = VideoClassifier(build_backbone("tiny"), 2)
model.load_state_dict(torch.load(weights, weights_only=True))
result = evaluate_classifier(model, paths, labels, ClipSettings(**settings), batch_size=2, progress=False)
with open(f"{out}.{rank}", "w") as f:
    json.dump(result, f)
dist.cleanup()
"""


def _run_two_ranks(tmp_path, script_text: str, arg: str) -> None:
    """Run `script_text` as two gloo ranks (torchrun's environment) with the argument `arg`."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = tmp_path / "rank.py"
    script.write_text(script_text)
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script), arg], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]


def test_evaluate_classifier_shards_over_ranks(dataset, tmp_path):
    """Two gloo ranks, each a strided shard (one with a bad video): every rank gets the whole result."""
    from mcl_fast.eval.finetune import evaluate_classifier

    paths, labels = _test_videos(dataset, tmp_path)
    model = _classifier(seed=1)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    single = evaluate_classifier(model, paths, labels, ClipSettings(**_EVAL_SETTINGS), batch_size=4, progress=False)
    arg = json.dumps([[str(p) for p in paths], labels, _EVAL_SETTINGS, str(tmp_path / "w.pt"), str(tmp_path / "r")])
    _run_two_ranks(tmp_path, _RANK_SCRIPT, arg)
    for rank in range(2):
        assert json.loads((tmp_path / f"r.{rank}").read_text()) == single, rank


_FINETUNE_RANK_SCRIPT = """
import json, sys
import numpy as np
from mcl_fast import dist
from mcl_fast.data.evaluation import finetune_loader

paths, out = json.loads(sys.argv[1])
dev, rank, world = dist.init_distributed("cpu", timeout_s=60)
loader = finetune_loader(paths, [0] * len(paths), clip_len=4, stride=2, crop_size=32, resize_to=40,
                         batch_size=2, seed=4)
for epoch in (0, 1):
    loader.set_epoch(epoch)
    batches = list(loader)
    np.save(f"{out}.{rank}.{epoch}.npy", np.concatenate([b["views"][0].numpy() for b in batches]))
    np.save(f"{out}.{rank}.{epoch}.index.npy", np.concatenate([b["index"].numpy() for b in batches]))
dist.cleanup()
"""


def test_finetune_clips_are_sharded_over_ranks(dataset, tmp_path):
    """Under torchrun each rank reads its part of the epoch (5 videos: 3 each, one repeated to even
    the counts), and the clips are those one process reads at the same positions of the epoch."""
    from mcl_fast.data.evaluation import finetune_loader

    paths = [str(dataset / f"{c}/v{i}.mp4") for i, c in enumerate(["still", "moving"] * 2 + ["still"])]
    _run_two_ranks(tmp_path, _FINETUNE_RANK_SCRIPT, json.dumps([paths, str(tmp_path / "r")]))
    alone = finetune_loader(paths, [0] * 5, clip_len=4, stride=2, crop_size=32, resize_to=40, batch_size=5,
                            seed=4)
    for epoch in (0, 1):
        alone.set_epoch(epoch)
        (batch,) = list(alone)
        ranks = [np.load(tmp_path / f"r.{rank}.{epoch}{kind}.npy") for rank in range(2) for kind in ("", ".index")]
        clips, index = np.concatenate(ranks[0::2]), np.concatenate(ranks[1::2])
        assert len(ranks[1]) == len(ranks[3]) == 3 and sorted(set(index.tolist())) == [0, 1, 2, 3, 4]
        assert index[:5].tolist() == batch["index"].tolist() and index[5] == index[0]  # the padding: the first video
        np.testing.assert_array_equal(clips[:5], batch["views"][0].numpy())


def test_finetune_saves_checkpoint_before_testing(dataset, checkpoint, tmp_path, monkeypatch):
    from mcl_fast.checkpoint import load_backbone
    from mcl_fast.data.splits import load_split
    from mcl_fast.eval import finetune as ft

    def failing_test(*args, **kwargs):
        raise RuntimeError("the test set blew up")

    monkeypatch.setattr(ft, "evaluate_classifier", failing_test)
    backbone, config = load_backbone(checkpoint)
    train = load_split(str(dataset / "train.csv"), videos_root=dataset)
    test = load_split(str(dataset / "test.csv"), videos_root=dataset, classes=train.classes)
    out = tmp_path / "ft.pt"
    with pytest.raises(RuntimeError, match="blew up"):
        ft.finetune(backbone, config, train, test, dataset, train_settings=ClipSettings(num_clips=1, clip_len=4,
                    stride=2, crop_size=48), config=ft.FinetuneConfig(epochs=1, batch_size=2), out=out,
                    device="cpu", progress=False)
    _, head, classes, _ = ft.load_classifier(out)  # the fine-tuned weights survived the failed test
    assert classes == ["moving", "still"] and head.out_features == 2
    state = torch.load(out, weights_only=True)
    assert state["finetune"]["top1"] is None and len(state["finetune"]["history"]) == 1


def _finetune_batches(paths, labels, num_workers: int, epochs=(0, 2)) -> list[dict]:
    from mcl_fast.data.evaluation import finetune_loader

    loader = finetune_loader(paths, labels, clip_len=4, stride=2, crop_size=48, resize_to=56, batch_size=3, seed=3,
                             num_workers=num_workers)
    try:
        out = []
        for epoch in epochs:
            loader.set_epoch(epoch)
            out.extend(loader)
        return out
    finally:
        loader.close()


def test_finetune_clips_are_the_same_whatever_the_workers(dataset):
    """The fine-tuning mode's clips depend on (seed, epoch, position) only: the main process and two
    workers give the same batches, with each video's label, and another epoch other clips."""
    paths = [dataset / f"{c}/v{i}.mp4" for i, c in enumerate(["still", "moving"] * 2)]
    labels = [1, 0, 1, 0]
    main_process, workers = _finetune_batches(paths, labels, 0), _finetune_batches(paths, labels, 2)
    assert [len(b["index"]) for b in main_process] == [3, 1, 3, 1]  # drop_last=False: every video every epoch
    for a, b in zip(main_process, workers, strict=True):
        assert a["views"][0].shape == (len(a["index"]), 3, 4, 48, 48)
        torch.testing.assert_close(a["views"][0], b["views"][0], rtol=0, atol=0)
        assert a["index"].tolist() == b["index"].tolist()
        assert a["label"].tolist() == [labels[i] for i in a["index"].tolist()]
    assert sorted(torch.cat([b["index"] for b in main_process[:2]]).tolist()) == [0, 1, 2, 3]
    first = {int(i): v for b in main_process[:2] for i, v in zip(b["index"], b["views"][0])}
    later = {int(i): v for b in main_process[2:] for i, v in zip(b["index"], b["views"][0])}
    assert any(not torch.equal(first[i], later[i]) for i in first)  # epoch 2 draws other clips


def test_finetune_config_reads_an_old_cache_videos_with_a_warning():
    from mcl_fast.eval.finetune import FinetuneConfig

    with pytest.warns(UserWarning, match="cache_videos is no longer an option and is ignored"):
        cfg = FinetuneConfig(epochs=2, cache_videos=True)
    assert cfg == FinetuneConfig(epochs=2) and "cache_videos" not in dataclasses.asdict(cfg)


def test_demo_verdict_weighs_the_gap_against_the_test_set_noise():
    from mcl_fast.eval.demo_eval import verdict

    assert verdict({"svm_top1": 0.90}, {"svm_top1": 0.50}, 100).startswith("pretrained beats random init by 40.0")
    assert "within the noise" in verdict({"svm_top1": 0.55}, {"svm_top1": 0.50}, 100)
    assert "beats" in verdict({"svm_top1": 0.55}, {"svm_top1": 0.50}, 10000)  # the same gap on 10k videos
    assert "NOT better" in verdict({"svm_top1": 0.40}, {"svm_top1": 0.50}, 100)


def test_recalibrate_batchnorm_measures_the_data_and_keeps_the_weights(dataset):
    from mcl_fast.eval.baselines import recalibrate_batchnorm

    torch.manual_seed(0)
    net = build_backbone("tiny")
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    paths = [dataset / "moving/v1.mp4", dataset / "still/v2.mp4"]
    settings = ClipSettings(num_clips=2, clip_len=4, stride=2, crop_size=48)
    recalibrate_batchnorm(net, paths, settings, num_workers=0)
    assert not net.training
    for k, v in weights.items():
        torch.testing.assert_close(net.state_dict()[k], v, rtol=0, atol=0)
    bn = net.features[1]
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    # the first BN's mean: the conv's output averaged over the clips (one batch: exact)
    clips = torch.from_numpy(np.stack([eval_clips(p, settings) for p in paths])).flatten(0, 1)
    with torch.no_grad():
        conv = net.features[0](clips)
    torch.testing.assert_close(bn.running_mean, conv.mean((0, 2, 3, 4)), rtol=1e-4, atol=1e-5)
