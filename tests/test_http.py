"""The rating engine's HTTP API, in process (FastAPI's test client over the real app)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.http_helpers import MODEL, bearer_tokens, make_registry, policies

from ratekeeper.http.app import AppConfig, create_app


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_registry(tmp_path_factory.mktemp("http"))


@pytest.fixture(scope="module")
def admin(world) -> dict[str, str]:
    """The headers of a token that may read the registry and price any version."""
    return {"authorization": bearer_tokens(world[0])["admin"]}


@pytest.fixture()
def client(world) -> Iterator[TestClient]:
    registry, _ = world
    app = create_app(
        registry, AppConfig(invocations_model=MODEL, max_body_bytes=20_000, max_policies=50)
    )
    assert app.state.load_models()
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture()
def policy(world) -> dict:
    return policies(world[1], 1)[0]


def test_a_quote_is_priced_by_the_production_version(client, world, policy) -> None:
    registry, _ = world
    response = client.post(f"/v1/models/{MODEL}/quote", json=policy)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"quote_id", "model", "version", "prediction", "served_by", "arm"}
    assert (body["model"], body["version"], body["served_by"], body["arm"]) == (
        MODEL,
        1,
        "Production",
        "champion",
    )
    assert body["prediction"] == registry.load_model(f"models:/{MODEL}/1").predict_one(policy)
    assert len(body["quote_id"]) == 26
    assert (
        client.post(f"/v1/models/{MODEL}/quote", json=policy).json()["quote_id"] != body["quote_id"]
    )


def test_a_version_or_an_alias_can_be_pinned(client, world, policy, admin) -> None:
    registry, _ = world
    url = f"/v1/models/{MODEL}/quote"
    body = client.post(f"{url}?alias=challenger", json=policy, headers=admin).json()
    assert (body["version"], body["served_by"]) == (2, "challenger")
    assert body["prediction"] == pytest.approx(
        registry.load_model(f"models:/{MODEL}/2").predict_one(policy), rel=1e-12
    )
    body = client.post(f"{url}?version=3", json=policy, headers=admin).json()
    assert (body["version"], body["served_by"]) == (3, "version 3")
    # The Production version pinned by number: anyone may, and the answer says how it was asked.
    body = client.post(f"{url}?version=1", json=policy).json()
    assert (body["version"], body["served_by"]) == (1, "version 1")


def test_the_error_body_shape_is_pinned(client, policy) -> None:
    bad = policy | {"area": "Z", "driver_age": "old"}
    del bad["exposure"]
    response = client.post(f"/v1/models/{MODEL}/quote", json=bad)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {
            "code": "invalid_input",
            "message": "area: level 'Z' was not in the training data (known: 'A', 'B', 'C', 'D', "
            "'E', 'F') (and 2 more)",
            "problems": [
                {
                    "field": "area",
                    "code": "unseen_level",
                    "message": "level 'Z' was not in the training data "
                    "(known: 'A', 'B', 'C', 'D', 'E', 'F')",
                },
                {
                    "field": "driver_age",
                    "code": "wrong_type",
                    "message": "expected a number, got a string",
                },
                {"field": "exposure", "code": "missing", "message": "is required"},
            ],
        }
    }


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (f"/v1/models/{MODEL}/quote", b"{not json", 400, "malformed_json"),
        (f"/v1/models/{MODEL}/quote", b"", 400, "malformed_json"),
        (f"/v1/models/{MODEL}/quote", b"[1, 2]", 422, "invalid_input"),
        ("/v1/models/nope/quote", b"{}", 404, "not_found"),
        (f"/v1/models/{MODEL}/quote?alias=ghost", b"{}", 404, "not_found"),
        (f"/v1/models/{MODEL}/quote?version=99", b"{}", 404, "not_found"),
        (f"/v1/models/{MODEL}/quote?version=abc", b"{}", 422, "invalid_input"),
        (f"/v1/models/{MODEL}/quote?version=0", b"{}", 422, "invalid_input"),
        (f"/v1/models/{MODEL}/score?version=-2", b"[]", 422, "invalid_input"),
        (f"/v1/models/{MODEL}/quote?version={2**63}", b"{}", 404, "not_found"),
        (f"/v1/models/{MODEL}/quote?version={'9' * 5000}", b"{}", 404, "not_found"),
        (f"/v1/models/{MODEL}/quote", b'{"a": "' + b"x" * 30_000 + b'"}', 413, "payload_too_large"),
        (f"/v1/models/{MODEL}/score", b'{"policies": 3}', 422, "invalid_input"),
        (f"/v1/models/{MODEL}/score", json.dumps([{}] * 51).encode(), 413, "payload_too_large"),
        ("/v1/nowhere", b"{}", 404, "not_found"),
    ],
)
def test_bad_requests_get_a_specific_4xx_in_the_same_shape(
    client, admin, path, body, status, code
) -> None:
    headers = {"content-type": "application/json", **admin}
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert "x" * 100 not in error["message"]  # never echo the payload
    if "version=" in path and status == 422:
        assert error["problems"][0]["field"] == "version"


def test_score_returns_one_result_or_one_error_per_policy_in_order(client, world) -> None:
    registry, book = world
    batch = policies(book, 4)
    batch[1] = batch[1] | {"bonus_malus": -5}
    batch[3] = "not a policy"
    response = client.post(f"/v1/models/{MODEL}/score", json={"policies": batch})
    assert response.status_code == 200
    body = response.json()
    assert (body["version"], body["served_by"]) == (1, "Production")
    results = body["results"]
    scorer = registry.load_model(f"models:/{MODEL}/1")
    assert results[0]["prediction"] == pytest.approx(scorer.predict_one(batch[0]), rel=1e-12)
    assert results[2]["prediction"] == pytest.approx(scorer.predict_one(batch[2]), rel=1e-12)
    assert results[1]["error"]["problems"] == [
        {
            "field": "bonus_malus",
            "code": "out_of_range",
            "row": 1,
            "message": results[1]["error"]["problems"][0]["message"],
        }
    ]
    assert results[3]["error"]["problems"][0]["code"] == "wrong_type"
    # A bare JSON array is accepted too.
    assert len(client.post(f"/v1/models/{MODEL}/score", json=batch[:1]).json()["results"]) == 1


def test_invocations_speaks_the_mlflow_scoring_protocol(client, world) -> None:
    registry, book = world
    rows = policies(book, 3)
    expected = registry.load_model(f"models:/{MODEL}/1").predict(rows).tolist()
    columns = list(rows[0])
    bodies = [
        {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}},
        {"dataframe_records": rows},
        {"inputs": rows},
        {"inputs": {c: [r[c] for r in rows] for c in columns}},
    ]
    for body in bodies:
        response = client.post("/invocations", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == pytest.approx(expected, rel=1e-12)
    text = client.get("/metrics").text
    assert 'ratekeeper_policies_priced_total{model="motor_frequency",version="1"} 12.0' in text


def test_registry_views(client, admin) -> None:
    models = client.get("/v1/models", headers=admin).json()["models"]
    assert models[0]["name"] == MODEL and models[0]["production_version"] == 1
    # champion is kept on the Production version by the registry
    assert models[0]["served"] == {"Production": 1, "champion": 1, "challenger": 2}
    model = client.get(f"/v1/models/{MODEL}", headers=admin).json()
    assert [v["stage"] for v in model["versions"]] == ["Production", "None", "None"]
    version = client.get(f"/v1/models/{MODEL}/versions/2", headers=admin).json()
    assert (version["flavor"], version["aliases"]) == ("onnx", ["challenger"])
    assert {f["name"] for f in version["signature"]["fields"]} >= {"area", "exposure"}
    for missing in (9, 0, -1, 2**63, 2**64 + 5):
        response = client.get(f"/v1/models/{MODEL}/versions/{missing}", headers=admin)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")


def test_health_readiness_and_metrics(client, policy) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok" and ready["models"] == {
        MODEL: {"Production": 1, "champion": 1, "challenger": 2}
    }
    client.post(f"/v1/models/{MODEL}/quote", json=policy)
    client.post(f"/v1/models/{MODEL}/quote", json={"area": 1})
    text = client.get("/metrics").text
    assert (
        'ratekeeper_requests_total{endpoint="quote",model="motor_frequency",'
        'outcome="ok",version="1"} 1.0'
    ) in text
    assert 'outcome="invalid_input",version="1"} 1.0' in text
    # Every priced policy counts, whatever the route (a rejected quote prices nothing).
    assert 'ratekeeper_policies_priced_total{model="motor_frequency",version="1"} 1.0' in text
    ok = 'endpoint="quote",model="motor_frequency",outcome="ok",version="1"'
    assert f"ratekeeper_request_duration_seconds_count{{{ok}}} 1.0" in text
    assert 'ratekeeper_served_version{model="motor_frequency",slot="challenger"} 2.0' in text
    # Counted on the hot path in plain lists, folded into the metrics at each scrape: a second
    # scrape adds nothing twice, and a third quote shows up in the histogram's one bucket.
    client.post(f"/v1/models/{MODEL}/quote", json=policy)
    text = client.get("/metrics").text
    assert f"ratekeeper_requests_total{{{ok}}} 2.0" in text
    assert f"ratekeeper_request_duration_seconds_count{{{ok}}} 2.0" in text
    buckets = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ratekeeper_request_duration_seconds_bucket{")
        and 'endpoint="quote"' in line
        and 'outcome="ok"' in line
    ]
    assert len(buckets) == 13 and buckets[-1] == 2.0 and buckets == sorted(buckets)
    assert 'ratekeeper_policies_priced_total{model="motor_frequency",version="1"} 2.0' in text


def test_a_server_that_is_still_loading_says_so(world, policy) -> None:
    registry, _ = world
    app = create_app(registry, AppConfig())
    client = TestClient(app)  # no lifespan, no load: nothing served yet
    assert client.get("/readyz").status_code == 503
    response = client.post(f"/v1/models/{MODEL}/quote", json=policy)
    assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"


def test_openapi_documents_the_public_paths(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/models/{name}/quote",
        "/v1/models/{name}/score",
        "/invocations",
        "/v1/models",
        "/v1/models/{name}",
        "/v1/models/{name}/versions/{version}",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(paths)


def test_a_model_that_fails_to_load_is_reported_and_the_others_keep_serving(tmp_path) -> None:
    registry, book = make_registry(tmp_path, n_policies=1000)
    admin = {"authorization": bearer_tokens(registry)["admin"]}
    from ratekeeper.demo import train_glm

    registry.register_model(
        train_glm(book), "home_frequency", training_data=book, exposure="exposure"
    )
    registry.transition_stage("home_frequency", 1, "Production")
    broken = registry.get_version(MODEL, 1)
    registry.blobs.path(broken.artifact_digest).unlink()  # a missing blob
    app = create_app(registry, AppConfig())
    assert app.state.load_models()
    with TestClient(app) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "degraded"
        assert (
            ready["load_failures"]
            == [
                {
                    "model": MODEL,
                    "version": 1,
                    "slot": slot,  # champion is kept on the Production version
                    "error": f"{MODEL} version 1: artifact blob "
                    f"sha256:{broken.artifact_digest[:12]} is missing",
                }
                for slot in ("Production", "champion")
            ]
        )
        policy = policies(book, 1)[0]
        assert client.post("/v1/models/home_frequency/quote", json=policy).status_code == 200
        response = client.post(f"/v1/models/{MODEL}/quote", json=policy)
        assert response.status_code == 503
        assert response.json()["error"]["message"].startswith(
            f"{MODEL} version 1 (Production) failed to load"
        )
        # The aliases of the broken model still serve.
        assert (
            client.post(
                f"/v1/models/{MODEL}/quote?alias=challenger", json=policy, headers=admin
            ).status_code
            == 200
        )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/v1/models/{MODEL}/quote", b'{"area": "Z"}'),
        (f"/v1/models/{MODEL}/quote", b"{not json"),
        (f"/v1/models/{MODEL}/quote", b"[]"),
        (f"/v1/models/{MODEL}/quote?version=abc", b"{}"),
        (f"/v1/models/{MODEL}/quote?version=3", b"{}"),  # a pin without a token: 401
        ("/v1/models/nope/quote", b"{}"),
        (f"/v1/models/{MODEL}/score", b'{"policies": 3}'),
        (f"/v1/models/{MODEL}/score", b'[{"area": "Z"}]'),
    ],
)
def test_the_pricing_routes_answer_alike_through_fastapi(world, path, body) -> None:
    """RatingApp answers /quote and /score before FastAPI; FastAPI's declarations of the same
    routes (taken with a root_path) answer with the same status, headers and bytes."""
    registry, _ = world
    answers = []
    for root_path in ("", "/behind-a-proxy"):
        app = create_app(registry, AppConfig(max_body_bytes=20_000, max_policies=50))
        assert app.state.load_models()
        with TestClient(app, root_path=root_path) as client:
            response = client.post(path, content=body)
        headers = {k: v for k, v in response.headers.items() if k != "x-correlation-id"}
        answers.append((response.status_code, headers, response.content))
    assert answers[0] == answers[1]
    assert answers[0][0] in (400, 401, 404, 422, 200)
    assert answers[0][1]["content-type"] == "application/json"
