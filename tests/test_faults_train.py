"""Issue 18, the pretraining run's part: nothing lost, nothing silently wrong.

Each test reproduces a finding as it stood and shows the new behaviour, through the real
`mcl-fast pretrain` CLI (a subprocess where the process boundary matters: exit codes, locks,
umask, a full disk; in this process where only the message and the files matter):
  finding 2   a fresh run into another run's folder destroyed its checkpoints -> refused, --overwrite moves it aside
  finding 4   40 flipped bytes in a checkpoint tensor loaded silently -> every load checks checksums
  finding 6   --resume ignored a changed lr / batch, model.dim=64 gave a traceback -> refused with the diff
  finding 12  checkpoints were 0600 whatever the umask -> the umask's mode
  finding 13  optim.lr=abc crashed after config.json was written -> refused up front; disk full: one line, not a traceback
  finding 14  a killed run's .ckpt_*.tmp stayed forever -> removed by the next run (folder locked)
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mcl_fast import checkpoint as ckpt
from mcl_fast.cli import main as cli_main
from mcl_fast.train import CONFIG_DIR, DEFAULTS, config_schema, flatten, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.loader=synthetic", "data.synthetic_batches=3", "data.batch_size=4", "data.size=32", "data.clip_len=4",
        "optim.epochs=3", "optim.warmup_epochs=1", "checkpoint.every_steps=2", "train.tensorboard=false",
        "train.progress=false", "train.plot=false", "train.log_every=1", "train.collapse_warning=false",
        "model.queue_size=8"]


def command(out, extra) -> list[str]:
    """pretrain's arguments: the flags of `extra` first (argparse takes the key=value list in one piece)."""
    extra = [str(e) for e in extra]
    flags, overrides = [e for e in extra if e.startswith("--")], [e for e in extra if not e.startswith("--")]
    return ["pretrain", *flags, "--config", "demo_cpu", *TINY, f"output={out}", *overrides]


def pretrain(out, *extra, umask: int | None = None) -> subprocess.CompletedProcess:
    """`mcl-fast pretrain --config demo_cpu TINY output=OUT EXTRA` as a subprocess."""
    cmd = [sys.executable, "-m", "mcl_fast.cli", *command(out, extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def pretrain_here(capsys, out, *extra) -> tuple[int, str]:
    """The same command in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = cli_main(command(out, extra))
    return code, capsys.readouterr().err


def snapshot(folder: Path) -> dict:
    """{relative path: sha256} of every file under folder (the lock file aside)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A run of 4 steps (checkpoints 3 and 4 kept), made under umask 022."""
    out = tmp_path_factory.mktemp("runs") / "run"
    done = pretrain(out, "train.max_steps=4", umask=0o022)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["ckpt_00000003.pt", "ckpt_00000004.pt"]
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A copy of the finished run this test may change."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def flip_bytes_in_tensor(path: Path, entry: str = "model", count: int = 40) -> str:
    """Flip `count` bytes in the middle of the largest tensor of state[entry] inside the file; its key path."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    name, tensor = max(state[entry].items(), key=lambda kv: kv[1].numel())
    data = ckpt.tensor_bytes(tensor).tobytes()
    raw = bytearray(path.read_bytes())
    start = raw.find(data) + len(data) // 2
    assert raw.find(data) >= 0 and len(data) > 2 * count
    raw[start:start + count] = bytes(b ^ 0xFF for b in raw[start:start + count])
    path.write_bytes(bytes(raw))
    return f"{entry}/{name}"


# ---- finding 2: a run never destroys another ----------------------------------------------------
def test_a_fresh_run_refuses_another_runs_folder_and_overwrite_moves_it_aside(run_copy):
    before = snapshot(run_copy)
    refused = pretrain(run_copy, "train.seed=1", "train.max_steps=2")
    # as it stood: exit 0, the new checkpoints deleted right after writing, the old run's config replaced
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "holds another run" in refused.stderr and "--resume" in refused.stderr and "--overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert snapshot(run_copy) == before  # byte for byte: checkpoints, config.json, history, summary

    fresh = pretrain(run_copy, "train.seed=1", "train.max_steps=2", "--overwrite")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    [aside] = run_copy.parent.glob("run.replaced-*")
    assert snapshot(aside) == before and f"moved the earlier run in {run_copy} to {aside}" in fresh.stderr
    assert [p.name for p in ckpt.list_checkpoints(run_copy)] == ["ckpt_00000002.pt"]
    new_id = json.loads((run_copy / "run.json").read_text())["run_id"]
    old_id = json.loads((aside / "run.json").read_text())["run_id"]
    assert new_id != old_id and ckpt.load_checkpoint(run_copy / "ckpt_00000002.pt")["run_id"] == new_id
    assert json.loads((run_copy / "config.json").read_text())["train"]["seed"] == 1


def test_overwrite_does_not_go_with_resume(run_copy, capsys):
    before = snapshot(run_copy)
    code, err = pretrain_here(capsys, run_copy, "--resume", "--overwrite")
    assert code == 2 and "--overwrite" in err and snapshot(run_copy) == before


def test_resume_from_a_checkpoint_never_joins_another_runs_folder(finished_run, tmp_path, capsys):
    source = finished_run / "ckpt_00000004.pt"
    other = tmp_path / "other"
    assert pretrain_here(capsys, other, "train.seed=1", "train.max_steps=2")[0] == 0
    before = snapshot(other)
    code, err = pretrain_here(capsys, other, f"--resume-from={source}", "train.max_steps=4")
    assert code == 2 and "holds another run" in err and snapshot(other) == before
    branch = tmp_path / "branch"  # an empty folder: the run continues there, under its own id
    code, err = pretrain_here(capsys, branch, f"--resume-from={source}", "train.max_steps=4")
    assert code == 0, err
    assert json.loads((branch / "run.json").read_text()) == json.loads((finished_run / "run.json").read_text())


def test_pruning_deletes_only_the_runs_own_checkpoints(tmp_path):
    def state(step, run_id):
        return {"model": {"w": torch.full((3,), float(step))}, "step": step, "run_id": run_id}

    for step in (11, 12):  # the finding: an older run's ckpt_00000011/12.pt in the folder
        ckpt.save_checkpoint(state(step, "old"), tmp_path, step)
    torch.save({"model": {"w": torch.zeros(3)}, "step": 1}, tmp_path / "ckpt_00000001.pt")  # an earlier version's
    others = snapshot(tmp_path)
    for step in (2, 3, 4, 5):
        ckpt.save_checkpoint(state(step, "new"), tmp_path, step, keep=2)
    # as it stood: keep-newest-2 by step number deleted ckpt 2..5 right after writing each
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "ckpt_00000001.pt", "ckpt_00000004.pt", "ckpt_00000005.pt", "ckpt_00000011.pt", "ckpt_00000012.pt"]
    assert {k: v for k, v in snapshot(tmp_path).items() if k in others} == others
    with pytest.warns(UserWarning, match="belongs to run old"):
        path, _ = ckpt.load_latest(tmp_path, run_id="new")  # a resume of "new" skips the other run's
    assert path.name == "ckpt_00000005.pt"


# ---- finding 6: --resume refuses a config that changes the run ------------------------------------
def test_resume_refuses_changes_that_alter_the_run_and_lists_them(run_copy, capsys):
    before = snapshot(run_copy)
    saved = json.loads((run_copy / "config.json").read_text())
    code, err = pretrain_here(capsys, run_copy, "--resume", "optim.lr=0.5", "data.batch_size=8", "model.dim=64",
                              "train.max_steps=6", "train.log_every=3")
    # as it stood: lr silently ignored, batch 8 silently shortened the run, dim 64 a size-mismatch traceback
    assert code == 2
    for key, new in (("optim.lr", 0.5), ("data.batch_size", 8), ("model.dim", 64)):
        assert f"{key}: {json.dumps(flatten(saved)[key])} -> {new}" in err, err
    assert "train.log_every" not in err.split("only ")[0]  # a safe key is not listed among the refused
    assert snapshot(run_copy) == before


def test_resume_with_model_dim_64_is_a_refusal_not_a_size_mismatch(run_copy):
    before = snapshot(run_copy)
    done = pretrain(run_copy, "--resume", "model.dim=64", "train.max_steps=4")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "model.dim:" in done.stderr and "-> 64" in done.stderr
    assert "size mismatch" not in done.stderr and "Traceback" not in done.stderr
    assert snapshot(run_copy) == before


def test_resume_with_safe_changes_needs_the_flag(run_copy, capsys):
    before = snapshot(run_copy)
    safe = ["train.max_steps=6", "checkpoint.every_steps=1", "train.log_every=2"]
    code, err = pretrain_here(capsys, run_copy, "--resume", *safe)
    assert code == 2 and "--resume-with-changes" in err and "train.max_steps: 4 -> 6" in err
    assert snapshot(run_copy) == before
    code, err = pretrain_here(capsys, run_copy, "--resume", "--resume-with-changes", *safe)
    assert code == 0, err
    assert "resuming with changes" in err and "checkpoint.every_steps: 2 -> 1" in err
    assert [p.name for p in ckpt.list_checkpoints(run_copy)] == ["ckpt_00000005.pt", "ckpt_00000006.pt"]
    assert json.loads((run_copy / "config.json").read_text())["train"]["max_steps"] == 6


def _as_before_method(run: Path, **loss) -> None:
    """Rewrite run's checkpoints as the version before `method` wrote them: the release's terms as
    loss keys (paper values unless given), no method or official section, no checksums."""
    old = {"st_weighting": "uniform", "positives": 1, "intra": False, "intra_tau": 0.1, "order": False, **loss}
    for path in ckpt.list_checkpoints(run):
        state = torch.load(path, map_location="cpu", weights_only=True)
        del state["config"]["method"], state["config"]["official"], state["checksums"]
        state["config"]["loss"].update(old)
        torch.save(state, path)


def test_a_checkpoint_with_the_earlier_release_keys_resumes_as_method_paper(run_copy, capsys):
    """Its loss.st_weighting, positives, intra, intra_tau, order (paper values) are read as
    method=paper once, with a notice; the resume is not refused as a config change."""
    _as_before_method(run_copy)
    with pytest.warns(UserWarning, match="read as method=paper"):
        code, err = pretrain_here(capsys, run_copy, "--resume", "--resume-with-changes", "train.max_steps=6")
    assert code == 0, err
    assert "loss." not in err and "method" not in err  # no config change listed
    assert ckpt.list_checkpoints(run_copy)[-1].name == "ckpt_00000006.pt"


def test_a_checkpoint_mixing_the_earlier_release_keys_is_refused_naming_the_key(run_copy, capsys):
    _as_before_method(run_copy, positives=3)
    before = snapshot(run_copy)
    code, err = pretrain_here(capsys, run_copy, "--resume", "train.max_steps=6")
    assert code == 2 and 'loss.st_weighting="uniform" with others' in err and "method=official" in err, err
    assert snapshot(run_copy) == before


# The data keys of the version whose loader options went through data.loader_kwargs.
_DATA_BEFORE_OPTIONS = ("loader", "store", "videos", "batch_size", "clip_len", "stride", "size", "augment", "sampling",
                        "preset", "synthetic_batches", "motion_size")


def _as_before_loader_options(run: Path, **loader_kwargs) -> None:
    """Rewrite run's checkpoints as the version with data.loader_kwargs wrote them: demo_cpu's
    num_workers and drop_last in it (and `loader_kwargs`), no other loader option, no checksums."""
    for path in ckpt.list_checkpoints(run):
        state = torch.load(path, map_location="cpu", weights_only=True)
        data = state["config"]["data"]
        state["config"]["data"] = {k: v for k, v in data.items() if k in _DATA_BEFORE_OPTIONS}
        state["config"]["data"]["loader_kwargs"] = {"num_workers": 1, "drop_last": True, **loader_kwargs}
        del state["checksums"]
        torch.save(state, path)


def test_a_checkpoint_with_loader_kwargs_resumes_with_its_keys_as_data_options(run_copy, capsys):
    _as_before_loader_options(run_copy)
    with pytest.warns(UserWarning, match=r"data.loader_kwargs .* read as data.num_workers, data.drop_last"):
        code, err = pretrain_here(capsys, run_copy, "--resume", "--resume-with-changes", "train.max_steps=6")
    assert code == 0, err
    assert "data." not in err  # no config change listed
    assert ckpt.list_checkpoints(run_copy)[-1].name == "ckpt_00000006.pt"


def test_a_checkpoint_setting_a_loader_option_twice_is_refused_naming_both(run_copy, capsys):
    _as_before_loader_options(run_copy, clip_len=8)  # data.clip_len is 4
    before = snapshot(run_copy)
    code, err = pretrain_here(capsys, run_copy, "--resume", "train.max_steps=6")
    assert code == 2 and "data.clip_len=4 and data.loader_kwargs.clip_len=8 set the same option twice" in err, err
    assert snapshot(run_copy) == before


# ---- finding 4 (checkpoints): checksums written with each checkpoint, checked on every load --------
def test_flipped_bytes_in_a_checkpoint_tensor_are_detected_and_named(run_copy):
    damaged = run_copy / "ckpt_00000004.pt"
    name = flip_bytes_in_tensor(damaged)
    # as it stood: torch.load reads the damaged file without a word (zip CRCs are not checked)
    torch.load(damaged, map_location="cpu", weights_only=True)
    with pytest.raises(ckpt.CheckpointDamaged, match=f"{damaged}.*{name!r} does not match its checksum"):
        ckpt.load_checkpoint(damaged)
    with pytest.raises(ckpt.CheckpointDamaged, match=name):
        ckpt.load_backbone(damaged)  # evaluation's path
    assert ckpt.verify_checkpoint(damaged) == [
        f"{damaged}: tensor {name!r} does not match its checksum (the file is damaged)"]
    assert ckpt.verify_checkpoint(run_copy / "ckpt_00000003.pt") == []


def test_a_damaged_newest_checkpoint_is_skipped_by_resume_and_refused_by_resume_from(run_copy):
    damaged = run_copy / "ckpt_00000004.pt"
    name = flip_bytes_in_tensor(damaged, entry="model")
    refused = pretrain(run_copy, f"--resume-from={damaged}", "train.max_steps=4")
    assert refused.returncode == 2 and name in refused.stderr and str(damaged) in refused.stderr, refused.stderr
    resumed = pretrain(run_copy, "--resume", "train.max_steps=4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert name in resumed.stderr and "resuming from" in resumed.stderr and "ckpt_00000003.pt" in resumed.stderr
    assert ckpt.verify_checkpoint(damaged) == []  # step 4 again, rewritten from step 3


def test_changed_plain_values_are_detected_too(tmp_path):
    path = ckpt.atomic_torch_save({"model": {"w": torch.ones(4)}, "step": 70001}, tmp_path / "c.pt")
    raw = path.read_bytes()
    packed = (70001).to_bytes(4, "little")  # pickle's BININT of the step
    assert raw.count(packed) == 1
    path.write_bytes(raw.replace(packed, (70002).to_bytes(4, "little")))
    assert torch.load(path, weights_only=True)["step"] == 70002  # loads, silently wrong
    assert ckpt.verify_checkpoint(path) == [
        f"{path}: entry 'step' (its plain values, dtypes or shapes) does not match its checksum (the file is damaged)"]


def test_a_checkpoint_without_checksums_loads_with_a_note(tmp_path):
    path = tmp_path / "ckpt_00000001.pt"
    torch.save({"model": {"w": torch.ones(2)}, "step": 1}, path)  # as an earlier version wrote it
    with pytest.warns(UserWarning, match="no checksums"):
        assert ckpt.load_checkpoint(path)["step"] == 1
    assert ckpt.verify_checkpoint(path) == [
        f"{path}: has no checksums (written by an earlier mcl_fast): its contents cannot be verified"]
    assert "cannot read" in ckpt.verify_checkpoint(tmp_path / "missing.pt")[0] or \
        "not found" in ckpt.verify_checkpoint(tmp_path / "missing.pt")[0]


def test_a_run_of_an_earlier_version_resumes_and_keeps_its_checkpoints(run_copy):
    """Checkpoints without checksums or run id (and no run.json): resumed with a note, never pruned."""
    for path in ckpt.list_checkpoints(run_copy):
        state = torch.load(path, map_location="cpu", weights_only=True)
        torch.save({k: v for k, v in state.items() if k not in ("checksums", "run_id")}, path)
    (run_copy / "run.json").unlink()
    legacy = snapshot(run_copy)
    done = pretrain(run_copy, "--resume", "--resume-with-changes", "train.max_steps=6")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no checksums" in done.stderr and "resuming from" in done.stderr
    assert [p.name for p in ckpt.list_checkpoints(run_copy)] == [
        "ckpt_00000003.pt", "ckpt_00000004.pt", "ckpt_00000006.pt"]  # 6: every 2 steps and the epoch's end
    assert {k: snapshot(run_copy)[k] for k in ("ckpt_00000003.pt", "ckpt_00000004.pt")} == {
        k: legacy[k] for k in ("ckpt_00000003.pt", "ckpt_00000004.pt")}
    assert ckpt.verify_checkpoint(run_copy / "ckpt_00000006.pt") == []


def test_eval_retrieval_refuses_a_damaged_checkpoint(tmp_path, capsys):
    """The issue's case: 40 flipped bytes gave R@1 50.0 instead of 37.5, exit 0."""
    from mcl_fast.data.synthetic import make_video
    from mcl_fast.models import build_backbone

    rows = []
    for i in range(4):
        rel = f"{'moving' if i % 2 else 'still'}/v{i}.mp4"
        make_video(tmp_path / rel, num_frames=12, height=48, width=48, object_size=12, speed=3.0,
                   active=None if i % 2 else (0, 0), seed=60 + i)
        rows.append(f"{rel},{rel.split('/')[0]}\n")
    (tmp_path / "train.csv").write_text("path,label\n" + "".join(rows[:2]))
    (tmp_path / "test.csv").write_text("path,label\n" + "".join(rows[2:]))
    torch.manual_seed(0)
    net = build_backbone("tiny")
    state = {"model": {f"encoder_q.backbone.{k}": v for k, v in net.state_dict().items()},
             "config": {"model": {"backbone": "tiny"}, "data": {"size": 32, "clip_len": 4, "stride": 2}}}
    path = ckpt.atomic_torch_save(state, tmp_path / "ckpt_00000010.pt")
    argv = ["eval", "retrieval", "--checkpoint", str(path), "--train-split", str(tmp_path / "train.csv"),
            "--test-split", str(tmp_path / "test.csv"), "--videos", str(tmp_path), "--cache", "none",
            "--ks", "1", "--clip-len", "4", "--num-clips", "2", "--no-progress"]
    assert cli_main(argv) == 0
    name = flip_bytes_in_tensor(path)
    capsys.readouterr()
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert f"checkpoint {path} is damaged: tensor {name!r} does not match its checksum" in err, err


# ---- finding 12: the umask's mode --------------------------------------------------------------
def test_checkpoints_take_the_umask_mode(finished_run, tmp_path):
    for name in ("ckpt_00000004.pt", "config.json", "run.json", "history.json"):  # written under umask 022
        assert (finished_run / name).stat().st_mode & 0o777 == 0o644, name
    old = os.umask(0o077)
    try:
        private = ckpt.save_checkpoint({"model": {"w": torch.ones(1)}, "run_id": "a"}, tmp_path, 1)
    finally:
        os.umask(old)
    assert private.stat().st_mode & 0o777 == 0o600  # the umask decides, in both directions


# ---- finding 13: config values checked at load; disk full is one line ------------------------------
@pytest.mark.parametrize("override,message", [
    ("optim.lr=abc", 'optim.lr must be a number > 0, got "abc" (a string)'),
    ("optim.epochs=1.5", "optim.epochs must be an integer >= 1, got 1.5"),
    ("checkpoint.every_steps=-3", "checkpoint.every_steps must be an integer >= 0 or null, got -3"),
    ("data.batch_size=-4", "data.batch_size must be an integer >= 1, got -4"),
    ("model.momentum=1.5", "model.momentum must be a number in [0, 1), got 1.5"),
    ("train.max_steps=0", "train.max_steps must be an integer >= 1 or null, got 0"),
    ("loss.weight=true", "loss.weight must be a number >= 0, got true (true or false)"),
    ("data.motion_size=[4,2]", "data.motion_size must be null or a list of 3 items, each an integer >= 1"),
    ("train.amp=fp8", 'train.amp must be one of ["auto", "bf16", "fp16", "off"], got "fp8"'),
])
def test_bad_config_values_are_refused_before_anything_is_written(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    code, err = pretrain_here(capsys, out, override)
    assert code == 2 and message in err, err
    assert not out.exists()  # as it stood: config.json written, then a TypeError (or accepted)


def test_bad_config_value_through_the_real_cli(tmp_path):
    out = tmp_path / "run"
    done = pretrain(out, "optim.lr=abc")
    assert done.returncode == 2 and "optim.lr must be a number" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_the_schema_states_every_config_key_and_the_shipped_configs_pass():
    assert set(config_schema()) == set(flatten(DEFAULTS))
    for path in CONFIG_DIR.glob("*.json"):
        load_config(path.stem)


def _can_mount_a_small_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || "
                            "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_a_small_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_disk_full_while_checkpointing_is_one_line_and_leaves_no_checkpoint(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    cmd = [sys.executable, "-m", "mcl_fast.cli", "pretrain", "--config", "demo_cpu", *TINY, f"output={mnt}/run",
           "train.max_steps=2"]
    # A 256 KiB file system: config.json and run.json fit, the first checkpoint (~0.5 MB) does not.
    script = (f"mount -t tmpfs -o size=256k tmpfs {mnt} && {' '.join(cmd)}; echo rc=$?; "
              f"ls -A {mnt}/run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    listing = done.stdout.split("rc=")[1].split()
    assert listing[0] == "1", done.stdout + done.stderr[-3000:]
    assert f"No space left on device: {mnt}/run/ckpt_00000002.pt: free space" in done.stderr
    assert "Traceback" not in done.stderr
    assert not [n for n in listing[1:] if n.startswith(("ckpt_", ".ckpt_"))], listing  # no checkpoint, no temp


def test_disk_full_as_torch_save_reports_it_names_the_checkpoint(tmp_path, capsys, monkeypatch):
    """The same without a mount: torch.save's RuntimeError ("enforce fail at inline_container.cc")
    with the ENOSPC only in its context, after part of the file was written."""
    def full_disk(obj, f):
        f.write(b"PK\x03\x04 part of a zip")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662") from None

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    code, err = pretrain_here(capsys, out, "train.max_steps=2")
    assert code == 1, err
    assert err.strip().splitlines()[-1] == (f"mcl-fast pretrain: No space left on device: {out}/ckpt_00000002.pt: "
                                            "free space there (or choose another output folder) and run the same command "
                                            "again: finished work is kept")
    assert not [p for p in out.iterdir() if "ckpt_" in p.name]


# ---- finding 14: a killed run's temporaries; one run per folder ---------------------------------
def test_stale_temporaries_are_removed_by_the_next_run_not_while_the_folder_is_locked(run_copy):
    stale = [run_copy / ".ckpt_00000005.pt.k1l2m3n4.tmp", run_copy / ".history.json.abcd1234.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    unrelated = run_copy / ".notes.txt.tmp"  # not a temporary of ours: left alone
    unrelated.write_text("mine")
    with open(run_copy / ".lock", "a+") as held:  # another pretrain writing in this folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = pretrain(run_copy, "--resume", "train.max_steps=4")
    assert busy.returncode == 2 and "another `mcl-fast pretrain` is running" in busy.stderr, busy.stderr
    assert all(p.exists() for p in stale)  # never removed while another process could be writing them
    done = pretrain(run_copy, "--resume", "train.max_steps=4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "removed 2 temporary file(s)" in done.stderr
    assert not any(p.exists() for p in stale) and unrelated.read_text() == "mine"


def test_the_demo_moves_a_run_of_other_settings_aside_instead_of_failing(tmp_path):
    """`make demo` rerun on a demo_out an older demo (other settings) left: the old pretraining run
    is kept beside, a new one starts; a rerun with the same settings resumes it."""
    from mcl_fast.demo import pretrain

    out = tmp_path / "pretrain"
    quick = ["data.loader=synthetic", "train.max_steps=1", "train.plot=false", "train.tensorboard=false",
             "train.progress=false", "model.backbone=tiny", "train.log_every=1"]  # log_every: no video list to count
    pretrain(tmp_path / "store", tmp_path / "train.txt", out, quick)
    first = sorted(p.name for p in out.iterdir() if p.name.startswith("ckpt_"))
    pretrain(tmp_path / "store", tmp_path / "train.txt", out, [*quick, "optim.lr=0.02"])
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("pretrain.replaced-")]
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir() if p.name.startswith("ckpt_")) == first
    assert json.loads((out / "config.json").read_text())["optim"]["lr"] == 0.02
