"""`mcl-fast transcode`: re-encode a dataset for fast random access.

Every video is written with closed GOPs of `gop` frames starting at IDR keyframes (h264 for NVDEC,
vp9 for DALI's CPU decoder), frame count and rate kept and checked, only under OUT, recorded in
OUT/transcode_sources.json before it appears; reruns skip what is done, and ranks under torchrun
share the videos. Why and how, in detail: docs/transcode.md.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
import posixpath
import re
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, NamedTuple

from .._io import MACHINE_ERRNOS, FolderBusy, atomic_write_json, fsync_path, lock_folder, run_command
from ..ranks import JobProgress, RankError, Ranks, balanced_slices, container_frames, part_name
from ..video_io import (CRASH_REASON, VideoError, VideoReader, collect_videos, count_frames, crash_tolerant_map,
                        file_fingerprint, probe)

CODECS = {"h264": ("libx264", ".mp4", "mp4"), "vp9": ("libvpx-vp9", ".webm", "webm")}
DEFAULT_CRF = {"h264": 18, "vp9": 30}
ERRORS_NAME = "transcode_errors.json"
JOURNAL_STEM = ".transcode"  # a torchrun rank's journal: .transcode-rank00003.jsonl
JOURNAL_GLOB = ".transcode-rank*.jsonl"
SOURCES_NAME = "transcode_sources.json"
SOURCES_FORMAT = "mcl_fast.transcode_sources"
SOURCES_VERSION = 2  # 2: each record holds the settings its output was made with
LOCK_NAME = ".transcode.lock"
PENDING_DIR = ".transcode-pending"  # one record per output, written before the output is renamed into place
UP = "__up__"  # stands for a '..' segment of a source path under OUT

# Allowed ranges of the numeric options (inclusive). 16: the smallest side NVDEC decodes (H.264 48x16);
# GOP 1000 frames is already far from what this tool is for (short GOPs); the CRF scales are the encoders'.
GOP_RANGE = (1, 1000)
SHORT_SIDE_RANGE = (16, 8192)
WORKERS_RANGE = (1, 512)
CRF_RANGE = {"h264": (0, 51), "vp9": (0, 63)}


# Temporary files of this module: an encoder's (.NAME.tmpPID.EXT) and atomic_write's (.NAME.XXXXXXXX.tmp).
_OUTPUT_TMP = re.compile(r"^\..+\.tmp\d+(%s)$" % "|".join(re.escape(ext) for _, ext, _ in CODECS.values()))
_REPORT_TMP = re.compile(r"^\.(%s|%s)\..+\.tmp$" % (re.escape(ERRORS_NAME), re.escape(SOURCES_NAME)))

TODO, DONE = "todo", "done"  # _output_state's verdicts; any other value says why an output is in the way


class TranscodeError(VideoError):
    """A video that could not be transcoded (a VideoError: `path` and `reason` kept apart)."""


class OutputBusy(ValueError):
    """Another transcode holds the output folder's lock."""


# ----------------------------------------------------------------------------------- settings


def _check_range(option: str, value, low: int, high: int, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"{option} must be an integer from {low} to {high}{what}, got {value!r}")
    return int(value)


def check_settings(codec: str, gop: int, crf: int | None, short_side: int | None) -> dict:
    """{"codec", "gop", "crf", "short_side"} of an output (crf None: the codec's default), each
    range-checked; ValueError naming the option and its allowed range. Recorded with each output."""
    if codec not in CODECS:
        raise ValueError(f"--codec must be one of {sorted(CODECS)}, got {codec!r}")
    gop = _check_range("--gop", gop, *GOP_RANGE)
    crf = _check_range("--crf", DEFAULT_CRF[codec] if crf is None else crf, *CRF_RANGE[codec], what=f" for {codec}")
    if short_side is not None:
        short_side = _check_range("--short-side", short_side, *SHORT_SIDE_RANGE)
    return {"codec": codec, "gop": gop, "crf": crf, "short_side": short_side}


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
              short_side: int | None = None, threads: int = 1,
              before_rename: Callable[[dict], None] | None = None) -> dict:
    """Re-encode `src` to `dst` (closed GOPs of `gop` frames); returns {num_frames, fps, height,
    width, source_fingerprint, fingerprint, settings} (the fingerprints of src and of the output;
    settings: check_settings'). before_rename(info): called once the output is checked and
    fsynced, before it is renamed into place (the dataset run records it there).

    Writes dst's folder/.name.tmp<pid>.ext, checks the frame count and rate, fsyncs, then renames.
    Raises ValueError for settings out of range, VideoError naming the file when the source is a
    bad video (the reason prepare gives), TranscodeError when the output's check fails, OSError
    when the output cannot be written (nothing is left behind).
    """
    import av

    settings = check_settings(codec, gop, crf, short_side)
    encoder, _, fmt = CODECS[codec]
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.tmp{os.getpid()}{dst.suffix}")
    n = 0
    try:
        with VideoReader(src) as reader:  # VideoError: not a video, corrupt, truncated (as in prepare)
            source_fingerprint = file_fingerprint(src)
            if not reader.info["fps"]:
                raise TranscodeError(src, "the container gives no frame rate")
            rate = Fraction(reader.info["fps"]).limit_denominator(1001)
            height, width = output_size(reader.info["height"], reader.info["width"], short_side)
            options = _encoder_options(codec, gop, settings["crf"], threads)
            with av.open(str(tmp), mode="w", format=fmt) as out:
                ostream = out.add_stream(encoder, rate=rate, options=options)
                ostream.width, ostream.height, ostream.pix_fmt = width, height, "yuv420p"
                ostream.codec_context.gop_size = gop
                for frame in reader.av_frames():  # VideoError at a frame size change (variable resolution)
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
        info = {"num_frames": n, "fps": float(rate), "height": height, "width": width,
                "source_fingerprint": source_fingerprint, "fingerprint": file_fingerprint(tmp),
                "settings": settings}
        if before_rename is not None:
            before_rename(info)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(dst.parent)  # the rename itself survives a power loss
    return info


# ---------------------------------------------------------------------------- where outputs go


def confined_relpath(rel: str) -> str:
    """`rel` (a relative '/'-separated path, as video_io.collect_videos gives) with each '..'
    segment named UP, so that joined to a folder it stays inside it: "../v/a.mp4" ->
    "__up__/v/a.mp4". Distinct paths stay distinct. ValueError for an absolute or empty path."""
    norm = posixpath.normpath(rel.replace(os.sep, "/"))
    if posixpath.isabs(norm) or norm in (".", ""):
        raise ValueError(f"{rel!r} is not a relative path to a file")
    return "/".join(UP if part == ".." else part for part in norm.split("/"))


def output_relpath(rel: str, codec: str) -> str:
    """The output of source `rel`, relative to OUT: confined_relpath with the codec's extension."""
    return posixpath.splitext(confined_relpath(rel))[0] + CODECS[codec][1]


def _inside(path: str, folder: str) -> bool:
    """path is folder or lies under it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _real_entry(path: str, folders: dict) -> str:
    """The directory entry a rename onto `path` replaces: its folder's real path + its name
    (`folders` caches the folders' real paths: a dataset has many files per folder)."""
    head, name = os.path.split(path)
    if head not in folders:
        folders[head] = os.path.realpath(head)
    return os.path.join(folders[head], name)


def _real_file(path: str, folders: dict) -> str:
    """The file a read of `path` reaches (symbolic links followed)."""
    entry = _real_entry(path, folders)
    return os.path.realpath(entry) if os.path.islink(entry) else entry


def _check_out_folder(videos, out: str, allow_inside: bool) -> None:
    """Refuse an OUT that is the scanned folder, or inside it unless allowed (a later scan would
    take the outputs for inputs)."""
    if not (isinstance(videos, (str, os.PathLike)) and os.path.isdir(videos)):
        return
    folder = os.path.realpath(videos)
    if out == folder:
        raise ValueError(f"--out {out} is the videos folder itself: choose another folder")
    if _inside(out, folder) and not allow_inside:
        raise ValueError(f"--out {out} is inside the videos folder {folder}: a later scan would take the outputs "
                         "for videos. Choose an --out outside it, or pass --allow-out-inside-videos (the scan "
                         "then leaves --out out)")


def plan_outputs(videos, out, codec: str, allow_out_inside_videos: bool = False) -> tuple[Path, Path, dict]:
    """(root, out, {output path: source relpath}) for `videos` (video_io.collect_videos; OUT itself
    is never scanned), out as a real path. ValueError, before anything is written, when OUT is
    misplaced (_check_out_folder), two sources share an output, or an output would lie outside
    OUT (a symbolic link under it) or replace a source."""
    out_real = os.path.realpath(out)
    _check_out_folder(videos, out_real, allow_out_inside_videos)
    root, rels = collect_videos(videos, exclude=[out_real])
    if os.path.realpath(root) == out_real:
        raise ValueError(f"--out {out_real}: the output folder must differ from the folder the videos are listed in")
    folders: dict = {}
    sources = {_real_file(os.path.join(root, rel), folders) for rel in rels}
    targets: dict[Path, str] = {}
    for rel in rels:
        dst = Path(out_real) / output_relpath(rel, codec)
        if dst in targets:
            raise ValueError(f"{rel} and {targets[dst]} would both be written to {dst}")
        entry = _real_entry(str(dst), folders)
        if not _inside(entry, out_real):
            raise ValueError(f"{rel}: its output {dst} would be written to {entry}, outside --out {out_real} "
                             "(a symbolic link under --out?); nothing was written")
        if entry in sources:
            raise ValueError(f"{rel}: its output {dst} would replace the source video {entry}; nothing was written")
        targets[dst] = rel
    return Path(root), Path(out_real), targets


# --------------------------------------------------------------------------------- the record


def _read_record_file(out: Path) -> dict:
    path = out / SOURCES_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the transcode source list: {err}") from None
    if not isinstance(data, dict) or data.get("format") != SOURCES_FORMAT or not isinstance(data.get("files"), dict):
        raise ValueError(f"{path} is not a transcode source list (format {SOURCES_FORMAT!r})")
    return data["files"]


def _pending_path(out: Path, out_rel: str) -> Path:
    return out / PENDING_DIR / (hashlib.blake2b(out_rel.encode(), digest_size=12).hexdigest() + ".json")


def _write_pending(out: Path, out_rel: str, record: dict) -> None:
    """Record one output before it is renamed into place (atomic, fsynced)."""
    atomic_write_json(_pending_path(out, out_rel), {"output": out_rel, "record": record})


def _pending_records(out: Path, trusted: dict | None = None) -> dict:
    """{output relpath: record} of the pending records whose output exists with the fingerprint
    recorded (a record written just before a kill, its output never renamed, does not count).
    trusted: records this run already checked ({output relpath: record}), not fingerprinted again."""
    found = {}
    for path in sorted((out / PENDING_DIR).glob("*.json")):
        try:
            item = json.loads(path.read_text(encoding="utf-8"))
            out_rel, record = str(item["output"]), dict(item["record"])
            fingerprint = record["fingerprint"]
            confined = confined_relpath(out_rel) == out_rel
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: its output has no record, and a rerun treats it so
        if not confined:
            continue
        if trusted is not None and trusted.get(out_rel, {}).get("fingerprint") == fingerprint:
            found[out_rel] = record
            continue
        try:
            if file_fingerprint(out / out_rel) == fingerprint:
                found[out_rel] = record
        except OSError:
            pass
    return found


def read_sources(out) -> dict:
    """{output relpath: {"source", "source_fingerprint", "fingerprint", "settings"}} of the outputs in
    OUT: transcode_sources.json and the records not folded into it yet (a killed or running
    transcode's); {} for a folder transcoded by other tools. "settings" is absent in records of
    mcl-fast before transcode_sources version 2."""
    out = Path(out)
    files = _read_record_file(out)
    files.update(_pending_records(out))
    return files


def _fold_records(out: Path, this_run: dict) -> None:
    """Write transcode_sources.json with every recorded output that exists (its entries, the
    pending records, `this_run`'s), then remove the pending records. Only under the lock."""
    files = {k: v for k, v in _read_record_file(out).items() if (out / k).exists()}
    files.update(_pending_records(out, trusted=this_run))
    atomic_write_json(out / SOURCES_NAME, {"format": SOURCES_FORMAT, "version": SOURCES_VERSION,
                                           "files": {k: files[k] for k in sorted(files)}})
    pending = out / PENDING_DIR
    for path in pending.glob("*.json"):
        path.unlink()
    if pending.is_dir() and not any(pending.iterdir()):
        pending.rmdir()


# ----------------------------------------------------------------------- the lock, leftovers


def _lock(out: Path) -> int:
    """Take OUT/.transcode.lock (released when the fd is closed, or the process dies);
    OutputBusy when another transcode holds it."""
    try:
        return lock_folder(out, LOCK_NAME)
    except FolderBusy as busy:
        raise OutputBusy(f"{out} is being written by another transcode (pid {busy.holder}); "
                         "one transcode per output folder at a time") from None


def _remove_leftovers(out: Path) -> None:
    """Delete the temporary files and rank journals a killed run left in OUT (its finished outputs'
    records are folded first). Only under the lock: never another live run's files."""
    if (out / PENDING_DIR).is_dir():
        _fold_records(out, {})
    for dirpath, _, names in os.walk(out):  # symbolic links are not followed: nothing outside OUT
        for name in names:
            in_root = dirpath == str(out)
            if (_OUTPUT_TMP.match(name) or (in_root and (_REPORT_TMP.match(name) or Path(name).match(JOURNAL_GLOB)))
                    or (dirpath == str(out / PENDING_DIR) and name.startswith(".") and name.endswith(".tmp"))):
                os.unlink(os.path.join(dirpath, name))
    fsync_path(out)


# ---------------------------------------------------------------------------- existing outputs


def _settings_change(made: dict | None, settings: dict) -> str:
    if made is None:
        return "made by an older mcl-fast that did not record its settings"
    diff = [f"{k} {made.get(k)!r} (this run: {v!r})" for k, v in settings.items() if made.get(k) != v]
    return "made with " + ", ".join(diff)


def _output_state(dst: Path, src: Path, record: dict | None, settings: dict) -> str:
    """TODO (missing, damaged or changed since, or its source changed), DONE (made from src as it
    is now, with these settings), or why the existing output may only be replaced with --overwrite."""
    if not dst.exists():
        return TODO
    if record is None:
        return "no record of how it was made (another tool, or a run of an older mcl-fast)"
    if record.get("settings") != settings:
        return _settings_change(record.get("settings"), settings)
    try:
        intact = file_fingerprint(dst) == record.get("fingerprint")
    except OSError:
        intact = False
    if not intact:
        return TODO  # damaged or changed since it was written: ours to redo
    try:
        return DONE if file_fingerprint(src) == record.get("source_fingerprint") else TODO
    except OSError:
        return DONE  # the source is gone: the output is all there is


def _refusal(out: Path, conflicts: list[tuple[str, str]], limit: int = 10) -> ValueError:
    shown = "; ".join(f"{rel}: {why}" for rel, why in conflicts[:limit])
    more = f"; and {len(conflicts) - limit} more" if len(conflicts) > limit else ""
    return ValueError(f"{out} holds {len(conflicts)} outputs this run would make differently ({shown}{more}). "
                      "Run with the settings they were made with, or pass --overwrite to re-encode them")


# ---------------------------------------------------------------------------------- the tasks


class Task(NamedTuple):
    """One file to transcode: src (path), rel (its relpath in the video list), dst (output path),
    out (OUT), out_rel (dst relative to OUT), settings (check_settings')."""

    src: str
    rel: str
    dst: str
    out: str
    out_rel: str
    settings: dict


def _make_task(root: Path, out: Path, dst: Path, rel: str, settings: dict) -> Task:
    return Task(str(root / rel), rel, str(dst), str(out), dst.relative_to(out).as_posix(), settings)


def _source_record(rel: str, info: dict) -> dict:
    return {"source": rel, "source_fingerprint": info["source_fingerprint"], "fingerprint": info["fingerprint"],
            "settings": info["settings"]}


def _task(task: Task) -> tuple[str, dict | None, str | None]:
    """(rel, info, None) or (rel, None, reason) for a Task; an OSError of the machine (MACHINE_ERRNOS)
    propagates: the run stops."""
    def record(info: dict) -> None:  # before the output exists under its name
        _write_pending(Path(task.out), task.out_rel, _source_record(task.rel, info))

    try:
        return task.rel, transcode(task.src, task.dst, **task.settings, before_rename=record), None
    except VideoError as err:
        return task.rel, None, err.reason
    except OSError as err:
        if err.errno in MACHINE_ERRNOS:  # a plain OSError: PyAV's own do not survive the trip from a worker
            raise OSError(err.errno, os.strerror(err.errno), err.filename) from None
        return task.rel, None, f"{type(err).__name__}: {err}"
    except Exception as err:  # noqa: BLE001 (an unexpected failure of one file must not stop the run)
        return task.rel, None, f"{type(err).__name__}: {err}"


# ---------------------------------------------------------------------------------- datasets


@dataclass
class TranscodeReport:
    """done, skipped: relpaths written / already there; errors: relpath -> reason; sources: output
    relpath -> {"source", "source_fingerprint", "fingerprint", "settings"} of the outputs written
    (this run)."""

    out: str
    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"transcode: {len(self.done)} written, {len(self.skipped)} already there, "
                f"{len(self.errors)} failed ({self.seconds:.1f} s) -> {self.out}")


def transcode_dataset(videos, out, *, codec: str = "vp9", gop: int = 16, crf: int | None = None,
                      short_side: int | None = None, workers: int = 1, overwrite: bool = False,
                      progress: bool = True, distributed: bool | None = None,
                      allow_out_inside_videos: bool = False) -> TranscodeReport:
    """Transcode every video of `videos` (a folder, list file or video: video_io.collect_videos)
    into `out` (see output_relpath; the extension becomes the codec's). Resumable; failures go to
    out/transcode_errors.json, the records to out/transcode_sources.json. ValueError, before
    anything is written, for settings out of range and misplaced outputs (plan_outputs); also
    for outputs already there made with other settings (unless overwrite) and OutputBusy when
    another transcode writes into `out`.

    Under torchrun (WORLD_SIZE > 1) every rank calls it with the same arguments and takes its
    share (see the module docstring); rank 0 returns the job's report, the other ranks their own
    files' (with the job's `skipped`). distributed=False: this process alone even under torchrun
    (a call on one rank only)."""
    settings = check_settings(codec, gop, crf, short_side)
    _check_range("--workers", workers, *WORKERS_RANGE)
    start = time.perf_counter()
    root, out, targets = plan_outputs(videos, out, codec, allow_out_inside_videos)
    ranks = Ranks.from_env() if distributed is not False else Ranks()
    if ranks.distributed:
        return _transcode_ranks(ranks, root, out, targets, settings, workers, overwrite, progress, start)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        _remove_leftovers(out)
        report = TranscodeReport(out=str(out))
        tasks = _tasks_to_run(root, out, targets, settings, overwrite, report)
        _run_and_report(tasks, workers, report, progress)
    finally:
        os.close(lock)
    report.seconds = time.perf_counter() - start
    return report


def _tasks_to_run(root: Path, out: Path, targets: dict, settings: dict, overwrite: bool,
                  report: TranscodeReport) -> list[Task]:
    """The Tasks of the outputs to write; those already done go to report.skipped. ValueError
    (_refusal) when outputs made otherwise are in the way and not overwrite."""
    records = read_sources(out)
    tasks, conflicts = [], []
    for dst, rel in targets.items():
        task = _make_task(root, out, dst, rel, settings)
        state = TODO if overwrite else _output_state(dst, root / rel, records.get(task.out_rel), settings)
        if state == DONE:
            report.skipped.append(rel)
        elif state == TODO:
            tasks.append(task)
        else:
            conflicts.append((task.out_rel, state))
    if conflicts:
        raise _refusal(out, conflicts)
    return tasks


def _run_and_report(tasks: list[Task], workers: int, report: TranscodeReport, progress: bool) -> None:
    """Run the tasks, then write the error list and fold the records (also when interrupted; when
    the machine failed, e.g. a full disk, a failure to write them hides nothing: the records of the
    finished outputs stay pending)."""
    from tqdm import tqdm

    out = Path(report.out)
    bar = tqdm(total=len(tasks), unit="video", desc="transcode", disable=not progress, dynamic_ncols=True)
    try:
        run_tasks(tasks, workers, report, bar)
    except BaseException:
        bar.close()
        try:
            _write_report(out, report)
        except OSError:
            pass  # the first error is the one to tell
        raise
    bar.close()
    _write_report(out, report)


def _write_report(out: Path, report: TranscodeReport) -> None:
    atomic_write_json(out / ERRORS_NAME, [{"path": p, "reason": r} for p, r in sorted(report.errors.items())])
    _fold_records(out, report.sources)


def _replay_journals(out: Path, report: TranscodeReport) -> None:
    """Add the complete lines of every rank's journal in `out` to `report` (a torn last line,
    left by a killed rank, is skipped)."""
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
                report.sources[str(item["output"])] = _source_record(rel, info)


def _remove_journals(out: Path) -> None:
    for path in out.glob(JOURNAL_GLOB):
        path.unlink()
    fsync_path(out)


def _transcode_ranks(ranks: Ranks, root: Path, out: Path, targets: dict, settings: dict, workers: int,
                     overwrite: bool, progress: bool, start: float) -> TranscodeReport:
    """transcode_dataset as one rank of a torchrun job (see the module docstring)."""
    lock: list[int] = []  # rank 0's lock, held for the whole job

    def open_out() -> int:  # rank 0: one job per OUT, and what a killed job left tidied
        out.mkdir(parents=True, exist_ok=True)
        lock.append(_lock(out))
        _remove_leftovers(out)
        return 0

    try:
        with ranks:
            ranks.on_rank0(open_out)
            report, mine, total = _split_ranks(ranks, root, out, targets, settings, overwrite)
            _run_rank(ranks, out, mine, total, workers, report, progress)

            def merge() -> int:  # rank 0: one error list and one source list for the job
                job_report = TranscodeReport(out=str(out), skipped=report.skipped)
                _replay_journals(out, job_report)
                _write_report(out, job_report)
                _remove_journals(out)
                report.done, report.errors, report.sources = job_report.done, job_report.errors, job_report.sources
                return 0

            ranks.on_rank0(merge)
    finally:
        for fd in lock:
            os.close(fd)
    report.seconds = time.perf_counter() - start
    return report


def _split_ranks(ranks: Ranks, root: Path, out: Path, targets: dict, settings: dict,
                 overwrite: bool) -> tuple[TranscodeReport, list[Task], int]:
    """(a report holding the job's skipped outputs, this rank's Tasks, the job's number of Tasks);
    every rank raises the same
    ValueError (_refusal) when outputs made otherwise are in the way."""
    records = read_sources(out)
    tasks = [_make_task(root, out, dst, rel, settings) for dst, rel in targets.items()]

    def state(i: int) -> str:
        task = tasks[i]
        return TODO if overwrite else _output_state(Path(task.dst), root / task.rel, records.get(task.out_rel),
                                                    settings)

    def weight(i: int) -> int:  # -1: done; -2: in the way; else the source's frames
        verdict = state(i)
        return -1 if verdict == DONE else container_frames(tasks[i].src) if verdict == TODO else -2

    weights = ranks.by_stride(len(tasks), weight)
    conflicts = [(tasks[i].out_rel, state(i)) for i, w in enumerate(weights) if w == -2]
    if conflicts:
        raise _refusal(out, conflicts)
    report = TranscodeReport(out=str(out), skipped=[t.rel for t, w in zip(tasks, weights) if w == -1])
    todo = [i for i, w in enumerate(weights) if w >= 0]
    mine = [tasks[todo[j]] for j in balanced_slices([weights[i] for i in todo], ranks.world)[ranks.rank]]
    return report, mine, len(todo)


def _run_rank(ranks: Ranks, out: Path, tasks: list[Task], total: int, workers: int, report: TranscodeReport,
              progress: bool) -> None:
    """Run this rank's tasks, one fsynced journal line per file, then wait for every rank."""
    from tqdm import tqdm

    journal = out / part_name(JOURNAL_STEM, ranks.rank, ".jsonl")
    bar = tqdm(total=len(tasks), unit="video", desc=f"transcode rank {ranks.rank}", disable=not progress,
               dynamic_ncols=True, position=ranks.local_rank)
    job = JobProgress(out, JOURNAL_GLOB, total, desc=f"transcode job ({ranks.world} ranks)",
                      position=ranks.local_world, enabled=progress and ranks.is_main)
    output_of = {task.rel: task.out_rel for task in tasks}
    with job, open(journal, "ab") as f:
        fsync_path(out)

        def log(rel, info, reason) -> None:
            line = {"path": rel, "output": output_of[rel], "info": info, "reason": reason}
            f.write((json.dumps(line, separators=(",", ":")) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())

        try:
            run_tasks(tasks, workers, report, bar, on_result=log)
        finally:
            bar.close()
        ranks.barrier()  # every rank's journal is complete


def run_tasks(tasks, workers: int, report: TranscodeReport, bar, fn=None, on_result=None) -> None:
    """Run fn(task) -> (rel, info, reason) for Tasks, recording each in report (and passing it to
    on_result(rel, info, reason) when given: a rank's journal).

    workers == 1: in this process. Otherwise spawned processes through video_io.crash_tolerant_map
    (the pool `prepare` uses): a worker that dies (a decoder crash, the OOM killer) costs only its
    file, recorded as an error (video_io.CRASH_REASON), and the run goes on. fn: a picklable
    top-level function (default _task). An exception fn raises (a full disk) stops the run.
    """
    fn = _task if fn is None else fn
    if workers == 1:
        results = map(fn, tasks)
    else:
        results = crash_tolerant_map(fn, tasks, workers, on_crash=lambda task: (task.rel, None, CRASH_REASON))
    out_rel_of = {task.rel: task.out_rel for task in tasks}
    for result in results:
        _record(report, result, bar, out_rel_of)
        if on_result is not None:
            on_result(*result)


def _record(report: TranscodeReport, result, bar, out_rel_of: dict) -> None:
    rel, info, reason = result
    if reason is None:
        report.done.append(rel)
        if info and "fingerprint" in info:
            report.sources[out_rel_of[rel]] = _source_record(rel, info)
    else:
        report.errors[rel] = reason
        bar.write(f"transcode: skipped {rel}: {reason}")
    bar.update(1)


# ----------------------------------------------------------------------------------------- CLI


def _int_from(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from low to high (inclusive), refused by argparse otherwise."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, got {value}")
        return value

    return parse


def add_args(parser) -> None:
    """Arguments of `mcl-fast transcode`."""
    parser.add_argument("--videos", required=True,
                        help="folder (scanned recursively), one video, or a list file (one path per line)")
    parser.add_argument("--out", required=True,
                        help="output folder: each video goes to OUT/<its path relative to the folder or the list "
                             f"file's folder>, a '..' in it written {UP}; nothing is written elsewhere")
    parser.add_argument("--codec", choices=sorted(CODECS), default="vp9",
                        help="h264 (.mp4) for the GPU loader (NVDEC), vp9 (.webm) for DALI's CPU decoder")
    parser.add_argument("--gop", type=_int_from(*GOP_RANGE), default=16,
                        help=f"frames per closed GOP (keyframe interval), {GOP_RANGE[0]}..{GOP_RANGE[1]}")
    parser.add_argument("--crf", type=_int_from(0, max(hi for _, hi in CRF_RANGE.values())), default=None,
                        help="constant quality (lower is better): h264 0..51 (default "
                             f"{DEFAULT_CRF['h264']}), vp9 0..63 (default {DEFAULT_CRF['vp9']})")
    parser.add_argument("--short-side", type=_int_from(*SHORT_SIDE_RANGE), default=None,
                        help=f"resize so the shorter side has this many pixels, {SHORT_SIDE_RANGE[0]}.."
                             f"{SHORT_SIDE_RANGE[1]} (default: keep the size)")
    parser.add_argument("--workers", type=_int_from(*WORKERS_RANGE), default=max(1, (os.cpu_count() or 2) // 2),
                        help=f"parallel encoder processes, {WORKERS_RANGE[0]}..{WORKERS_RANGE[1]}")
    parser.add_argument("--overwrite", action="store_true",
                        help="re-encode outputs that already exist (also those made with other settings)")
    parser.add_argument("--allow-out-inside-videos", action="store_true",
                        help="allow --out inside the --videos folder (the scan then leaves it out)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    """Run `mcl-fast transcode`; 0 when every video was written or already there, 1 otherwise
    (also a full disk or a read-only --out: cli.main says so in one line), 2 when refused."""
    try:
        report = transcode_dataset(args.videos, args.out, codec=args.codec, gop=args.gop, crf=args.crf,
                                   short_side=args.short_side, workers=args.workers, overwrite=args.overwrite,
                                   progress=not args.no_progress,
                                   allow_out_inside_videos=args.allow_out_inside_videos)
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
    return run_command("mcl-fast transcode", run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["transcode", "transcode_dataset", "read_sources", "output_relpath", "confined_relpath", "plan_outputs",
           "check_settings", "add_args", "run", "TranscodeError", "OutputBusy", "CODECS"]
