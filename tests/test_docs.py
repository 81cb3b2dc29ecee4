"""The generated HTTP API reference is current (python -m ratekeeper.http.reference docs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ratekeeper.http.reference import openapi_document, render_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_committed_openapi_document_and_reference_match_the_code() -> None:
    document = openapi_document()
    assert json.loads((DOCS / "openapi.json").read_text()) == document
    assert (DOCS / "http-api.md").read_text() == render_markdown(document)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.strip().lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def test_every_relative_link_in_the_docs_reaches_a_file_and_heading() -> None:
    root = DOCS.parent
    pages = [root / "README.md", *sorted(DOCS.glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
                continue
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []
