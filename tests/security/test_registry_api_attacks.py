"""Attacks on the registry API (the remote client's server side): each fails if the hole reopens."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from registries import governed_team, token_of
from remote_server import serving

HUGE = 2**64 + 1  # past every 64-bit database integer
NO_VERSION = f"model 'm' has no version {HUGE}"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    team = governed_team(tmp_path / "registry", {"vi": ["viewer"], "ap": ["approver"]})
    with serving(team["root"]) as url:
        yield {"url": url, **{name: token_of(handle) for name, handle in team.items()}}
    for handle in team.values():
        handle.close()


def call(
    url: str, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    if response.getheader("content-type", "").startswith("application/json"):
        return response.status, json.loads(payload)
    return response.status, payload


def test_an_artifact_digest_is_checked_before_it_touches_a_path(served: dict[str, Any]) -> None:
    url, token = served["url"], served["vi"]
    not_digests = [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "..",
        "A" * 64,  # upper case: not how the store names blobs
        "a" * 63,
        "a" * 65,
        "g" * 64,
        "a" * 62 + "%00a",
    ]
    for digest in not_digests:
        status, body = call(url, "GET", f"/v1/registry/artifacts/{digest}", token)
        assert (status, body["error"]["code"]) in ((422, "invalid_input"), (404, "not_found"))
        if status == 422:
            assert body["error"]["message"] == (
                "an artifact digest is 64 lower-case hexadecimal digits"
            )

    # A well-formed digest that names nothing: the prefix given back is the caller's own.
    status, body = call(url, "GET", "/v1/registry/artifacts/" + "0" * 64, token)
    assert (status, body["error"]["message"]) == (
        503,
        "artifact blob sha256:000000000000 is missing",
    )


def test_artifacts_need_a_token(served: dict[str, Any]) -> None:
    status, body = call(served["url"], "GET", "/v1/registry/artifacts/" + "0" * 64)
    assert (status, body["error"]["code"]) == (401, "unauthenticated")


def test_ids_beyond_64_bits_are_not_found_never_a_500(served: dict[str, Any]) -> None:
    url, token = served["url"], served["ap"]
    requests = [
        ("GET", f"/v1/requests/{HUGE}", f"promotion request {HUGE} does not exist"),
        ("GET", f"/v1/requests/{HUGE}/gates", f"promotion request {HUGE} does not exist"),
        ("POST", f"/v1/requests/{HUGE}/approve", f"promotion request {HUGE} does not exist"),
        ("POST", f"/v1/requests/{HUGE}/reject", f"promotion request {HUGE} does not exist"),
        ("GET", f"/v1/registry/models/m/versions/{HUGE}", f"model 'm' has no version {HUGE}"),
        ("POST", f"/v1/registry/models/m/versions/{HUGE}/stage", NO_VERSION),
        ("GET", f"/v1/registry/models/m/transitions?version={HUGE}", NO_VERSION),
        ("GET", f"/v1/requests/{-HUGE}", f"promotion request {-HUGE} does not exist"),
    ]  # fmt: skip
    for method, path, message in requests:
        status, body = call(url, method, path, token, body={} if method == "POST" else None)
        assert (status, body["error"]["message"]) == (404, message), path
    for version, status_and_message in [
        (2**63, (404, f"model 'm' has no version {2**63}")),
        (HUGE, (400, 'send {"version": N}')),  # orjson reads an integer past 64 bits as a float
    ]:
        status, body = call(
            url, "PUT", "/v1/registry/models/m/aliases/challenger", token, body={"version": version}
        )
        assert (status, body["error"]["message"]) == status_and_message


def test_guessing_enrollment_codes_is_slowed_per_address(served: dict[str, Any]) -> None:
    url = served["url"]
    answers = [call(url, "POST", "/v1/enroll", body={"code": f"rke_guess{i}"}) for i in range(11)]
    assert [status for status, _ in answers] == [403] * 10 + [429]
    assert answers[0][1]["error"]["message"] == "the enrollment code is unknown"
    assert answers[-1][1]["error"] == {
        "code": "rate_limited",
        "message": "too many attempts from this address: at most 10 per 60 seconds",
    }


def test_a_viewer_cannot_upload_a_package(served: dict[str, Any]) -> None:
    body = {"manifest": {"format": "ratekeeper-package/1"}, "files": {}}
    status, answer = call(
        served["url"], "POST", "/v1/registry/models/m/versions", served["vi"], body
    )
    assert (status, answer["error"]["message"]) == (
        403,
        "vi (viewer) may not register: that needs the admin or modeller role",
    )
