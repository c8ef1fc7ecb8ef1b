"""What the examples saw, for tests/test_examples.py: one JSON file per rank."""
from __future__ import annotations

import json
from pathlib import Path


def write_report(out: str | None, rank: int, seen: list[dict]) -> None:
    """OUT/rank{rank}.json: the per-epoch records `seen` (nothing without --out)."""
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(seen))


def record_epoch(seen: list[dict], rank: int, epoch: int, loss: float, indices: list[int], **more) -> None:
    """Add one epoch's record to `seen` and print its line."""
    seen.append({"epoch": epoch, "loss": loss, "indices": indices, **more})
    print(f"rank {rank} epoch {epoch}: loss {loss:.4f}, {len(indices)} clips")
