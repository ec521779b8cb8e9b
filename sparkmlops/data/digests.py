"""Content digests of a DataFrame (the run's data_digest and dataset digests), folded into one pass with its count.

A digest is sums of row hashes, so the digest of a split's other side is the whole's minus this side's:
``prepare_data`` reads the train split once and derives the test split's digest without a pass.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from sparkmlops.data.schema import sql_column


class ContentDigest(NamedTuple):
    """Order-independent summary of a DataFrame's schema and rows: two independent 64-bit hash sums
    (a wrapped sum of hashes is order-free but weak alone) and the row count."""

    schema: str
    rows: int
    sum1: int | None  # None for no rows, as Spark's sum of nothing
    sum2: int | None

    @property
    def hex(self) -> str:
        payload = f"{self.schema}|{self.rows}|{self.sum1}|{self.sum2}"
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def minus(self, part: "ContentDigest") -> "ContentDigest":
        """The digest of the rows of this frame that are not in ``part`` (a subset with the same schema)."""
        rows = self.rows - part.rows
        if not rows:
            return ContentDigest(self.schema, 0, None, None)
        return ContentDigest(self.schema, rows, (self.sum1 or 0) - (part.sum1 or 0), (self.sum2 or 0) - (part.sum2 or 0))


def _digest_aggregates(df) -> list:
    # SQL text, one driver round trip per aggregate: Column objects cost one per call on each column.
    from pyspark.sql import functions as F

    row_hash = f"xxhash64({', '.join(sql_column(c) for c in df.columns)})"
    return [F.expr("count(1) AS __n"),
            F.expr(f"sum(CAST({row_hash} AS DECIMAL(38,0))) AS __s1"),
            F.expr(f"sum(CAST(xxhash64({row_hash}, 7) AS DECIMAL(38,0))) AS __s2")]


def _digest_from(df, row) -> ContentDigest:
    def exact(value):
        return None if value is None else int(value)

    return ContentDigest(df.schema.simpleString(), row["__n"], exact(row["__s1"]), exact(row["__s2"]))


def compute(df) -> ContentDigest:
    """One Spark pass. MLflow's own SparkDataset digest hashes the query plan, so it does not change when
    the files under a path change; this one does."""
    return _digest_from(df, df.agg(*_digest_aggregates(df)).first())


def digest_and_count(df) -> tuple[str, int]:
    """The hex digest of a DataFrame's schema and rows, and its row count, in one Spark pass."""
    digest = compute(df)
    return digest.hex, digest.rows


def content_digest(df) -> str:
    return compute(df).hex
