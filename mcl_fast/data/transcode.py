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
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .._io import atomic_write_json, fsync_path
from ..video_io import (CRASH_REASON, VideoError, VideoReader, collect_videos, count_frames, crash_tolerant_map,
                        file_fingerprint, probe)

CODECS = {"h264": ("libx264", ".mp4", "mp4"), "vp9": ("libvpx-vp9", ".webm", "webm")}
DEFAULT_CRF = {"h264": 18, "vp9": 30}
ERRORS_NAME = "transcode_errors.json"
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
                      progress: bool = True) -> TranscodeReport:
    """Transcode every video of `videos` (a folder, list file or video: video_io.collect_videos)
    into `out`, keeping relative paths (the extension becomes the codec's). Resumable; failures go
    to out/transcode_errors.json, the sources' fingerprints to out/transcode_sources.json."""
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
    report = TranscodeReport(out=str(out))
    tasks = []
    kwargs = {"codec": codec, "gop": int(gop), "crf": crf, "short_side": short_side}
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
        atomic_write_json(out / ERRORS_NAME, [{"path": p, "reason": r} for p, r in sorted(report.errors.items())])
        _write_sources(out, report)
        report.seconds = time.perf_counter() - start
    return report


def run_tasks(tasks, workers: int, report: TranscodeReport, bar, fn=None) -> None:
    """Run fn(task) -> (rel, info, reason) for tasks (src, rel, dst, kwargs), recording each in report.

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
    except ValueError as err:
        print(f"mcl-fast transcode: error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
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
