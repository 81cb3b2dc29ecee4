"""The registry API: what the remote registry client (``rk.Registry("http://...")``) talks to.

Every route authenticates the bearer token and calls the registry's Python API acting as the
token's user, so the same policy, roles and four-eyes rules decide; errors leave through the one
error mapping (http/errors.py).

Registering uploads a package the client built: one JSON body with the manifest and each file
base64-encoded. One request is one atomic registration (no half-uploaded blobs to tidy up), it
needs no multipart parser in the serving runtime, and it shares the bounded JSON reading of
every other route; base64 costs a third more bytes, small beside a package's MBs. The server
rebuilds the package from the bytes it was given (``load_package``: every file must match the
manifest's digest) and ``register_package`` validates it again: an upload is never trusted.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Query, Request
from starlette.responses import Response

from ratekeeper.artifacts import sha256_hex
from ratekeeper.errors import IntegrityError, InvalidInputError
from ratekeeper.http.auth import (
    AUTH_ERRORS,
    TokenAuth,
    id64,
    off_loop,
    read_json_off_loop,
    read_object,
    require,
)
from ratekeeper.http.errors import HTTPProblem, json_response
from ratekeeper.packaging.package import Package, canonical_json, load_package
from ratekeeper.registry.registry import Registry, _check_metrics, _check_tags
from ratekeeper.registry.uri import check_name

MAX_PACKAGE_BYTES = 300_000_000
"""The largest registration body (base64 files included): a 200 MB ONNX graph fits."""

DIGEST = re.compile(r"[0-9a-f]{64}")

PREFIX = "/v1/registry"


def add_registry_routes(app: FastAPI, registry: Registry, auth: TokenAuth) -> None:
    _add_reading_routes(app, auth)
    _add_moving_routes(app, auth)
    _add_artifact_routes(app, registry, auth)


def _version_number(name: str, version: int) -> int:
    return id64(version, f"model {name!r} has no version {version}")


def _add_reading_routes(app: FastAPI, auth: TokenAuth) -> None:
    @app.get(f"{PREFIX}/models", tags=["registry API"], responses=AUTH_ERRORS, summary="Models")
    def list_models(request: Request) -> Response:
        found = auth.acting(request).list_models()
        return json_response({"models": [m.to_dict() for m in found]})

    @app.get(
        f"{PREFIX}/models/{{name}}", tags=["registry API"], responses=AUTH_ERRORS, summary="A model"
    )
    def get_model(request: Request, name: str) -> Response:
        return json_response(auth.acting(request).get_model(name).to_dict())

    @app.get(
        f"{PREFIX}/versions",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary="Versions by model, stage, alias and tag (key or key=value)",
    )
    def list_versions(
        request: Request,
        name: str | None = Query(None),
        stage: str | None = Query(None),
        alias: str | None = Query(None),
        tag: str | None = Query(None),
    ) -> Response:
        found = auth.acting(request).list_versions(name, stage=stage, alias=alias, tag=tag)
        return json_response({"versions": [v.to_dict() for v in found]})

    @app.get(
        f"{PREFIX}/models/{{name}}/versions/{{version}}",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary="A version: signature, metrics, lineage, reference profile",
    )
    def get_version(request: Request, name: str, version: int) -> Response:
        actor = auth.acting(request)
        return json_response(actor.get_version(name, _version_number(name, version)).to_dict())

    @app.get(
        f"{PREFIX}/resolve",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary="The version a model URI points at now",
    )
    def resolve(request: Request, uri: str = Query(...)) -> Response:
        return json_response(auth.acting(request).resolve(uri).to_dict())

    @app.get(
        f"{PREFIX}/models/{{name}}/transitions",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary="Stage transitions of a model (or of one version)",
    )
    def transitions(request: Request, name: str, version: int | None = Query(None)) -> Response:
        number = _version_number(name, version) if version is not None else None
        moves = auth.acting(request).get_transitions(name, number)
        return json_response({"transitions": [t.to_dict() for t in moves]})

    @app.get(
        f"{PREFIX}/models/{{name}}/production",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary="Which version was Production at a moment (ISO 8601 with a time zone)",
    )
    def production_at(request: Request, name: str, at: str = Query(...)) -> Response:
        from ratekeeper.governance import wire

        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise InvalidInputError(f"at={at[:40]!r} is not an ISO 8601 date and time") from None
        return json_response(
            wire.production_to_dict(auth.acting(request).production_at(name, when))
        )

    @app.get(
        f"{PREFIX}/generation",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary="The counter bumped by every stage and alias move",
    )
    def generation(request: Request) -> Response:
        return json_response({"generation": auth.acting(request).generation()})


def _add_moving_routes(app: FastAPI, auth: TokenAuth) -> None:
    @app.post(
        f"{PREFIX}/models/{{name}}/versions",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        status_code=201,
        summary="Register a package built by the client (manifest + base64 files); re-validated",
    )
    async def register(request: Request, name: str) -> Response:
        actor = await off_loop(lambda: auth.acting(request))
        check_name(name)
        await off_loop(lambda: require(actor, "register"))
        body = await read_json_off_loop(request, MAX_PACKAGE_BYTES)
        if not isinstance(body, dict) or not isinstance(body.get("manifest"), dict):
            raise HTTPProblem("bad_request", "send a JSON object with the package's manifest")

        def run() -> Any:
            package = _unpack(body["manifest"], body.get("files"))
            lineage = body.get("lineage") or {}
            if not isinstance(lineage, dict):
                raise InvalidInputError("lineage must be a JSON object")
            return actor.register_package(
                package,
                name,
                metrics=_check_metrics(_mapping(body.get("metrics"), "metrics")),
                lineage=lineage,
                description=_text(body.get("description")),
                tags=_check_tags(_mapping(body.get("tags"), "tags")),
            )

        version = await off_loop(run)
        return json_response(version.to_dict(), 201)

    @app.post(
        f"{PREFIX}/models/{{name}}/versions/{{version}}/stage",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary="Move a version to a stage (governed: Archived or None; the rest by request)",
    )
    async def transition(request: Request, name: str, version: int) -> Response:
        number = _version_number(name, version)
        actor = await off_loop(lambda: auth.acting(request))
        body = await read_object(request)
        moved = await off_loop(
            lambda: actor.transition_stage(
                name, number, str(body.get("stage", "")), comment=_text(body.get("comment"))
            )
        )
        return json_response(moved.to_dict())

    @app.post(
        f"{PREFIX}/models/{{name}}/rollback",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary="The kill switch: the previous Production version back",
    )
    async def rollback(request: Request, name: str) -> Response:
        actor = await off_loop(lambda: auth.acting(request))
        comment = _text((await read_object(request)).get("comment"))
        back = await off_loop(lambda: actor.rollback(name, comment=comment))
        return json_response(back.to_dict())

    @app.put(
        f"{PREFIX}/models/{{name}}/aliases/{{alias}}",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        summary="Point an alias at a version",
    )
    async def set_alias(request: Request, name: str, alias: str) -> Response:
        actor = await off_loop(lambda: auth.acting(request))
        version = (await read_object(request)).get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise HTTPProblem("bad_request", 'send {"version": N}')
        number = _version_number(name, version)
        pointed = await off_loop(lambda: actor.set_alias(name, alias, number))
        return json_response(pointed.to_dict())

    @app.delete(
        f"{PREFIX}/models/{{name}}/aliases/{{alias}}",
        tags=["registry API"],
        responses=AUTH_ERRORS,
        status_code=204,
        summary="Delete an alias",
    )
    def delete_alias(request: Request, name: str, alias: str) -> Response:
        auth.acting(request).delete_alias(name, alias)
        return Response(status_code=204)


def _add_artifact_routes(app: FastAPI, registry: Registry, auth: TokenAuth) -> None:
    @app.get(
        f"{PREFIX}/artifacts/{{digest}}",
        tags=["registry API"],
        responses={
            **AUTH_ERRORS,
            200: {
                "description": "the blob's bytes (verify their SHA-256)",
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            },
        },
        summary="An artifact blob by its SHA-256 (needs a role that may read)",
    )
    def artifact(request: Request, digest: str) -> Response:
        # Checked before anything touches a path: a digest is exactly 64 lower-case hex digits.
        if DIGEST.fullmatch(digest) is None:
            raise InvalidInputError("an artifact digest is 64 lower-case hexadecimal digits")
        require(auth.acting(request), "read")
        return Response(registry.blobs.get(digest), media_type="application/octet-stream")


def _unpack(manifest: dict[str, Any], files: Any) -> Package:
    """The package the upload describes; every file is the one its manifest's digest names."""
    if files is None:
        files = {}
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise InvalidInputError("files must map each file name to its base64 content")
    by_digest: dict[str, bytes] = {}
    for name, encoded in files.items():
        try:
            data = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise InvalidInputError(f"file {str(name)[:100]!r} is not base64") from None
        by_digest[sha256_hex(data)] = data
    named = manifest.get("files")
    if not isinstance(named, dict) or set(named.values()) != set(by_digest):
        raise InvalidInputError("the files uploaded are not the files the manifest names")

    def fetch(digest: str) -> bytes:
        if digest not in by_digest:
            raise IntegrityError(f"the upload lacks the file sha256:{str(digest)[:12]}")
        return by_digest[digest]

    try:
        return load_package(canonical_json(manifest), fetch)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # A manifest that breaks the package format (the exception, not the payload, is named).
        raise InvalidInputError(f"the package manifest is invalid ({type(exc).__name__})") from None


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    return value


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
