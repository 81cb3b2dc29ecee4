"""`ratekeeper serve` refuses a wrong start with one line and a non-zero exit, found when it was
tried as a new user: a port in use, a second server on the same port, nothing to serve, a bad
TLS pair; and it serves HTTPS and a token-gated pricing door when asked (real server processes).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import pytest
from tests.http_helpers import MODEL, policies
from tests.server_process import free_port, rating_server, request

from registries import open_registry

START_TIMEOUT = 60


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Path, dict]:
    """A registry with a GLM in Production, and one policy to price."""
    from ratekeeper.demo import train_glm
    from ratekeeper.synthetic import motor_portfolio

    folder = tmp_path_factory.mktemp("served")
    book = motor_portfolio(1500, seed=6)
    registry = open_registry(folder, user="modeller")
    registry.register_model(train_glm(book), MODEL, training_data=book, exposure="exposure")
    registry.transition_stage(MODEL, 1, "Production")
    registry.close()
    return folder, policies(book, 1)[0]


def serve(folder: Path, *args: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    """A `ratekeeper serve` that is expected to refuse to start (bounded in time)."""
    command = [sys.executable, "-m", "ratekeeper", "serve", "--registry", str(folder)]
    command += ["--port", str(port if port is not None else free_port()), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=START_TIMEOUT, env=dict(os.environ)
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


def test_a_port_held_by_another_program_is_one_line_and_no_restart_loop(served) -> None:
    folder, _policy = served
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        for workers in ("1", "2"):
            result = serve(folder, "--workers", workers, port=port)
            assert result.returncode == 1
            assert one_line(result) == (
                f"error: cannot listen on 127.0.0.1:{port}: the address is already in use by "
                "another program (stop it, or pick another --port)"
            )


def test_a_second_server_on_the_same_port_is_refused_and_the_first_keeps_every_quote(
    served,
) -> None:
    folder, policy = served
    with rating_server(folder, workers=2) as port:
        result = serve(folder, "--workers", "2", port=port)
        assert result.returncode == 1
        assert one_line(result) == (
            f"error: cannot listen on 127.0.0.1:{port}: another ratekeeper server already "
            "listens there (stop it, or pick another --port)"
        )
        answers = [request(port, "POST", f"/v1/models/{MODEL}/quote", policy) for _ in range(20)]
        assert [status for status, _ in answers] == [200] * 20
        assert {body["version"] for _, body in answers} == {1}


def test_nothing_to_serve_warns_loudly_and_require_models_refuses(served, tmp_path) -> None:
    empty = open_registry(tmp_path / "empty", user="m")
    empty.close()
    result = serve(tmp_path / "empty", "--require-models")
    assert result.returncode == 3
    assert one_line(result) == (
        f"error: the registry at Registry('sqlite:///{tmp_path / 'empty' / 'registry.db'}') "
        "has no model (--require-models)"
    )
    folder, _policy = served
    result = serve(folder, "--model", "nope", "--require-models", "--workers", "2")
    assert result.returncode == 3
    assert one_line(result).startswith("error: no model 'nope' in the registry at Registry(")
    result = serve(tmp_path / "missing", "--workers", "2")
    assert result.returncode == 3
    assert one_line(result).startswith(f"error: no registry at {tmp_path / 'missing'}: create")

    with rating_server(tmp_path / "empty", workers=1) as port:
        status, body = request(port, "GET", "/readyz")
        assert (status, body["models"]) == (200, {})
    log = next((tmp_path / "empty").glob("server-*.log")).read_text()
    assert "WARNING: the registry at Registry(" in log
    assert "has no model: quotes will be answered 404 until a version is promoted" in log


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (cryptography, nothing leaves)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ratekeeper test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "server.crt", folder / "server.key"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keyfile.chmod(0o600)
    return certfile, keyfile


def test_a_bad_tls_pair_is_one_line(served, tmp_path) -> None:
    folder, _policy = served
    certfile, keyfile = make_certificate(tmp_path)
    (tmp_path / "other").mkdir()
    mismatched, _key = make_certificate(tmp_path / "other")
    result = serve(folder, "--certfile", str(certfile))
    assert (result.returncode, one_line(result)) == (
        2,
        "error: TLS needs both --certfile and --keyfile",
    )
    result = serve(folder, "--certfile", str(tmp_path / "nope.crt"), "--keyfile", str(keyfile))
    assert one_line(result) == f"error: TLS: no such file: {tmp_path / 'nope.crt'}"
    result = serve(folder, "--certfile", str(mismatched), "--keyfile", str(keyfile))
    assert result.returncode == 2
    assert one_line(result).startswith(f"error: TLS: cannot use {mismatched} with {keyfile}: ")


def https(port: int, certfile: Path, method: str, path: str, body: object = None,
          token: str | None = None) -> tuple[int, dict]:  # fmt: skip
    context = ssl.create_default_context(cafile=str(certfile))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_https_with_every_pricing_route_behind_a_token(served, tmp_path) -> None:
    """TLS and the pricing token together, as a server exposed beyond one network runs."""
    folder, policy = served
    certfile, keyfile = make_certificate(tmp_path)
    token = "t" * 40
    token_file = tmp_path / "pricing-tokens"
    token_file.write_text(f"# rotated 2026-11-30\n{'o' * 40}\n{token}\n")
    port = free_port()
    command = [
        sys.executable, "-m", "ratekeeper", "serve", "--registry", str(folder), "--port",
        str(port), "--workers", "2", "--certfile", str(certfile), "--keyfile", str(keyfile),
        "--pricing-token-file", str(token_file), "--log-level", "warning",
    ]  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_ready(port, certfile, process, log)
        path = f"/v1/models/{MODEL}/quote"
        status, body = https(port, certfile, "POST", path, policy)
        assert status == 401 and body["error"]["code"] == "unauthenticated"
        assert https(port, certfile, "POST", path, policy, token="x" * 40)[0] == 401
        status, body = https(port, certfile, "POST", path, policy, token=token)
        assert (status, body["version"]) == (200, 1)
        assert https(port, certfile, "POST", path, policy, token="o" * 40)[0] == 200
        assert https(port, certfile, "GET", "/healthz")[0] == 200  # operations stay open
        # Plain HTTP to the TLS port gets no answer a client could mistake for a price.
        with pytest.raises((http.client.HTTPException, OSError)):
            status, _ = request(port, "POST", path, policy)
            assert status != 200
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise AssertionError(
                f"the server did not stop on SIGTERM:\n{log.read_text()}"
            ) from None


def _wait_ready(port: int, certfile: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if https(port, certfile, "GET", "/readyz")[0] == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("the HTTPS server did not become ready")


def test_a_worker_that_cannot_start_stops_the_server_instead_of_a_restart_loop(tmp_path) -> None:
    """What the parent does when a worker dies before it listens (here: its registry is gone,
    which the command line would have refused first): stop, exit 1, no restart."""
    script = (
        "import sys\n"
        "from ratekeeper.http.multiprocess import prepare_multiprocess_metrics\n"
        "prepare_multiprocess_metrics()  # as the command line does first\n"
        "from ratekeeper.errors import RatekeeperError\n"
        "from ratekeeper.http.server import ServeConfig, serve\n"
        "from ratekeeper.settings import Settings\n"
        "try:\n"
        "    serve(ServeConfig(Settings.from_env(), registry_uri=sys.argv[1],\n"
        "                      port=int(sys.argv[2]), workers=2, log_level='warning'))\n"
        "except RatekeeperError as exc:\n"
        "    print('error:', exc.message, file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "gone"), str(free_port())],
        capture_output=True, text=True, timeout=START_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "error: the server did not start: a worker exited with code 1 before it listened"
    )
    failures = [line for line in lines if "cannot start: no registry at" in line]
    assert 1 <= len(failures) <= 2 and len(lines) == len(failures) + 1, result.stderr
    assert "starting a new one" not in result.stderr


def test_sigterm_while_the_workers_still_load_stops_every_process(served, tmp_path) -> None:
    """A stop right after the start: the workers, forked with the parent's signal handlers,
    ignored SIGTERM until uvicorn installed its own, then served with no parent."""
    folder, _policy = served
    port = free_port()
    command = [
        sys.executable, "-m", "ratekeeper", "serve", "--registry", str(folder), "--port",
        str(port), "--workers", "2", "--log-level", "info",
    ]  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("w") as output:  # its own process group: a failure here leaves no orphan
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "rating engine on http://" not in log.read_text():  # the workers are forking
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        process.terminate()
        process.wait(timeout=60)
        time.sleep(3)  # an orphaned worker would have finished loading and listen by now
        ours = "\0".join(["--port", str(port), "--workers", "2"])
        left = [pid for pid in os.listdir("/proc") if pid.isdigit() and ours in _cmdline(pid)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left
        process.wait(timeout=10)
    assert left == [], log.read_text()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # nobody listens there


def _cmdline(pid: str) -> str:
    try:
        return (Path("/proc") / pid / "cmdline").read_bytes().decode(errors="replace").rstrip("\0")
    except OSError:
        return ""


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.add(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_request_process_dies_with_a_killed_worker(tmp_path) -> None:
    # A promotion request starts the worker's request process; a worker killed outright used
    # to leave it running forever (it holds its own queue's write end, so never sees EOF).
    import ratekeeper as rk
    from ratekeeper.demo import train_glm
    from ratekeeper.synthetic import motor_portfolio

    book = motor_portfolio(1500, seed=6)
    registry, _ = rk.Registry.create(tmp_path / "reg", admin="admin", policy="open")
    registry.register_model(train_glm(book), MODEL, training_data=book, exposure="exposure")
    registry.transition_stage(MODEL, 1, "Production")
    token = registry.create_token(description="test")
    registry.close()
    with rating_server(tmp_path / "reg", "--no-ledger", workers=1) as port:
        (server,) = [
            p for p in _children(os.getpid()) if str(port) in Path(f"/proc/{p}/cmdline").read_text()
        ]
        bearer = {"authorization": f"Bearer {token}"}
        status, body = request(port, "POST", "/v1/requests", {"model": MODEL}, headers=bearer)
        assert status == 400, body  # refused by the request process, which now runs
        spawned = {
            p
            for p in _children(server)
            if "spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
        }
        assert spawned, "no request process was started"
        os.kill(server, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in spawned):
            time.sleep(0.05)
        alive = [p for p in spawned if Path(f"/proc/{p}").exists()]
        for p in alive:  # never leave one behind, even when the test fails
            os.kill(p, signal.SIGKILL)
        assert alive == []
