"""The rating server writes each response in one piece (http/transport.py): over a real socket,
answers stay whole and in order, a bodiless answer is not held back, and an interim
``100 Continue`` goes out before the body is sent."""

from __future__ import annotations

import json
import socket

import pytest
from tests.http_helpers import MODEL, make_registry, policies
from tests.server_process import rating_server


def read_response(sock: socket.socket, buffer: bytearray, head_only: bool = False) -> bytes:
    """One response from ``buffer`` + the socket (by its content-length); the rest stays."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end]).decode()
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    if head_only:
        length = 0
    while len(buffer) < end + length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
    response = bytes(buffer[: end + length])
    del buffer[: end + length]
    return response


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transport")
    registry, book = make_registry(folder)
    registry.close()
    with rating_server(folder, "--no-ledger", workers=1) as port:
        yield port, policies(book, 2)


def request_bytes(
    method: str, path: str, body: bytes = b"", extra: str = "", length: int | None = None
) -> bytes:
    length = len(body) if length is None else length
    head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {length}\r\n"
    return (head + extra + "content-type: application/json\r\n\r\n").encode() + body


def test_pipelined_quotes_come_back_whole_and_in_order(server) -> None:
    port, sent = server
    bodies = [json.dumps(p).encode() for p in sent]
    path = f"/v1/models/{MODEL}/quote"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(request_bytes("POST", path, b) for b in [*bodies, b"{"]))
        buffer = bytearray()
        answers = [read_response(sock, buffer) for _ in range(3)]
    for answer in answers[:2]:
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["model"] == MODEL
    assert answers[2].startswith(b"HTTP/1.1 400 ")
    assert json.loads(answers[2].split(b"\r\n\r\n", 1)[1])["error"]["code"] == "malformed_json"
    assert not buffer


def test_a_head_answer_has_no_body_and_is_not_held_back(server) -> None:
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_bytes("HEAD", "/healthz"))
        buffer = bytearray()
        head = read_response(sock, buffer, head_only=True)  # a held header block would time out
        assert head.startswith(b"HTTP/1.1 405 ")
        sock.sendall(request_bytes("GET", "/healthz"))  # the connection goes on
        assert read_response(sock, buffer).endswith(b'{"status":"ok"}')


def test_100_continue_is_sent_before_the_body_arrives(server) -> None:
    port, sent = server
    body = json.dumps(sent[0]).encode()
    path = f"/v1/models/{MODEL}/quote"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        expect = "expect: 100-continue\r\n"
        sock.sendall(request_bytes("POST", path, extra=expect, length=len(body)))  # no body yet
        buffer = bytearray()
        interim = read_response(sock, buffer, head_only=True)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body)
        answer = read_response(sock, buffer)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["version"] == 1
