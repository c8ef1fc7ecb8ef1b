"""Faults around a run's life (issue 18, findings 7 and 14): `--resume` with the torch loader
continues bit for bit, in process and after a SIGKILL, mid-epoch and at epoch ends, with 0 and 2
workers; a SIGKILLed `pretrain` or `prepare` leaves none of its processes behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import mcl_fast
from mcl_fast import checkpoint as ckpt
from mcl_fast.data.synthetic import make_video
from mcl_fast.train import load_config, train

ROOT = Path(mcl_fast.__file__).resolve().parents[1]  # subprocesses run the code the test imported
KILLABLE = Path(__file__).resolve().parent / "test_train.py"  # `--kill-after N`: SIGKILLs itself right after step N
PER_EPOCH, STEPS = 3, 7  # 12 videos in batches of 4; 7 steps cross two epoch ends and stop mid-epoch


def tiny_store(root: Path, ext: str) -> Path:
    """A motion store of 12 tiny videos (16 frames of 48x64): .mp4 is H.264, .webm VP9 (DALI's CPU decoder)."""
    from mcl_fast.motion.prepare import prepare

    for i in range(12):
        make_video(root / "videos" / f"v{i:02d}{ext}", num_frames=16, height=48, width=64, object_size=12, gop=8,
                   seed=i)
    prepare(str(root / "videos"), str(root / "store"), flow="farneback", size=48, workers=0, progress=False)
    return root / "store"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tiny_store(tmp_path_factory.mktemp("faults_resume_h264"), ".mp4")


def tiny_run(store: Path, out: Path, workers: int | None) -> list[str]:
    """Overrides of demo_cpu for a tiny run, a checkpoint after every step (all kept): on the torch
    loader with `workers`, or on the DALI loader (CPU) with workers=None."""
    loader = ["data.loader=dali"] if workers is None else ["data.loader=torch", f"data.num_workers={workers}"]
    return ["data.drop_last=true", *loader, f"data.store={store}", "data.videos=null",
            "data.batch_size=4", "data.size=32", "data.clip_len=4", "optim.epochs=3", "optim.warmup_epochs=1",
            f"train.max_steps={STEPS}", "train.deterministic=true", "train.log_every=1", "train.tensorboard=false",
            "train.progress=false", "train.plot=false", "train.collapse_warning=false", "model.queue_size=8",
            "checkpoint.every_steps=1", f"checkpoint.keep={STEPS}", f"output={out}"]


def assert_same_state(expected: dict, got: dict, where: str) -> None:
    """Weights (queue included), momentum buffers, schedule, RNG states and loss history: bit-equal."""
    differ = [name for name, value in expected["model"].items() if not torch.equal(value, got["model"][name])]
    assert not differ, f"{where}: {len(differ)} of {len(expected['model'])} tensors differ, e.g. {differ[:3]}"
    for i, state in expected["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], got["optimizer"]["state"][i]["momentum_buffer"]), where
    assert expected["scheduler"] == got["scheduler"] and expected["loader"] == got["loader"], where
    assert torch.equal(expected["rng"][0]["torch"], got["rng"][0]["torch"]), f"{where}: torch RNG state"
    assert [h["loss"] for h in expected["history"]] == [h["loss"] for h in got["history"]], where


def last_checkpoint(out: Path) -> dict:
    return ckpt.load_checkpoint(ckpt.checkpoint_path(out, STEPS))


@pytest.fixture(scope="module", params=["torch, 0 workers", "torch, 2 workers", "dali, cpu"])
def loader_and_store(request, tmp_path_factory) -> tuple[str, int | None, Path]:
    """(name, the torch loader's workers or None for DALI's CPU pipeline, the store it reads)."""
    if request.param.startswith("dali"):
        pytest.importorskip("nvidia.dali")
        return request.param, None, tiny_store(tmp_path_factory.mktemp("faults_resume_vp9"), ".webm")
    return request.param, int(request.param.split(", ")[1][0]), request.getfixturevalue("store")


@pytest.mark.timeout(300)
def test_resume_from_every_step_equals_the_straight_run(loader_and_store, tmp_path):
    """In process: a straight run, then runs resumed from its checkpoints mid-epoch (steps 2, 4) and
    at epoch ends (3, 6) to the end, each bit-equal to it."""
    name, workers, store = loader_and_store
    straight = tmp_path / "straight"
    train(load_config("demo_cpu", tiny_run(store, straight, workers)))
    expected = last_checkpoint(straight)
    for k in (2, 3, 4, 6):
        resumed = tmp_path / f"from_{k}"
        train(load_config("demo_cpu", tiny_run(store, resumed, workers)),
              resume=str(ckpt.checkpoint_path(straight, k)))
        assert_same_state(expected, last_checkpoint(resumed), f"{name}, resumed at step {k}")


def run_logged(argv: list[str], log: Path) -> tuple[int, str]:
    """(exit status, output) of `python ARGV` from the repository, its output to `log` (a file, not a
    pipe: a process left running by a killed one would hold a pipe open)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(log, "a") as out:
        code = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=240).returncode
    return code, log.read_text()[-3000:]


def killed_and_resumed(store: Path, out: Path, workers: int, kills=(2, 3, 5)) -> tuple[int, str]:
    """Run to the first kill step and SIGKILL there, resume to the next and SIGKILL again, ..., then
    resume to the end: every resume must be exact for the result to equal the straight run."""
    config, log = ["--config", "demo_cpu", *tiny_run(store, out, workers)], out.with_suffix(".log")
    for i, step in enumerate(kills):
        code, text = run_logged([str(KILLABLE), "--kill-after", str(step), *config, *(["--resume"] if i else [])], log)
        assert code == -signal.SIGKILL, text
        assert ckpt.list_checkpoints(out)[-1] == ckpt.checkpoint_path(out, step)
    return run_logged(["-m", "mcl_fast.train", *config, "--resume"], log)


@pytest.mark.timeout(300)
def test_sigkill_mid_epoch_and_at_an_epoch_end_then_resume_equals_the_straight_run(store, tmp_path):
    """Subprocesses: killed after steps 2 (mid-epoch), 3 (an epoch's end) and 5 (mid-epoch), each
    time resumed with --resume, at 0 and 2 workers; the end equals a straight run bit for bit."""
    straight, chains = tmp_path / "straight", {w: tmp_path / f"killed_{w}_workers" for w in (0, 2)}
    with ThreadPoolExecutor(3) as pool:
        runs = [pool.submit(run_logged, ["-m", "mcl_fast.train", "--config", "demo_cpu",
                                         *tiny_run(store, straight, 0)], tmp_path / "straight.log")]
        runs += [pool.submit(killed_and_resumed, store, out, w) for w, out in chains.items()]
        for run in runs:
            code, text = run.result()
            assert code == 0, text
    expected = last_checkpoint(straight)
    for workers, out in chains.items():
        assert_same_state(expected, last_checkpoint(out), f"killed at steps 2, 3, 5 with {workers} workers")


# ------------------------------------------------------------------ processes die with their parent


def proc_stat(pid: int) -> tuple[str, int, int, float] | None:
    """(state, ppid, start time, CPU seconds) of a process from /proc/PID/stat; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": fields 3 (state), 4 (ppid), ...
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime (14th, 15th)
    return fields[0], int(fields[1]), int(fields[19]), cpu  # starttime: the 22nd


def descendants(pid: int) -> dict[int, int]:
    """{pid: start time} of every process below `pid`, from the ppid links of /proc."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) is not None:
            children.setdefault(stat[1], []).append((int(entry.name), stat[2]))
    found, todo = {}, [pid]
    while todo:
        for child, start in children.get(todo.pop(), []):
            found[child] = start
            todo.append(child)
    return found


def still_running(procs: dict[int, int]) -> dict[int, str]:
    """{pid: command line} of those of `procs` still running (same start time, not a zombie)."""
    running = {}
    for pid, start in procs.items():
        stat = proc_stat(pid)
        if stat is not None and stat[2] == start and stat[0] != "Z":
            running[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    return running


def sigkill_and_list_survivors(argv: list[str], log: Path, ready, at_least: int) -> dict[int, str]:
    """Start `python ARGV`; once ready(its descendants) holds, SIGKILL it alone (not its group) and
    return what of its process tree still runs 5 s later (killed then, so no test leaves orphans)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    tree: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 120
        while not ready(tree := descendants(proc.pid)):
            assert proc.poll() is None, f"it ended before the kill: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready within 120 s: {log.read_text()[-3000:]}"
            time.sleep(0.1)
        assert len(tree) >= at_least, still_running(tree)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while still_running(tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        return still_running(tree)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in still_running(tree):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
@pytest.mark.timeout(200)
def test_sigkill_of_pretrain_ends_its_dataloader_workers_and_forkserver(store, tmp_path):
    out = tmp_path / "run"
    argv = ["-m", "mcl_fast.cli", "pretrain", "--config", "demo_cpu", *tiny_run(store, out, 2),
            "train.max_steps=1000", "optim.epochs=1000"]
    survivors = sigkill_and_list_survivors(
        argv, tmp_path / "pretrain.log", at_least=3,  # the forkserver, its 2 workers (and a resource tracker)
        ready=lambda tree: bool(ckpt.list_checkpoints(out)))  # the workers have served a batch
    assert not survivors, f"still running 5 s after the SIGKILL: {survivors}"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
@pytest.mark.timeout(200)
def test_sigkill_of_prepare_ends_its_worker(tmp_path):
    # One video that takes its worker ~10 s of CPU (TV-L1, 128 frames): killed at once, or caught alive.
    make_video(tmp_path / "videos" / "long.mp4", num_frames=128, height=96, width=128, object_size=20, seed=0)
    argv = ["-m", "mcl_fast.cli", "prepare", "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "store"),
            "--flow", "tvl1", "--size", "96", "--workers", "1"]

    def worker_busy(tree) -> bool:  # past its imports (~1 s of CPU), into the video
        return any("spawn_main" in cmd and (proc_stat(pid) or (0, 0, 0, 0.0))[3] >= 2
                   for pid, cmd in still_running(tree).items())

    survivors = sigkill_and_list_survivors(argv, tmp_path / "prepare.log", ready=worker_busy, at_least=1)
    assert not survivors, f"still running 5 s after the SIGKILL: {survivors}"


def test_the_process_exit_waiters_return_when_the_process_ends(monkeypatch):
    """Both ways of watching a process: a pidfd (Linux >= 5.3) and polling (elsewhere)."""
    from mcl_fast.video_io import pool

    monkeypatch.setattr(pool, "POLL_S", 0.05)
    for has_pidfd in (True, False):
        if not has_pidfd:
            monkeypatch.delattr(os, "pidfd_open", raising=False)
        elif not hasattr(os, "pidfd_open"):
            continue
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
        with ThreadPoolExecutor(1) as waiting:
            done = waiting.submit(pool.process_exit_waiter(child.pid))
            time.sleep(0.2)
            assert not done.done(), "returned while the process runs"
            child.wait()  # reaped: polling sees a zombie as running
            done.result(timeout=5)
        assert pool.process_exit_waiter(child.pid)() is None  # gone already: returns at once
