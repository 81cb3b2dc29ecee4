"""The generated HTTP API reference is current (python -m ratekeeper.http.reference docs)."""

from __future__ import annotations

import json
from pathlib import Path

from ratekeeper.http.reference import openapi_document, render_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_committed_openapi_document_and_reference_match_the_code() -> None:
    document = openapi_document()
    assert json.loads((DOCS / "openapi.json").read_text()) == document
    assert (DOCS / "http-api.md").read_text() == render_markdown(document)
