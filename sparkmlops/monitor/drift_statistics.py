"""Data drift between a reference dataset and a current one, computed with Spark aggregations.

Per feature:
- PSI (population stability index) = sum over buckets of (c - r) * ln(c / r), with r and c the
  reference and current shares of the bucket. Numeric buckets are the reference's quantile bins
  (``bins`` of them, fewer when values repeat); string buckets are the reference's categories plus
  one bucket for categories the reference never saw. Nulls are not a bucket: their rate is reported
  apart. An empty bucket gets a share of EPSILON so PSI stays finite.
- KS (numeric only): the two-sample Kolmogorov-Smirnov statistic, the largest gap between the two
  empirical CDFs, evaluated at a grid made of both datasets' percentiles (exact up to the grid).
- null-rate change, and for strings the share of current rows whose category is unseen.

Nothing collects raw rows: quantiles come from one ``percentile_approx`` row (the summary behind
``approxQuantile``) and every count from one ``groupBy`` over (feature, bucket), whose result has
O(features x buckets) rows; two passes over each dataset in all.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass

from sparkmlops.data.schema import sql_column

EPSILON = 1e-4


# A feature also drifted when its share of missing values (null, or NaN for numbers) moved by at least
# this much, either way (0.1 = ten percentage points): a column that broke upstream is often all null,
# which PSI, computed over the non-missing values only, does not see.
NULL_RATE_THRESHOLD = 0.1


UNSEEN = "__unseen__"


GRID_POINTS = 100  # percentiles of each dataset in the KS grid


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str  # numeric | categorical
    psi: float
    ks: float | None
    reference_null_rate: float
    current_null_rate: float
    unseen_share: float | None
    buckets: int

    def as_dict(self) -> dict:
        return asdict(self)


def psi(reference_counts: list[float], current_counts: list[float], epsilon: float = EPSILON) -> float:
    """PSI of two histograms over the same buckets (counts, not shares)."""
    r_total, c_total = sum(reference_counts), sum(current_counts)
    if not r_total or not c_total:
        return 0.0
    value = 0.0
    for r, c in zip(reference_counts, current_counts):
        r_share, c_share = max(r / r_total, epsilon), max(c / c_total, epsilon)
        value += (c_share - r_share) * math.log(c_share / r_share)
    return value


def ks_statistic(reference_cdf_counts: list[float], current_cdf_counts: list[float]) -> float:
    """Largest |F_ref - F_cur| over the grid, from per-bucket counts (cumulated here)."""
    r_total, c_total = sum(reference_cdf_counts), sum(current_cdf_counts)
    if not r_total or not c_total:
        return 0.0
    r_cum = c_cum = 0.0
    gap = 0.0
    for r, c in zip(reference_cdf_counts, current_cdf_counts):
        r_cum += r
        c_cum += c
        gap = max(gap, abs(r_cum / r_total - c_cum / c_total))
    return gap


def _grid(values: list[float]) -> list[float]:
    finite = sorted({v for v in values if v is not None and not math.isnan(v) and not math.isinf(v)})
    return [-math.inf, *(finite or [0.0]), math.inf]  # Bucketizer needs at least 3 splits


def _counts(df, numeric: list[str], grids: dict[str, list[float]], categorical: list[str]) -> dict[str, dict]:
    """{column: {bucket: rows}} in one pass over ``df``: numeric columns by Bucketizer bucket
    [grid[i], grid[i+1]) with null/NaN as bucket -1, string columns by value with null as None."""
    from pyspark.ml.feature import Bucketizer
    from pyspark.sql import functions as F

    columns = numeric + categorical
    if not columns:
        return {}
    out_cols = [f"__bucket_{i}" for i in range(len(numeric))]
    # SQL text throughout: a Column object costs one driver round trip per call on each column.
    frame = df.selectExpr(
        *[f"try_cast({sql_column(c)} AS DOUBLE) AS {sql_column(c)}" for c in numeric],
        *[f"CAST({sql_column(c)} AS STRING) AS {sql_column(c)}" for c in categorical],
    )
    if numeric:
        frame = Bucketizer(
            splitsArray=[grids[c] for c in numeric], inputCols=numeric, outputCols=out_cols, handleInvalid="keep"
        ).transform(frame)
    keys = [  # null and NaN (Bucketizer's extra bucket) are -1
        f"CASE WHEN {o} IS NULL OR {o} >= {len(grids[c]) - 1} THEN '-1' ELSE CAST(CAST({o} AS INT) AS STRING) END"
        for c, o in zip(numeric, out_cols)
    ]
    keys += [sql_column(c) for c in categorical]
    # One (feature, key) pair per column and row, counted by one groupBy: O(features x buckets) rows out.
    pairs = F.expr(
        "explode(array(" + ", ".join(f"named_struct('feature', {i}, 'key', {key})" for i, key in enumerate(keys)) + "))"
    )
    result: dict[str, dict] = {c: {} for c in columns}
    for row in frame.select(pairs.alias("p")).groupBy("p.feature", "p.key").count().collect():
        name = columns[row["feature"]]
        key = row["key"] if row["feature"] >= len(numeric) else int(row["key"])
        result[name][key] = row["count"]
    return result


def feature_drift(
    reference,
    current,
    numeric_cols: list[str],
    categorical_cols: list[str],
    bins: int = 10,
    relative_error: float = 0.01,
) -> list[FeatureDrift]:
    """Drift of every column: numeric ones first, then string ones. Two passes over each dataset: one
    for the quantiles (percentile_approx), one counting every column's buckets.

    ``relative_error`` only moves the bucket edges (rank error); the counts in the buckets are exact.
    """
    numeric_cols, categorical_cols = list(numeric_cols), list(categorical_cols)
    if not numeric_cols and not categorical_cols:
        return []
    psi_edges, grids = _numeric_grids(reference, current, numeric_cols, bins, relative_error)
    ref_counts = _counts(reference, numeric_cols, grids, categorical_cols)
    cur_counts = _counts(current, numeric_cols, grids, categorical_cols)
    return [_numeric_result(c, grids[c], psi_edges[c], ref_counts[c], cur_counts[c]) for c in numeric_cols] + [
        _categorical_result(c, ref_counts[c], cur_counts[c]) for c in categorical_cols
    ]


def numeric_drift(
    reference, current, columns: list[str], bins: int = 10, relative_error: float = 0.01
) -> list[FeatureDrift]:
    """PSI over the reference's quantile bins, KS, null rates, for numeric ``columns``."""
    return feature_drift(reference, current, columns, [], bins, relative_error)


def categorical_drift(reference, current, columns: list[str]) -> list[FeatureDrift]:
    """PSI over the reference's categories plus one bucket of unseen ones, null rates, unseen share."""
    return feature_drift(reference, current, [], columns)


def _numeric_grids(reference, current, columns: list[str], bins: int, relative_error: float):
    """({column: PSI bin edges}, {column: KS grid}): the reference's ``bins`` quantiles, and both datasets'
    percentiles (the grid's buckets nest inside the PSI bins, so one count serves both)."""
    if not columns:
        return {}, {}
    psi_probs = [i / bins for i in range(1, bins)]
    grid_probs = [i / GRID_POINTS for i in range(1, GRID_POINTS)]
    ref_q = _quantiles(reference, columns, psi_probs + grid_probs, relative_error)
    cur_q = _quantiles(current, columns, grid_probs, relative_error)
    psi_edges = {c: _grid(q[: len(psi_probs)]) for c, q in zip(columns, ref_q)}
    grids = {c: _grid(rq + cq) for c, rq, cq in zip(columns, ref_q, cur_q)}
    return psi_edges, grids


def _quantiles(df, columns: list[str], probabilities: list[float], relative_error: float) -> list[list[float]]:
    """Each column's approximate quantiles, computed as PySpark 4's ``DataFrame.approxQuantile`` computes them
    (``percentile_approx`` of the column as double with NaN as null, at accuracy 1 / relative_error; [] for a
    column with no value), in one row collected at once: approxQuantile hands its result back one number
    per driver round trip."""
    probabilities_sql = "array(" + ", ".join(f"{float(p)!r}D" for p in probabilities) + ")"
    accuracy = _accuracy(relative_error)

    def quantiles(c: str) -> str:
        value = f"try_cast({sql_column(c)} AS DOUBLE)"
        return (
            f"percentile_approx(CASE WHEN isnan({value}) THEN NULL ELSE {value} END, {probabilities_sql}, {accuracy})"
        )

    [row] = df.selectExpr(*[f"{quantiles(c)} AS {sql_column(c)}" for c in columns]).collect()
    return [list(value) if value is not None else [] for value in row]


def _accuracy(relative_error: float) -> int:
    """percentile_approx's accuracy for approxQuantile's relative error, by Spark 4's own rule (StatFunctions):
    ceil(1 / error) up to 2^31 - 1, which is also what 0 (exact) gets."""
    if not relative_error >= 0:
        raise ValueError(f"relative_error must be >= 0, not {relative_error}")
    largest = 2**31 - 1
    return largest if relative_error == 0 else int(min(largest, math.ceil(1.0 / relative_error)))


def _numeric_result(c: str, grid: list[float], edges: list[float], ref_counts: dict, cur_counts: dict) -> FeatureDrift:
    n = len(grid) - 1
    ref_fine = [ref_counts.get(i, 0) for i in range(n)]
    cur_fine = [cur_counts.get(i, 0) for i in range(n)]
    # Each fine bucket [grid[i], grid[i+1]) lies inside one PSI bin: the bin of its left edge.
    n_bins = len(edges) - 1
    ref_bins, cur_bins = [0] * n_bins, [0] * n_bins
    for i in range(n):
        b = _bin_index(edges, grid[i])
        ref_bins[b] += ref_fine[i]
        cur_bins[b] += cur_fine[i]
    ref_rows, cur_rows = sum(ref_fine) + ref_counts.get(-1, 0), sum(cur_fine) + cur_counts.get(-1, 0)
    return FeatureDrift(
        feature=c,
        kind="numeric",
        psi=psi(ref_bins, cur_bins),
        ks=ks_statistic(ref_fine, cur_fine),
        reference_null_rate=ref_counts.get(-1, 0) / ref_rows if ref_rows else 0.0,
        current_null_rate=cur_counts.get(-1, 0) / cur_rows if cur_rows else 0.0,
        unseen_share=None,
        buckets=n_bins,
    )


def _bin_index(edges: list[float], value: float) -> int:
    """Index of the bin [edges[i], edges[i+1]) holding ``value`` (edges start at -inf, end at +inf)."""

    return min(max(bisect.bisect_right(edges, value) - 1, 0), len(edges) - 2)


def _categorical_result(c: str, ref: dict, cur: dict) -> FeatureDrift:
    categories = sorted(k for k in ref if k is not None)
    unseen = sum(v for k, v in cur.items() if k is not None and k not in ref)
    ref_hist = [ref[k] for k in categories] + [0]
    cur_hist = [cur.get(k, 0) for k in categories] + [unseen]
    ref_rows, cur_rows = sum(ref.values()), sum(cur.values())
    cur_non_null = cur_rows - cur.get(None, 0)
    return FeatureDrift(
        feature=c,
        kind="categorical",
        psi=psi(ref_hist, cur_hist),
        ks=None,
        reference_null_rate=ref.get(None, 0) / ref_rows if ref_rows else 0.0,
        current_null_rate=cur.get(None, 0) / cur_rows if cur_rows else 0.0,
        unseen_share=unseen / cur_non_null if cur_non_null else 0.0,
        buckets=len(ref_hist),
    )
