"""The CLI: thin over the Python API; one readable line and a non-zero exit on any error."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import ratekeeper as rk
from ratekeeper.cli.main import main
from ratekeeper.demo import train_glm
from ratekeeper.synthetic import motor_portfolio
from registries import open_registry


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture()
def home(tmp_path) -> Path:
    book = motor_portfolio(3000, seed=2)
    registry = open_registry(tmp_path, user="modeller")
    model = train_glm(book)
    registry.register_model(
        model,
        "freq",
        training_data=book,
        exposure="exposure",
        metrics={"gini": 0.21},
        tags={"line": "motor"},
    )
    registry.register_model(model, "freq", training_data=book.head(2000), exposure="exposure")
    return tmp_path


def test_models_and_versions_views(capsys, home) -> None:
    code, out, _ = run(capsys, "--registry", str(home), "models", "list")
    assert code == 0 and "freq" in out
    code, out, _ = run(
        capsys, "--registry", str(home), "versions", "list", "freq", "--tag", "line=motor"
    )
    assert code == 0 and "gini=0.21" in out
    code, out, _ = run(capsys, "--registry", str(home), "versions", "show", "freq", "1", "--json")
    body = json.loads(out)
    assert (body["version"], body["stage"], body["metrics"]) == (1, "None", {"gini": 0.21})
    assert body["lineage"]["training_data"]["rows"] == 3000
    assert [f["name"] for f in body["signature"]["fields"]][-1] == "exposure"


def test_stage_alias_and_history_move_the_registry(capsys, home) -> None:
    reg = ["--registry", str(home), "--user", "actuary"]
    assert run(capsys, *reg, "stage", "freq", "1", "production", "-m", "signed off")[0] == 0
    assert run(capsys, *reg, "stage", "freq", "2", "Production")[0] == 0
    assert run(capsys, *reg, "alias", "set", "freq", "champion", "2")[0] == 0
    registry = rk.Registry(home)
    assert registry.resolve("models:/freq@champion").version == 2
    assert [v.stage.value for v in registry.list_versions("freq")] == ["Archived", "Production"]
    code, out, _ = run(capsys, *reg, "history", "freq")
    assert code == 0 and "signed off" in out and "actuary" in out
    assert run(capsys, *reg, "alias", "delete", "freq", "champion")[0] == 0
    assert registry.list_versions("freq", alias="champion") == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["versions", "show", "freq", "9"], 3, "error: model 'freq' has no version 9"),
        (["models", "show", "nope"], 3, "error: model 'nope' does not exist"),
        (
            ["stage", "freq", "1", "Live"],
            2,
            "error: unknown stage 'Live': use one of None, Staging, Production, Archived",
        ),
        (["alias", "delete", "freq", "champion"], 3, "error: model 'freq' has no alias 'champion'"),
        (["alias", "set", "freq", "Production", "1"], 2, "error: invalid alias 'Production'"),
        (["export-tables", "models:/freq", "-o", "x"], 2, "error: not a model URI: 'models:/freq'"),
        (["stage", "freq", "one", "Staging"], 2, "error: Invalid value for 'VERSION'"),
    ],
)
def test_errors_are_one_line_and_a_non_zero_exit(capsys, home, args, code, message) -> None:
    got, _, err = run(capsys, "--registry", str(home), *args)
    assert got == code
    assert err.startswith(message)
    assert err.count("\n") == 1 and "Traceback" not in err


def test_export_tables_writes_the_glm_relativities(capsys, home, tmp_path) -> None:
    code, out, _ = run(
        capsys,
        "--registry",
        str(home),
        "export-tables",
        "models:/freq/1",
        "-o",
        str(tmp_path / "tables"),
    )
    assert code == 0 and "8 tables" in out
    package = rk.Registry(home).load_package(rk.Registry(home).get_version("freq", 1))
    coefficients = package.manifest["glm"]["categorical"]["area"]
    with (tmp_path / "tables" / "area.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["level"] for r in rows] == ["A", "B", "C", "D", "E", "F"]
    assert float(rows[0]["relativity"]) == 1.0  # the base level
    for row in rows[1:]:
        assert float(row["relativity"]) == pytest.approx(
            math.exp(coefficients[row["level"]]), rel=1e-12
        )
    with (tmp_path / "tables" / "base.csv").open() as handle:
        base = next(csv.DictReader(handle))
    assert float(base["base_rate"]) == pytest.approx(math.exp(package.manifest["glm"]["intercept"]))


def test_the_installed_command_reports_errors_without_a_traceback(tmp_path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ratekeeper",
            "--registry",
            str(tmp_path),
            "versions",
            "show",
            "m",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3
    assert result.stderr == (
        f"error: no registry at {tmp_path}: create one with `ratekeeper init --admin NAME` "
        "(or rk.Registry.create(..., admin=NAME))\n"
    )
    assert list(tmp_path.iterdir()) == []  # a read never creates a registry


def test_the_demo_registers_promotes_and_prices(capsys, tmp_path) -> None:
    code, out, err = run(capsys, "demo", "--policies", "4000", "--home", str(tmp_path))
    assert code == 0, err
    assert "priced 8 policies with models:/motor_frequency/Production (version 1)" in out
    registry = rk.Registry(tmp_path)
    production = registry.resolve("models:/motor_frequency/Production")
    assert (production.version, production.flavor, production.aliases) == (1, "glm", ("champion",))
    challenger = registry.resolve("models:/motor_frequency@challenger")
    assert (challenger.version, challenger.flavor) == (2, "onnx")
    approved = registry.production_at("motor_frequency", datetime.now(UTC))
    assert approved.request is not None
    assert (approved.request.requested_by, approved.request.decided_by) == ("alice", "carol")
    assert registry.verify_audit().ok
    folder = tmp_path / "demo" / "motor_frequency-v1"
    assert (folder / "tables" / "area.csv").exists()
    assert (folder / "validation-report-1.html").read_text().startswith("<!DOCTYPE html>")
    # The renewal batch and the drift check on the demo's book.
    assert "3,998 policies priced with version 1 into priced.parquet, 2 rejected" in out
    rejected = pq.read_table(folder / "priced.rejects.parquet").to_pylist()
    assert [r["row_number"] for r in rejected] == [0, 1]
    assert "area: unseen_level" in rejected[0]["reasons"]
    priced = pq.read_table(folder / "priced.parquet")
    assert set(priced.column("model_version").to_pylist()) == {1}
    assert "11. drift of the book one year on" in out
    assert (folder / "drift-report.html").read_text().startswith("<!DOCTYPE html>")


def test_init_enroll_and_tokens_from_the_command_line(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("RATEKEEPER_TOKEN", raising=False)
    home = str(tmp_path / "team")
    code, out, err = run(capsys, "--registry", home, "init", "--admin", "root")
    assert code == 0 and "created a governed registry" in err and "root is its admin" in err
    root_token = out.strip()
    assert root_token.startswith("rk_")
    code, out, _ = run(
        capsys, "--registry", home, "--token", root_token, "users", "add", "carol", "--role",
        "approver",
    )  # fmt: skip
    assert code == 0 and "ratekeeper enroll rke_" in out
    enrollment = out.split("ratekeeper enroll ")[1].split()[0]
    code, out, _ = run(capsys, "--registry", home, "enroll", enrollment)
    assert code == 0 and rk.Registry(home).authenticate(out.strip()).name == "carol"
    code, _, err = run(capsys, "--registry", home, "enroll", enrollment)
    assert code == 5 and "already redeemed" in err
    code, _, err = run(capsys, "--registry", home, "--user", "root", "users", "add", "x", "--role",
                       "viewer")  # fmt: skip
    assert code == 5 and "manage users needs a credential" in err
    code, _, err = run(capsys, "--registry", home, "init", "--admin", "again")
    assert code == 4 and "a registry already exists" in err
    key = tmp_path / "server.key"
    code, out, _ = run(capsys, "keygen", str(key))
    assert code == 0 and f"written to {key}" in out
    assert oct(key.stat().st_mode & 0o777) == "0o600"
