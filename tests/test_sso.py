"""Company single sign-on against a real identity provider on loopback (tests/oidc_provider.py).

The attacks (forged, tampered, confused and flooding tokens) are in tests/security/test_sso.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from oidc_provider import LoopbackProvider, new_key
from ratekeeper.errors import InvalidInputError, PermissionDeniedError, UnavailableError
from ratekeeper.governance.sso import SingleSignOn, looks_like_jwt
from ratekeeper.settings import Settings

ROLES = {"pricing": ("modeller",), "chief-actuary": ("approver", "viewer")}
JWKS = "/jwks.json"
DISCOVERY = "/.well-known/openid-configuration"


class Clock:
    """A monotonic clock the test moves: the key cache's lifespan and refetch bound, no sleeps."""

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


def single_sign_on(
    idp: LoopbackProvider, clock: Clock | None = None, **kwargs: Any
) -> SingleSignOn:
    return SingleSignOn(
        idp.issuer,
        idp.audience,
        ROLES,
        jwks_url=idp.jwks_url,
        clock=clock or Clock(),
        **kwargs,
    )


def test_a_valid_token_names_the_person_with_the_roles_of_their_mapped_groups(
    idp: LoopbackProvider, tmp_path: Path
) -> None:
    sso = SingleSignOn.from_settings(idp.settings(tmp_path, roles=ROLES))
    assert sso is not None
    iat = int(time.time()) - 5
    token = idp.token("carol", ["pricing", "chief-actuary", "canteen"], iat=iat)
    user = sso.authenticate(token)
    assert user.name == "carol"
    assert user.roles == {"modeller", "approver", "viewer"}
    assert user.created_by == f"sso:{idp.issuer}"
    assert user.created_at == datetime.fromtimestamp(iat, UTC)
    assert user.created_at.tzinfo is UTC


def test_groups_given_as_one_space_separated_string_are_mapped_alike(
    idp: LoopbackProvider,
) -> None:
    user = single_sign_on(idp).authenticate(idp.token("dan", "canteen chief-actuary"))
    assert (user.name, user.roles) == ("dan", {"approver", "viewer"})


def test_the_name_comes_from_the_user_claim_and_falls_back_to_sub(idp: LoopbackProvider) -> None:
    by_email = single_sign_on(idp, user_claim="email")
    token = idp.token("00u1a2b3", email="erin@insurer.example")
    assert by_email.authenticate(token).name == "erin@insurer.example"
    assert by_email.authenticate(idp.token("00u1a2b3")).name == "00u1a2b3"
    sso = single_sign_on(idp)
    assert sso.authenticate(idp.token("00u9", preferred_username="frank")).name == "frank"
    assert sso.authenticate(idp.token("00u9", preferred_username=None)).name == "00u9"


def test_the_groups_claim_is_configurable(idp: LoopbackProvider) -> None:
    sso = single_sign_on(idp, groups_claim="roles")
    user = sso.authenticate(idp.token("gail", groups=None, roles=["pricing"]))
    assert user.roles == {"modeller"}


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [("RSA", "RS256"), ("RSA", "RS384"), ("RSA", "RS512"), ("RSA", "PS256"), ("EC", "ES256"),
     ("EC384", "ES384")],
)  # fmt: skip
def test_each_allowed_algorithm_verifies_with_a_key_of_its_kind(
    kind: str, algorithm: str, idp: LoopbackProvider
) -> None:
    kid = idp.add_key(f"{kind}-key", new_key(kind))
    user = single_sign_on(idp).authenticate(idp.token("hana", kid=kid, algorithm=algorithm))
    assert (user.name, user.roles) == ("hana", {"modeller"})


def test_the_key_set_is_fetched_once_and_kept_for_its_lifespan(
    idp: LoopbackProvider, clock: Clock
) -> None:
    sso = single_sign_on(idp, clock, keys_lifespan=300)
    for name in ("ivan", "jo", "kim", "lee", "max"):
        assert sso.authenticate(idp.token(name)).name == name
    assert idp.requests[JWKS] == 1
    clock.now += 299
    sso.authenticate(idp.token("ivan"))
    assert idp.requests[JWKS] == 1
    clock.now += 2
    sso.authenticate(idp.token("ivan"))
    assert idp.requests[JWKS] == 2


def test_a_rotated_key_is_picked_up_by_one_refetch(idp: LoopbackProvider, clock: Clock) -> None:
    sso = single_sign_on(idp, clock)
    sso.authenticate(idp.token("nia"))
    clock.now += 31
    kid = idp.add_key("key-2", new_key("RSA"))
    assert sso.authenticate(idp.token("nia", kid=kid)).name == "nia"
    assert sso.authenticate(idp.token("nia", kid=kid)).name == "nia"
    assert idp.requests[JWKS] == 2


def test_without_a_jwks_url_the_key_set_is_found_by_discovery(
    idp: LoopbackProvider, tmp_path: Path
) -> None:
    sso = SingleSignOn.from_settings(idp.settings(tmp_path, discover=True))
    assert sso is not None
    for _ in range(3):
        assert sso.authenticate(idp.token("olga")).name == "olga"
    assert (idp.requests[DISCOVERY], idp.requests[JWKS]) == (1, 1)


def test_a_discovery_document_naming_another_issuer_is_not_trusted(
    idp: LoopbackProvider, tmp_path: Path
) -> None:
    idp.discovery_overrides["issuer"] = "https://elsewhere.example"
    sso = SingleSignOn.from_settings(idp.settings(tmp_path, discover=True))
    assert sso is not None
    with pytest.raises(UnavailableError, match="the discovery document names another issuer"):
        sso.authenticate(idp.token("pat"))
    assert idp.requests[JWKS] == 0


def test_a_discovered_jwks_uri_must_be_https_or_loopback(
    idp: LoopbackProvider, tmp_path: Path
) -> None:
    idp.discovery_overrides["jwks_uri"] = "http://keys.elsewhere.example/jwks.json"
    sso = SingleSignOn.from_settings(idp.settings(tmp_path, discover=True))
    assert sso is not None
    with pytest.raises(UnavailableError, match=r"the discovered jwks_uri must be an https:// URL"):
        sso.authenticate(idp.token("pat"))


def test_an_expired_token_is_refused(idp: LoopbackProvider) -> None:
    now = int(time.time())
    token = idp.token("quin", iat=now - 3600, exp=now - 60)
    with pytest.raises(PermissionDeniedError, match="the SSO token has expired"):
        single_sign_on(idp).authenticate(token)


def test_a_token_within_the_leeway_of_its_expiry_is_accepted(idp: LoopbackProvider) -> None:
    now = int(time.time())
    token = idp.token("quin", iat=now - 3600, exp=now - 10)
    assert single_sign_on(idp).authenticate(token).name == "quin"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_a_token_not_yet_valid_is_refused(claim: str, idp: LoopbackProvider) -> None:
    later = int(time.time()) + 600
    claims: dict[str, Any] = {"exp": later + 300, claim: later}
    token = idp.token("rosa", **claims)
    with pytest.raises(PermissionDeniedError, match="the SSO token is not yet valid"):
        single_sign_on(idp).authenticate(token)


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "aud"])
def test_a_token_missing_a_required_claim_is_refused(claim: str, idp: LoopbackProvider) -> None:
    claims: dict[str, Any] = {"sub": "sam", claim: None}
    token = idp.token(**claims)
    with pytest.raises(PermissionDeniedError, match=f"the SSO token has no '{claim}' claim"):
        single_sign_on(idp).authenticate(token)


def test_a_token_for_another_audience_is_refused(idp: LoopbackProvider) -> None:
    token = idp.token("tara", aud="the-claims-portal")
    with pytest.raises(PermissionDeniedError, match="not meant for RATEKEEPER_OIDC_AUDIENCE"):
        single_sign_on(idp).authenticate(token)


def test_a_token_from_another_issuer_is_refused(idp: LoopbackProvider) -> None:
    token = idp.token("uma", iss="https://login.other.example")
    with pytest.raises(PermissionDeniedError, match="not issued by RATEKEEPER_OIDC_ISSUER"):
        single_sign_on(idp).authenticate(token)


def test_a_person_with_no_mapped_group_is_refused(idp: LoopbackProvider) -> None:
    sso = single_sign_on(idp)
    with pytest.raises(PermissionDeniedError, match="none of the person's groups is mapped"):
        sso.authenticate(idp.token("vic", ["canteen", "car-park"]))
    with pytest.raises(PermissionDeniedError, match="the SSO token has no 'groups' claim"):
        sso.authenticate(idp.token("vic", groups=None))
    by_team = single_sign_on(idp, groups_claim="teams")
    with pytest.raises(PermissionDeniedError, match="'teams' claim is not a list of group names"):
        by_team.authenticate(idp.token("vic", teams={"pricing": True}))


def test_a_user_claim_that_is_no_usable_name_is_refused(idp: LoopbackProvider) -> None:
    sso = single_sign_on(idp)
    for bad in ["", "   ", "carol\nadmin", "x" * 201, 42]:
        with pytest.raises(PermissionDeniedError, match="is not a usable user name"):
            sso.authenticate(idp.token("wes", preferred_username=bad))


def test_the_provider_down_is_unavailable_not_a_crash_and_recovers(
    idp: LoopbackProvider, clock: Clock
) -> None:
    sso = single_sign_on(idp, clock)
    idp.fail_with(503)
    with pytest.raises(
        UnavailableError, match=r"signing keys could not be fetched: .*HTTP Error 503"
    ):
        sso.authenticate(idp.token("xena"))
    # While it stays down, requests are refused at once, without a fetch each.
    for _ in range(20):
        with pytest.raises(UnavailableError, match="retrying at most every 30 s"):
            sso.authenticate(idp.token("xena"))
    assert idp.requests[JWKS] == 1
    idp.fail_with(200)
    clock.now += 30
    assert sso.authenticate(idp.token("xena")).name == "xena"
    assert idp.requests[JWKS] == 2


def test_a_provider_that_cannot_be_reached_is_unavailable(tmp_path: Path) -> None:
    with LoopbackProvider() as provider:
        token = provider.token("yan")
        settings = provider.settings(tmp_path)
    # The provider has stopped and closed its port: connections are refused.
    sso = SingleSignOn.from_settings(settings)
    assert sso is not None
    with pytest.raises(UnavailableError, match="signing keys could not be fetched"):
        sso.authenticate(token)


def test_keys_older_than_their_lifespan_are_not_used_while_the_provider_is_down(
    idp: LoopbackProvider, clock: Clock
) -> None:
    sso = single_sign_on(idp, clock)
    sso.authenticate(idp.token("zoe"))
    idp.fail_with(500)
    clock.now += 301
    with pytest.raises(UnavailableError, match="HTTP Error 500"):
        sso.authenticate(idp.token("zoe"))


def test_without_sso_settings_there_is_no_single_sign_on(tmp_path: Path) -> None:
    assert SingleSignOn.from_settings(Settings(home=tmp_path)) is None
    assert SingleSignOn.from_settings(Settings.from_env({})) is None


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"oidc_issuer": "https://login.insurer.example"},
         "RATEKEEPER_OIDC_AUDIENCE, RATEKEEPER_OIDC_ROLES"),
        ({"oidc_audience": "ratekeeper", "oidc_roles": ROLES}, "RATEKEEPER_OIDC_ISSUER"),
        ({"oidc_jwks_url": "https://login.insurer.example/keys"},
         "RATEKEEPER_OIDC_ISSUER, RATEKEEPER_OIDC_AUDIENCE, RATEKEEPER_OIDC_ROLES"),
    ],
)  # fmt: skip
def test_partial_sso_settings_name_what_is_missing(
    given: dict[str, object], missing: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match=f"configured partially: set {missing} as well"):
        SingleSignOn.from_settings(Settings(home=tmp_path, **given))  # type: ignore[arg-type]


def test_the_role_map_is_read_from_the_environment_and_checked(tmp_path: Path) -> None:
    env = {
        "RATEKEEPER_OIDC_ISSUER": "https://login.insurer.example",
        "RATEKEEPER_OIDC_AUDIENCE": "ratekeeper",
        "RATEKEEPER_OIDC_ROLES": "pricing=modeller; chief-actuary=approver,viewer",
    }
    sso = SingleSignOn.from_settings(Settings.from_env(env))
    assert sso is not None
    assert sso.roles == {"pricing": {"modeller"}, "chief-actuary": {"approver", "viewer"}}
    with pytest.raises(InvalidInputError, match=r"group 'pricing': unknown role\(s\) superuser"):
        SingleSignOn.from_settings(
            Settings.from_env({**env, "RATEKEEPER_OIDC_ROLES": "pricing=modeller,superuser"})
        )
    with pytest.raises(
        InvalidInputError, match=r"group 'pricing': unknown role\(s\) \(none given\)"
    ):
        SingleSignOn.from_settings(Settings.from_env({**env, "RATEKEEPER_OIDC_ROLES": "pricing="}))


@pytest.mark.parametrize(
    ("setting", "url"),
    [
        ("oidc_issuer", "http://login.insurer.example"),
        ("oidc_jwks_url", "http://login.insurer.example/keys"),
        ("oidc_jwks_url", "file:///etc/passwd"),
    ],
)
def test_provider_addresses_must_be_https_or_loopback(
    setting: str, url: str, tmp_path: Path
) -> None:
    values: dict[str, object] = {
        "oidc_issuer": "https://login.insurer.example",
        "oidc_audience": "ratekeeper",
        "oidc_roles": ROLES,
        setting: url,
    }
    with pytest.raises(InvalidInputError, match=r"must be an https:// URL \(http:// only on a"):
        SingleSignOn.from_settings(Settings(home=tmp_path, **values))  # type: ignore[arg-type]


def test_looks_like_jwt_tells_an_sso_token_from_a_registry_token(idp: LoopbackProvider) -> None:
    assert looks_like_jwt(idp.token("carol"))
    assert looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJjYXJvbCJ9.")  # unsigned: still a JWT
    assert not looks_like_jwt("rk_1a2b3c4d_" + "A-b_c" * 8)
    assert not looks_like_jwt("")
    assert not looks_like_jwt("a.b")
    assert not looks_like_jwt("a.b.c.d")
    assert not looks_like_jwt("a b.c.d")


def test_concurrent_first_sign_ons_share_one_key_fetch(idp: LoopbackProvider) -> None:
    sso = single_sign_on(idp)
    tokens = [idp.token(f"user{n}") for n in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        names = list(pool.map(lambda token: sso.authenticate(token).name, tokens))
    assert names == [f"user{n}" for n in range(16)]
    assert idp.requests[JWKS] == 1
