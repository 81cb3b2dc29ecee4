"""MLflow's scoring protocol on /invocations, /ping, /health and /version.

The request cases of MLflow's own scoring-server tests (tests/pyfunc/test_scoring_server.py in
mlflow/mlflow, MLflow 3), written again for a ratekeeper model: each expects what
`mlflow models serve` answers for a model with the same named-column signature (checked
against MLflow 3.17.2 case by case, see docs/serving.md). Then what MLflow does not have: the
row cap, several served models, the ledger, and one run against a real `ratekeeper serve`.
"""

from __future__ import annotations

import http.client
import io
import json
import random
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from tests.http_helpers import MODEL, make_registry, policies
from tests.server_process import rating_server

import ratekeeper
from ratekeeper.engine.ledger import LedgerConfig, read_ledger
from ratekeeper.errors import InvalidInputError
from ratekeeper.http.app import AppConfig, create_app
from ratekeeper.http.invocations import INLINE_BYTES

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_registry(tmp_path_factory.mktemp("mlflow"), n_policies=1000)


@pytest.fixture(scope="module")
def client(world) -> Iterator[TestClient]:
    registry, _ = world
    # No --invocations-model: the server serves one model, and /invocations prices with it.
    app = create_app(registry, AppConfig(max_invocation_rows=50))
    assert app.state.load_models()
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def rows(world) -> list[dict[str, Any]]:
    return policies(world[1], 3)


@pytest.fixture(scope="module")
def expected(world, rows) -> list[float]:
    return world[0].load_model(f"models:/{MODEL}/1").predict(rows).tolist()


def split(rows: list[dict[str, Any]], columns: list[str] | None = None) -> dict[str, Any]:
    """What ``pandas.DataFrame.to_dict(orient="split")`` gives: columns, data and an index."""
    columns = columns or list(rows[0])
    return {
        "index": list(range(len(rows))),
        "columns": columns,
        "data": [[r[c] for c in columns] for r in rows],
    }


def post(client: TestClient, body: Any, content_type: str | None = JSON) -> Any:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"content-type": content_type} if content_type is not None else {}
    return client.post("/invocations", content=content, headers=headers)


def assert_mlflow_error(response: Any, status: int, error_code: str, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSON
    body = response.json()
    assert body["error_code"] == error_code
    assert fragment in body["message"]
    assert set(body) <= {"error_code", "message", "problems"}


# -- MLflow's request cases -----------------------------------------------------------------------
def test_malformed_json_is_a_bad_request(client) -> None:
    response = post(client, "this is,,,, not valid json")
    assert_mlflow_error(response, 400, "BAD_REQUEST", "the body is not valid JSON")


@pytest.mark.parametrize("document", [1, "1", [1]])
def test_json_that_is_not_an_object_is_a_bad_request(client, document) -> None:
    response = post(client, document)
    assert_mlflow_error(response, 400, "BAD_REQUEST", "exactly one of dataframe_split")


@pytest.mark.parametrize(
    "document",
    [{"not": "a serialized dataframe"}, {"dataframe_records": [], "dataframe_split": {"data": []}}],
)
def test_an_object_without_exactly_one_input_key_is_a_bad_request(client, document) -> None:
    response = post(client, document)
    assert_mlflow_error(response, 400, "BAD_REQUEST", "exactly one of dataframe_split")


def test_records_under_dataframe_split_are_refused(client, rows) -> None:
    response = post(client, {"dataframe_split": rows})
    assert_mlflow_error(response, 400, "BAD_REQUEST", "dataframe_split must be an object")


def test_columns_under_dataframe_records_are_refused_not_read_as_columns(client, rows) -> None:
    response = post(client, {"dataframe_records": split(rows)})
    assert_mlflow_error(response, 400, "BAD_REQUEST", "dataframe_records must be a list of records")
    by_column = {c: [r[c] for r in rows] for c in rows[0]}
    response = post(client, {"dataframe_records": by_column})
    assert_mlflow_error(response, 400, "BAD_REQUEST", "dataframe_records must be a list of records")


def test_an_index_that_does_not_fit_the_data_is_a_bad_request(client) -> None:
    response = post(client, {"dataframe_split": {"index": [1, 2], "data": [[1], [2], [3]]}})
    assert_mlflow_error(response, 400, "BAD_REQUEST", "index has 2 labels for 3 rows")


def test_a_frame_without_the_models_columns_fails_its_signature(client) -> None:
    # MLflow's "incompatible dataframe": one unnamed column of ten values.
    frame = {"columns": [0], "index": list(range(10)), "data": [[i] for i in range(10)]}
    response = post(client, {"dataframe_split": frame})
    assert_mlflow_error(response, 400, "INVALID_PARAMETER_VALUE", "area: column is missing")
    assert {p["field"] for p in response.json()["problems"]} >= {"area", "exposure"}


def test_an_empty_csv_is_a_bad_request(client) -> None:
    assert_mlflow_error(post(client, "", CSV), 400, "BAD_REQUEST", "no header line")


@pytest.mark.parametrize("charset", ["", "; charset=UTF-8", "; charset=utf-8"])
@pytest.mark.parametrize("orient", ["records", "split"])
def test_records_and_split_frames_are_priced(client, rows, expected, orient, charset) -> None:
    body = {"dataframe_records": rows} if orient == "records" else {"dataframe_split": split(rows)}
    response = post(client, body, JSON + charset)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": pytest.approx(expected, rel=1e-12)}


@pytest.mark.parametrize(
    "content_type",
    [
        "not_a_supported_content_type",
        "application/json; something=something",
        "application/json; format=pandas-split",  # MLflow 1's protocol
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "text/csv; charset=us-ascii",
        "application/json;",
        "Application/JSON",  # MLflow compares exactly
        None,  # MLflow fails with a 500 here
    ],
)
def test_content_types_mlflow_refuses_are_415_in_plain_text(client, rows, content_type) -> None:
    response = post(client, {"dataframe_records": rows}, content_type)
    assert response.status_code == 415
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text


def test_positional_rows_are_refused_for_a_model_of_named_factors(client, rows) -> None:
    # MLflow accepts lists of values for a model without a signature; for one with named
    # columns it answers 400 INVALID_PARAMETER_VALUE, as here.
    for key in ("instances", "inputs", "dataframe_records"):
        response = post(client, {key: [list(r.values()) for r in rows]})
        assert_mlflow_error(response, 400, "INVALID_PARAMETER_VALUE", "named rating factors")
    response = post(client, {"dataframe_split": {"data": [list(r.values()) for r in rows]}})
    assert_mlflow_error(response, 400, "INVALID_PARAMETER_VALUE", "column is missing")


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_instances_and_inputs_as_rows_or_columns_are_priced(client, rows, expected, key) -> None:
    by_column = {c: [r[c] for r in rows] for c in rows[0]}
    for value in (rows, by_column):
        response = post(client, {key: value})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == pytest.approx(expected, rel=1e-12)
    response = post(client, {key: rows[0]})  # one policy as an object of values
    assert response.json()["predictions"] == pytest.approx(expected[:1], rel=1e-12)


def test_any_column_order_and_extra_columns_are_priced(client, rows, expected) -> None:
    columns = list(rows[0])
    random.Random(3).shuffle(columns)
    response = post(client, {"dataframe_split": split(rows, columns)})
    assert response.json()["predictions"] == pytest.approx(expected, rel=1e-12)
    # MLflow's "input including a path": string columns the model does not read are ignored.
    extra = [r | {"url": "http://foo.com", "bad_protocol": "aaa://bbb"} for r in rows]
    response = post(client, {"dataframe_records": extra})
    assert response.json()["predictions"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "params", [{"invalid_param": "value"}, {"param1": "invalid_value1"}, 5, None]
)
def test_params_are_ignored_for_a_model_that_declares_none(client, rows, expected, params) -> None:
    for body in ({"dataframe_split": split(rows)}, {"inputs": rows}):
        response = post(client, body | {"params": params}, JSON + "; charset=UTF-8")
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == pytest.approx(expected, rel=1e-12)


def test_csv_is_priced_with_the_signatures_types(client, rows, expected) -> None:
    frame = pd.DataFrame(rows)
    for text in (frame.to_csv(index=False), frame.to_csv()):  # with pandas' index column too
        response = post(client, text, CSV)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == pytest.approx(expected, rel=1e-12)
    response = post(client, frame.to_csv(index=False), CSV + "; charset=utf-8")
    assert response.json()["predictions"] == pytest.approx(expected, rel=1e-12)
    assert post(client, ",".join(rows[0]) + "\n", CSV).json() == {"predictions": []}


def test_a_csv_cell_that_is_not_a_number_is_a_bad_request(client, rows) -> None:
    text = pd.DataFrame(rows).assign(driver_age=["x", "y", "z"]).to_csv(index=False)
    response = post(client, text, CSV)
    assert_mlflow_error(response, 400, "BAD_REQUEST", "invalid value 'x'")


def test_parquet_is_priced(client, rows, expected) -> None:
    frame = pd.DataFrame(rows)
    for body in (frame.to_parquet(), frame.to_parquet(compression=None)):
        response = post(client, body, PARQUET)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == pytest.approx(expected, rel=1e-12)
    response = post(client, frame.head(0).to_parquet(), PARQUET)
    assert response.json() == {"predictions": []}


def test_a_body_that_is_not_parquet_is_a_bad_request(client) -> None:
    response = post(client, b"PAR1 certainly not parquet", PARQUET)
    assert_mlflow_error(response, 400, "BAD_REQUEST", "cannot read the body as Parquet")


def test_ping_health_and_version(client) -> None:
    for path in ("/ping", "/health"):
        response = client.get(path)
        assert (response.status_code, response.text) == (200, "\n")
    response = client.get("/version")
    assert (response.status_code, response.text) == (200, ratekeeper.__version__)


# -- beyond MLflow's cases ----------------------------------------------------------------------
def test_signature_failures_carry_problems_by_field_and_row(client, rows) -> None:
    bad = [rows[0], rows[1] | {"area": "Z", "driver_age": "old"}]
    response = post(client, {"dataframe_records": bad})
    assert_mlflow_error(response, 400, "INVALID_PARAMETER_VALUE", "row 1, area")
    assert [(p["field"], p["code"], p["row"]) for p in response.json()["problems"]] == [
        ("area", "unseen_level", 1),
        ("driver_age", "wrong_type", 1),
    ]
    response = post(client, {"dataframe_records": []})  # no rows: no columns either (as MLflow)
    assert_mlflow_error(response, 400, "INVALID_PARAMETER_VALUE", "column is missing")
    response = post(client, {"dataframe_split": {"columns": list(rows[0]), "data": []}})
    assert response.json() == {"predictions": []}


def test_the_row_cap_is_a_413(client, rows) -> None:
    many = (rows * 17)[:51]  # the fixture's cap is 50
    response = post(client, {"dataframe_records": many})
    assert_mlflow_error(response, 413, "RESOURCE_LIMIT_EXCEEDED", "at most 50 rows")
    response = post(client, pd.DataFrame(many).to_parquet(), PARQUET)
    assert_mlflow_error(response, 413, "RESOURCE_LIMIT_EXCEEDED", "at most 50 rows")
    assert post(client, {"dataframe_records": many[:50]}).status_code == 200


def test_the_other_routes_keep_ratekeepers_error_body(client) -> None:
    response = client.get("/invocations")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    response = client.post(f"/v1/models/{MODEL}/quote", content=b"{not json")
    assert response.json()["error"]["code"] == "malformed_json"


def test_several_served_models_need_the_invocations_model(tmp_path, rows) -> None:
    registry, book = make_registry(tmp_path, n_policies=500)
    from ratekeeper.demo import train_glm

    registry.register_model(
        train_glm(book), "home_frequency", training_data=book, exposure="exposure"
    )
    registry.transition_stage("home_frequency", 1, "Production")
    app = create_app(registry, AppConfig())
    assert app.state.load_models()
    with TestClient(app) as two:
        response = post(two, {"dataframe_records": rows})
        assert_mlflow_error(response, 404, "RESOURCE_DOES_NOT_EXIST", "--invocations-model")
    app = create_app(registry, AppConfig(invocations_model=f"{MODEL}@challenger"))
    assert app.state.load_models()
    with TestClient(app) as pinned:
        response = post(pinned, {"dataframe_records": rows})
        challenger = registry.load_model(f"models:/{MODEL}/2").predict(rows).tolist()
        assert response.json()["predictions"] == pytest.approx(challenger, rel=1e-12)


def test_a_server_still_loading_answers_503(world, rows) -> None:
    app = create_app(world[0], AppConfig())
    client = TestClient(app)  # no lifespan, no load
    assert_mlflow_error(
        post(client, {"dataframe_records": rows}), 503, "TEMPORARILY_UNAVAILABLE", "loading"
    )
    response = client.get("/ping")
    assert_mlflow_error(response, 503, "TEMPORARILY_UNAVAILABLE", "loading")


def test_every_format_is_recorded_in_the_ledger_and_the_metrics(tmp_path, world, rows) -> None:
    registry, _ = world
    ledger = tmp_path / "ledger"
    app = create_app(registry, AppConfig(ledger=LedgerConfig(ledger)))
    assert app.state.load_models()
    frame = pd.DataFrame(rows)
    with TestClient(app) as client:
        answers = [
            post(client, {"dataframe_split": split(rows)}).json()["predictions"],
            post(client, frame.to_csv(index=False), CSV).json()["predictions"],
            post(client, frame.to_parquet(), PARQUET).json()["predictions"],
        ]
        post(client, {"dataframe_records": [rows[0] | {"area": "Z"}]})
        metrics = client.get("/metrics").text
    table = read_ledger(ledger)
    assert table.num_rows == 9
    assert set(table.column("endpoint").to_pylist()) == {"invocations"}
    assert set(table.column("route").to_pylist()) == {"Production"}
    recorded = sorted(table.column("prediction").to_pylist())
    assert recorded == pytest.approx(sorted(p for answer in answers for p in answer), rel=1e-12)
    inputs = table.column("inputs").to_pylist()
    assert {i["area"] for i in inputs} == {r["area"] for r in rows}
    assert 'ratekeeper_policies_priced_total{model="motor_frequency",version="1"} 9.0' in metrics
    assert (
        'ratekeeper_requests_total{endpoint="invocations",model="motor_frequency",'
        'outcome="invalid_input",version="1"} 1.0'
    ) in metrics


def test_a_real_server_speaks_the_protocol(tmp_path) -> None:
    registry, book = make_registry(tmp_path / "registry", n_policies=1000)
    sent = policies(book, 3)
    expected = registry.load_model(f"models:/{MODEL}/1").predict(sent).tolist()
    registry.close()
    frame = pd.DataFrame(sent)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame), buffer)
    cases = [
        (JSON, json.dumps({"dataframe_split": split(sent)}).encode(), 200),
        (CSV, frame.to_csv(index=False).encode(), 200),
        (PARQUET, buffer.getvalue(), 200),
        (JSON, json.dumps({"dataframe_records": sent * 2}).encode(), 413),
        ("text/plain", b"x", 415),
    ]
    with rating_server(
        tmp_path / "registry", "--no-ledger", "--max-invocation-rows", "5", workers=1
    ) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for content_type, body, status in cases:
            connection.request(
                "POST", "/invocations", body=body, headers={"content-type": content_type}
            )
            response = connection.getresponse()
            answer = response.read()
            assert response.status == status, answer
            if status == 200:
                assert json.loads(answer)["predictions"] == pytest.approx(expected, rel=1e-12)
        for path, text in (
            ("/ping", "\n"),
            ("/health", "\n"),
            ("/version", ratekeeper.__version__),
        ):
            connection.request("GET", path)
            response = connection.getresponse()
            assert (response.status, response.read().decode()) == (200, text)
        connection.close()


def test_the_row_cap_is_a_setting(tmp_path, monkeypatch, capsys) -> None:
    from ratekeeper.cli.main import main
    from ratekeeper.settings import MAX_INVOCATION_ROWS, Settings

    assert Settings.from_env({}).max_invocation_rows == MAX_INVOCATION_ROWS == 10_000
    assert Settings.from_env({"RATEKEEPER_MAX_INVOCATION_ROWS": " 250 "}).max_invocation_rows == 250
    for bad in ("0", "-3", "ten", "1e6"):
        with pytest.raises(
            InvalidInputError,
            match="RATEKEEPER_MAX_INVOCATION_ROWS must be a positive whole number",
        ):
            Settings.from_env({"RATEKEEPER_MAX_INVOCATION_ROWS": bad})
    monkeypatch.setenv("RATEKEEPER_MAX_INVOCATION_ROWS", "ten")
    with pytest.raises(SystemExit) as exit_info:
        main(["--registry", str(tmp_path), "serve"])
    assert exit_info.value.code != 0
    assert "RATEKEEPER_MAX_INVOCATION_ROWS must be a positive whole number" in (
        capsys.readouterr().err
    )
    monkeypatch.delenv("RATEKEEPER_MAX_INVOCATION_ROWS")
    with pytest.raises(SystemExit) as exit_info:
        main(["--registry", str(tmp_path), "serve", "--max-invocation-rows", "0"])
    assert exit_info.value.code == 2
    assert "--max-invocation-rows" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"driver_age": 120},  # out of range: valid types, so the scorer gets an Arrow table
        {"area": "Z"},
        {"vehicle_age": 2.5},
        {"exposure": -1.0},
        {"driver_age": "40"},  # a string among numbers: the row path names the value
        {"area": None},
        {"bonus_malus": True},
    ],
)
def test_many_json_rows_get_the_answer_the_scorer_gives(world, change) -> None:
    registry, book = world
    sent = policies(book, 48)
    sent[40] = sent[40] | change
    scorer = registry.load_model(f"models:/{MODEL}/1")
    app = create_app(registry, AppConfig())
    assert app.state.load_models()
    with TestClient(app) as unlimited:
        for body in ({"dataframe_records": sent * 2}, {"dataframe_split": split(sent * 2)}):
            response = post(unlimited, body)
            if not change:
                assert response.json()["predictions"] == scorer.predict(sent * 2).tolist()
                continue
            with pytest.raises(InvalidInputError) as raised:
                scorer.predict(sent * 2)
            assert response.status_code == 400
            assert response.json() == {
                "error_code": "INVALID_PARAMETER_VALUE",
                "message": raised.value.message,
                "problems": [p.to_dict() for p in raised.value.problems],
            }


def test_one_row_is_priced_as_a_quote_and_refused_as_a_row(client, world, rows) -> None:
    scorer = world[0].load_model(f"models:/{MODEL}/1")
    response = post(client, {"dataframe_split": split(rows[:1])})
    assert response.json()["predictions"] == [scorer.predict_one(rows[0])]  # what replay gives
    response = post(client, {"dataframe_records": [rows[0] | {"area": "Z", "fuel": 3}]})
    assert_mlflow_error(response, 400, "INVALID_PARAMETER_VALUE", "row 0, area: level 'Z'")
    assert [(p["field"], p["row"]) for p in response.json()["problems"]] == [
        ("area", 0),
        ("fuel", 0),
    ]


def test_a_utf8_byte_order_mark_is_read_past(client, rows, expected) -> None:
    # Excel saves "CSV UTF-8" with one; MLflow (pandas, json.loads) reads past it too.
    bom = b"\xef\xbb\xbf"
    response = post(client, bom + pd.DataFrame(rows).to_csv(index=False).encode(), CSV)
    assert response.json()["predictions"] == pytest.approx(expected, rel=1e-12)
    response = post(client, bom + json.dumps({"dataframe_records": rows}).encode())
    assert response.json()["predictions"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"dataframe_records": [{"area": "Z"}]}', JSON),
        (b"{not json", JSON),
        (b"area,exposure\nA,1\n", CSV),
        (b"[]", "text/plain"),
        (b'{"inputs": {"area": ["A", "B"], "exposure": [1]}}', JSON),
    ],
)
def test_invocations_answer_alike_before_and_through_fastapi(world, body, content_type) -> None:
    """RatingApp answers POST /invocations before FastAPI; the same route taken through FastAPI
    (with a root_path) answers with the same status, headers and bytes."""
    answers = []
    for root_path in ("", "/behind-a-proxy"):
        app = create_app(world[0], AppConfig())
        assert app.state.load_models()
        with TestClient(app, root_path=root_path) as client:
            response = post(client, body, content_type)
        answers.append((response.status_code, dict(response.headers), response.content))
    assert answers[0] == answers[1]
    assert answers[0][0] in (400, 415)


def test_large_bodies_are_priced_off_the_event_loop_with_the_same_answers(world) -> None:
    registry, book = world
    sent = policies(book, 1000)  # about 140 kB as records: beyond INLINE_BYTES
    expected = registry.load_model(f"models:/{MODEL}/1").predict(sent).tolist()
    app = create_app(registry, AppConfig())
    assert app.state.load_models()
    with TestClient(app) as client:
        body = json.dumps({"dataframe_records": sent}).encode()
        assert len(body) > INLINE_BYTES
        assert post(client, body).json()["predictions"] == expected
        frame = pd.DataFrame(sent)
        response = post(client, frame.assign(area="Z").to_csv(index=False) * 3, CSV)
        assert_mlflow_error(response, 400, "BAD_REQUEST", "cannot read the body as CSV")
