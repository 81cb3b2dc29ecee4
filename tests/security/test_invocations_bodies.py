"""Crafted bodies on POST /invocations: each gets a clear 4xx before it can cost memory or time.

/invocations reads JSON, CSV and Parquet from anyone who may quote (no token). A Parquet
footer is a claim, not a fact: it may promise a billion rows in 400 bytes, and a zstd page of
1 MB may inflate to gigabytes. The checks run on the footer before any page is decoded.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from tests.http_helpers import make_registry, policies

from ratekeeper.http.app import AppConfig, create_app

PARQUET = "application/vnd.apache.parquet"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[TestClient, list[dict]]]:
    registry, book = make_registry(tmp_path_factory.mktemp("bodies"), n_policies=500)
    app = create_app(registry, AppConfig(max_body_bytes=200_000, max_invocation_rows=100))
    assert app.state.load_models()
    with TestClient(app) as client:
        yield client, policies(book, 3)


def post(client: TestClient, body: bytes, content_type: str, **headers: str):
    return client.post(
        "/invocations", content=body, headers={"content-type": content_type, **headers}
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def lying_footer(rows: int, claimed: int) -> bytes:
    """A real Parquet file of ``rows`` rows whose footer claims ``claimed`` rows."""
    buffer = io.BytesIO()
    table = pa.table({"exposure": pa.array([1.0] * rows)})
    pq.write_table(table, buffer, write_statistics=False, compression="snappy")
    data = buffer.getvalue()
    size = struct.unpack("<I", data[-8:-4])[0]
    footer = data[-8 - size : -8]
    zigzag = _varint(rows << 1), _varint(claimed << 1)  # Thrift compact i64: zigzag varint
    assert footer.count(zigzag[0]) >= 2
    patched = footer.replace(*zigzag)
    return data[: -8 - size] + patched + struct.pack("<I", len(patched)) + b"PAR1"


def test_a_footer_claiming_a_billion_rows_is_refused_before_any_page_is_read(served) -> None:
    client, _ = served
    body = lying_footer(12345, 10**9)
    assert len(body) < 1000 and pq.ParquetFile(pa.BufferReader(body)).metadata.num_rows == 10**9
    response = post(client, body, PARQUET)
    assert response.status_code == 413
    assert response.json() == {
        "error_code": "RESOURCE_LIMIT_EXCEEDED",
        "message": "at most 100 rows per request (the server's --max-invocation-rows)",
    }


@pytest.mark.parametrize("codec", ["zstd", "gzip", "brotli", "lz4"])
def test_parquet_pages_that_can_inflate_without_bound_are_refused(served, codec) -> None:
    client, rows = served
    body = pd.DataFrame(rows).to_parquet(compression=codec)
    response = post(client, body, PARQUET)
    assert response.status_code == 400
    assert response.json()["error_code"] == "BAD_REQUEST"
    assert "uncompressed or with Snappy" in response.json()["message"]


def test_a_nested_parquet_column_is_refused(served) -> None:
    client, rows = served
    table = pa.Table.from_pandas(pd.DataFrame(rows)).drop(["exposure"])
    table = table.append_column("exposure", pa.array([[1.0] * 1000] * len(rows)))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    response = post(client, buffer.getvalue(), PARQUET)
    assert response.status_code == 400
    assert response.json()["problems"] == [
        {
            "field": "exposure",
            "code": "wrong_type",
            "message": "expected one value per row, got a nested column",
        }
    ]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (",".join(f"c{i}" for i in range(5000)).encode() + b"\n", "text/csv"),
        (json.dumps({"dataframe_records": [{f"c{i}": 1 for i in range(5000)}]}).encode(), None),
        (json.dumps({"inputs": {f"c{i}": [1] for i in range(5000)}}).encode(), None),
        (
            json.dumps({"dataframe_split": {"columns": list(range(5000)), "data": []}}).encode(),
            None,
        ),
    ],
)
def test_thousands_of_columns_are_refused(served, body, content_type) -> None:
    client, _ = served
    response = post(client, body, content_type or "application/json")
    assert response.status_code == 400
    assert response.json()["message"] == "at most 1,000 columns per request"


def test_a_body_beyond_the_cap_is_refused_unread(served) -> None:
    client, _ = served
    response = post(client, b"a,b\n" + b"1,2\n" * 60_000, "text/csv")
    assert response.status_code == 413
    assert response.json()["message"] == "the request body exceeds 200,000 bytes"


def test_compressed_bodies_and_foreign_charsets_are_415(served) -> None:
    client, rows = served
    body = json.dumps({"dataframe_records": rows}).encode()
    assert post(client, body, "application/json", **{"content-encoding": "gzip"}).status_code == 415
    utf16 = json.dumps({"dataframe_records": rows}).encode("utf-16")
    assert post(client, utf16, "application/json; charset=utf-16").status_code == 415
    # Declared UTF-8 but not: a 400, never decoded as something else.
    response = post(client, utf16, "application/json; charset=utf-8")
    assert response.status_code == 400 and response.json()["error_code"] == "BAD_REQUEST"
    response = post(client, b"area,exposure\n\xff\xfe,1\n", "text/csv")
    assert response.status_code == 400 and "UTF8" in response.json()["message"]


def test_messages_never_echo_a_whole_cell_or_body(served) -> None:
    client, rows = served
    frame = pd.DataFrame(rows).assign(driver_age="9" * 50_000 + "x")
    response = post(client, frame.to_csv(index=False).encode(), "text/csv")
    assert response.status_code == 400
    assert len(response.json()["message"]) < 400
    deep = b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    response = post(client, deep, "application/json")
    assert response.status_code == 400 and len(response.json()["message"]) < 400


@pytest.mark.parametrize(
    "body",
    [
        # What schemathesis sent in CI (a 500 then: the csv module refused a lone \r in a line)
        "ånÐ\u0098ëG\U0009afd4\rt\U000a3c3fR¥".encode(),
        b"\x16\xc2\x9f\rdriver_age,area\n30,A\n",
        b'"' + b"x" * 150_000 + b'"\n1\n',  # a header field beyond the csv module's limit
    ],
)
def test_odd_csv_header_lines_are_400_never_500(served, body) -> None:
    client, _ = served
    response = post(client, body, "text/csv")
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE"), answer
    assert len(answer["message"]) < 400


def test_a_csv_with_old_mac_line_ends_is_read(served) -> None:
    client, rows = served
    frame = pd.DataFrame(rows)
    lines = frame.to_csv(index=False, lineterminator="\r").encode()
    with_crlf = frame.to_csv(index=False, lineterminator="\r\n").encode()
    read = post(client, lines, "text/csv")
    assert read.status_code == 200, read.text
    assert read.json() == post(client, with_crlf, "text/csv").json()
    assert len(read.json()["predictions"]) == len(rows)
