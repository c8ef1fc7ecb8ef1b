"""benchmarks/gpu_check.sh without a GPU: the dry run of each of its three stages, as the device would
run them, one after another in one work folder. Every step gets a row (printed when it finishes and
kept in $OUT), the steps that need no GPU run, every GPU step is skipped with the reason after its
command was checked (flags and config keys against the programs' own parsers; the sanitizer's launches
on the CPU CUDA emulator), and each stage leaves at most 3 files in $OUT."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"

STEPS = {
    1: ["probe GPU and packages", "probe NVDEC and tools", "cmake build", "pytest kernels + TV-L1",
        "motion_gpu --quick", "sanitizer memcheck", "sanitizer racecheck"],
    2: ["probe GPU and packages", "train_step R(2+1)D-50, S3D", "pretrain smoke fp16"],
    3: ["activate DALI/PyAV kit", "NVDEC loader equality", "loader_throughput --quick", "sample clips",
        "prepare --device cuda", "host library", "prepare maps vs CPU store", "pytest loader + prepare",
        "pytest GPU evaluation"],
}
GPU_ONLY = {"motion_gpu --quick", "sanitizer memcheck", "sanitizer racecheck", "train_step R(2+1)D-50, S3D",
            "pretrain smoke fp16", "pytest kernels + TV-L1", "pytest loader + prepare", "pytest GPU evaluation",
            "prepare --device cuda", "loader_throughput --quick", "activate DALI/PyAV kit", "NVDEC loader equality",
            "prepare maps vs CPU store"}


def run_script(args, out: Path, work: Path, timeout: int = 600, **env_extra):
    env = dict(os.environ, OUT=str(out), GPU_CHECK_WORK=str(work), PYTHON=sys.executable, **env_extra)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def table_rows(md: Path) -> list[list[str]]:
    """[stage, step, status, seconds, note] of each step row of a summary table."""
    rows = []
    for line in md.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].isdigit():
            rows.append(cells)
    return rows


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpu_check")
    runs = {}
    for stage in (1, 2, 3):
        out = base / f"out{stage}"
        runs[stage] = (run_script(["--stage", str(stage), "--dry-run"], out, base / "work"), out)
    return runs


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_dry_run_of_each_stage(dry_runs, stage):
    res, out = dry_runs[stage]
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    tag = f"stage{stage}"
    assert sorted(p.name for p in out.iterdir()) == [f"{tag}-logs.tar.gz", f"{tag}.json", f"{tag}.md"]
    rows = table_rows(out / f"{tag}.md")
    assert [r[1] for r in rows] == STEPS[stage]
    for _, name, status, _, note in rows:
        if name in GPU_ONLY:
            assert status == "SKIP" and "dry run" in note, (name, status, note)
        else:
            assert status == "PASS", (name, status, note)
    # each row was printed when its step finished, and again in the final table
    for _, name, *_ in rows:
        assert sum(line.startswith(f"| {stage}     | {name}") for line in res.stdout.splitlines()) == 2, name
    doc = json.loads((out / f"{tag}.json").read_text())
    assert doc["dry_run"] is True and [r["step"] for r in doc["rows"]] == STEPS[stage]
    with tarfile.open(out / f"{tag}-logs.tar.gz") as tar:
        logs = [n for n in tar.getnames() if n.endswith(".log")]
    assert len(logs) >= len(STEPS[stage]) - 1  # every step but the kit's activation writes its log


def test_dry_run_checked_what_the_gpu_steps_will_run(dry_runs):
    """The GPU commands were checked, not just skipped: their flags parsed, the sanitizer's launches
    executed every kernel on the emulator."""
    notes = {r[1]: r[4] for stage, (_, out) in dry_runs.items() for r in table_rows(out / f"stage{stage}.md")}
    assert "16 kernels launched (emulator)" in notes["sanitizer memcheck"]
    for name in ("motion_gpu --quick", "train_step R(2+1)D-50, S3D", "pretrain smoke fp16", "prepare --device cuda",
                 "loader_throughput --quick", "NVDEC loader equality", "prepare maps vs CPU store"):
        assert "args OK" in notes[name], (name, notes[name])


def test_budget_is_enforced(tmp_path):
    res = run_script(["--stage", "2", "--dry-run", "--budget", "3"], tmp_path / "out", tmp_path / "work")
    rows = {r[1]: r for r in table_rows(tmp_path / "out" / "stage2.md")}
    assert rows["probe GPU and packages"][2:] == ["SKIP", "0", "budget spent (3s)"]
    assert res.returncode == 0


def test_bad_arguments_are_refused(tmp_path):
    for args in (["--stage", "4"], ["--budget", "soon"], ["--frobnicate"], ["--stage"], ["--budget"]):
        res = run_script(args, tmp_path / "out", tmp_path / "work", timeout=30)
        assert res.returncode == 2 and "gpu_check:" in res.stderr, args


def test_argcheck_catches_renamed_flags_and_config_keys():
    check = [sys.executable, str(ROOT / "tests" / "gpu" / "argcheck.py")]
    bad_flag = subprocess.run(check + ["benchmarks/motion_gpu.py", "--quick", "--no-such-flag"], cwd=ROOT,
                              capture_output=True, text=True)
    assert bad_flag.returncode == 2 and "unrecognized arguments: --no-such-flag" in bad_flag.stderr
    bad_key = subprocess.run(check + ["-m", "mcl_fast.train", "--config", "ucf101_r2plus1d", "data.no_such_key=1"],
                             cwd=ROOT, capture_output=True, text=True)
    assert bad_key.returncode == 1 and "data.no_such_key" in bad_key.stderr


def test_header_documents_the_three_device_calls():
    text = SCRIPT.read_text()
    assert 'run carry=[".dali/part-00"]               timeout_s=240 command="bash benchmarks/gpu_check.sh --stage 1"' in text
    assert 'run carry=[".dali/part-01"]               timeout_s=240 command="bash benchmarks/gpu_check.sh --stage 2"' in text
    assert 'run carry=[".dali/part-02", ".dali/deps"] timeout_s=240 command="bash benchmarks/gpu_check.sh --stage 3"' in text
    assert not (ROOT / "benchmarks" / "pack_for_device.sh").exists()  # the kit replaced it


def test_stage3_by_value_the_nvdec_checks_and_the_gpu_loader_rows_first():
    order = STEPS[3]
    assert order.index("NVDEC loader equality") == 1 and order.index("loader_throughput --quick") == 2


def test_a_kit_that_fails_to_activate_stops_stage3_with_one_row(tmp_path):
    """activate.sh's exit status is its import check (the kit's contract): when it
    fails, stage 3 runs nothing else (no NVDEC step on a machine without its kit) and says why."""
    kit = tmp_path / "activate.sh"
    kit.write_text('echo "NVDEC: libnvcuvid NOT visible"\n'
                   'echo "a part is missing: the machine was renewed; send the parts again"\nreturn 1\n')
    res = run_script(["--stage", "3"], tmp_path / "out", tmp_path / "work", timeout=60, GPU_CHECK_KIT=str(kit))
    rows = table_rows(tmp_path / "out" / "stage3.md")
    assert [r[1:3] for r in rows] == [["activate DALI/PyAV kit", "FAIL(1)"]], res.stdout[-3000:]
    assert "stage 3 stopped" in rows[0][4] and "a part is missing" in rows[0][4]
    assert res.returncode == 1


def test_nvdec_is_probed_through_the_dynamic_loader(dry_runs):
    """As DALI loads it (ctypes.CDLL("libnvcuvid.so.1"), LD_LIBRARY_PATH included), not `ldconfig -p`."""
    assert "ldconfig -p" not in SCRIPT.read_text()
    _, out = dry_runs[1]
    with tarfile.open(out / "stage1-logs.tar.gz") as tar:
        log = tar.extractfile("./s1_probe_NVDEC_and_tools.log").read().decode()
    assert "NVDEC: libnvcuvid" in log


def _sanitize_with(tmp_path, fake_body: str) -> subprocess.CompletedProcess:
    """gpu_check.sh's sanitize() run on memcheck with a stand-in compute-sanitizer (a shell body)."""
    fake = tmp_path / "compute-sanitizer"
    fake.write_text("#!/bin/sh\n" + fake_body)
    fake.chmod(0o755)
    return subprocess.run(["bash", "-c", f'source <(sed -n "/^sanitize() {{/,/^}}/p" {SCRIPT}); SANITIZER={fake} '
                           f'WORK={tmp_path} PY={sys.executable} sanitize memcheck'], cwd=ROOT, capture_output=True,
                          text=True)


def test_a_sanitizer_that_cannot_run_is_a_skip_not_a_kernel_failure(tmp_path):
    """compute-sanitizer refusing the device (a sandboxed runtime) gives a SKIP row saying so."""
    res = _sanitize_with(tmp_path, "echo '========= Error: Target application terminated before first instrumented API call'\n"
                         "exit 255\n")
    assert res.returncode == 0 and "STEP-SKIP: memcheck could not run here (rc 255)" in res.stdout, res.stdout


def test_a_program_that_raised_under_the_sanitizer_stays_a_failure(tmp_path):
    res = _sanitize_with(tmp_path, "echo 'Traceback (most recent call last):'\necho 'CUDADriverError: CUDA_ERROR_INVALID_IMAGE'\n"
                         "exit 1\n")
    assert res.returncode == 1 and "STEP-SKIP" not in res.stdout
