"""What ``ratekeeper serve`` checks and claims before any worker starts, so a wrong start fails
at once with one line instead of a traceback and a restart loop.

- **The port.** The workers listen with ``SO_REUSEPORT`` (one socket each, the kernel spreads
  connections over them), and the kernel lets any other process of the same user join that
  group: a second ``serve`` on the same port started without complaint and took half the
  quotes (10 of 20 answered 404 by a server that did not have the model). ``claim_port`` makes
  the start exclusive: it takes a name in Linux's abstract socket namespace, which is scoped by
  network namespace like the port itself and released by the kernel when the last process
  holding it exits (no stale lock file after a crash), so two servers cannot both pass the
  next check at once; then it binds the address *without* ``SO_REUSEPORT``, which fails while
  anything at all listens there.
- **TLS.** The certificate and key are loaded here, in the parent, so a wrong path, a key that
  does not match or a file the server's user cannot read is one line, not N workers failing.
"""

from __future__ import annotations

import errno
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from ratekeeper.errors import InvalidInputError, UnavailableError


class AddressInUseError(UnavailableError):
    """Something already listens on the address a rating server was asked to listen on."""


@dataclass(frozen=True)
class TLSFiles:
    certfile: Path
    keyfile: Path


def claim_port(host: str, port: int) -> socket.socket | None:
    """Make this server the only one on ``host:port``; keep the returned socket open (the claim)
    for as long as the server runs. ``None`` where there is no abstract namespace (not Linux):
    the bind check below still refuses an address in use."""
    claim = _abstract_claim(host, port)
    try:
        _refuse_if_in_use(host, port)
    except BaseException:
        if claim is not None:
            claim.close()
        raise
    return claim


def _abstract_claim(host: str, port: int) -> socket.socket | None:
    if not sys.platform.startswith("linux"):
        return None
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0ratekeeper-serve {host} {port}")
    except OSError as exc:
        claim.close()
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUseError(
                f"cannot listen on {_where(host, port)}: another ratekeeper server already "
                "listens there (stop it, or pick another --port)"
            ) from None
        raise
    return claim


def _refuse_if_in_use(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: connections of a server that just stopped (TIME_WAIT) do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUseError(
                    f"cannot listen on {_where(host, port)}: the address is already in use by "
                    "another program (stop it, or pick another --port)"
                ) from None
            if exc.errno == errno.EACCES:
                raise AddressInUseError(
                    f"cannot listen on {_where(host, port)}: permission denied (ports below "
                    "1024 need privileges; pick another --port)"
                ) from None
            raise InvalidInputError(
                f"cannot listen on {_where(host, port)}: {exc.strerror}"
            ) from None


def check_tls(certfile: str | None, keyfile: str | None) -> TLSFiles | None:
    """Both files or neither; loaded once here so a bad pair is refused before serving."""
    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        raise InvalidInputError("TLS needs both --certfile and --keyfile")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"TLS: no such file: {exc.filename or certfile}") from None
    except PermissionError as exc:
        raise InvalidInputError(
            f"TLS: the server's user may not read {exc.filename or keyfile}"
        ) from None
    except ssl.SSLError as exc:
        raise InvalidInputError(
            f"TLS: cannot use {certfile} with {keyfile}: {exc.reason or exc}"
        ) from None
    return TLSFiles(Path(certfile).resolve(), Path(keyfile).resolve())


def _no_password() -> bytes:
    # Without this, OpenSSL would prompt on the terminal for an encrypted key's passphrase.
    raise InvalidInputError(
        "TLS: the key file is encrypted; give the server an unencrypted key, readable only by it"
    )


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
