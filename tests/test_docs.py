"""The documentation a user of the repository has: every relative link in README.md, BENCHMARKS.md and
docs/ resolves (file and, for a `#anchor`, heading), README stays short and opens with the two
commands, and no file users get cites the team's private notes or paths outside the repository."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINKED = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "kernels" / "README.md", *DOCS]
# Folders and files users get; none may point at the team's notes or outside the repository.
PUBLIC = ["mcl_fast", "docs", "benchmarks", "scripts", "kernels", "tests", "examples", "README.md",
          "BENCHMARKS.md", "Makefile", "setup.py", "setup.cfg", "CMakeLists.txt"]
FORBIDDEN = re.compile(r"DESIGN\.md|official-release|(?<![\w-])shared/|/work/(?:main|wt)\b")
SUFFIXES = {".py", ".md", ".sh", ".cu", ".cuh", ".cpp", ".h", ".txt", ".cfg", ".yaml", ".yml", ".toml", ""}

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?)\s*$", text, flags=re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)  # code is not a link
    return [m.group(1) for m in LINK.finditer(text)]


@pytest.mark.parametrize("page", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if not dest.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_anchor_rule_matches_githubs():
    assert _anchor("Paper vs `official` preset") == "paper-vs-official-preset"
    assert _anchor("MoCo collapse (`benchmarks/collapse.py`)") == "moco-collapse-benchmarkscollapsepy"


def test_no_public_file_cites_the_team_notes_or_paths_outside_the_repository():
    hits = []
    for name in PUBLIC:
        top = ROOT / name
        files = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        for path in files:
            if path.suffix not in SUFFIXES or "__pycache__" in path.parts or path == Path(__file__).resolve():
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if FORBIDDEN.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_the_readme_is_short_and_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    assert text.index("```bash") < text.index("\n## ")  # before any section
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    # the issue tracker looks for this section in README itself
    assert "\n## What is guaranteed\n" in text and "(docs/faults.md)" in text


def test_benchmarks_opens_with_a_summary_that_links_every_section():
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## (.+?)\s*$", text, flags=re.M)
    summary = text.split("\n## ", 2)[1] if sections[0].lower().startswith("summary") else ""
    assert summary, "BENCHMARKS.md should open with a Summary section"
    linked = {m.group(1).lstrip("#") for m in LINK.finditer(summary)}
    missing = [s for s in sections[1:] if _anchor(s) not in linked]
    assert not missing, f"sections the summary does not link: {missing}"
