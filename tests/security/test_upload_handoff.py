"""Only an authenticated caller gets a large upload read by the promotion-request process
(http/handoff.py): that process reads one body at a time, so an anonymous client that could
hand it a connection could hold up every modeller's promotion request."""

from __future__ import annotations

import http.client
import json

import pytest

from ratekeeper.http.handoff import HANDOFF_MIN_BYTES
from registries import governed_team
from remote_server import serving_app


@pytest.mark.parametrize("authorization", [None, "Bearer rk_00000000_forged"])
def test_an_anonymous_or_forged_upload_never_reaches_the_request_process(
    tmp_path, authorization
) -> None:
    team = governed_team(tmp_path / "registry", {}, artifacts=tmp_path / "a")
    body = json.dumps({"model_uri": "models:/m/1", "holdout": "x" * 2 * HANDOFF_MIN_BYTES})
    headers = {"content-type": "application/json"}
    if authorization:
        headers["authorization"] = authorization
    try:
        with serving_app(team["root"]) as (url, app):
            conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
            for path in ("/v1/checks", "/v1/requests"):
                conn.request("POST", path, body=body, headers=headers)
                answer = conn.getresponse()
                refused = json.loads(answer.read())
                assert answer.status == 401, refused
                assert refused["error"]["code"] == "unauthenticated"
            conn.close()
            assert not app.state.requests_process.running
    finally:
        team["root"].close()
