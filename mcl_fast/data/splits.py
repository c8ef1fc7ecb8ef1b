"""Dataset split files: UCF101, HMDB51, Kinetics-400 CSV and a plain `path,label` CSV.

Every reader returns a `Split`: `entries` (relpath, label_index) and `classes`; a malformed line
(or, with `videos_root`, a missing file unless `skip_missing=True`) raises `SplitError` naming
the file and line. The formats each reader accepts: docs/loader.md ("Split files").
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Split", "SplitError", "read_ucf101", "read_hmdb51", "read_kinetics_csv", "read_plain_csv",
           "load_split"]


class SplitError(ValueError):
    """A malformed or missing entry in a split file (the message names the file and line)."""


@dataclass
class Split:
    """A parsed split: ``entries`` (relpath, label index), ``classes`` names; ``missing`` (relpath, where)."""

    entries: list[tuple[str, int]]
    classes: list[str]
    name: str = ""
    missing: list[tuple[str, str]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.entries]

    @property
    def labels(self) -> list[int]:
        return [y for _, y in self.entries]

    def __len__(self) -> int:
        return len(self.entries)


def _lines(path: Path):
    """(1-based line number, stripped text) for every non-blank line of a text file."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"{path}: split file not found")
    with open(path, encoding="utf-8-sig") as f:  # utf-8-sig: tolerate a BOM
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if text:
                yield number, text


class _Collector:
    """Adds entries, checking existence under videos_root when given."""

    def __init__(self, videos_root, skip_missing: bool):
        self.root = Path(videos_root) if videos_root is not None else None
        self.skip_missing = skip_missing
        self.entries: list[tuple[str, int]] = []
        self.missing: list[tuple[str, str]] = []

    def add(self, candidates, label: int, where: str) -> None:
        """candidates: relpaths to try in order (the first existing wins)."""
        if self.root is None:
            self.entries.append((candidates[0], label))
            return
        for rel in candidates:
            if (self.root / rel).is_file():
                self.entries.append((rel, label))
                return
        if not self.skip_missing:
            raise SplitError(f"{where}: video {candidates[0]!r} not found under {self.root}")
        self.missing.append((candidates[0], where))


# ------------------------------------------------------------------------------------- UCF101


def _ucf_classes(class_ind: Path) -> list[str]:
    by_index: dict[int, str] = {}
    for number, text in _lines(class_ind):
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise SplitError(f"{class_ind}:{number}: expected '<index> <ClassName>', got {text!r}")
        index = int(parts[0])
        if index in by_index:
            raise SplitError(f"{class_ind}:{number}: class index {index} appears twice")
        by_index[index] = parts[1]
    if not by_index:
        raise SplitError(f"{class_ind}: no classes")
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise SplitError(f"{class_ind}: class indices must be 1..{len(by_index)} without gaps")
    return [by_index[i] for i in range(1, len(by_index) + 1)]


def read_ucf101(list_dir, split: int = 1, subset: str = "train", *, videos_root=None,
                skip_missing: bool = False) -> Split:
    """UCF101 ``trainlist0{split}.txt`` or ``testlist0{split}.txt`` from ``list_dir`` (with classInd.txt)."""
    list_dir = Path(list_dir)
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    classes = _ucf_classes(list_dir / "classInd.txt")
    index_of = {name: i for i, name in enumerate(classes)}
    list_file = list_dir / f"{subset}list{int(split):02d}.txt"
    out = _Collector(videos_root, skip_missing)
    for number, text in _lines(list_file):
        where = f"{list_file}:{number}"
        parts = text.split()
        rel = parts[0].replace("\\", "/")
        folder = rel.split("/")[0] if "/" in rel else None
        if folder is None or folder not in index_of:
            raise SplitError(f"{where}: expected 'ClassName/v_x.avi' with a class of classInd.txt, got {text!r}")
        label = index_of[folder]
        if subset == "train":
            if len(parts) != 2 or not parts[1].isdigit():
                raise SplitError(f"{where}: expected 'ClassName/v_x.avi <index>', got {text!r}")
            given = int(parts[1]) - 1
            if given != label:
                raise SplitError(f"{where}: label {parts[1]} disagrees with the class folder {folder!r} "
                                 f"(classInd.txt says {label + 1})")
        elif len(parts) not in (1, 2):
            raise SplitError(f"{where}: expected 'ClassName/v_x.avi', got {text!r}")
        out.add([rel], label, where)
    return Split(out.entries, classes, name=f"ucf101/{subset}{int(split)}", missing=out.missing)


# ------------------------------------------------------------------------------------- HMDB51

_HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>\d+)\.txt$")
_HMDB_CODES = {"train": "1", "test": "2"}


def read_hmdb51(list_dir, split: int = 1, subset: str = "train", *, videos_root=None,
                skip_missing: bool = False) -> Split:
    """HMDB51 per-class ``<class>_test_split{split}.txt`` files in ``list_dir``; 1 = train, 2 = test."""
    list_dir = Path(list_dir)
    if subset not in _HMDB_CODES:
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    if not list_dir.is_dir():
        raise SplitError(f"{list_dir}: HMDB51 split folder not found")
    files = {}
    for f in list_dir.iterdir():
        m = _HMDB_FILE.match(f.name)
        if m and int(m["split"]) == int(split):
            files[m["cls"]] = f
    if not files:
        raise SplitError(f"{list_dir}: no '<class>_test_split{split}.txt' files")
    classes = sorted(files)
    want = _HMDB_CODES[subset]
    out = _Collector(videos_root, skip_missing)
    for label, cls in enumerate(classes):
        for number, text in _lines(files[cls]):
            where = f"{files[cls]}:{number}"
            parts = text.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise SplitError(f"{where}: expected '<name>.avi <0|1|2>', got {text!r}")
            if parts[1] == want:
                out.add([f"{cls}/{parts[0]}"], label, where)
    return Split(out.entries, classes, name=f"hmdb51/{subset}{int(split)}", missing=out.missing)


# ---------------------------------------------------------------------------------- Kinetics

_KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")


def kinetics_relpath(label: str, youtube_id: str, start: int, end: int, ext: str = ".mp4",
                     underscores: bool = False) -> str:
    """``<label>/<youtube_id>_<start:06d>_<end:06d><ext>`` (the ActivityNet crawler's names)."""
    folder = label.replace(" ", "_") if underscores else label
    return f"{folder}/{youtube_id}_{start:06d}_{end:06d}{ext}"


def _read_csv_rows(path: Path):
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"{path}: split file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if row and any(cell.strip() for cell in row):
                yield number, [cell.strip() for cell in row]


def read_kinetics_csv(csv_path, *, videos_root=None, skip_missing: bool = False, classes=None) -> Split:
    """Kinetics-400 annotation CSV; ``classes`` fixes the class list (e.g. the training split's)."""
    csv_path = Path(csv_path)
    rows = list(_read_csv_rows(csv_path))
    if not rows:
        raise SplitError(f"{csv_path}: empty file")
    header_line, header = rows[0]
    if tuple(header[:5]) != _KINETICS_COLUMNS:
        raise SplitError(f"{csv_path}:{header_line}: expected the header "
                         f"'{','.join(_KINETICS_COLUMNS)}[,is_cc]', got {','.join(header)!r}")
    parsed = []
    for number, row in rows[1:]:
        where = f"{csv_path}:{number}"
        if len(row) != len(header):
            raise SplitError(f"{where}: expected {len(header)} columns, got {len(row)}")
        label, yid, start, end = row[0], row[1], row[2], row[3]
        if not label or not yid:
            raise SplitError(f"{where}: empty label or youtube_id")
        try:
            start_i, end_i = int(float(start)), int(float(end))
        except ValueError:
            raise SplitError(f"{where}: time_start/time_end must be numbers, got {start!r}, {end!r}") from None
        parsed.append((label, yid, start_i, end_i, where))
    if classes is None:
        classes = sorted({p[0] for p in parsed})
    index_of = {name: i for i, name in enumerate(classes)}
    out = _Collector(videos_root, skip_missing)
    for label, yid, start_i, end_i, where in parsed:
        if label not in index_of:
            raise SplitError(f"{where}: class {label!r} is not among the {len(classes)} known classes")
        candidates = [kinetics_relpath(label, yid, start_i, end_i, ext, underscores)
                      for underscores in (False, True) for ext in (".mp4", ".mkv", ".webm")]
        out.add(candidates, index_of[label], where)
    return Split(out.entries, list(classes), name=f"kinetics/{csv_path.stem}", missing=out.missing)


# --------------------------------------------------------------------------------- plain CSV


def read_plain_csv(csv_path, *, videos_root=None, skip_missing: bool = False, classes=None) -> Split:
    """``path,label`` rows; labels are class names or (all) integer indices."""
    csv_path = Path(csv_path)
    rows = list(_read_csv_rows(csv_path))
    if rows and [c.lower() for c in rows[0][1]] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise SplitError(f"{csv_path}: no entries")
    for number, row in rows:
        if len(row) != 2 or not row[0] or not row[1]:
            raise SplitError(f"{csv_path}:{number}: expected 'path,label', got {','.join(row)!r}")
    numeric = all(re.fullmatch(r"\d+", row[1]) for _, row in rows)
    if classes is None:
        if numeric:
            classes = [str(i) for i in range(max(int(row[1]) for _, row in rows) + 1)]
        else:
            classes = sorted({row[1] for _, row in rows})
    index_of = {name: i for i, name in enumerate(classes)}
    out = _Collector(videos_root, skip_missing)
    for number, (path, label) in rows:
        where = f"{csv_path}:{number}"
        if numeric:
            index = int(label)
            if index >= len(classes):
                raise SplitError(f"{where}: label {index} is out of range for {len(classes)} classes")
        elif label in index_of:
            index = index_of[label]
        else:
            raise SplitError(f"{where}: class {label!r} is not among the {len(classes)} known classes")
        out.add([path.replace("\\", "/")], index, where)
    return Split(out.entries, list(classes), name=f"csv/{csv_path.stem}", missing=out.missing)


# ------------------------------------------------------------------------------- dispatcher

_UCF_FILE = re.compile(r"^(train|test)list(\d+)\.txt$")


def load_split(spec, *, videos_root=None, skip_missing: bool = False, classes=None) -> Split:
    """Parse a split given as a spec string.

    Accepted forms:
      - ``.../trainlist01.txt`` or ``.../testlist01.txt``: UCF101 (classInd.txt beside it);
      - ``hmdb51:DIR:N:train|test``: HMDB51 split N from the folder of per-class files;
      - ``ucf101:DIR:N:train|test``: UCF101 split N from the folder of lists;
      - ``*.csv``: Kinetics when the header starts ``label,youtube_id,...``, else ``path,label``.
    ``classes`` (Kinetics and plain CSV only) fixes the class list, e.g. to the training split's.
    """
    text = str(spec)
    kwargs = dict(videos_root=videos_root, skip_missing=skip_missing)
    for dataset, reader in (("hmdb51:", read_hmdb51), ("ucf101:", read_ucf101)):
        if text.lower().startswith(dataset):
            parts = text[len(dataset):].rsplit(":", 2)
            if len(parts) != 3 or not parts[1].isdigit():
                raise ValueError(f"split spec {text!r}: expected '{dataset}DIR:N:train|test'")
            return reader(parts[0], int(parts[1]), parts[2], **kwargs)
    path = Path(text)
    m = _UCF_FILE.match(path.name)
    if m:
        return read_ucf101(path.parent, int(m[2]), m[1], **kwargs)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise SplitError(f"{path}: split file not found")
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = next(csv.reader(f), [])
        if [c.strip() for c in first[:2]] == ["label", "youtube_id"]:
            return read_kinetics_csv(path, classes=classes, **kwargs)
        return read_plain_csv(path, classes=classes, **kwargs)
    raise ValueError(f"split spec {text!r}: not a UCF101 list (trainlist0N.txt/testlist0N.txt), "
                     f"a .csv, or 'hmdb51:DIR:N:train|test'")
