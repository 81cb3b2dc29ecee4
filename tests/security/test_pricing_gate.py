"""Every pricing route behind a token (`serve --pricing-token-file`): what gets through.

In process, the real app inside the real gate; the server wiring (TLS + gate in real worker
processes) is tests/test_safe_start.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.http_helpers import MODEL, bearer_tokens, make_registry, policies

from ratekeeper.errors import InvalidInputError
from ratekeeper.http.app import AppConfig, create_app
from ratekeeper.http.auth import TokenAuth
from ratekeeper.http.pricing_gate import PricingGate, is_pricing_path, read_pricing_tokens

TOKEN = "pricing-" + "k" * 40


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    registry, book = make_registry(tmp_path_factory.mktemp("gate"))
    return registry, book, bearer_tokens(registry)


@pytest.fixture()
def client(world, tmp_path) -> Iterator[TestClient]:
    registry, _book, _tokens = world
    app = create_app(registry, AppConfig(invocations_model=MODEL))
    assert app.state.load_models()
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{TOKEN}\n")
    gated = PricingGate(app, read_pricing_tokens(token_file), TokenAuth(registry))
    with TestClient(gated) as test_client:  # type: ignore[arg-type]
        yield test_client


@pytest.fixture()
def policy(world) -> dict:
    return policies(world[1], 1)[0]


def test_no_token_or_a_wrong_one_is_401_on_every_pricing_route(client, policy) -> None:
    routes = [
        (f"/v1/models/{MODEL}/quote", policy),
        (f"/v1/models/{MODEL}/score", {"policies": [policy]}),
        ("/invocations", {"dataframe_records": [policy]}),
    ]
    for path, body in routes:
        for headers in (
            {},
            {"authorization": f"Bearer {TOKEN[:-1]}"},  # one character short
            {"authorization": f"Bearer {TOKEN}x"},
            {"authorization": f"Basic {TOKEN}"},
            {"authorization": "Bearer "},
            {"x-pricing-token": TOKEN},
        ):
            response = client.post(path, json=body, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.json() == {
                "error": {
                    "code": "unauthenticated",
                    "message": "send the pricing token: Authorization: Bearer <token>",
                }
            }
            assert response.headers["www-authenticate"] == 'Bearer realm="ratekeeper pricing"'
        response = client.post(path, json=body, headers={"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text


def test_variants_of_a_pricing_path_are_gated_before_routing(client, policy) -> None:
    """A trailing or doubled slash, other case, other methods: 401, never a redirect to a price."""
    for path in (
        f"/v1/models/{MODEL}/quote/",
        f"/v1//models/{MODEL}/quote",
        f"/V1/Models/{MODEL}/QUOTE",
        "/invocations/",
        f"/v1/models/{MODEL}/score?version=1",
    ):
        response = client.post(path, json=policy, follow_redirects=False)
        assert response.status_code == 401, path
    assert client.get(f"/v1/models/{MODEL}/quote").status_code == 401
    assert is_pricing_path("/v1/models/a%2Fb/quote") and not is_pricing_path("/v1/models/m")


def test_a_registry_token_passes_and_the_route_still_decides(client, world, policy) -> None:
    _registry, _book, tokens = world
    viewer = {"authorization": tokens["viewer"]}
    response = client.post(f"/v1/models/{MODEL}/quote", json=policy, headers=viewer)
    assert (response.status_code, response.json()["version"]) == (200, 1)
    # A pinned unapproved version still needs the test role: the gate let the viewer in, the
    # route refuses what the viewer may not price.
    pinned = client.post(f"/v1/models/{MODEL}/quote?version=3", json=policy, headers=viewer)
    assert (
        pinned.status_code == 403 and "may not price a version" in pinned.json()["error"]["message"]
    )
    admin = {"authorization": tokens["admin"]}
    pinned = client.post(f"/v1/models/{MODEL}/quote?version=3", json=policy, headers=admin)
    assert (pinned.status_code, pinned.json()["version"]) == (200, 3)
    forged = {"authorization": "Bearer rk_" + "0" * 40}
    assert client.post(f"/v1/models/{MODEL}/quote", json=policy, headers=forged).status_code == 401


def test_operations_and_registry_routes_are_not_the_gates_business(client, world) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    # The registry views keep their own door: 401 from the route, with its own message.
    response = client.get("/v1/models")
    assert response.status_code == 401
    assert (
        response.json()["error"]["message"] == "send a bearer token: Authorization: Bearer rk_..."
    )


def test_the_token_file_is_checked_at_start(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    with pytest.raises(InvalidInputError, match=f"no pricing token file at {path}"):
        read_pricing_tokens(path)
    path.write_text("# only a comment\n\n")
    with pytest.raises(InvalidInputError, match="holds no token"):
        read_pricing_tokens(path)
    path.write_text(f"{TOKEN}\nshort\n")
    with pytest.raises(InvalidInputError, match=r"pricing token 2 in .* is too weak: a token is"):
        read_pricing_tokens(path)
    path.write_text(f"{TOKEN}\n{'n' * 32}\n")
    assert len(read_pricing_tokens(path)) == 2
