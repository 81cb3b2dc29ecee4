"""Score a Spark DataFrame with a registered model: how a book larger than one machine is repriced.

``score(df, model_uri)`` resolves the URI on the driver, reads the version's package there
(every blob verified against its SHA-256) and broadcasts the package *bytes*: the manifest and
the files it names. Each executor's Python worker rebuilds the scorer from those bytes once
(verifying the digests again) and prices Arrow batches with ``mapInArrow``: the same signature
check and scorer as the quote endpoint and ``score_file``. No Python model object is pickled.

Rows that fail the signature are neither dropped nor priced: their ``prediction`` is null and
``reject_reason`` says why (null when the row was priced). Every row carries ``model_name``,
``model_version`` and ``scored_at`` (one UTC time per call).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ratekeeper.artifacts import sha256_hex
from ratekeeper.errors import IntegrityError, InvalidInputError

if TYPE_CHECKING:
    from ratekeeper.engine.scorer import Scorer
    from ratekeeper.registry.entities import ModelVersion
    from ratekeeper.registry.registry import Registry

STAMPS = ("model_name", "model_version", "scored_at")


@dataclass(frozen=True)
class ShippedPackage:
    """What travels to the executors: plain names, numbers and bytes, addressed by digest."""

    name: str
    version: int
    digest: str
    """SHA-256 of the manifest: the version's artifact digest."""
    manifest: bytes
    blobs: dict[str, bytes]
    """The manifest's files, by their SHA-256."""


def score(
    df: Any,
    model_uri: str,
    *,
    registry: Registry | None = None,
    prediction_col: str = "prediction",
) -> Any:
    """``df`` with ``prediction_col``, ``reject_reason``, ``model_name``, ``model_version`` and
    ``scored_at`` added, priced by the version ``model_uri`` points at now."""
    from pyspark.sql import types as T

    from ratekeeper.registry.registry import Registry

    registry = registry or Registry()
    added = (prediction_col, "reject_reason", *STAMPS)
    clashes = [name for name in added if name in df.columns]
    if clashes:
        raise InvalidInputError(
            f"the DataFrame already has column(s) {', '.join(clashes)}, which scoring adds"
        )
    version = registry.resolve(model_uri)
    missing = [
        f.name for f in version.signature.fields if not f.nullable and f.name not in df.columns
    ]
    if missing:
        raise InvalidInputError(
            f"no policy can be priced: the DataFrame lacks {', '.join(missing)}, which "
            f"{version.name} v{version.version} needs"
        )
    schema = T.StructType(
        [
            *df.schema.fields,
            T.StructField(prediction_col, T.DoubleType(), True),
            T.StructField("reject_reason", T.StringType(), True),
            T.StructField("model_name", T.StringType(), False),
            T.StructField("model_version", T.LongType(), False),
            T.StructField("scored_at", T.TimestampType(), False),
        ]
    )
    broadcast = df.sparkSession.sparkContext.broadcast(ship(registry, version))
    scored_at = datetime.now(UTC)

    def price(batches: Iterator[Any]) -> Iterator[Any]:
        return _price_batches(broadcast.value, batches, scored_at, prediction_col)

    return df.mapInArrow(price, schema)


def ship(registry: Registry, version: ModelVersion) -> ShippedPackage:
    """The verified package bytes of a version, read on the driver."""
    import json

    manifest = registry.blobs.get(version.artifact_digest)  # verifies the digest
    files: dict[str, str] = json.loads(manifest)["files"]
    blobs = {digest: registry.blobs.get(digest) for digest in files.values()}
    return ShippedPackage(version.name, version.version, version.artifact_digest, manifest, blobs)


_SCORERS: dict[str, Scorer] = {}
"""Scorers built in this Python worker, by artifact digest (Spark reuses its workers)."""


def scorer_from(shipped: ShippedPackage) -> Scorer:
    """Build (once per worker) the scorer of shipped package bytes, verifying every digest."""
    found = _SCORERS.get(shipped.digest)
    if found is None:
        found = _SCORERS[shipped.digest] = _build_scorer(shipped)
    return found


def _build_scorer(shipped: ShippedPackage) -> Scorer:
    from ratekeeper.engine.scorer import Scorer
    from ratekeeper.packaging.package import load_package
    from ratekeeper.registry.entities import ModelVersion, Stage

    if sha256_hex(shipped.manifest) != shipped.digest:
        raise IntegrityError(f"{shipped.name} version {shipped.version}: manifest corrupted")

    def fetch(digest: str) -> bytes:
        data = shipped.blobs.get(digest)
        if data is None or sha256_hex(data) != digest:
            raise IntegrityError(f"artifact blob sha256:{digest[:12]} is missing or corrupted")
        return data

    package = load_package(shipped.manifest, fetch)
    epoch = datetime.fromtimestamp(0, UTC)
    version = ModelVersion(
        name=shipped.name,
        version=shipped.version,
        flavor=package.flavor,
        artifact_digest=shipped.digest,
        artifact_size=package.size,
        stage=Stage.NONE,
        stage_changed_at=epoch,
        created_by="",
        created_at=epoch,
        description=None,
        signature=package.signature,
        profile=package.profile,
        metrics={},
        lineage={},
    )
    return Scorer(version, package)


def _price_batches(
    shipped: ShippedPackage, batches: Iterator[Any], scored_at: datetime, prediction_col: str
) -> Iterator[Any]:
    import numpy as np
    import pyarrow as pa

    from ratekeeper.batch.scoring import price_chunk

    scorer = scorer_from(shipped)
    for batch in batches:
        n_rows = batch.num_rows
        if n_rows == 0:
            continue
        chunk = price_chunk(scorer, batch)
        reasons = np.full(n_rows, None, dtype=object)
        reasons[np.flatnonzero(chunk.rejected)] = chunk.reasons
        # Spark hands timestamps to Arrow as UTC microseconds without a zone.
        at = scored_at.astimezone(UTC).replace(tzinfo=None)
        yield pa.RecordBatch.from_arrays(
            [
                *batch.columns,
                pa.array(chunk.prices, type=pa.float64(), mask=chunk.rejected),
                pa.array(reasons, type=pa.string()),
                pa.repeat(pa.scalar(scorer.name, pa.string()), n_rows),
                pa.repeat(pa.scalar(scorer.version, pa.int64()), n_rows),
                pa.repeat(pa.scalar(at, pa.timestamp("us")), n_rows),
            ],
            names=[*batch.schema.names, prediction_col, "reject_reason", *STAMPS],
        )
