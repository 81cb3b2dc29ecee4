"""No pickle anywhere: packages are JSON coefficients or ONNX graphs; nothing is executed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest

import ratekeeper as rk
from ratekeeper.demo import train_gbm, train_glm
from ratekeeper.packaging.package import canonical_json, load_package
from ratekeeper.synthetic import motor_portfolio

SOURCE = Path(__file__).resolve().parents[1] / "src" / "ratekeeper"


def test_no_runtime_module_imports_a_pickle_family_module() -> None:
    pattern = re.compile(
        r"^\s*(import|from)\s+(pickle|joblib|cloudpickle|dill|shelve|marshal)\b", re.M
    )
    offenders = [str(p) for p in SOURCE.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_package_files_are_json_and_onnx_only(tmp_path) -> None:
    book = motor_portfolio(2000, seed=5)
    registry, _token = rk.Registry.create(tmp_path, admin="modeller")
    glm = registry.register_model(train_glm(book), "m", training_data=book, exposure="exposure")
    gbm = registry.register_model(train_gbm(book, 10), "m", training_data=book, exposure="exposure")
    manifest = json.loads(registry.blobs.get(glm.artifact_digest))
    assert manifest["flavor"] == "glm" and manifest["files"] == {}
    assert set(manifest["glm"]) == {
        "family",
        "link",
        "power",
        "intercept",
        "categorical",
        "numeric",
    }
    manifest = json.loads(registry.blobs.get(gbm.artifact_digest))
    graph = onnx.load_from_string(registry.blobs.get(manifest["files"]["model.onnx"]))
    assert {node.domain for node in graph.graph.node} <= {"", "ai.onnx.ml"}


def test_an_unknown_flavor_is_refused_not_run() -> None:
    manifest = canonical_json(
        {
            "format": "ratekeeper-package/1",
            "flavor": "pickle",
            "files": {},
            "signature": {"fields": []},
            "profile": {},
        }
    )
    with pytest.raises(rk.UnsupportedModelError, match="unknown flavor 'pickle'"):
        load_package(manifest, lambda digest: b"")


def test_an_unsupported_model_is_refused_with_a_clear_error(tmp_path) -> None:
    registry, _token = rk.Registry.create(tmp_path, admin="modeller")
    book = motor_portfolio(500)
    with pytest.raises(rk.UnsupportedModelError, match=r"cannot package a builtins\.dict"):
        registry.register_model({"not": "a model"}, "m", training_data=book)
    assert registry.list_models() == []
