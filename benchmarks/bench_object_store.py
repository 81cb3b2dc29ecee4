"""The artifact store and the ledger spool: local folder vs S3 (moto on 127.0.0.1), one run.

    PYTHONPATH=src python benchmarks/bench_object_store.py [--blob-mb 20] [--repeat 5]

Prints one table: put and get of a blob (a GBM-sized package file) in each store, the median
of ``--repeat``; and the time to ship a ledger's sealed segments to S3 and to read them back
through ``ledger_view``. moto is an in-process Python server, so the S3 column is an upper bound
for a LAN store's protocol overhead, not a measure of AWS; compare the columns of one run only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def median_seconds(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blob-mb", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quotes", type=int, default=200_000)
    args = parser.parse_args()

    from ratekeeper import Settings
    from ratekeeper.artifacts import LocalBlobStore, open_blob_store
    from ratekeeper.engine.ids import new_quote_id
    from ratekeeper.engine.ledger import LedgerConfig, QuoteLedger, read_ledger
    from ratekeeper.engine.ledger_store import ledger_view, open_ledger_objects
    from ratekeeper.packaging.signature import Field, Signature
    from s3_server import MotoS3

    server = MotoS3()
    server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        RATEKEEPER_S3_ENDPOINT_URL=server.endpoint,
    )
    bucket = server.new_bucket()
    settings = Settings.from_env()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            stores = {
                "local folder": LocalBlobStore(Path(folder) / "artifacts"),
                "S3 (moto, loopback)": open_blob_store(f"s3://{bucket}/bench", settings),
            }
            size = int(args.blob_mb * 1_000_000)
            for label, store in stores.items():
                blobs = [os.urandom(size) for _ in range(args.repeat)]
                it = iter(blobs)
                put = median_seconds(lambda store=store, it=it: store.put(next(it)), args.repeat)
                digest = store.put(blobs[0])
                get = median_seconds(lambda store=store, d=digest: store.get(d), args.repeat)
                again = median_seconds(lambda store=store, b=blobs[0]: store.put(b), args.repeat)
                rows.append((label, put, get, again))

            fields = [Field(f"f{i}", "numeric") for i in range(10)]
            signature = Signature((*fields, Field("area", "categorical", levels=("A", "B"))))
            objects = open_ledger_objects(f"s3://{bucket}/bench/ledger", settings)
            spool = Path(folder) / "spool"
            ledger = QuoteLedger(
                LedgerConfig(spool, segment_rows=50_000, flush_interval=0.2, store=objects)
            )
            ledger.start()
            policy = {**{f"f{i}": float(i) for i in range(10)}, "area": "A"}
            for n in range(args.quotes):
                ledger.record(new_quote_id(), "m", 1, signature, "quote", "Production", policy, n)
            start = time.perf_counter()
            ledger.close()  # seals the last segment and ships what is left
            shipped = time.perf_counter() - start
            start = time.perf_counter()
            with ledger_view(None, objects) as view:
                read = read_ledger(view).num_rows
            read_back = time.perf_counter() - start
    finally:
        server.stop()

    print(f"\nblob of {args.blob_mb:g} MB, median of {args.repeat}")
    print(f"{'store':<22} {'put (new)':>10} {'get':>10} {'put (again)':>12}")
    for label, put, get, again in rows:
        print(f"{label:<22} {put * 1000:>8.1f}ms {get * 1000:>8.1f}ms {again * 1000:>10.1f}ms")
    print(
        f"\nledger: {args.quotes:,} quotes; close() sealing + shipping the rest {shipped:.2f} s; "
        f"ledger_view + read_ledger from S3: {read:,} rows in {read_back:.2f} s"
    )


if __name__ == "__main__":
    main()
