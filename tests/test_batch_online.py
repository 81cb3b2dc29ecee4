"""A policy gets the same price online and in batch: 10,000 quotes from a real rating server
against ``score_file`` on the same policies, compared with ``==``, for a GLM and a GBM."""

from __future__ import annotations

import http.client

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.server_process import rating_server, request

from ratekeeper.demo import train_gbm, train_glm
from ratekeeper.synthetic import motor_portfolio
from registries import open_registry

MODEL = "motor_frequency"
N_POLICIES = 10_000
STRINGS = ("area", "fuel", "cover")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("online")
    book = motor_portfolio(3000, seed=8)
    registry = open_registry(folder, user="m")
    registry.register_model(train_glm(book), MODEL, training_data=book, exposure="exposure")
    registry.register_model(
        train_gbm(book, n_trees=60), MODEL, training_data=book, exposure="exposure"
    )
    registry.transition_stage(MODEL, 1, "Production")
    registry.set_alias(MODEL, "champion", 2)  # protected: anyone may quote it
    scorer = registry.load_model("models:/motor_frequency/1")
    policies = motor_portfolio(12_000, seed=12)
    policies = policies[~scorer.check(policies).bad_rows].head(N_POLICIES)
    assert len(policies) == N_POLICIES
    fields = list(scorer.signature.names)
    policies = policies[fields].astype({name: str for name in STRINGS})
    pq.write_table(pa.Table.from_pandas(policies, preserve_index=False), folder / "book.parquet")
    return registry, folder, policies.to_dict("records")


def test_online_and_batch_prices_are_identical(world) -> None:
    registry, folder, records = world
    batch = {}
    for uri, label in (("models:/motor_frequency/1", "glm"), ("models:/motor_frequency/2", "gbm")):
        summary = registry.score_file(uri, folder / "book.parquet", folder / f"{label}.parquet")
        assert summary.rows_priced == N_POLICIES
        batch[label] = pq.read_table(folder / f"{label}.parquet")["prediction"].to_pylist()

    online: dict[str, list[float]] = {"glm": [], "gbm": []}
    with rating_server(folder, workers=1) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for policy in records:
                for label, query in (("glm", ""), ("gbm", "?alias=champion")):
                    status, body = request(
                        port, "POST", f"/v1/models/{MODEL}/quote{query}", policy, conn
                    )
                    assert status == 200, body
                    online[label].append(body["prediction"])
        finally:
            conn.close()

    for label in ("glm", "gbm"):
        differing = [
            i for i, (a, b) in enumerate(zip(online[label], batch[label], strict=True)) if a != b
        ]
        assert differing == [], f"{label}: {len(differing)} policies priced differently"
