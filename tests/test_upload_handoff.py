"""A large holdout upload is read by the promotion-request process, not by the quote worker
(http/handoff.py), over a real server with the production protocol and real sockets.

The worker's part is observable from outside: the answer to a handed-off upload closes the
connection (the worker's HTTP parser never saw the rest of the body), where the same body sent
chunked (read by the worker, spooled) keeps it open; both give the same gate report."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from ratekeeper.demo import train_glm
from ratekeeper.http import handoff
from ratekeeper.http.errors import STATUS, HTTPProblem
from ratekeeper.synthetic import RATING_FACTORS, motor_portfolio
from registries import governed_team, token_of
from remote_server import serving_app

MODEL = "motor_frequency"


@pytest.fixture(scope="module")
def check_body() -> bytes:
    """A check of version 1 with a JSON holdout of about 450 KB (over HANDOFF_MIN_BYTES)."""
    book = motor_portfolio(3000, seed=5)
    rows = book[[*RATING_FACTORS, "exposure", "claim_count"]].astype(
        {"area": str, "fuel": str, "cover": str}
    )
    body = {
        "model_uri": f"models:/{MODEL}/1",
        "target": "claim_count",
        "holdout": rows.to_dict("records"),
    }
    encoded = json.dumps(body).encode()
    assert len(encoded) > 1.5 * handoff.HANDOFF_MIN_BYTES
    return encoded


@pytest.fixture()
def server(tmp_path):
    """A governed registry with one GLM, served; yields (port, app, viewer's headers)."""
    team = governed_team(
        tmp_path / "registry", {"alice": ["modeller"], "vic": ["viewer"]}, artifacts=tmp_path / "a"
    )
    train = motor_portfolio(2000, seed=3)
    team["alice"].register_model(
        train_glm(train), MODEL, training_data=train, target="claim_count", exposure="exposure"
    )
    try:
        with serving_app(team["root"]) as (url, app):
            bearer = {"authorization": f"Bearer {token_of(team['vic'])}"}
            yield int(url.rsplit(":", 1)[1]), app, bearer
    finally:
        for member in team.values():
            member.close()


def post(
    conn: http.client.HTTPConnection, body: Any, headers: dict[str, str], **options: Any
) -> tuple[int, dict[str, Any], str | None]:
    """Status, JSON answer and the ``connection`` header of one POST /v1/checks."""
    conn.request("POST", "/v1/checks", body=body, headers=headers, **options)
    answer = conn.getresponse()
    return answer.status, json.loads(answer.read()), answer.getheader("connection")


def raw_head(bearer: dict[str, str], length: int, extra: str = "") -> bytes:
    """The request line and headers of a check declaring ``length`` bytes of body."""
    return (
        f"POST /v1/checks HTTP/1.1\r\nhost: x\r\nauthorization: {bearer['authorization']}\r\n"
        f"content-type: application/json\r\ncontent-length: {length}\r\n{extra}\r\n"
    ).encode()


def raw_answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """Read one whole HTTP answer (the server closes the connection after it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_large_upload_is_handed_off_and_reads_the_same_as_a_spooled_one(
    server, check_body
) -> None:
    port, app, bearer = server
    headers = {**bearer, "content-type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    status, handed, connection = post(conn, check_body, headers)
    assert status == 200, handed
    assert connection == "close"  # handed off: this connection ends with the answer
    conn.close()

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    pieces = (check_body[i : i + 100_000] for i in range(0, len(check_body), 100_000))
    status, spooled, connection = post(conn, pieces, headers, encode_chunked=True)
    assert status == 200, spooled
    assert connection is None  # chunked: read by the worker, the connection stays open
    status, again, _ = post(conn, b"{}", headers)  # the same connection serves the next one
    assert status == 422 and "model_uri" in again["error"]["message"], again
    conn.close()

    assert handed["results"] == spooled["results"] and handed["results"]
    assert handed["holdout_sha256"] == spooled["holdout_sha256"]
    assert app.state.requests_process.running


def test_an_upload_waiting_for_100_continue_is_told_to_send_then_handed_off(
    server, check_body
) -> None:
    """curl sends ``Expect: 100-continue`` with large bodies and waits for the go-ahead."""
    port, _app, bearer = server
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(raw_head(bearer, len(check_body), "expect: 100-continue\r\n"))
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(check_body)
        status, answer = raw_answer(sock)
    assert status == 200, answer
    assert (answer["model"], answer["challenger_version"]) == (MODEL, 1) and answer["results"]


def test_an_upload_cut_short_is_a_400_and_the_next_one_is_served(server, check_body) -> None:
    port, _app, bearer = server
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(raw_head(bearer, len(check_body)) + check_body[: len(check_body) // 2])
        sock.shutdown(socket.SHUT_WR)  # the client gives up half-way
        status, answer = raw_answer(sock)
    assert status == 400, answer
    assert answer["error"]["code"] == "bad_request"
    assert (
        f"ended after {len(check_body) // 2:,} of its {len(check_body):,}"
        in (answer["error"]["message"])
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    status, report, _ = post(conn, check_body, bearer)
    assert status == 200 and report["results"], report
    conn.close()


def test_a_body_that_stops_arriving_is_a_408(monkeypatch) -> None:
    """The one request process reads one body at a time: a client trickling its upload is cut
    off (real sockets; the waiting limits shortened for the test)."""
    monkeypatch.setattr(handoff, "IDLE_SECONDS", 0.3)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)  # as the worker's connection is
    theirs.sendall(b"0123")
    body = handoff.HandedBody(ours, received=b'{"a"', remaining=1000)
    with pytest.raises(HTTPProblem) as stopped:
        handoff.read_handed_body(body)
    assert stopped.value.code == "request_timeout" and STATUS["request_timeout"] == 408
    assert "8 of 1,004 bytes" in stopped.value.message
    assert ours.fileno() == -1  # its descriptor closed
    theirs.close()


def test_the_whole_body_is_returned_in_order() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.sendall(b"-rest of it")
    body = handoff.HandedBody(ours, received=b"start", remaining=11)
    assert bytes(handoff.read_handed_body(body)) == b"start-rest of it"
    theirs.close()


def request_processes() -> list[int]:
    """This test process's children that run a promotion-request process (spawned)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def reading(pid: int, port: int, client_port: int) -> bool:
    """Whether process ``pid`` holds the server's end of the connection from ``client_port``
    and nothing waits unread in its receive queue (``/proc/net/tcp``)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
        if (int(local, 16), int(remote, 16)) == (port, client_port):
            unread, inode = int(fields[4].split(":")[1], 16), fields[9]
            held = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
            return f"socket:[{inode}]" in held and unread == 0
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_request_process_killed_mid_upload_is_a_503_and_the_next_gets_a_new_one(
    server, check_body
) -> None:
    """Out of memory on a huge holdout, the kernel kills the request process: that request
    gets a 503, and the next one is served by a new process (the pool is not left broken)."""
    port, _app, bearer = server
    before = set(request_processes())
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        half = check_body[: len(check_body) // 2]
        sock.sendall(raw_head(bearer, len(check_body)) + half)  # it waits for more
        deadline = time.monotonic() + 30
        while not (started := set(request_processes()) - before):
            assert time.monotonic() < deadline, "no request process started"
            time.sleep(0.05)
        (child,) = started
        # Kill it once it holds the connection and has read all that was sent (else the
        # server's close with unread bytes resets the connection before the answer is read).
        while not reading(child, port, sock.getsockname()[1]):
            assert time.monotonic() < deadline, "the request process never read the body"
            time.sleep(0.05)
        os.kill(child, signal.SIGKILL)
        status, answer = raw_answer(sock)
    assert status == 503, answer
    assert answer["error"]["code"] == "unavailable"
    assert "stopped while working on this request" in answer["error"]["message"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    status, report, _ = post(conn, check_body, bearer)
    assert status == 200 and report["results"], report
    conn.close()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="core affinity is Linux's")
def test_the_request_process_runs_idle_on_the_cores_given(tmp_path, check_body) -> None:
    """``serve --request-cpus``: the request process on those cores, at idle priority."""
    from ratekeeper.http.app import AppConfig

    team = governed_team(tmp_path / "registry", {"vic": ["viewer"]}, artifacts=tmp_path / "a")
    last = max(os.sched_getaffinity(0))
    config = AppConfig(poll_interval=0.05, request_cpus=frozenset({last}))
    before = set(request_processes())
    try:
        with serving_app(team["root"], config) as (url, _app):
            conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
            bearer = {"authorization": f"Bearer {token_of(team['vic'])}"}
            status, answer, _ = post(conn, check_body, bearer)
            assert status == 404 and "motor_frequency" in answer["error"]["message"], answer
            conn.close()
            (child,) = set(request_processes()) - before
            assert os.sched_getaffinity(child) == {last}
            assert os.sched_getscheduler(child) == os.SCHED_IDLE
    finally:
        for member in team.values():
            member.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [("one", "is not a list of cores"), ("0,99999", "this machine has cores 0-"), ("3-1", "")],
)
def test_a_bad_core_list_is_refused_in_one_line(capsys, tmp_path, value, message) -> None:
    from ratekeeper.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--registry", str(tmp_path), "serve", "--request-cpus", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--request-cpus" in err and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("headers", "declared"),
    [
        ([(b"content-length", b"300000")], 300000),
        ([(b"content-length", b"300000"), (b"content-length", b"300000")], None),
        ([(b"content-length", b"300000"), (b"transfer-encoding", b"chunked")], None),
        ([(b"content-length", b"-1")], None),
        ([(b"content-length", b"3e5")], None),
        ([], None),
    ],
)
def test_only_one_plain_content_length_is_handed_off(headers, declared) -> None:
    """A body framed any other way is read by the worker's parser, which knows its framing."""
    assert handoff.declared_length(headers) == declared
