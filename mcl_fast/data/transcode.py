"""`mcl-fast transcode`: re-encode a dataset for fast random access.

Random clips are slow when decoding has to start at a keyframe far before the clip (DALI #1464:
~100 -> ~500 fps after re-encoding with short GOPs), and seeking breaks on non-IDR keyframes
(DALI #3387, #5665). This writes every video with a closed GOP of `gop` frames (16 by default),
each GOP starting at an IDR/key frame:

- `--codec h264` (.mp4, libx264): for the GPU path (NVDEC). No B-frames, so decode order is
  display order and every container counts frames the same way.
- `--codec vp9` (.webm, libvpx-vp9): for DALI's CPU decoder (VP8/VP9/MJPEG only); NVDEC on
  Ampere/Hopper reads it too.

Frame count and frame rate are kept (one output frame per decoded input frame, constant rate)
and checked after encoding, before the file is moved into place (temporary file, fsync,
os.replace), so an output that exists is complete. The source gets the same checks as in
`prepare` (mcl_fast.video_io: a corrupt or truncated source is an error with the same reason,
never a shorter output). Reruns skip outputs that exist (resumable); failures are listed in
OUT/transcode_errors.json (also when a worker process crashes on a file: that file is recorded
and the run goes on). OUT/transcode_sources.json records, per output, the fingerprint of the
source it was made from, so the loaders can check a transcoded copy against a motion store.
Runs in parallel worker processes with a tqdm progress bar.

Under torchrun (`torchrun --nnodes N --nproc-per-node G -m mcl_fast.data.transcode ...`) the
job's ranks share the videos (mcl_fast.motion.ranks: the same balanced split by container frame
count on every rank; `--workers` per rank). Outputs are per file, so the ranks only write their
own journal, OUT/.transcode-rankRRRRR.jsonl (one line per file, fsynced); when all are done,
rank 0 merges them into transcode_errors.json and transcode_sources.json and removes them (at
its start it first folds the journals a killed job left, so the sources of outputs that job
wrote are kept).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .._io import atomic_write_json, fsync_path
from ..motion.ranks import JobProgress, RankError, Ranks, balanced_slices, container_frames, part_name
from ..video_io import (CRASH_REASON, VideoError, VideoReader, collect_videos, count_frames, crash_tolerant_map,
                        file_fingerprint, probe)

CODECS = {"h264": ("libx264", ".mp4", "mp4"), "vp9": ("libvpx-vp9", ".webm", "webm")}
DEFAULT_CRF = {"h264": 18, "vp9": 30}
ERRORS_NAME = "transcode_errors.json"
JOURNAL_STEM = ".transcode"  # a torchrun rank's journal: .transcode-rank00003.jsonl
JOURNAL_GLOB = ".transcode-rank*.jsonl"
SOURCES_NAME = "transcode_sources.json"
SOURCES_FORMAT = "mcl_fast.transcode_sources"


class TranscodeError(VideoError):
    """A video that could not be transcoded (a VideoError: `path` and `reason` kept apart)."""


# ----------------------------------------------------------------------------------- one file


def _even(n: int) -> int:
    return max(2, n - n % 2)


def output_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(h, w) of the output: short side `short_side` (aspect kept), sides even (yuv420p)."""
    if short_side is not None:
        s = short_side / min(height, width)
        height, width = round(height * s), round(width * s)
    return _even(int(height)), _even(int(width))


def _encoder_options(codec: str, gop: int, crf: int, threads: int) -> dict:
    if codec == "h264":
        # keyint = min-keyint: a keyframe exactly every gop frames; scenecut=0: none elsewhere;
        # open-gop=0: closed GOPs (IDR); bframes=0: display order = decode order.
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:bframes=0"
        return {"crf": str(crf), "preset": "fast", "x264-params": params, "threads": str(threads)}
    # VP9: constant quality (b:v 0 + crf); kf-min-dist = kf-max-dist = gop.
    return {"crf": str(crf), "b:v": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1",
            "keyint_min": str(gop), "g": str(gop), "threads": str(threads)}


def transcode(src, dst, *, codec: str = "vp9", gop: int = 16, crf: int | None = None,
              short_side: int | None = None, threads: int = 1) -> dict:
    """Re-encode `src` to `dst` (closed GOPs of `gop` frames); returns {num_frames, fps, height,
    width, source_fingerprint, fingerprint} (the fingerprints of src and of the output).

    Writes dst's folder/.name.tmp<pid>.ext, checks the frame count and rate, fsyncs, then renames.
    Raises VideoError naming the file when the source is a bad video (the reason prepare gives),
    TranscodeError when the output's check fails.
    """
    import av

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if gop < 1:
        raise ValueError(f"gop must be >= 1, got {gop}")
    encoder, _, fmt = CODECS[codec]
    crf = DEFAULT_CRF[codec] if crf is None else int(crf)
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in dst.parent.glob(f".{dst.stem}.tmp*{dst.suffix}"):  # left by a killed run
        stale.unlink(missing_ok=True)
    tmp = dst.with_name(f".{dst.stem}.tmp{os.getpid()}{dst.suffix}")
    n = 0
    try:
        with VideoReader(src) as reader:  # VideoError: not a video, corrupt, truncated (as in prepare)
            source_fingerprint = file_fingerprint(src)
            if not reader.info["fps"]:
                raise TranscodeError(src, "the container gives no frame rate")
            rate = Fraction(reader.info["fps"]).limit_denominator(1001)
            height, width = output_size(reader.info["height"], reader.info["width"], short_side)
            with av.open(str(tmp), mode="w", format=fmt) as out:
                ostream = out.add_stream(encoder, rate=rate, options=_encoder_options(codec, gop, crf, threads))
                ostream.width, ostream.height, ostream.pix_fmt = width, height, "yuv420p"
                ostream.codec_context.gop_size = gop
                for frame in reader.av_frames():
                    image = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                    image.pts, image.time_base = n, Fraction(1) / rate  # constant rate, nothing dropped
                    out.mux(ostream.encode(image))
                    n += 1
                out.mux(ostream.encode(None))
        got, got_rate = count_frames(tmp), probe(tmp)["fps"]
        if got != n:
            raise TranscodeError(src, f"output holds {got} frames, the input {n}")
        if abs(got_rate - float(rate)) > 1e-3 * float(rate):
            raise TranscodeError(src, f"output frame rate {got_rate:g} differs from the input's {float(rate):g}")
        fsync_path(tmp)
        fingerprint = file_fingerprint(tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"num_frames": n, "fps": float(rate), "height": height, "width": width,
            "source_fingerprint": source_fingerprint, "fingerprint": fingerprint}


def _task(args) -> tuple[str, dict | None, str | None]:
    """(rel, info, None) or (rel, None, reason) for a task (src, rel, dst, kwargs)."""
    src, rel, dst, kwargs = args
    try:
        return rel, transcode(src, dst, **kwargs), None
    except VideoError as err:
        return rel, None, err.reason
    except Exception as err:  # noqa: BLE001 (an unexpected failure of one file must not stop the run)
        return rel, None, f"{type(err).__name__}: {err}"


# ---------------------------------------------------------------------------------- datasets


@dataclass
class TranscodeReport:
    """done, skipped: relpaths written / already there; errors: relpath -> reason; sources: output
    relpath -> {"source", "source_fingerprint", "fingerprint"} of the outputs written (this run)."""

    out: str
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"transcode: {len(self.done)} written, {len(self.skipped)} already there, "
                f"{len(self.errors)} failed ({self.seconds:.1f} s) -> {self.out}")


def output_path(out: Path, rel: str, codec: str) -> Path:
    return (out / rel).with_suffix(CODECS[codec][1])


def existing_ok(path: Path, codec: str) -> bool:
    """An output left by an earlier run: it was only renamed into place after its check, so
    opening it and finding a stream of the right codec is enough."""
    try:
        return probe(path)["codec"] == codec
    except VideoError:
        return False


def read_sources(out) -> dict:
    """{output relpath: {"source", "source_fingerprint", "fingerprint"}} from OUT/transcode_sources.json
    ({} when there is none: a folder transcoded by other tools, or before fingerprints)."""
    import json

    path = Path(out) / SOURCES_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the transcode source list: {err}") from None
    if not isinstance(data, dict) or data.get("format") != SOURCES_FORMAT or not isinstance(data.get("files"), dict):
        raise ValueError(f"{path} is not a transcode source list (format {SOURCES_FORMAT!r})")
    return data["files"]


def _write_sources(out: Path, report: TranscodeReport) -> None:
    files = {k: v for k, v in read_sources(out).items() if (out / k).exists()}
    files.update(report.sources)
    atomic_write_json(out / SOURCES_NAME, {"format": SOURCES_FORMAT, "version": 1,
                                           "files": {k: files[k] for k in sorted(files)}})


def transcode_dataset(videos, out, *, codec: str = "vp9", gop: int = 16, crf: int | None = None,
                      short_side: int | None = None, workers: int = 1, overwrite: bool = False,
                      progress: bool = True, distributed: bool | None = None) -> TranscodeReport:
    """Transcode every video of `videos` (a folder, list file or video: video_io.collect_videos)
    into `out`, keeping relative paths (the extension becomes the codec's). Resumable; failures go
    to out/transcode_errors.json, the sources' fingerprints to out/transcode_sources.json.

    Under torchrun (WORLD_SIZE > 1) every rank calls it with the same arguments and takes its
    share (see the module docstring); rank 0 returns the job's report, the other ranks their own
    files' (with the job's `skipped`). distributed=False: this process alone even under torchrun
    (a call on one rank only)."""
    from tqdm import tqdm

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    root, rels = collect_videos(videos)
    root = Path(root)
    out = Path(out).resolve()
    if out == root.resolve():
        raise ValueError(f"{out}: the output folder must differ from the input folder")
    targets: dict[Path, str] = {}
    for rel in rels:
        dst = output_path(out, rel, codec)
        if dst in targets:
            raise ValueError(f"{rel} and {targets[dst]} would both be written to {dst}")
        targets[dst] = rel
    kwargs = {"codec": codec, "gop": int(gop), "crf": crf, "short_side": short_side}
    ranks = Ranks.from_env() if distributed is not False else Ranks()
    if ranks.distributed:
        return _transcode_ranks(ranks, root, out, targets, kwargs, workers, overwrite, progress, start)
    report = TranscodeReport(out=str(out))
    tasks = []
    for dst, rel in targets.items():
        if not overwrite and dst.exists() and existing_ok(dst, codec):
            report.skipped.append(rel)
        else:
            tasks.append((str(root / rel), rel, str(dst), kwargs))
    bar = tqdm(total=len(tasks), unit="video", desc="transcode", disable=not progress, dynamic_ncols=True)
    out.mkdir(parents=True, exist_ok=True)
    try:
        run_tasks(tasks, workers, report, bar)
    finally:  # even when interrupted, the failures and the sources so far are listed
        bar.close()
        _write_report(out, report)
        report.seconds = time.perf_counter() - start
    return report


def _write_report(out: Path, report: TranscodeReport) -> None:
    atomic_write_json(out / ERRORS_NAME, [{"path": p, "reason": r} for p, r in sorted(report.errors.items())])
    _write_sources(out, report)


def _replay_journals(out: Path, report: TranscodeReport) -> None:
    """Add the complete lines of every rank's journal in `out` to `report` (a torn last line,
    left by a killed rank, is skipped)."""
    import json

    for path in sorted(out.glob(JOURNAL_GLOB)):
        data = path.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            try:
                item = json.loads(line)
                rel, reason = str(item["path"]), item.get("reason")
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}: a corrupt line ({err}); remove the file to go on") from None
            if reason is not None:
                report.errors[rel] = str(reason)
                continue
            report.done.append(rel)
            report.errors.pop(rel, None)
            info = item.get("info") or {}
            if "fingerprint" in info:
                report.sources[str(item["output"])] = {"source": rel, "source_fingerprint": info["source_fingerprint"],
                                                       "fingerprint": info["fingerprint"]}


def _remove_journals(out: Path) -> None:
    for path in out.glob(JOURNAL_GLOB):
        path.unlink()
    fsync_path(out)


def _transcode_ranks(ranks: Ranks, root: Path, out: Path, targets: dict, kwargs: dict, workers: int,
                     overwrite: bool, progress: bool, start: float) -> TranscodeReport:
    """transcode_dataset as one rank of a torchrun job (see the module docstring)."""
    import json

    from tqdm import tqdm

    codec = kwargs["codec"]

    def open_out() -> int:  # rank 0: keep the sources of what a killed job wrote
        out.mkdir(parents=True, exist_ok=True)
        leftover = TranscodeReport(out=str(out))
        _replay_journals(out, leftover)
        if leftover.sources:
            _write_sources(out, leftover)
        _remove_journals(out)
        return 0

    with ranks:
        ranks.on_rank0(open_out)
        items = list(targets.items())  # (dst, rel), the same order on every rank

        def weight(i: int) -> int:  # -1: an output an earlier run finished; else the source's frames
            dst, rel = items[i]
            if not overwrite and dst.exists() and existing_ok(dst, codec):
                return -1
            return container_frames(root / rel)

        weights = ranks.by_stride(len(items), weight)
        report = TranscodeReport(out=str(out), skipped=[rel for (_, rel), w in zip(items, weights) if w < 0])
        todo = [i for i, w in enumerate(weights) if w >= 0]
        mine = [items[todo[j]] for j in balanced_slices([weights[i] for i in todo], ranks.world)[ranks.rank]]
        tasks = [(str(root / rel), rel, str(dst), kwargs) for dst, rel in mine]
        journal = out / part_name(JOURNAL_STEM, ranks.rank, ".jsonl")
        bar = tqdm(total=len(tasks), unit="video", desc=f"transcode rank {ranks.rank}", disable=not progress,
                   dynamic_ncols=True, position=ranks.local_rank)
        job = JobProgress(out, JOURNAL_GLOB, len(todo), desc=f"transcode job ({ranks.world} ranks)",
                          position=ranks.local_world, enabled=progress and ranks.is_main)
        output_of = {rel: dst.relative_to(out).as_posix() for dst, rel in mine}
        with job, open(journal, "ab") as f:
            fsync_path(out)

            def log(rel, info, reason) -> None:
                output = output_of[rel]
                line = {"path": rel, "output": output, "info": info, "reason": reason}
                f.write((json.dumps(line, separators=(",", ":")) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())

            try:
                run_tasks(tasks, workers, report, bar, on_result=log)
            finally:
                bar.close()
            ranks.barrier()  # every rank's journal is complete

        def merge() -> int:  # rank 0: one error list and one source list for the job
            job_report = TranscodeReport(out=str(out), skipped=report.skipped)
            _replay_journals(out, job_report)
            _write_report(out, job_report)
            _remove_journals(out)
            report.done, report.errors, report.sources = job_report.done, job_report.errors, job_report.sources
            return 0

        ranks.on_rank0(merge)
    report.seconds = time.perf_counter() - start
    return report


def run_tasks(tasks, workers: int, report: TranscodeReport, bar, fn=None, on_result=None) -> None:
    """Run fn(task) -> (rel, info, reason) for tasks (src, rel, dst, kwargs), recording each in report
    (and passing it to on_result(rel, info, reason) when given: a rank's journal).

    workers == 1: in this process. Otherwise spawned processes through video_io.crash_tolerant_map
    (the pool `prepare` uses): a worker that dies (a decoder crash, the OOM killer) costs only its
    file, recorded as an error (video_io.CRASH_REASON), and the run goes on. fn: a picklable
    top-level function (default _task).
    """
    fn = _task if fn is None else fn
    if workers == 1:
        results = map(fn, tasks)
    else:
        results = crash_tolerant_map(fn, tasks, workers, on_crash=lambda task: (task[1], None, CRASH_REASON))
    dst_of = {task[1]: Path(task[2]) for task in tasks}
    for result in results:
        _record(report, result, bar, dst_of)
        if on_result is not None:
            on_result(*result)


def _record(report: TranscodeReport, result, bar, dst_of: dict) -> None:
    rel, info, reason = result
    if reason is None:
        report.done.append(rel)
        if info and "fingerprint" in info:
            out_rel = dst_of[rel].relative_to(report.out).as_posix()
            report.sources[out_rel] = {"source": rel, "source_fingerprint": info["source_fingerprint"],
                                       "fingerprint": info["fingerprint"]}
    else:
        report.errors[rel] = reason
        bar.write(f"transcode: skipped {rel}: {reason}")
    bar.update(1)


# ----------------------------------------------------------------------------------------- CLI


def add_args(parser) -> None:
    """Arguments of `mcl-fast transcode`."""
    parser.add_argument("--videos", required=True,
                        help="folder (scanned recursively), one video, or a list file (one path per line)")
    parser.add_argument("--out", required=True, help="output folder (relative paths are kept)")
    parser.add_argument("--codec", choices=sorted(CODECS), default="vp9",
                        help="h264 (.mp4) for the GPU loader (NVDEC), vp9 (.webm) for DALI's CPU decoder")
    parser.add_argument("--gop", type=int, default=16, help="frames per closed GOP (keyframe interval)")
    parser.add_argument("--crf", type=int, default=None,
                        help=f"constant quality (lower is better); default {DEFAULT_CRF}")
    parser.add_argument("--short-side", type=int, default=None,
                        help="resize so the shorter side has this many pixels (default: keep the size)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="parallel encoder processes")
    parser.add_argument("--overwrite", action="store_true", help="re-encode outputs that already exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    """Run `mcl-fast transcode`; 0 when every video was written or already there, 1 otherwise."""
    try:
        report = transcode_dataset(args.videos, args.out, codec=args.codec, gop=args.gop, crf=args.crf,
                                   short_side=args.short_side, workers=args.workers, overwrite=args.overwrite,
                                   progress=not args.no_progress)
    except (ValueError, RankError) as err:
        print(f"mcl-fast transcode: error: {err}", file=sys.stderr)
        return 2
    ranks = Ranks.from_env()
    print(report.summary() if ranks.is_main else f"{ranks}: {report.summary()}")
    if report.errors:
        print(f"failed videos are listed in {Path(report.out) / ERRORS_NAME}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="mcl-fast transcode", description=__doc__.splitlines()[0])
    add_args(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["transcode", "transcode_dataset", "read_sources", "add_args", "run", "TranscodeError", "CODECS"]
