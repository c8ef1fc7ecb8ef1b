"""Test helper: a store's index in the JSON layout written before the columnar index."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from mcl_fast.motion.store import INDEX, LEGACY_VERSIONS, MotionStore


def to_legacy_index(folder: Path) -> dict:
    """Rewrite a store's index in the layout written before the columnar index (one JSON entry
    per video, version 1 / 2) and return it: what stores written by earlier versions hold."""
    store = MotionStore(folder, verify=False)
    header = json.loads((folder / INDEX).read_text())
    index = {k: v for k, v in header.items() if k not in ("generation", "columns", "count", "files", "extents")}
    index.update(version=LEGACY_VERSIONS[store.maps], videos={n: store.info(n) for n in store.names})
    (folder / INDEX).write_text(json.dumps(index))
    shutil.rmtree(folder / header["columns"])
    return index
