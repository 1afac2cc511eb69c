"""The product cites only the paper and the kit's own pages: every ``docs/<page>.md §N`` exists, nothing else is cited."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = [p for folder in ("mammoclip_kit", "data_prep", "notebooks", "configs", "docs", "tests")
           for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".ipynb", ".md", ".yaml"}] + [ROOT / "README.md"]
# The developers' notes the kit does not ship, spelled in pieces so that this file does not cite them itself.
_UNSHIPPED = ("reference" + "-spec", "synthetic" + "-mammography")
INTERNAL = re.compile("|".join(map(re.escape, _UNSHIPPED)) + r"|\bspec §|\bspec section|\(spec \d")
CITATION = re.compile(r"docs/([\w-]+\.md) §(\d+(?:\.\d+)?)")


def _sections(page: Path) -> set[str]:
    return set(re.findall(r"^#+ §(\d+(?:\.\d+)?)\b", page.read_text(), flags=re.M))


def test_no_citation_of_documents_that_do_not_ship():
    found = [f"{p.relative_to(ROOT)}:{i}" for p in PRODUCT
             for i, line in enumerate(p.read_text().splitlines(), 1) if INTERNAL.search(line)]
    assert not found, "citations of internal documents: " + ", ".join(found[:20])


def test_every_docs_section_cited_exists():
    sections = {page.name: _sections(page) for page in (ROOT / "docs").glob("*.md")}
    missing = sorted({f"{p.relative_to(ROOT)}: docs/{page} §{number}" for p in PRODUCT
                      for page, number in CITATION.findall(p.read_text())
                      if number not in sections.get(page, set())})
    assert sections["reference-notes.md"] and not missing, "cited sections that do not exist:\n" + "\n".join(missing)
