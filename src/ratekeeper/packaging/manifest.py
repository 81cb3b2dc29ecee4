"""The strict reading of a package manifest: every key, type, digest, name and size checked.

``read_manifest`` turns manifest bytes into checked objects or raises ``InvalidInputError``
(``UnsupportedModelError`` for an unknown flavor). It runs at registration and at every load;
nothing in a manifest reaches a file path, onnxruntime or the scorer before it has passed.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, fields
from typing import Any

from ratekeeper.artifacts import is_digest
from ratekeeper.errors import InvalidInputError, UnsupportedModelError
from ratekeeper.packaging import glm, schema
from ratekeeper.packaging.onnx import OnnxInputs
from ratekeeper.packaging.profile import ReferenceProfile
from ratekeeper.packaging.schema import (
    MAX_BINS,
    MAX_FIELDS,
    MAX_FILES,
    MAX_LEVELS,
    MAX_MANIFEST_BYTES,
    MAX_RATE,
    refuse,
    short,
)
from ratekeeper.packaging.signature import (
    ANY,
    CATEGORICAL,
    EXPOSURE,
    ID,
    INTEGER,
    NUMERIC,
    RATING_FACTOR,
    Signature,
    ValidationPolicy,
)

FORMAT = "ratekeeper-package/1"
FLAVORS = ("glm", "onnx")
_KINDS = (NUMERIC, INTEGER, CATEGORICAL, ANY)
_ROLES = (RATING_FACTOR, EXPOSURE, ID)
_SHARE = 1.0 + 1e-9  # shares are sums of floats: allow the last bit of rounding


@dataclass(frozen=True)
class Manifest:
    body: dict[str, Any]
    flavor: str
    signature: Signature
    profile: ReferenceProfile
    files: dict[str, str]
    """file name → SHA-256 digest."""
    glm: glm.GLMTerms | None = None
    onnx_file: str | None = None
    onnx_inputs: OnnxInputs | None = None

    @property
    def model_inputs(self) -> frozenset[str]:
        """The fields the model reads: the GLM's terms, or the ONNX graph's features."""
        if self.glm is not None:
            return frozenset(self.glm.factors)
        assert self.onnx_inputs is not None
        return frozenset(self.onnx_inputs.features)


def read_manifest(manifest_bytes: bytes) -> Manifest:
    body = _parse(manifest_bytes)
    top = schema.obj(
        body,
        "the manifest",
        {"format", "flavor", "signature", "profile", "files"},
        frozenset(FLAVORS),
    )
    if top["format"] != FORMAT:
        raise InvalidInputError(f"unknown package format {short(top['format'])}")
    flavor = top["flavor"]
    if flavor not in FLAVORS:
        raise UnsupportedModelError(f"unknown flavor {short(flavor)}")
    other = next((f for f in FLAVORS if f != flavor and f in top), None)
    if other is not None or flavor not in top:
        raise refuse("the manifest", f"must hold the {flavor} body and no other")
    signature = _signature(top["signature"])
    profile = _profile(top["profile"], signature)
    files = _files(top["files"])
    if flavor == "glm":
        if files:
            raise refuse("files", "must be empty for a GLM (its coefficients are in the manifest)")
        terms = glm.checked_terms(top["glm"], signature)
        return Manifest(body, flavor, signature, profile, files, glm=terms)
    file, inputs = _onnx(top["onnx"], signature, files)
    return Manifest(body, flavor, signature, profile, files, onnx_file=file, onnx_inputs=inputs)


def _parse(manifest_bytes: bytes) -> Any:
    if not isinstance(manifest_bytes, bytes):
        raise InvalidInputError("a package manifest must be bytes")
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise InvalidInputError(
            f"the package manifest is {len(manifest_bytes):,} bytes, "
            f"more than the {MAX_MANIFEST_BYTES:,} allowed"
        )
    try:
        return json.loads(
            manifest_bytes, parse_constant=_no_constant, object_pairs_hook=_no_duplicates
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, 4300-digit ints
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:80]
        reason = reason or type(exc).__name__
        raise InvalidInputError(f"the package manifest is not valid JSON ({reason})") from None


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body = dict(pairs)
    if len(body) != len(pairs):
        raise ValueError("a key is repeated")
    return body


def _signature(value: Any) -> Signature:
    body = schema.obj(value, "signature", {"fields", "target", "policy"})
    checked = [
        _field(f, f"signature.fields[{i}]")
        for i, f in enumerate(schema.items(body["fields"], "signature.fields", MAX_FIELDS))
    ]
    names = [f["name"] for f in checked]
    if len(set(names)) != len(names):
        raise refuse("signature.fields", "names a field twice")
    for role in (EXPOSURE, ID):
        if sum(f["role"] == role for f in checked) > 1:
            raise refuse("signature.fields", f"declares more than one {role} field")
    target = body["target"]
    if target is not None:
        schema.name(target, "signature.target")
    policy = _policy(body["policy"])
    return Signature.from_dict({"fields": checked, "target": target, "policy": policy})


def _field(value: Any, where: str) -> dict[str, Any]:
    body = schema.obj(
        value, where, {"name", "type", "role", "nullable"}, frozenset({"levels", "min", "max"})
    )
    schema.name(body["name"], f"{where}.name")
    kind = schema.choice(body["type"], f"{where}.type", _KINDS)
    role = schema.choice(body["role"], f"{where}.role", _ROLES)
    schema.boolean(body["nullable"], f"{where}.nullable")
    if ("levels" in body) != (kind == CATEGORICAL):
        raise refuse(where, "must list levels if and only if it is categorical")
    if "levels" in body:
        schema.strings(body["levels"], f"{where}.levels", MAX_LEVELS)
    if ("min" in body) != ("max" in body):
        raise refuse(where, "must give both min and max, or neither")
    if "min" in body:
        if kind not in (NUMERIC, INTEGER):
            raise refuse(where, "has a range but is not numeric")
        low = schema.number(body["min"], f"{where}.min")
        schema.number(body["max"], f"{where}.max", low=low)
    if role == EXPOSURE and kind != NUMERIC:
        raise refuse(where, "is the exposure and must be numeric")
    if role == ID and kind != ANY:
        raise refuse(where, "is the id and must have type any")
    if role == RATING_FACTOR and kind == ANY:
        raise refuse(where, "is a rating factor and cannot have type any")
    return dict(body)


def _policy(value: Any) -> dict[str, str]:
    # The options come from ValidationPolicy itself, so a new option needs no change here.
    known = frozenset(f.name for f in fields(ValidationPolicy))
    body = schema.obj(value, "signature.policy", set(), known)
    for key, option in body.items():
        schema.string(option, f"signature.policy.{key}", 20)
    ValidationPolicy(**body)  # refuses a value the option does not allow
    return dict(body)


def _profile(value: Any, signature: Signature) -> ReferenceProfile:
    body = schema.obj(value, "profile", {"rows", "weight", "total_weight", "factors", "prediction"})
    schema.integer(body["rows"], "profile.rows")
    schema.choice(body["weight"], "profile.weight", ("exposure", "count"))
    schema.number(body["total_weight"], "profile.total_weight", low=0.0)
    known = set(signature.names)
    for name, distribution in schema.mapping(
        body["factors"], "profile.factors", MAX_FIELDS
    ).items():
        where = f"profile.factors.{schema.name(name, 'profile.factors')}"
        if name not in known:
            raise refuse(where, "profiles a field the signature does not declare")
        kind = distribution.get("type") if isinstance(distribution, dict) else None
        if kind == "numeric":
            _numeric_bins(distribution, where)
        elif kind == "categorical":
            _level_shares(distribution, where)
        else:
            raise refuse(f"{where}.type", "must be numeric or categorical")
    # The prediction's edges set the scorer's ceiling (schema.rate_ceiling): never above MAX_RATE.
    _numeric_bins(body["prediction"], "profile.prediction", high=MAX_RATE)
    return ReferenceProfile.from_dict(body)


def _numeric_bins(value: Any, where: str, *, high: float = float("inf")) -> None:
    body = schema.obj(value, where, {"type", "edges", "shares", "missing"})
    if body["type"] != "numeric":
        raise refuse(f"{where}.type", "must be numeric")
    edges = [
        schema.number(e, f"{where}.edges[{i}]", high=high)
        for i, e in enumerate(schema.items(body["edges"], f"{where}.edges", MAX_BINS))
    ]
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise refuse(f"{where}.edges", "must increase strictly")
    _shares(body["shares"], f"{where}.shares", len(edges) + 1)
    schema.number(body["missing"], f"{where}.missing", 0.0, _SHARE)


def _level_shares(value: Any, where: str) -> None:
    body = schema.obj(value, where, {"type", "levels", "shares", "other", "missing"})
    levels = schema.strings(body["levels"], f"{where}.levels", MAX_LEVELS)
    _shares(body["shares"], f"{where}.shares", len(levels))
    schema.number(body["other"], f"{where}.other", 0.0, _SHARE)
    schema.number(body["missing"], f"{where}.missing", 0.0, _SHARE)


def _shares(value: Any, where: str, count: int) -> None:
    shares = schema.items(value, where, count)
    if len(shares) != count:
        raise refuse(where, f"must hold {count} shares")
    for i, share in enumerate(shares):
        schema.number(share, f"{where}[{i}]", 0.0, _SHARE)


def _files(value: Any) -> dict[str, str]:
    files = schema.mapping(value, "files", MAX_FILES)
    for name, digest in files.items():
        schema.file_name(name, "files")
        if not is_digest(digest):
            raise refuse(f"files.{name}", "must be a SHA-256 digest (64 lowercase hex)")
    return dict(files)


def _onnx(value: Any, signature: Signature, files: dict[str, str]) -> tuple[str, OnnxInputs]:
    body = schema.obj(value, "onnx", {"file", "inputs"})
    file = schema.file_name(body["file"], "onnx.file")
    if file not in files:
        raise refuse("onnx.file", f"names {short(file)}, which files does not list")
    if len(files) != 1:
        raise refuse("files", "must list exactly the ONNX graph")
    inputs = schema.obj(body["inputs"], "onnx.inputs", {"mode", "features", "categories"})
    mode = schema.choice(inputs["mode"], "onnx.inputs.mode", ("matrix", "columns"))
    features = schema.strings(inputs["features"], "onnx.inputs.features", MAX_FIELDS)
    for feature in features:
        _rating_factor(signature, feature, "onnx.inputs.features")
    categories: dict[str, tuple[str, ...]] = {}
    for name, levels in schema.mapping(
        inputs["categories"], "onnx.inputs.categories", MAX_FIELDS
    ).items():
        if name not in features:
            raise refuse("onnx.inputs.categories", f"names {short(name)}, which is not a feature")
        categories[name] = schema.strings(levels, f"onnx.inputs.categories.{name}", MAX_LEVELS)
    return file, OnnxInputs(mode, features, categories)


def _rating_factor(signature: Signature, name: str, where: str) -> None:
    if name not in signature.names:
        raise refuse(where, f"reads {short(name)}, which the signature does not declare")
    if signature.field(name).role != RATING_FACTOR:
        raise refuse(where, f"reads {short(name)}, which is not a rating factor")
