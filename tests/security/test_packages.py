"""Crafted model packages: each is refused with a typed error at registration AND at load.

An attacker who can register builds a ``Package`` object whose manifest says what they like and
calls ``register_package`` directly; one with write access to the artifact folder swaps a blob
after registration. Each crafted package below is real bytes (JSON manifests, ONNX graphs built
with the ``onnx`` helper API) and must be refused with ``InvalidInputError`` (registration) or
``IntegrityError`` (load) and a message that says what is wrong: never a raw KeyError, JSON or
onnxruntime exception, never a hang, never a NaN or 8e302 quote.
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

import ratekeeper as rk
from ratekeeper.artifacts import LocalBlobStore, sha256_hex
from ratekeeper.demo import train_gbm, train_glm
from ratekeeper.http.app import AppConfig, create_app
from ratekeeper.packaging.onnx import _session
from ratekeeper.packaging.package import Package, build_package, canonical_json, validate_package
from ratekeeper.packaging.schema import MAX_MANIFEST_BYTES
from ratekeeper.synthetic import motor_portfolio
from ratekeeper.validation.policy import GatePolicy, prohibited_factors_used
from registries import open_registry

MODEL = "motor"


# -- the honest packages the crafted ones start from ------------------------------------------
@pytest.fixture(scope="module")
def book() -> Any:
    return motor_portfolio(1500, seed=3)


@pytest.fixture(scope="module")
def glm_package(book: Any) -> Package:
    return build_package(train_glm(book), book, exposure="exposure")


@pytest.fixture(scope="module")
def gbm_package(book: Any) -> Package:
    return build_package(train_gbm(book, n_trees=5), book, exposure="exposure")


@pytest.fixture()
def registry(tmp_path: Path, glm_package: Package) -> rk.Registry:
    """An open registry whose version 1 of MODEL is the honest GLM (one helper per file)."""
    opened = open_registry(tmp_path / "registry", user="modeller")
    register(opened, glm_package)
    return opened


def register(registry: rk.Registry, package: Package) -> rk.ModelVersion:
    return registry.register_package(
        package, MODEL, metrics={}, lineage={}, description=None, tags={}
    )


class Crafted(Package):
    """A package whose manifest bytes are whatever the attacker writes."""

    raw: bytes = b""

    @property
    def manifest_bytes(self) -> bytes:
        return self.raw


def crafted(template: Package, raw: bytes, files: dict[str, bytes]) -> Package:
    package = Crafted(
        template.flavor,
        template.signature,
        template.profile,
        template.predictor,
        template.manifest,
        files,
    )
    object.__setattr__(package, "raw", raw)
    return package


def assert_refused(
    registry: rk.Registry,
    template: Package,
    raw: bytes,
    files: dict[str, bytes],
    message: str,
    error: type[rk.RatekeeperError] = rk.InvalidInputError,
) -> None:
    """Refused at registration with ``error``, at load (a swapped blob) as an integrity error."""
    with pytest.raises(error, match=message):
        register(registry, crafted(template, raw, files))
    assert [v.version for v in registry.list_versions(MODEL)] == [1]  # nothing was registered

    honest = registry.get_version(MODEL, 1)
    for data in files.values():
        registry.blobs.put(data)
    swapped = replace(honest, artifact_digest=registry.blobs.put(raw))
    load_error = error if error is rk.UnsupportedModelError else rk.IntegrityError
    prefix = (
        rf"^{MODEL} version 1: the package fails validation: .*"
        if load_error is rk.IntegrityError
        else ""
    )
    with pytest.raises(load_error, match=prefix + message):
        registry.load_package(swapped)
    assert registry.load_model(f"models:/{MODEL}/1").predict_one(POLICY) > 0  # v1 still loads


POLICY = {
    "area": "C",
    "fuel": "petrol",
    "cover": "TPL",
    "driver_age": 40,
    "vehicle_age": 5,
    "bonus_malus": 3,
    "power_kw": 90,
    "exposure": 1.0,
}


def edited(package: Package, edit: Any) -> bytes:
    manifest = copy.deepcopy(package.manifest)
    edit(manifest)
    return canonical_json(manifest)


# -- ONNX graphs built with the onnx helper API -------------------------------------------------
def onnx_graph(
    inputs: list[str],
    *,
    external: str | None = None,
    domain: str = "",
    expression: str = "log",
) -> bytes:
    """A graph over ``[n, 1]`` float inputs: ``scale * log(x0 - 30)`` (NaN below 30, -inf at 30,
    negative up to 31, above the profile's ceiling near 99), or a custom-domain op, or one whose
    constant lives in an external file."""
    values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in inputs]
    out = helper.make_tensor_value_info("rate", TensorProto.FLOAT, [None, 1])
    thirty = helper.make_tensor("thirty", TensorProto.FLOAT, [1], [30.0])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [1], [1e4])
    if external is not None:
        thirty = helper.make_tensor("thirty", TensorProto.FLOAT, [1], [0.0])
        thirty.ClearField("float_data")
        thirty.data_location = TensorProto.EXTERNAL
        for key, value in (("location", external), ("offset", "0"), ("length", "4")):
            entry = thirty.external_data.add()
            entry.key, entry.value = key, value
    nodes = [
        helper.make_node("Sub", [inputs[0], "thirty"], ["shifted"]),
        helper.make_node("Log", ["shifted"], ["logged"], domain=domain),
        helper.make_node("Mul", ["logged", "scale"], ["rate"]),
    ]
    for extra in inputs[1:]:  # every other input is read too (added times zero)
        nodes[-1:] = [
            helper.make_node("Mul", ["logged", "scale"], ["scaled"]),
            helper.make_node("Mul", [extra, "zero"], [f"{extra}_0"]),
            helper.make_node("Add", ["scaled", f"{extra}_0"], ["rate"]),
        ]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    graph = helper.make_graph(nodes, "g", values, [out], initializer=[thirty, scale, zero])
    opsets = [helper.make_opsetid("", 15)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return bytes(model.SerializeToString())


def onnx_manifest(
    model_bytes: bytes, features: list[str], *, extra_fields: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A columns-mode ONNX manifest: driver_age (18 to 99) and the exposure in its signature;
    the reference profile's top prediction decile at 3.0 (a ceiling of 3,000 per unit)."""
    fields = [
        {"name": n, "type": "numeric", "role": "rating_factor", "nullable": False,
         "min": 18.0, "max": 99.0}
        for n in ("driver_age", *extra_fields)
    ]  # fmt: skip
    fields.append({"name": "exposure", "type": "numeric", "role": "exposure", "nullable": False})
    return {
        "format": "ratekeeper-package/1",
        "flavor": "onnx",
        "signature": {
            "fields": fields,
            "target": None,
            "policy": {
                "out_of_range": "reject",
                "unseen_level": "reject",
                "unknown_field": "reject",
            },
        },
        "profile": {
            "rows": 100,
            "weight": "exposure",
            "total_weight": 100.0,
            "factors": {},
            "prediction": {
                "type": "numeric",
                "edges": [1.0, 2.0, 3.0],
                "shares": [0.25, 0.25, 0.25, 0.25],
                "missing": 0.0,
            },
        },
        "files": {"model.onnx": sha256_hex(model_bytes)},
        "onnx": {
            "file": "model.onnx",
            "inputs": {"mode": "columns", "features": features, "categories": {}},
        },
    }


# -- the crafted packages -----------------------------------------------------------------------
def gender_glm(package: Package) -> bytes:
    """Prices by gender (male 0.1061 vs female 0.0980 in the issue); the signature omits it."""

    def edit(m: dict[str, Any]) -> None:
        m["glm"]["categorical"]["gender"] = {"M": 0.0797}

    return edited(package, edit)


def coefficient(value: str) -> Any:
    def make(package: Package) -> bytes:
        raw = edited(package, lambda m: m["glm"]["categorical"]["area"].update(F=123.25))
        return raw.replace(b"123.25", value.encode())

    return make


def missing_key(package: Package) -> bytes:
    return edited(package, lambda m: m.pop("signature"))


def wrong_type(package: Package) -> bytes:
    return edited(package, lambda m: m["glm"].update(intercept="-1.6"))


def truncated(package: Package) -> bytes:
    return package.manifest_bytes[:-7]


def unknown_flavor(package: Package) -> bytes:
    return edited(package, lambda m: m.update(flavor="pickle"))


def oversized(package: Package) -> bytes:
    return edited(package, lambda m: m["signature"].update(target="x" * MAX_MANIFEST_BYTES))


def huge_numeric_term(package: Package) -> bytes:
    # power_kw spans up to ~300 kW: 1.0 per kW moves the linear predictor by ~300 (e^300).
    return edited(package, lambda m: m["glm"]["numeric"].update(power_kw=1.0))


GLM_CASES = [
    ("gender_term_outside_the_signature", gender_glm,
     r"glm\.categorical\.'gender' is a term of a field the signature does not declare"),
    ("coefficient_700", coefficient("700"), r"must lie within \[-50, 50\], not 700"),
    ("coefficient_1e308", coefficient("1e308"), r"must lie within \[-50, 50\], not 1e\+308"),
    ("coefficient_overflowing", coefficient("1e999"), r"must be a finite number, not inf"),
    ("coefficient_nan", coefficient("NaN"), r"not valid JSON \(NaN is not a JSON number\)"),
    ("coefficient_infinity", coefficient("Infinity"),
     r"not valid JSON \(Infinity is not a JSON number\)"),
    ("malformed_json", truncated, r"the package manifest is not valid JSON"),
    ("missing_key", missing_key, r"the manifest lacks the key 'signature'"),
    ("wrong_type", wrong_type, r"glm\.intercept must be a number, not a string"),
    ("unknown_flavor", unknown_flavor, r"unknown flavor 'pickle'"),
    ("oversized_manifest", oversized, r"the package manifest is [\d,]+ bytes, more than"),
    ("numeric_term_beyond_bounds", huge_numeric_term,
     r"glm\.numeric\.'power_kw' moves the linear predictor by \d+ over the training range"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "message"), GLM_CASES, ids=[c[0] for c in GLM_CASES])
def test_a_crafted_glm_is_refused_at_registration_and_at_load(
    registry: rk.Registry, glm_package: Package, case: str, make: Any, message: str
) -> None:
    error = rk.UnsupportedModelError if case == "unknown_flavor" else rk.InvalidInputError
    assert_refused(registry, glm_package, make(glm_package), {}, message, error)


def _onnx_case(
    graph: bytes, features: list[str], edit: Any = None, files: dict[str, bytes] | None = None
) -> tuple[bytes, dict[str, bytes]]:
    manifest = onnx_manifest(graph, features)
    if edit is not None:
        edit(manifest)
    return canonical_json(manifest), files if files is not None else {"model.onnx": graph}


def external_data() -> tuple[bytes, dict[str, bytes]]:
    return _onnx_case(onnx_graph(["driver_age"], external="../../../etc/passwd"), ["driver_age"])


def custom_domain() -> tuple[bytes, dict[str, bytes]]:
    return _onnx_case(onnx_graph(["driver_age"], domain="evil.ops"), ["driver_age"])


def graph_input_outside_signature() -> tuple[bytes, dict[str, bytes]]:
    return _onnx_case(onnx_graph(["driver_age", "gender"]), ["driver_age"])


def feature_outside_signature() -> tuple[bytes, dict[str, bytes]]:
    return _onnx_case(onnx_graph(["driver_age", "gender"]), ["driver_age", "gender"])


def not_onnx() -> tuple[bytes, dict[str, bytes]]:
    garbage = b"\xff" * 64
    return _onnx_case(garbage, ["driver_age"])


def non_hex_digest() -> tuple[bytes, dict[str, bytes]]:
    graph = onnx_graph(["driver_age"])
    return _onnx_case(graph, ["driver_age"], lambda m: m["files"].update({"model.onnx": "Z" * 64}))


def digest_as_path() -> tuple[bytes, dict[str, bytes]]:
    graph = onnx_graph(["driver_age"])
    return _onnx_case(
        graph, ["driver_age"], lambda m: m["files"].update({"model.onnx": "../../etc/passwd"})
    )


def file_name_as_path() -> tuple[bytes, dict[str, bytes]]:
    graph = onnx_graph(["driver_age"])

    def edit(m: dict[str, Any]) -> None:
        m["files"] = {"../model.onnx": sha256_hex(graph)}
        m["onnx"]["file"] = "../model.onnx"

    return _onnx_case(graph, ["driver_age"], edit, {"../model.onnx": graph})


ONNX_CASES = [
    ("external_data_etc_passwd", external_data,
     r"the ONNX graph stores tensor 'thirty' as external data \(a file path\)"),
    ("custom_operator_domain", custom_domain,
     r"the ONNX graph imports the operator set domain 'evil\.ops'"),
    ("graph_input_outside_signature", graph_input_outside_signature,
     r"the ONNX graph reads input 'gender', which the package's signature does not declare"),
    ("feature_outside_signature", feature_outside_signature,
     r"onnx\.inputs\.features reads 'gender', which the signature does not declare"),
    ("not_an_onnx_graph", not_onnx, r"the ONNX graph is not a valid ONNX model"),
    ("non_hex_digest", non_hex_digest, r"files\.model\.onnx must be a SHA-256 digest"),
    ("digest_etc_passwd", digest_as_path, r"files\.model\.onnx must be a SHA-256 digest"),
    ("file_name_with_a_path", file_name_as_path,
     r"files must be a plain file name \(no path\), not '\.\./model\.onnx'"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "message"), ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_a_crafted_onnx_package_is_refused_at_registration_and_at_load(
    registry: rk.Registry, gbm_package: Package, case: str, make: Any, message: str
) -> None:
    raw, files = make()
    assert_refused(registry, gbm_package, raw, files, message)


def test_the_crafted_packages_of_the_issue_are_all_here() -> None:
    # 12 GLM manifests + 8 ONNX packages; the FIFO and /dev/zero blobs and the NaN/inf/negative
    # ONNX model are tested below: 23 crafted packages, the issue's 19 among them.
    assert len(GLM_CASES) + len(ONNX_CASES) + 3 == 23


# -- the blob store: digests never become arbitrary paths, only regular files are read ----------
def read_within(store: LocalBlobStore, digest: str, seconds: float = 5.0) -> BaseException:
    """What ``store.get(digest)`` raises, failing the test if it hangs (a FIFO) instead."""
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            store.get(digest)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    assert not reader.is_alive(), "reading the blob hung"
    assert outcome, "reading the blob succeeded"
    return outcome[0]


def test_a_fifo_at_a_blob_path_is_refused_without_hanging(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = sha256_hex(b"the manifest an attacker replaced")
    store.path(digest).parent.mkdir(parents=True)
    os.mkfifo(store.path(digest))
    error = read_within(store, digest)
    assert isinstance(error, rk.IntegrityError)
    assert str(error) == f"artifact blob sha256:{digest[:12]} is not a regular file"


def test_dev_zero_linked_at_a_blob_path_is_never_read(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = sha256_hex(b"graph")
    store.path(digest).parent.mkdir(parents=True)
    store.path(digest).symlink_to("/dev/zero")
    error = read_within(store, digest)
    assert isinstance(error, rk.IntegrityError)
    assert str(error) == f"artifact blob sha256:{digest[:12]} cannot be opened as a regular file"


def test_a_blob_larger_than_the_cap_is_refused(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, max_bytes=1000)
    digest = store.put(b"x" * 1001)
    with pytest.raises(rk.IntegrityError, match=r"is larger than 1,000 bytes$"):
        store.get(digest)
    assert LocalBlobStore(tmp_path).get(digest) == b"x" * 1001


@pytest.mark.parametrize("digest", ["../../etc/passwd", "/dev/zero", "AB" * 32, "ab" * 31, ""])
def test_a_digest_is_validated_before_it_touches_a_path(tmp_path: Path, digest: str) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(rk.InvalidInputError, match=r"^an artifact reference must be a SHA-256"):
        store.get(digest)
    with pytest.raises(rk.InvalidInputError, match=r"64 lowercase hex\)$"):
        store.path(digest)


# -- defence in depth: onnxruntime alone would not follow the path either ----------------------
def test_onnxruntime_refuses_the_external_path_even_without_our_check() -> None:
    with pytest.raises(rk.InvalidInputError, match=r"^onnxruntime refuses the ONNX graph"):
        _session(onnx_graph(["driver_age"], external="../../../etc/passwd"), threads=1)


# -- the model's actual inputs reach the prohibited-factor check --------------------------------
def test_model_inputs_are_what_the_model_reads(
    glm_package: Package, gbm_package: Package, registry: rk.Registry
) -> None:
    factors = {"area", "fuel", "cover", "driver_age", "vehicle_age", "bonus_malus", "power_kw"}
    assert glm_package.model_inputs == factors
    assert gbm_package.model_inputs == factors
    assert registry.load_model(f"models:/{MODEL}/1").model_inputs == factors


def test_the_prohibited_factor_check_reads_the_model_inputs(glm_package: Package) -> None:
    policy = GatePolicy()
    signature = glm_package.signature
    assert prohibited_factors_used(signature, policy) == []
    used = prohibited_factors_used(signature, policy, {"gender", "area", "Religion"})
    assert used == ["Religion", "gender"]


# -- a price that is not finite, is negative or is implausible is never returned -----------------
@pytest.fixture()
def wild(tmp_path: Path, gbm_package: Package) -> rk.Registry:
    """An open registry whose Production version of "wild" is the scale·log(age − 30) graph."""
    graph = onnx_graph(["driver_age"])
    registry = open_registry(tmp_path / "wild", user="modeller")
    package = _as_package(gbm_package, onnx_manifest(graph, ["driver_age"]), graph)
    assert validate_package(package).model_inputs == {"driver_age"}
    registry.register_package(package, "wild", metrics={}, lineage={}, description=None, tags={})
    registry.transition_stage("wild", 1, "Production")
    return registry


def _as_package(template: Package, manifest: dict[str, Any], graph: bytes) -> Package:
    return Package("onnx", template.signature, template.profile, template.predictor, manifest,
                   {"model.onnx": graph})  # fmt: skip


WILD = [(20.0, "nan"), (30.0, "-inf"), (30.5, "-6931"), (99.0, "42341")]


@pytest.mark.parametrize(("age", "shown"), WILD)
def test_a_wild_price_is_refused_by_every_scoring_path(
    wild: rk.Registry, age: float, shown: str
) -> None:
    scorer = wild.load_model("models:/wild/Production")
    assert scorer.rate_ceiling == 3000.0  # 1,000 × the profile's top decile edge (3.0)
    policy = {"driver_age": age, "exposure": 1.0}
    message = rf"^wild version 1 produced {shown}.* for a policy; a price must be finite"
    with pytest.raises(rk.ImplausiblePriceError, match=message):
        scorer.predict_one(policy)
    with pytest.raises(rk.ImplausiblePriceError, match=message):
        scorer.predict([policy, {"driver_age": 31.2, "exposure": 1.0}])
    with pytest.raises(rk.ImplausiblePriceError, match=message):
        scorer.predict_each([policy])
    fine = scorer.predict_one({"driver_age": 31.2, "exposure": 0.5})
    assert fine == pytest.approx(0.5 * 1e4 * math.log(1.2), rel=1e-5)


def test_an_enormous_exposure_cannot_overflow_a_price_to_infinity(wild: rk.Registry) -> None:
    scorer = wild.load_model("models:/wild/Production")
    with pytest.raises(rk.ImplausiblePriceError, match=r"produced inf for a policy"):
        scorer.predict_one({"driver_age": 31.2, "exposure": 1e306})


def test_batch_scoring_rejects_wild_rows_with_the_reason_and_prices_the_rest(
    wild: rk.Registry, tmp_path: Path
) -> None:
    import pandas as pd

    book = tmp_path / "book.parquet"
    ages = [31.2, 20.0, 31.3, 30.0, 99.0]
    pd.DataFrame({"driver_age": ages, "exposure": [1.0] * 5}).to_parquet(book)
    summary = wild.score_file("models:/wild/Production", book, tmp_path / "out.parquet")
    assert (summary.rows_priced, summary.rows_rejected) == (2, 3)
    priced = pd.read_parquet(tmp_path / "out.parquet")
    assert priced["prediction"].tolist() == pytest.approx(
        [1e4 * math.log(1.2), 1e4 * math.log(1.3)], rel=1e-5
    )
    assert np.isfinite(priced["prediction"]).all()
    rejects = pd.read_parquet(summary.rejects)
    assert rejects["row_number"].tolist() == [1, 3, 4]
    assert all(
        r.startswith("prediction: implausible_price (wild version 1 produced")
        for r in rejects["reasons"]
    )


def test_a_quote_never_answers_nan_inf_null_or_negative(wild: rk.Registry) -> None:
    app = create_app(wild, AppConfig())
    assert app.state.load_models()
    with TestClient(app) as client:
        for age, _ in WILD:
            response = client.post("/v1/models/wild/quote", json={"driver_age": age, "exposure": 1})
            assert response.status_code == 422, response.text
            body = json.loads(response.text)  # strict JSON: no NaN or Infinity tokens
            assert body["error"]["code"] == "implausible_price"
            assert "prediction" not in body
        response = client.post(
            "/v1/models/wild/score",
            json=[{"driver_age": 31.2, "exposure": 1}, {"driver_age": 20, "exposure": 1}],
        )
        assert (
            response.status_code == 422 and response.json()["error"]["code"] == "implausible_price"
        )
        ok = client.post("/v1/models/wild/quote", json={"driver_age": 31.2, "exposure": 1}).json()
        assert ok["prediction"] == pytest.approx(1e4 * math.log(1.2), rel=1e-5)
        metrics = client.get("/metrics").text
    counted = 'ratekeeper_requests_total{{endpoint="{}",model="wild",outcome="implausible_price",'
    assert counted.format("quote") + 'version="1"} 4.0' in metrics
    assert counted.format("score") + 'version="1"} 1.0' in metrics
