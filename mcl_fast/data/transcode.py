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
os.replace), so an output that exists is complete. Reruns skip outputs that exist (resumable);
failures are listed in OUT/transcode_errors.json (also when a worker process crashes on a file:
that file is recorded and the run goes on). Runs in parallel worker processes with a tqdm
progress bar.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .._io import atomic_write_json, fsync_path

CODECS = {"h264": ("libx264", ".mp4", "mp4"), "vp9": ("libvpx-vp9", ".webm", "webm")}
DEFAULT_CRF = {"h264": 18, "vp9": 30}
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")
ERRORS_NAME = "transcode_errors.json"


class TranscodeError(Exception):
    """A video that could not be transcoded; `path` and `reason` are kept for the error list."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), str(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # survive the trip back from a worker process
        return (type(self), (self.path, self.reason))


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


def count_frames(path) -> tuple[int, Fraction | None]:
    """(decoded frame count, average frame rate) of a video's first stream, by decoding it."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = sum(1 for _ in container.decode(stream))
        return n, stream.average_rate or stream.guessed_rate


def transcode(src, dst, *, codec: str = "vp9", gop: int = 16, crf: int | None = None,
              short_side: int | None = None, threads: int = 1) -> dict:
    """Re-encode `src` to `dst` (closed GOPs of `gop` frames); returns {num_frames, fps, height, width}.

    Writes dst's folder/.name.tmp<pid>.ext, checks the frame count and rate, fsyncs, then renames.
    Raises TranscodeError naming the file when the input cannot be read or the check fails.
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
        try:
            inp = av.open(str(src))
        except (av.FFmpegError, OSError) as err:
            raise TranscodeError(src, f"cannot open ({getattr(err, 'strerror', None) or err})") from None
        with inp:
            if not inp.streams.video:
                raise TranscodeError(src, "no video stream")
            stream = inp.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise TranscodeError(src, "the container gives no frame rate")
            rate = Fraction(rate).limit_denominator(1001)
            height, width = output_size(stream.codec_context.height, stream.codec_context.width, short_side)
            with av.open(str(tmp), mode="w", format=fmt) as out:
                ostream = out.add_stream(encoder, rate=rate, options=_encoder_options(codec, gop, crf, threads))
                ostream.width, ostream.height, ostream.pix_fmt = width, height, "yuv420p"
                ostream.codec_context.gop_size = gop
                try:
                    for frame in inp.decode(stream):
                        image = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                        image.pts, image.time_base = n, Fraction(1) / rate  # constant rate, nothing dropped
                        out.mux(ostream.encode(image))
                        n += 1
                except av.FFmpegError as err:
                    raise TranscodeError(src, f"decode error after {n} frames "
                                              f"({getattr(err, 'strerror', None) or err})") from None
                out.mux(ostream.encode(None))
        if n == 0:
            raise TranscodeError(src, "no frames decoded")
        got, got_rate = count_frames(tmp)
        if got != n:
            raise TranscodeError(src, f"output holds {got} frames, the input {n}")
        if got_rate is None or abs(float(got_rate) - float(rate)) > 1e-3 * float(rate):
            raise TranscodeError(src, f"output frame rate {got_rate} differs from the input's {rate}")
        fsync_path(tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"num_frames": n, "fps": float(rate), "height": height, "width": width}


def _task(args) -> tuple[str, dict | None, str | None]:
    """(rel, info, None) or (rel, None, reason) for a task (src, rel, dst, kwargs)."""
    src, rel, dst, kwargs = args
    try:
        return rel, transcode(src, dst, **kwargs), None
    except TranscodeError as err:
        return rel, None, err.reason
    except Exception as err:  # noqa: BLE001 (an unexpected failure of one file must not stop the run)
        return rel, None, f"{type(err).__name__}: {err}"


# ---------------------------------------------------------------------------------- datasets


def collect_inputs(videos) -> tuple[Path, list[str]]:
    """(root, relpaths) of a folder (scanned recursively), one video file, or a text list (one
    path per line, relative to the list's folder unless absolute; blank lines and # comments skipped)."""
    path = Path(videos)
    if path.is_dir():
        rels = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                      if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."))
        if not rels:
            raise ValueError(f"{path}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in this folder")
        return path, rels
    if not path.is_file():
        raise ValueError(f"{path}: no such folder, video or list file")
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return path.parent, [path.name]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text list of videos (binary data)") from None
    root = path.parent
    rels = []
    for line in lines:
        line = line.strip().split()[0] if line.strip() else ""
        if line and not line.startswith("#"):
            p = Path(line)
            rels.append(os.path.relpath(p, root) if p.is_absolute() else p.as_posix())
    if not rels:
        raise ValueError(f"{path}: the list holds no videos")
    return root, rels


@dataclass
class TranscodeReport:
    out: str
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"transcode: {len(self.done)} written, {len(self.skipped)} already there, "
                f"{len(self.errors)} failed ({self.seconds:.1f} s) -> {self.out}")


def output_path(out: Path, rel: str, codec: str) -> Path:
    return (out / rel).with_suffix(CODECS[codec][1])


def existing_ok(path: Path, codec: str) -> bool:
    """An output left by an earlier run: it was only renamed into place after its check, so
    opening it and finding a stream of the right codec is enough."""
    from .torch_loader import probe_header

    try:
        return probe_header(path)["codec"] == codec
    except ValueError:
        return False


def transcode_dataset(videos, out, *, codec: str = "vp9", gop: int = 16, crf: int | None = None,
                      short_side: int | None = None, workers: int = 1, overwrite: bool = False,
                      progress: bool = True) -> TranscodeReport:
    """Transcode every video of `videos` (see collect_inputs) into `out`, keeping relative paths
    (the extension becomes the codec's). Resumable; failures go to out/transcode_errors.json."""
    from tqdm import tqdm

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    root, rels = collect_inputs(videos)
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
    finally:  # even when interrupted, the failures so far are listed
        bar.close()
        atomic_write_json(out / ERRORS_NAME, [{"path": p, "reason": r} for p, r in sorted(report.errors.items())])
        report.seconds = time.perf_counter() - start
    return report


def run_tasks(tasks, workers: int, report: TranscodeReport, bar, fn=None) -> None:
    """Run fn(task) -> (rel, info, reason) for tasks (src, rel, dst, kwargs), recording each in report.

    workers == 1: in this process. Otherwise spawned processes through the motion store's
    crash-tolerant pool (mcl_fast.motion.prepare._pool_results): a worker that dies (a decoder
    crash, the OOM killer) breaks the pool; the files in flight then run again one by one in fresh
    processes, the one that kills its process again is recorded as an error (prepare.CRASH_REASON:
    "the worker process died on this video ...") and the run goes on. fn: a picklable top-level
    function (default _task).
    """
    fn = _task if fn is None else fn
    if workers == 1:
        results = map(fn, tasks)
    else:
        from mcl_fast.motion.prepare import _pool_results

        results = _pool_results(tasks, workers, fn=fn)
    for result in results:
        _record(report, result, bar)


def _record(report: TranscodeReport, result, bar) -> None:
    rel, info, reason = result
    if reason is None:
        report.done.append(rel)
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


__all__ = ["transcode", "transcode_dataset", "add_args", "run", "count_frames", "TranscodeError", "CODECS"]
