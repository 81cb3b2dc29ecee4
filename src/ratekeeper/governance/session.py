"""Every write goes through one door: who acts (from a credential), may they, and the seal.

``Registry`` and its workflow and admin parts inherit ``_write``: it opens the write transaction,
establishes the actor from the handle's credential (a name alone never authorizes a governed
write), checks the action against the policy, refuses a process whose signing key is not the one
that sealed the audit trail, and seals the audit chain's head as the transaction's last write.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from ratekeeper.errors import PermissionDeniedError
from ratekeeper.governance import audit
from ratekeeper.governance import policy as policy_rules
from ratekeeper.governance.policy import Access, Credential
from ratekeeper.governance.signing import SigningKey
from ratekeeper.store import database


class ActingSession:
    engine: sa.Engine
    signing_key: SigningKey | None
    _credential: Credential
    _os_account: str

    @property
    def user(self) -> str:
        """The name this handle acts as (for a token: its user's name)."""
        return self._credential.name

    @contextmanager
    def _write(self, action: str | None) -> Iterator[tuple[sa.Connection, Access]]:
        """A write transaction, the actor's access (``action`` required of them), then the seal."""
        with database.write_transaction(self.engine) as conn:
            access = policy_rules.access(conn, self._credential, self._os_account)
            if action is not None:
                access.require(action)
            self._check_key(access)
            yield conn, access
            if self.signing_key is not None:
                audit.seal_head(conn, self.signing_key)

    def _read_access(self) -> Access:
        with database.read_transaction(self.engine) as conn:
            return policy_rules.access(conn, self._credential, self._os_account)

    def _check_key(self, access: Access) -> None:
        if access.key_id is None:
            return  # never sealed (a registry made before sealing existed): this write seals it
        if self.signing_key is None:
            raise PermissionDeniedError(
                f"this registry's audit trail is sealed with key {access.key_id} and this process "
                "holds no signing key: write through the rating server (rk.Registry('http://...',"
                " token=...)), or give the key with RATEKEEPER_AUDIT_KEY_FILE"
            )
        if self.signing_key.key_id != access.key_id:
            raise PermissionDeniedError(
                f"this registry's audit trail is sealed with key {access.key_id}, and this "
                f"process holds key {self.signing_key.key_id}: use the registry's own key"
            )
