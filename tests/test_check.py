"""`ratekeeper check` and `Registry.check_promotion`: the promotion gates as a CI step.

The check runs the very gates a request runs (its report equals the request's, value for value)
and writes nothing in the registry: no request, no audit event, no stored report.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

import ratekeeper as rk
from ratekeeper.cli.main import main
from ratekeeper.demo import train_glm
from ratekeeper.store.tables import audit_events, promotion_requests
from ratekeeper.synthetic import motor_portfolio
from ratekeeper.validation.gate_report import GateReport
from registries import governed_team, open_registry, token_of
from remote_server import serving

MODEL = "motor_frequency"


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def counts(registry: rk.Registry) -> tuple[int, int, int]:
    """Audit events, promotion requests and stored blobs: what a check must not add to."""
    with registry.engine.connect() as conn:
        events = conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar_one()
        requests = conn.execute(
            sa.select(sa.func.count()).select_from(promotion_requests)
        ).scalar_one()
    blobs = sum(1 for p in Path(registry.blobs.root).rglob("*") if p.is_file())
    return events, requests, blobs


@pytest.fixture(scope="module")
def book():
    return motor_portfolio(3000, seed=11)


@pytest.fixture()
def sandbox(tmp_path, book):
    """An open registry: version 1 in Production, version 2 a close sibling (gates pass),
    version 3 trained on three times the claims (every premium triples: dislocation fails)."""
    registry = open_registry(tmp_path / "registry", user="modeller")
    train, inflated = book.iloc[:2000], book.iloc[:2000].copy()
    inflated["claim_count"] = inflated["claim_count"] * 3
    for frame, data in (
        (train, train),
        (book.iloc[100:2100], book.iloc[100:2100]),
        (inflated, train),
    ):
        registry.register_model(
            train_glm(frame), MODEL, training_data=data, target="claim_count", exposure="exposure"
        )
    registry.transition_stage(MODEL, 1, "Production")
    registry.set_alias(MODEL, "challenger", 2)
    holdout = tmp_path / "holdout.parquet"
    book.iloc[2000:].to_parquet(holdout, index=False)
    yield registry, holdout
    registry.close()


def test_check_equals_the_requests_gates_and_writes_nothing(sandbox, book) -> None:
    registry, _ = sandbox
    holdout = book.iloc[2000:]
    before = counts(registry)
    report = registry.check_promotion(f"models:/{MODEL}@challenger", holdout)
    assert counts(registry) == before
    assert (report.challenger_version, report.champion_version, report.passed) == (2, 1, True)
    request = registry.request_promotion(MODEL, 2, "Production", holdout=holdout)
    stored = registry.request_report(request.id)
    assert [r.to_dict() for r in report.results] == [r.to_dict() for r in stored.results]
    assert report.holdout_sha256 == stored.holdout_sha256

    failed = registry.check_promotion(f"models:/{MODEL}/3", holdout)
    status = {r.name: r.status for r in failed.results}
    assert not failed.passed and status["dislocation_25"] == "FAIL"
    moved = failed.dislocation
    assert moved is not None and moved.up[moved.caps.index(0.25)] > 0.9


def test_against_names_a_stage_an_alias_a_version_or_a_uri(sandbox, book) -> None:
    registry, _ = sandbox
    holdout = book.iloc[2000:]
    uri = f"models:/{MODEL}/3"
    assert registry.check_promotion(uri, holdout, against="@challenger").champion_version == 2
    assert registry.check_promotion(uri, holdout, against="2").champion_version == 2
    assert (
        registry.check_promotion(uri, holdout, against=f"models:/{MODEL}/1").champion_version == 1
    )
    # A stage holding no version: a first promotion, nothing to compare with.
    first = registry.check_promotion(uri, holdout, against="Staging")
    assert first.champion_version is None
    assert {r.status for r in first.results if r.name.startswith("dislocation")} == {"N/A"}
    # Itself: nothing to compare with either (as a request of the Production version).
    assert registry.check_promotion(f"models:/{MODEL}/1", holdout).champion_version is None
    # champion is kept on the Production version by the registry
    assert registry.check_promotion(uri, holdout, against="@champion").champion_version == 1
    with pytest.raises(rk.NotFoundError, match=f"model '{MODEL}' has no alias 'gold'"):
        registry.check_promotion(uri, holdout, against="@gold")
    with pytest.raises(rk.InvalidInputError, match="the gates compare versions of one model"):
        registry.check_promotion(uri, holdout, against="models:/other/1")
    with pytest.raises(rk.InvalidInputError, match="not a model URI"):
        registry.check_promotion("motor_frequency/3", holdout)
    with pytest.raises(rk.InvalidInputError, match="a check runs the promotion gates on a holdout"):
        registry.check_promotion(uri, None)


def test_a_read_credential_may_check_and_an_anonymous_handle_may_not(tmp_path, book) -> None:
    team = governed_team(
        tmp_path / "registry", {"alice": ["modeller"], "vic": ["viewer"]}, artifacts=tmp_path / "a"
    )
    try:
        train = book.iloc[:2000]
        team["alice"].register_model(
            train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
        )
        before = counts(team["root"])
        report = team["vic"].check_promotion(f"models:/{MODEL}/1", book.iloc[2000:])
        assert report.passed and report.champion_version is None
        assert counts(team["root"]) == before
        anonymous = rk.Registry(tmp_path / "registry")
        with pytest.raises(rk.PermissionDeniedError, match="this registry is governed: read needs"):
            anonymous.check_promotion(f"models:/{MODEL}/1", book.iloc[2000:])
        anonymous.close()
    finally:
        for handle in team.values():
            handle.close()


def test_cli_exits_0_on_pass_1_on_fail_and_writes_the_report(capsys, sandbox, tmp_path) -> None:
    registry, holdout = sandbox
    where = ["--registry", registry.url]
    before = counts(registry)
    html, js = tmp_path / "pass.html", tmp_path / "pass.json"
    code, out, err = run(
        capsys, *where, "check", f"models:/{MODEL}@challenger", "--holdout", str(holdout),
        "--report", str(html), "--json", str(js),
    )  # fmt: skip
    assert (code, err) == (0, ""), out
    assert f"gates passed; validation report: {html}" in out
    assert "dislocation_25" in out and "PASS" in out
    report = GateReport.from_json(js.read_text())
    assert (report.challenger_version, report.champion_version) == (2, 1)
    assert "<html" in html.read_text() and "motor_frequency" in html.read_text()

    failed_html = tmp_path / "fail.html"
    code, out, _ = run(
        capsys, *where, "check", f"models:/{MODEL}/3", "--holdout", str(holdout),
        "--against", "Production", "--report", str(failed_html),
    )  # fmt: skip
    assert code == 1
    assert f"GATES FAILED; validation report: {failed_html}" in out
    assert failed_html.stat().st_size > 1000
    assert counts(registry) == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["check", f"models:/{MODEL}/2"], 2, "Missing option '--holdout'"),
        (["check", "motor_frequency", "--holdout", "H"], 2, "error: not a model URI"),
        (["check", "models:/nope/1", "--holdout", "H"], 3, "error: model 'nope' does not exist"),
        (["check", f"models:/{MODEL}/9", "--holdout", "H"], 3, "has no version 9"),
        (
            ["check", f"models:/{MODEL}/2", "--holdout", "H", "--against", "@nope"],
            3,
            "has no alias 'nope'",
        ),
        (
            ["check", f"models:/{MODEL}/2", "--holdout", "BAD"],
            2,
            "error: cannot read the holdout bad.parquet: ArrowInvalid",
        ),
    ],
)
def test_cli_usage_and_input_errors_are_one_line(capsys, sandbox, tmp_path, args, code, message):
    registry, holdout = sandbox
    bad = tmp_path / "bad.parquet"
    bad.write_text("policy_id,claims\n1,2\n")
    args = [str(holdout) if a == "H" else str(bad) if a == "BAD" else a for a in args]
    got, out, err = run(
        capsys, "--registry", registry.url, *args, "--report", str(tmp_path / "r.html")
    )
    assert got == code, (out, err)
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3  # click's usage error adds its usage lines
    assert not (tmp_path / "r.html").exists()


def test_a_check_through_the_rating_server_equals_the_embedded_one(tmp_path, book) -> None:
    """The remote client runs the same check on the server: any read role, never without a
    token; nothing is written."""
    team = governed_team(
        tmp_path / "registry", {"alice": ["modeller"], "vic": ["viewer"]}, artifacts=tmp_path / "a"
    )
    try:
        train = book.iloc[:2000]
        team["alice"].register_model(
            train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
        )
        holdout = book.iloc[2000:]
        embedded = team["vic"].check_promotion(f"models:/{MODEL}/1", holdout)
        before = counts(team["root"])
        with serving(team["root"]) as url:
            viewer = rk.Registry(url, token=token_of(team["vic"]))
            remote = viewer.check_promotion(f"models:/{MODEL}/1", holdout, against="Production")
            with pytest.raises(rk.NotFoundError, match=f"model '{MODEL}' has no version 9"):
                viewer.check_promotion(f"models:/{MODEL}/9", holdout)
            viewer.close()
            nobody = rk.Registry(url, user="vic")
            with pytest.raises(rk.PermissionDeniedError, match="send a bearer token"):
                nobody.check_promotion(f"models:/{MODEL}/1", holdout)
            nobody.close()
        assert [r.to_dict() for r in remote.results] == [r.to_dict() for r in embedded.results]
        assert remote.holdout_sha256 == embedded.holdout_sha256
        assert counts(team["root"]) == before
    finally:
        for handle in team.values():
            handle.close()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ([], 400, "send a JSON object with model_uri and a holdout"),
        ({"model_uri": "models:/m/1", "holdout_parquet": "%%"}, 400, "not a base64 Parquet"),
        ({"model_uri": "models:/m/1", "holdout": "rows"}, 400, "holdout must be a list"),
        ({"model_uri": "m/1", "holdout": [{"a": 1}]}, 422, "not a model URI"),
        ({"model_uri": f"models:/{MODEL}/1"}, 422, "runs the promotion gates on a holdout"),
    ],
)
def test_bad_check_bodies_get_one_error_shape(tmp_path, body, status, message) -> None:
    from tests.server_process import request

    team = governed_team(tmp_path / "registry", {"vic": ["viewer"]}, artifacts=tmp_path / "a")
    try:
        with serving(team["root"]) as url:
            port = int(url.rsplit(":", 1)[1])
            bearer = {"authorization": f"Bearer {token_of(team['vic'])}"}
            got, answer = request(port, "POST", "/v1/checks", body, headers=bearer)
            assert got == status, answer
            assert set(answer) == {"error"} and message in answer["error"]["message"]
            got, answer = request(port, "POST", "/v1/checks", body)
            assert (got, answer["error"]["code"]) == (401, "unauthenticated")
    finally:
        for handle in team.values():
            handle.close()
