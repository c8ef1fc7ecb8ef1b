"""What every benchmark's JSON carries besides its numbers: when and where it ran."""
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
