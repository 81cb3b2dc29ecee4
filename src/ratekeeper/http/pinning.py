"""Pinned pricing requests (``?version=N``, ``?alias=A``): who may, and where the scorer comes from.

Anyone may price what customers are priced by: the Production version, a protected alias
(``champion``: it moves only through an approved request) and a version in Staging (approved
for it by the gates). Any other pin needs a bearer token whose role may ``test``. Only pinned
requests come here: the plain quote path pays for none of it.
"""

from __future__ import annotations

from starlette.requests import Request

from ratekeeper.engine.deployments import Deployments
from ratekeeper.engine.pinned import PinnedVersions
from ratekeeper.engine.scorer import Scorer
from ratekeeper.http.access import require
from ratekeeper.http.governance_routes import TokenAuth


class Pins:
    def __init__(self, deployments: Deployments, pinned: PinnedVersions, auth: TokenAuth) -> None:
        self.deployments = deployments
        self.pinned = pinned
        self.auth = auth

    async def scorer(
        self, request: Request, name: str, version: int | None, alias: str | None
    ) -> tuple[Scorer, str]:
        """The scorer and what it is served as: the alias, or ``version N``."""
        if alias is not None:
            self.deployments.served(name)  # 404 / 503 for a model not served, before the token
            if alias not in self.deployments.protected:
                require(self.auth, request, "test")
            return self.deployments.scorer(name, alias=alias)
        assert version is not None
        self.deployments.served(name)
        client = None
        if not self.deployments.is_public(name, version):
            client = require(self.auth, request, "test").name
        served_as = f"version {version}"
        loaded = self.deployments.slot_scorer(name, version)
        if loaded is not None:
            return loaded, served_as
        if client is None:  # anonymous: a Staging version, limited per address
            client = f"address {request.client.host if request.client else '-'}"
        return await self.pinned.get(name, version, client), served_as
