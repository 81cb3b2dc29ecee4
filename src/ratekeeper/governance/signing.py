"""The server's signing key: HMAC-SHA256 seals on the audit chain's head and the ledger's segments.

The key lives outside the database (a file of the server's, or an environment secret), so someone
who can write SQL (or edit ledger files) but does not hold the key cannot append, truncate or
re-chain a record and re-seal it. HMAC, not a signature scheme: whoever verifies holds the key (the
server, or an auditor given a copy); the registry stores only the key's id, so a process with the
wrong key is told so instead of writing seals nobody can check.

Each seal names its purpose (``audit-head``, ``ledger-segment``, …) so a seal made for one record
can never be replayed as a seal of another kind.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ratekeeper.errors import InvalidInputError

KEY_BYTES = 32
MIN_KEY_BYTES = 16


@dataclass(frozen=True)
class SigningKey:
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise InvalidInputError(
                f"the signing key must hold at least {MIN_KEY_BYTES} bytes of secret"
            )

    @property
    def key_id(self) -> str:
        """A public fingerprint of the key (recorded in the registry; reveals nothing of it)."""
        return hashlib.sha256(b"ratekeeper key id\0" + self.secret).hexdigest()[:16]

    def seal(self, purpose: str, message: str) -> str:
        """The HMAC-SHA256 of ``message`` for ``purpose``, as hex."""
        data = purpose.encode() + b"\0" + message.encode()
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()

    def check(self, purpose: str, message: str, seal: str | None) -> bool:
        """Whether ``seal`` is this key's seal of ``message`` for ``purpose`` (constant time)."""
        if not seal:
            return False
        return hmac.compare_digest(self.seal(purpose, message), seal)


def parse_key(text: str) -> SigningKey:
    """A key from its text form: hex (as ``new_key_text`` writes it), else the UTF-8 bytes."""
    text = text.strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = text.encode()
    return SigningKey(secret)


def new_key_text() -> str:
    return secrets.token_hex(KEY_BYTES)


def read_key_file(path: Path) -> SigningKey:
    try:
        return parse_key(path.read_text())
    except OSError as exc:
        raise InvalidInputError(f"cannot read the signing key file {path}: {exc.strerror}") from None


def create_key_file(path: Path) -> SigningKey:
    """Write a new random key to ``path`` (0600, never overwriting one) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = new_key_text()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key_file(path)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
        out.flush()
        os.fsync(out.fileno())
    return parse_key(text)


def resolve_key(
    secret: str | None, key_file: Path | None, default_file: Path | None, *, create: bool
) -> SigningKey | None:
    """The signing key from (in order) a secret, a key file, or the default file.

    ``create`` writes a new key to the default file when none exists (an embedded registry's
    creation does this: ``audit.key`` beside ``registry.db``, 0600).
    """
    if secret:
        return parse_key(secret)
    if key_file is not None:
        return read_key_file(key_file)
    if default_file is None:
        return None
    if default_file.exists():
        return read_key_file(default_file)
    return create_key_file(default_file) if create else None
