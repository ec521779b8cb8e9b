"""Content digests of a DataFrame (the run's data_digest and dataset digests), folded into one pass with its count.
"""

from __future__ import annotations

import hashlib


def _digest_aggregates(df) -> list:
    from pyspark.sql import functions as F

    row_hash = F.xxhash64(*[F.col(c) for c in df.columns])
    # Two independent 64-bit sums: a wrapped sum of hashes is order-free but weak alone.
    return [F.count(F.lit(1)).alias("__n"),
            F.sum(row_hash.cast("decimal(38,0)")).alias("__s1"),
            F.sum(F.xxhash64(row_hash, F.lit(7)).cast("decimal(38,0)")).alias("__s2")]


def _digest_from(df, row) -> str:
    payload = f"{df.schema.simpleString()}|{row['__n']}|{row['__s1']}|{row['__s2']}"
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def digest_and_count(df) -> tuple[str, int]:
    """Order-independent digest of a DataFrame's schema and rows, and its row count, in one Spark pass.

    MLflow's own SparkDataset digest hashes the query plan, so it does not change when the files under
    a path change; this one does.
    """
    row = df.agg(*_digest_aggregates(df)).first()
    return _digest_from(df, row), row["__n"]


def content_digest(df) -> str:
    return digest_and_count(df)[0]
