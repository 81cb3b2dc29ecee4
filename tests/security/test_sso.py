"""Attacks on single sign-on: each test fails if the hole it names reopens.

Tokens are forged the way an attacker would: tampered payloads, a key of their own under the
provider's key id, made-up key ids in bulk, ``alg: none``, and HS256 "signed" with the provider's
public key (the key-confusion attack). The provider is a real one on loopback
(tests/oidc_provider.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from oidc_provider import LoopbackProvider, new_key
from ratekeeper.errors import PermissionDeniedError
from ratekeeper.governance.sso import SingleSignOn

ROLES = {"pricing": ("modeller",), "chief-actuary": ("approver",)}
JWKS = "/jwks.json"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp() -> Iterator[LoopbackProvider]:
    with LoopbackProvider() as provider:
        yield provider


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sso(idp: LoopbackProvider, clock: Clock) -> SingleSignOn:
    return SingleSignOn(idp.issuer, idp.audience, ROLES, jwks_url=idp.jwks_url, clock=clock)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)]
    )


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, claims, signature = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(claims)), signature


def test_a_tampered_payload_does_not_verify(idp: LoopbackProvider, sso: SingleSignOn) -> None:
    header, claims, signature = parts(idp.token("mallory", ["pricing"]))
    claims["groups"] = ["chief-actuary"]  # promote oneself to approver
    tampered = ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode())])
    with pytest.raises(PermissionDeniedError, match="the SSO token's signature does not verify"):
        sso.authenticate(f"{tampered}.{signature}")
    assert sso.authenticate(idp.token("mallory", ["pricing"])).roles == {"modeller"}


@pytest.mark.parametrize("kind", ["RSA", "EC"])
def test_a_token_signed_by_another_key_under_the_providers_kid_does_not_verify(
    kind: str, sso: SingleSignOn
) -> None:
    with LoopbackProvider(kind) as idp:
        sso = SingleSignOn(idp.issuer, idp.audience, ROLES, jwks_url=idp.jwks_url)
        forged = idp.token("mallory", ["chief-actuary"], kid=idp.kid, key=new_key(kind))
        with pytest.raises(PermissionDeniedError, match="signature does not verify"):
            sso.authenticate(forged)


def test_an_unknown_key_id_costs_one_refetch_then_is_refused(
    idp: LoopbackProvider, sso: SingleSignOn, clock: Clock
) -> None:
    sso.authenticate(idp.token("carol"))
    assert idp.requests[JWKS] == 1
    idp.add_key("attacker", new_key("RSA"), publish=False)
    clock.now += 60
    with pytest.raises(PermissionDeniedError, match=r"names a key id \('attacker'\) the identity"):
        sso.authenticate(idp.token("mallory", kid="attacker"))
    assert idp.requests[JWKS] == 2


def test_a_flood_of_made_up_key_ids_does_not_fetch_per_token(
    idp: LoopbackProvider, sso: SingleSignOn, clock: Clock
) -> None:
    key = new_key("RSA")
    for n in range(200):
        clock.now += 0.1  # 20 s of flooding in all: under the 30 s refetch bound
        with pytest.raises(PermissionDeniedError, match="the identity provider does not publish"):
            sso.authenticate(idp.token("mallory", kid=f"made-up-{n}", key=key))
    assert idp.requests[JWKS] == 1
    clock.now += 30
    with pytest.raises(PermissionDeniedError, match="the identity provider does not publish"):
        sso.authenticate(idp.token("mallory", kid="made-up-again", key=key))
    assert idp.requests[JWKS] == 2
    assert sso.authenticate(idp.token("carol")).name == "carol"  # real people still sign on


def test_alg_none_is_refused(idp: LoopbackProvider, sso: SingleSignOn) -> None:
    _, claims, _ = parts(idp.token("mallory", ["chief-actuary"]))
    unsigned = forge({"alg": "none", "typ": "JWT", "kid": idp.kid}, claims)
    with pytest.raises(PermissionDeniedError, match="algorithm 'none' is not allowed"):
        sso.authenticate(unsigned)
    for spelling in ["None", "NONE", "nOnE"]:
        with pytest.raises(PermissionDeniedError, match="is not allowed: use one of ES256"):
            sso.authenticate(forge({"alg": spelling, "kid": idp.kid}, claims))
    assert idp.requests[JWKS] == 0


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_hmac_signed_with_the_providers_public_key_is_refused(
    algorithm: str, idp: LoopbackProvider, sso: SingleSignOn
) -> None:
    # The key-confusion attack: the public key (anyone may fetch it) used as an HMAC secret.
    public_pem = (
        idp.keys[idp.kid].public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    _, claims, _ = parts(idp.token("mallory", ["chief-actuary"]))
    header = {"alg": algorithm, "typ": "JWT", "kid": idp.kid}
    signing_input = forge(header, claims).rsplit(".", 1)[0].encode()
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    mac = hmac.new(public_pem, signing_input, digest[algorithm]).digest()
    with pytest.raises(PermissionDeniedError, match=f"algorithm '{algorithm}' is not allowed"):
        sso.authenticate(forge(header, claims, mac))


def test_an_algorithm_that_does_not_fit_the_key_is_refused(
    idp: LoopbackProvider, sso: SingleSignOn
) -> None:
    # An EC token under the provider's RSA key id: refused before any verification is tried.
    ec_kid = idp.add_key("ec-key", new_key("EC"))
    header, claims, signature = parts(idp.token("mallory", kid=ec_kid))
    header["kid"] = idp.kid
    relabelled = forge(header, claims, unb64(signature))
    with pytest.raises(
        PermissionDeniedError, match=r"algorithm ES256 does not match its key \(RSA\)"
    ):
        sso.authenticate(relabelled)
    # An ES384 token under a P-256 key: the curve must match the algorithm.
    with pytest.raises(
        PermissionDeniedError, match=r"algorithm ES384 does not match its key \(EC\)"
    ):
        sso.authenticate(forge({**header, "alg": "ES384", "kid": ec_kid}, claims, b"x" * 96))


def test_a_token_of_another_issuer_is_refused_without_fetching_keys(
    idp: LoopbackProvider, sso: SingleSignOn
) -> None:
    with LoopbackProvider() as other:  # another provider (signing with the same test key)
        token = other.token("mallory", ["chief-actuary"])
        with pytest.raises(PermissionDeniedError, match="not issued by RATEKEEPER_OIDC_ISSUER"):
            sso.authenticate(token)
        assert (idp.requests[JWKS], other.requests[JWKS]) == (0, 0)


def test_a_token_for_another_application_is_refused(
    idp: LoopbackProvider, sso: SingleSignOn
) -> None:
    # A token the same provider issued to another of the company's applications.
    for audience in ["the-claims-portal", ["the-claims-portal", "hr"]]:
        with pytest.raises(PermissionDeniedError, match="not meant for RATEKEEPER_OIDC_AUDIENCE"):
            sso.authenticate(idp.token("mallory", ["chief-actuary"], aud=audience))


def test_a_person_in_no_mapped_group_gets_no_roles(
    idp: LoopbackProvider, sso: SingleSignOn
) -> None:
    for groups in [[], ["canteen"], "", "admin approver modeller"]:
        with pytest.raises(PermissionDeniedError, match="none of the person's groups is mapped"):
            sso.authenticate(idp.token("mallory", groups))


def test_a_token_without_expiry_is_refused(idp: LoopbackProvider, sso: SingleSignOn) -> None:
    with pytest.raises(PermissionDeniedError, match="the SSO token has no 'exp' claim"):
        sso.authenticate(idp.token("mallory", exp=None))


def test_an_oversized_or_malformed_token_is_refused_before_any_work(
    idp: LoopbackProvider, sso: SingleSignOn
) -> None:
    huge = idp.token("mallory", padding="x" * 20_000)
    with pytest.raises(PermissionDeniedError, match="the SSO token is not a JWT"):
        sso.authenticate(huge)
    with pytest.raises(PermissionDeniedError, match="the SSO token is malformed"):
        sso.authenticate("e30.bm90LWpzb24.c2ln")  # header {} is fine, the claims are not JSON
    assert idp.requests[JWKS] == 0


def test_the_refusal_never_echoes_the_token(idp: LoopbackProvider, sso: SingleSignOn) -> None:
    token = idp.token("mallory", ["canteen"])
    with pytest.raises(PermissionDeniedError, match="none of the person's groups") as refused:
        sso.authenticate(token)
    assert token not in str(refused.value)
    assert token.split(".")[1] not in str(refused.value)
