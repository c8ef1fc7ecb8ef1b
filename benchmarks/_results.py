"""What every benchmark's JSON carries besides its numbers (when and where it ran), and the one writer
of that JSON: `write_results` for a finished run, `ResultsFile` for one that keeps its rows as they
finish (the file is rewritten atomically after each row, so a run cut by a time limit or SIGKILL
leaves every row it finished, with "complete": false)."""
from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path


def write_results(path, **payload) -> Path:
    """Write payload plus "date" (UTC, ISO 8601) and "machine" (platform string) as JSON to `path`,
    atomically, creating its folder. Returns the path."""
    from mcl_fast._io import atomic_write_json  # the scripts put the checkout on sys.path first

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                    "machine": platform.platform(), **payload})


class ResultsFile:
    """A benchmark's JSON kept current row by row: `add(row)` appends to a list ("rows" unless told)
    and rewrites the file; `update(**fields)` sets other fields; `finish()` marks it complete.
    Lists of rows are the caller's own (mutating a row it added is seen at the next write)."""

    def __init__(self, path, **fields):
        self.path, self.fields = Path(path), {"complete": False, **fields}
        self.write()

    def add(self, row: dict, key: str = "rows") -> dict:
        self.fields.setdefault(key, []).append(row)
        self.write()
        return row

    def update(self, **fields) -> None:
        self.fields.update(fields)
        self.write()

    def finish(self, **fields) -> Path:
        self.update(**fields, complete=True)
        return self.path

    def write(self) -> Path:
        return write_results(self.path, **self.fields)
