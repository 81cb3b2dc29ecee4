"""The HTTP API reference, generated from the app's OpenAPI document.

``python -m ratekeeper.http.reference docs`` writes ``docs/openapi.json`` and
``docs/http-api.md``; a test fails when they drift from the code.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def openapi_document() -> dict[str, Any]:
    from ratekeeper.http.app import create_app
    from ratekeeper.registry.registry import Registry

    with tempfile.TemporaryDirectory() as folder:
        registry, _token = Registry.create(folder, admin="docs", policy="open")
        try:
            return create_app(registry).openapi()
        finally:
            registry.close()


def render_markdown(document: dict[str, Any]) -> str:
    lines = [
        "# HTTP API reference",
        "",
        "Generated from the rating engine's OpenAPI document (`docs/openapi.json`, also served",
        "at `/openapi.json`, with interactive docs at `/docs`) by",
        "`python -m ratekeeper.http.reference docs`. Every error has the same body: "
        '`{"error": {"code", "message", "problems": [{"field", "code", "message", "row"}]}}`;',
        "an unexpected error is a 500 with code `internal_error` and a `correlation_id` (also in",
        "the `X-Correlation-ID` header) under which the server logged the details. Registry",
        "views and pins of versions that are not approved need `Authorization: Bearer <token>`.",
        "The MLflow routes (`/invocations`, `/ping`, `/health`, `/version`) answer as",
        "`mlflow models serve` does: errors on `/invocations` are MLflow's",
        '`{"error_code": "BAD_REQUEST", "message": ...}` (415s in plain text); see',
        "[serving.md](serving.md#mlflow-clients).",
        "",
    ]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            lines += [f"## `{method.upper()} {path}`", "", operation.get("summary", ""), ""]
            parameters = operation.get("parameters", [])
            if parameters:
                lines += [
                    "| parameter | in | type | required | description |",
                    "|---|---|---|---|---|",
                ]
                for p in parameters:
                    schema = p.get("schema", {})
                    kind = schema.get("type") or " or ".join(
                        s.get("type", "?")
                        for s in schema.get("anyOf", [])
                        if s.get("type") != "null"
                    )
                    lines.append(
                        f"| `{p['name']}` | {p['in']} | {kind} | "
                        f"{'yes' if p.get('required') else 'no'} | "
                        f"{p.get('description', '')} |"
                    )
                lines.append("")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body and "example" in body:
                lines += [
                    "Request body example:",
                    "",
                    "```json",
                    json.dumps(body["example"], indent=2),
                    "```",
                    "",
                ]
            lines += ["| status | meaning |", "|---|---|"]
            for status, response in operation.get("responses", {}).items():
                lines.append(f"| {status} | {response.get('description', '')} |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    folder = Path(argv[0] if argv else "docs")
    document = openapi_document()
    (folder / "openapi.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (folder / "http-api.md").write_text(render_markdown(document))


if __name__ == "__main__":
    main(sys.argv[1:])
