"""The model package: a manifest plus the files it names, all content-addressed.

The manifest (canonical JSON) carries the flavor, the signature, the reference profile, the
flavor's parameters and the SHA-256 of every file. The version's artifact digest is the
manifest's digest, so one hash covers everything that prices a policy. Nothing in a package is
ever executed: a GLM is coefficients, anything else is an ONNX graph.

A package is never trusted: ``validate_package`` (at registration) and ``load_package`` (at
every load) read the manifest bytes through the same strict checks (``manifest.read_manifest``)
and rebuild the predictor from them, so what is stored is what was checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ratekeeper.artifacts import sha256_hex
from ratekeeper.errors import IntegrityError, InvalidInputError, UnsupportedModelError
from ratekeeper.packaging import glm, onnx
from ratekeeper.packaging.frames import ArrayLike, Columns, named_column, take, to_columns
from ratekeeper.packaging.manifest import FORMAT, read_manifest
from ratekeeper.packaging.profile import ReferenceProfile
from ratekeeper.packaging.signature import Signature, ValidationPolicy

FIDELITY_ROWS = 2000
PROFILE_SAMPLE_ROWS = 50_000
TOLERANCE = {"glm": 1e-9, "onnx": 1e-5}


class Predictor(Protocol):
    """What a flavor gives the scorer: the rate per unit of exposure, for one or many policies."""

    flavor: str

    def predict_row(self, row: Any) -> float: ...

    def predict_columns(self, columns: Columns, n_rows: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Package:
    flavor: str
    signature: Signature
    profile: ReferenceProfile
    predictor: Predictor
    manifest: dict[str, Any]
    files: dict[str, bytes]

    @property
    def manifest_bytes(self) -> bytes:
        return canonical_json(self.manifest)

    @property
    def size(self) -> int:
        return len(self.manifest_bytes) + sum(len(b) for b in self.files.values())

    @property
    def model_inputs(self) -> frozenset[str]:
        """The fields the model actually reads: a GLM's terms, an ONNX graph's features."""
        if self.flavor == "glm":
            body = self.manifest["glm"]
            return frozenset(body["categorical"]) | frozenset(body["numeric"])
        return frozenset(self.manifest["onnx"]["inputs"]["features"])


def canonical_json(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def build_package(
    model: Any,
    training_data: Any,
    *,
    target: str | ArrayLike | None = None,
    exposure: str | ArrayLike | None = None,
    id_column: str | None = None,
    policy: ValidationPolicy | None = None,
) -> Package:
    """Package a fitted model: convert it, infer its signature and profile, prove fidelity.

    ``target`` and ``exposure`` are column names of ``training_data`` or values aligned with
    its rows (see ``frames.named_column``): the target's values are only checked, the
    exposure's become a column of the frame the signature and profile are taken from.
    """
    frame = as_pandas(training_data)
    if len(frame) == 0:
        raise InvalidInputError("training_data is empty")
    target_name, _ = named_column(frame, target, role="target")
    exposure_name, exposure_values = named_column(frame, exposure, role="exposure")
    if exposure_values is not None and exposure_name not in frame.columns:
        assert exposure_name is not None  # values always come back named
        frame = frame.assign(**{exposure_name: exposure_values})
    files: dict[str, bytes] = {}
    terms = _glm_terms(model)
    if terms is not None:
        predictor: Predictor = glm.GLMPredictor(terms)
        factors = terms.factors
        flavor_body: dict[str, Any] = {"glm": terms.to_dict()}
    else:
        model_bytes, inputs = onnx.convert(model, frame)
        predictor = onnx.OnnxPredictor(model_bytes, inputs)
        factors = list(inputs.features)
        files["model.onnx"] = model_bytes
        flavor_body = {"onnx": {"file": "model.onnx", "inputs": inputs.to_dict()}}
    signature = Signature.infer(
        frame,
        factors,
        target=target_name,
        exposure=exposure_name,
        id_column=id_column,
        policy=policy,
    )
    columns, n_rows = to_columns(frame)
    # The prediction's reference bins come from an evenly spread sample: scoring every training
    # row through ONNX Runtime would cost seconds and move the decile edges by a hair.
    sample = _spread(n_rows, PROFILE_SAMPLE_ROWS)
    rate = predictor.predict_columns(take(columns, sample), len(sample))
    _check_fidelity(model, frame.iloc[sample], factors, rate, predictor.flavor)
    profile = ReferenceProfile.build(signature, columns, n_rows, rate, prediction_rows=sample)
    manifest = {
        "format": FORMAT,
        "flavor": predictor.flavor,
        "signature": signature.to_dict(),
        "profile": profile.to_dict(),
        "files": {name: sha256_hex(data) for name, data in files.items()},
        **flavor_body,
    }
    return Package(predictor.flavor, signature, profile, predictor, manifest, files)


def load_package(manifest_bytes: bytes, fetch: Callable[[str], bytes]) -> Package:
    """Rebuild a package from its manifest; ``fetch(digest)`` returns verified bytes.

    A manifest or file that fails the package checks is an ``IntegrityError`` (what is stored
    cannot be trusted), an unknown flavor an ``UnsupportedModelError``.
    """
    try:
        return _read(manifest_bytes, fetch)
    except UnsupportedModelError:
        raise
    except InvalidInputError as exc:
        raise IntegrityError(f"the package fails validation: {exc.message}") from None


def validate_package(package: Package) -> Package:
    """The package rebuilt from its own manifest bytes through the checks ``load_package`` runs.

    Registration stores what this returns: a ``Package`` whose predictor, signature or profile
    disagree with its manifest cannot slip past, since only the manifest and files are stored.
    Raises ``InvalidInputError`` saying what is wrong.
    """
    if not isinstance(package, Package):
        raise InvalidInputError(f"expected a Package, not {type(package).__name__}")
    files = package.files
    if not isinstance(files, dict) or not all(isinstance(b, bytes) for b in files.values()):
        raise InvalidInputError("a package's files must be a mapping of names to bytes")
    try:
        manifest_bytes = package.manifest_bytes
    except (TypeError, ValueError) as exc:  # NaN, inf or a non-JSON value in the manifest
        raise InvalidInputError(f"the package manifest is not valid JSON ({exc})") from None
    by_digest = {sha256_hex(data): data for data in files.values()}

    def fetch(digest: str) -> bytes:
        data = by_digest.get(digest)
        if data is None:
            raise InvalidInputError("package manifest: files names a file the package lacks")
        return data

    checked = _read(manifest_bytes, fetch)
    if set(files) != set(checked.files):
        raise InvalidInputError("the package holds files its manifest does not list")
    return checked


def _read(manifest_bytes: bytes, fetch: Callable[[str], bytes]) -> Package:
    manifest = read_manifest(manifest_bytes)
    files = {name: fetch(digest) for name, digest in manifest.files.items()}
    predictor: Predictor
    if manifest.glm is not None:
        predictor = glm.GLMPredictor(manifest.glm)
    else:
        assert manifest.onnx_file is not None and manifest.onnx_inputs is not None
        predictor = onnx.OnnxPredictor(files[manifest.onnx_file], manifest.onnx_inputs)
    return Package(
        manifest.flavor, manifest.signature, manifest.profile, predictor, manifest.body, files
    )


def _glm_terms(model: Any) -> glm.GLMTerms | None:
    """Coefficients when the model is a GLM they can represent; else None (→ ONNX)."""
    if glm.is_glum_glm(model):
        return glm.terms_from_glum(model)
    if not glm.is_sklearn_glm(model):
        return None
    try:
        return glm.terms_from_sklearn(model)
    except UnsupportedModelError:
        return None  # e.g. binned or spline features: the whole pipeline goes to ONNX instead


def _spread(n_rows: int, at_most: int) -> np.ndarray:
    """At most ``at_most`` row positions, evenly spread over ``n_rows`` (all when fewer)."""
    return np.unique(np.linspace(0, n_rows - 1, min(at_most, n_rows)).astype(np.int64))


def as_pandas(data: Any) -> Any:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    if type(data).__module__.startswith("pyarrow"):
        return data.to_pandas()
    raise InvalidInputError(
        f"training_data must be a pandas DataFrame or pyarrow Table, not {type(data).__name__}"
    )


def _check_fidelity(
    model: Any, frame: Any, factors: list[str], rate: np.ndarray, flavor: str
) -> None:
    """Refuse a package that does not predict what the in-memory model predicts."""
    rows = _spread(len(frame), FIDELITY_ROWS)
    sample = frame.iloc[rows]
    names = getattr(model, "feature_names_in_", None)
    expected = np.asarray(
        model.predict(sample[list(names) if names is not None else factors]), dtype=np.float64
    ).reshape(-1)
    actual = rate[rows]
    scale = np.maximum(np.abs(expected), 1e-12)
    worst = float(np.max(np.abs(actual - expected) / scale))
    if not worst <= TOLERANCE[flavor]:
        raise UnsupportedModelError(
            f"the packaged {flavor} model does not reproduce the original's predictions "
            f"(max relative difference {worst:.2e} > {TOLERANCE[flavor]:.0e}); "
            "refusing to register it"
        )
