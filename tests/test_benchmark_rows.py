"""The benchmarks keep their rows: each row is printed and written to the JSON when it finishes, so a
run cut by gpu_check.sh's time limit (SIGKILL) still returns what it measured; and loader throughput
is timed from the iterator's creation (workers prefetch, so a clock started at the first batch times
batches already decoded)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_results_file_is_rewritten_after_every_row(tmp_path):
    from _results import ResultsFile

    path = tmp_path / "out" / "bench.json"
    out = ResultsFile(path, settings={"n": 1})
    assert json.loads(path.read_text())["complete"] is False
    out.add({"a": 1})
    doc = json.loads(path.read_text())
    assert doc["rows"] == [{"a": 1}] and doc["settings"] == {"n": 1} and "date" in doc and "machine" in doc
    out.add({"b": 2}, key="other")
    out.finish(total=2)
    doc = json.loads(path.read_text())
    assert doc["complete"] is True and doc["other"] == [{"b": 2}] and doc["total"] == 2


def test_loader_throughput_times_from_iterator_creation():
    """A loader whose workers need 0.3 s to start and then hand out prefetched batches at once: the
    rate counts the start-up and every batch (the old clock, started at the first batch, reported
    the prefetched batches as decoded in no time)."""
    import torch

    import loader_throughput as lt

    class Prefetching:
        def __iter__(self):
            time.sleep(0.3)  # workers start and decode ahead
            for _ in range(3):
                yield {"views": [torch.zeros(2, 1)], "index": torch.arange(2)}

    row = lt.measure(Prefetching)
    assert row["clips"] == 6 and row["seconds"] >= 0.3 and row["clips_per_s"] <= 20
    assert 0.3 <= row["first_batch_s"] <= row["seconds"]


def test_loader_throughput_cut_after_its_first_row_keeps_it(tmp_path):
    """SIGKILL as soon as the first row is printed: that row is in the JSON (marked incomplete)."""
    out = tmp_path / "loader.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "loader_throughput.py"), "--only", "loaders", "--quick",
           "--device", "cpu", "--sizes", "112", "--workers", "0", "--batch-size", "2", "--batches", "1",
           "--data", str(tmp_path / "data"), "--json", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    printed, seen = None, []
    deadline = time.monotonic() + 300
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("| 112² |"):
                printed = line
                os.killpg(proc.pid, signal.SIGKILL)
                break
            if time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert printed is not None, "".join(seen[-30:])
    doc = json.loads(out.read_text())
    assert doc["complete"] is False and len(doc["rows"]) >= 1
    first = doc["rows"][0]
    assert first["loader"] in printed and f"{first['clips_per_s']:.1f}" in printed


@pytest.mark.parametrize("script, flags, first_row", [
    ("train_step.py", ["--device", "cpu", "--backbones", "tiny", "--amp", "off", "--steps", "1", "--warmup", "0",
                       "--batch", "1", "--tiny-batch", "1", "--clip-len", "4", "--size", "32", "--queue", "64",
                       "--hidden", "32"], "| tiny | MoCo |"),
    ("motion_gpu.py", ["--quick", "--allow-cpu", "--workers", "1"], "on 1 cores) | 320x240 |"),
])
def test_other_benchmarks_write_rows_as_they_finish(tmp_path, script, flags, first_row):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *flags, "--json", str(out)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert json.loads(out.read_text())["complete"] is True
    # the first row was printed on its own when it finished, and again in the closing table
    assert sum(first_row in line for line in res.stdout.splitlines()) == 2, res.stdout[-2000:]


class _BusyItems:
    """A map-style dataset whose items each burn `seconds` of CPU (in the worker that loads them)."""

    def __init__(self, items: int, seconds: float):
        self.items, self.seconds = items, seconds

    def __len__(self):
        return self.items

    def __getitem__(self, i):
        import torch

        start = time.process_time()
        while time.process_time() - start < self.seconds:
            pass
        return {"index": torch.tensor([i])}


def _proc_cpu(pid: int) -> float:
    """utime + stime of one process, read by hand from /proc/<pid>/stat (fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_loader_throughput_counts_forkserver_workers():
    """Two forkserver DataLoader workers burn ~0.8 s of CPU in the timed epoch: the row's CPU
    includes it (against the workers' own /proc/<pid>/stat read by hand over the same epoch),
    which getrusage (self + waited-for children: the old count) does not see."""
    import resource

    import torch

    import loader_throughput as lt

    class Workers:
        def __init__(self):
            self.data = torch.utils.data.DataLoader(_BusyItems(8, 0.1), batch_size=None, num_workers=2,
                                                    persistent_workers=True, multiprocessing_context="forkserver")
            self.epochs = []

        def __iter__(self):
            it = iter(self.data)
            pids = [w.pid for w in it._workers]
            usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            before = sum(_proc_cpu(p) for p in pids)
            yield from it
            after = sum(_proc_cpu(p) for p in pids)
            now = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            rusage = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(usage, now))
            self.epochs.append({"workers": after - before, "rusage": rusage})

        def close(self):
            self.data._iterator._shutdown_workers()

    made = []
    row = lt.measure(lambda: made.append(Workers()) or made[0])
    timed = made[0].epochs[-1]  # the warm-up epoch came first
    assert len(made[0].epochs) == 2 and row["clips"] == 8
    cpu = row["cpu_s_per_clip"] * row["clips"]
    assert timed["workers"] >= 0.6, timed
    assert timed["workers"] - 0.05 <= cpu <= timed["workers"] + timed["rusage"] + 0.3, (cpu, timed)
    assert timed["rusage"] < 0.5 * timed["workers"], "getrusage saw the workers: the test shows nothing"
