"""The release variant's name ("official") stays in its own modules: the general ones name it only
where a user picks it (the config switch, the CLI) or where a doc line describes that switch."""
from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mcl_fast"
NAME = re.compile("official", re.IGNORECASE)

# file (relative to mcl_fast/) -> why it may name the variant outside the variant's own modules
ALLOWED = {
    "train.py": "the config switch: method's choices, its section, the method -> module table",
    "data/presets.py": "the loaders' switch: preset name -> the variant's module",
    "data/options.py": "the preset option's doc line",
    "demo.py": "the CLI's --preset choices",
    "motion/store_kinds.py": "the store's switch: maps name -> the kind (the release's from its module)",
}


def files_naming_the_variant() -> list[str]:
    """mcl_fast's .py files outside the variant's own modules (their names say it) that name it."""
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                  if not NAME.search(p.name) and NAME.search(p.read_text(encoding="utf-8")))


def test_the_variant_is_named_only_where_it_is_chosen():
    stray = [f for f in files_naming_the_variant() if f not in ALLOWED]
    assert not stray, f"these general modules name the release variant; move that code to its own modules: {stray}"


def test_the_switches_name_it_once_each():
    """train.py's switch (import, method table, the method comment), presets.py's (one branch) and
    store_kinds.py's (the import of the kind and of its reader accessors, the readers' base)."""
    def lines(rel):
        return [line for line in (PACKAGE / rel).read_text(encoding="utf-8").splitlines() if NAME.search(line)]

    assert len(lines("train.py")) <= 3, lines("train.py")
    assert len(lines("data/presets.py")) <= 2, lines("data/presets.py")
    assert len(lines("motion/store_kinds.py")) <= 2, lines("motion/store_kinds.py")
