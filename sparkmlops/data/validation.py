"""The one reader and validator of input data, for every entry point that reads data.

Before Spark starts, paths and parquet footers are checked (``check_input_path``, ``check_output_path``),
so a missing, empty, corrupt or misplaced input fails in a second; ``read_dataset`` reads with Spark and
says what Spark found wrong with the data, while leaving a storage failure a failure. The value checks
(nulls, NaN, infinities) fold into a pass the caller makes anyway.
"""

from __future__ import annotations

import os

from sparkmlops.core.errors import UserInputError
from sparkmlops.core.spark import will_use_connect
from sparkmlops.data import writing
from sparkmlops.data.digests import _digest_aggregates, _digest_from
from sparkmlops.data.paths import is_local_path, local_path
from sparkmlops.data.schema import FeatureSpec, is_numeric, sql_column

# ----------------------------------------------------------------------------------------------
# Paths and inputs (checked before Spark starts)


def check_input_path(path: str, what: str = "data_path", allow_empty: bool = False) -> str:
    """Fail fast, before Spark, on a local input that cannot be the data asked for; return it absolute.

    Checked without Spark (pyarrow reads only the parquet footers, so this costs milliseconds even for
    a folder of hundreds of files): the path exists and is readable; a folder holds data files; every
    parquet file is one (a corrupt or foreign file among good ones is named); the data has rows, unless
    ``allow_empty`` (a stream's folder); a CSV has a data row below its header. Remote URIs (s3a://,
    hdfs://, abfss://, ...) are left to Spark, whose error is reworded by ``read_dataset``.
    """
    if not path:
        raise UserInputError(f"{what} is empty: pass -P {what}=<parquet file or folder>.")
    if not is_local_path(path):
        return path
    resolved = os.path.abspath(os.path.expanduser(local_path(path)))
    if not os.path.exists(resolved):
        raise UserInputError(f"{what} '{path}' does not exist: pass an existing parquet file or folder "
                             "(absolute paths are safest with mlflow run).")
    if not os.access(resolved, os.R_OK) or (os.path.isdir(resolved) and not os.access(resolved, os.X_OK)):
        raise UserInputError(f"{what} '{path}' is not readable by this user: fix its permissions.")
    files = data_files(resolved)
    if os.path.isdir(resolved) and not files:
        raise UserInputError(f"{what} '{path}' is an empty folder: point it at a folder with parquet files.")
    if data_format(path) == "csv":
        _check_csv_files(path, what, files, allow_empty)
    else:
        _check_parquet_files(path, what, resolved, files, allow_empty)
    return resolved


def data_files(path: str) -> list[str]:
    """The files Spark reads under ``path``: all but hidden ones (``.*``, ``_*``: _SUCCESS, .crc, staging
    folders), recursively (partition folders such as ``year=2019``)."""
    if not os.path.isdir(path):
        return [path]
    found = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [os.path.join(root, n) for n in sorted(names) if not n.startswith((".", "_"))]
    return found


def _check_parquet_files(path: str, what: str, resolved: str, files: list[str], allow_empty: bool) -> None:
    import pyarrow.parquet as pq

    rows, bad, nanos = 0, [], []
    for name in files:
        try:
            metadata = pq.read_metadata(name)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a file that is not parquet
            bad.append((name, " ".join(str(exc).split())[:120] or type(exc).__name__))
            continue
        rows += metadata.num_rows
        if not nanos:
            nanos = _nanosecond_timestamps(metadata)
    if nanos:
        raise UserInputError(
            f"{what} '{path}' stores {', '.join(nanos)} as nanosecond timestamps (pandas' default), which Spark "
            "cannot read at all: write it again with df.to_parquet(path, coerce_timestamps='us', "
            "allow_truncated_timestamps=True), or drop the column."
        )
    if bad and len(bad) == len(files):
        shown = ", ".join(os.path.relpath(n, resolved) if n != resolved else os.path.basename(n) for n, _ in bad[:3])
        raise UserInputError(f"{what} '{path}' has no parquet files ({shown}{', ...' if len(bad) > 3 else ''} "
                             f"cannot be read as parquet: {bad[0][1]}): point it at parquet data, or a .csv file.")
    if bad:
        names = ", ".join(os.path.relpath(n, resolved) for n, _ in bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise UserInputError(f"{what} '{path}': {len(bad)} of {len(files)} files are not readable parquet "
                             f"({names}: {bad[0][1]}): remove or replace them; nothing was read.")
    if not rows and not allow_empty:
        raise UserInputError(f"{what} '{path}' has no rows (its parquet files hold 0 rows): check the job that "
                             "wrote it.")


def _nanosecond_timestamps(metadata) -> list[str]:
    """The columns of a parquet footer stored as TIMESTAMP(NANOS): Spark refuses the whole file for them. (Not
    Spark's own INT96 timestamps, which pyarrow reads as nanoseconds too.)"""
    import json

    columns = (metadata.schema.column(i) for i in range(len(metadata.schema)))
    return [
        column.path
        for column in columns
        if column.logical_type.type == "TIMESTAMP"
        and json.loads(column.logical_type.to_json()).get("timeUnit") == "nanoseconds"
    ]


def parquet_file_columns(path: str):
    """(file, {column: "string" | "numeric" | other type}) for each parquet file under a local ``path``,
    from its footer (no Spark)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def kind(arrow_type) -> str:
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return "string"
        if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
            return "numeric"
        return str(arrow_type)

    for name in data_files(path):
        schema = pq.read_schema(name)
        yield name, {field.name: kind(field.type) for field in schema}


def _check_csv_files(path: str, what: str, files: list[str], allow_empty: bool) -> None:
    for name in files:
        try:
            with open(name, "rb") as f:
                lines = [line for _, line in zip(range(2), (ln for ln in f if ln.strip()))]
        except OSError as exc:
            raise UserInputError(f"{what} '{path}' cannot be read: {exc}") from None
        if not lines:
            raise UserInputError(f"{what} '{path}': {os.path.basename(name)} is empty, not a CSV with a header.")
        if len(lines) < 2 and not allow_empty:
            raise UserInputError(f"{what} '{path}' has only a header and no rows: check the job that wrote it.")


def check_output_path(output_path: str, mode: str, input_path: str = "") -> None:
    """Before any work: with mode=error, refuse a local output that exists already; refuse an output
    whose parent is a file, and one inside (or holding) the input, which the job would read back. Over
    Spark Connect, refuse an output the client cannot move into place (data.writing). A stream
    (mode=append) writes through Spark's own sink, so only the path checks apply to it."""
    if mode != "append" and will_use_connect() and not is_local_path(output_path):
        raise UserInputError(
            f"output '{output_path}' cannot be written over Spark Connect: the output is moved into place with "
            "an atomic rename, which needs the path on a filesystem this client can rename on (a Connect client "
            "has no JVM for Hadoop's filesystems, and object stores cannot move folders). Write to a local path "
            "the server shares, or use a classic session (-P spark_master=spark://..., PYSPARK_SUBMIT_ARGS or "
            "spark-submit).")
    if not is_local_path(output_path):
        return
    target = os.path.abspath(os.path.expanduser(local_path(output_path)))
    if mode != "append":
        writing.restore_interrupted_overwrite(writing.LocalFileSystem(target))
    if mode == "error" and os.path.exists(target):
        raise UserInputError(f"output '{output_path}' already exists: choose a new path or pass -P mode=overwrite.")
    parent = os.path.dirname(target)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise UserInputError(f"output '{output_path}' cannot be created: '{parent}' is a file, not a folder.")
    if input_path and is_local_path(input_path):
        source = os.path.abspath(os.path.expanduser(local_path(input_path)))
        if target == source:
            raise UserInputError("output_path is the input_path: write the scores somewhere else.")
        if target.startswith(source.rstrip(os.sep) + os.sep):
            raise UserInputError(f"output '{output_path}' is inside the input folder '{input_path}': its files "
                                 "would be read as input next time; write the scores somewhere else.")
        if source.startswith(target.rstrip(os.sep) + os.sep):
            raise UserInputError(f"output '{output_path}' holds the input '{input_path}': writing it would "
                                 "replace the input; write the scores somewhere else.")


def data_format(path: str) -> str:
    return "csv" if path.rstrip("/").lower().endswith(".csv") else "parquet"


# What Spark says when the data itself, or its path, is wrong: bad input the user can fix (exit 2).
# Anything else while reading (a storage timeout, a refused connection, a missing filesystem jar) is
# a failure (exit 1) and keeps Spark's own error.
BAD_DATA_SIGNS = ("PATH_NOT_FOUND", "UNABLE_TO_INFER_SCHEMA", "CANNOT_READ_FILE_FOOTER", "is not a Parquet file",
                  "expected magic number")


def read_dataset(spark, path: str):
    """Read a parquet (default) or CSV (``*.csv``) file or folder; bad files become one clear line."""
    fmt = data_format(path)
    try:
        if fmt == "csv":
            df = spark.read.csv(path, header=True, inferSchema=True)
        else:
            df = spark.read.parquet(path)
        df.schema  # forces schema resolution, where unreadable files fail
    except Exception as exc:  # Py4J errors are not PySparkExceptions
        text = str(exc)
        if not any(sign in text for sign in BAD_DATA_SIGNS):
            raise
        sign_line = next((line for line in text.splitlines() if any(s in line for s in BAD_DATA_SIGNS)), text)
        raise UserInputError(f"could not read '{path}' as {fmt}: {sign_line.strip()[:300]}") from exc
    return df


# ----------------------------------------------------------------------------------------------
# Validation of a training frame


def _non_finite(column: str) -> str:
    value = f"CAST({sql_column(column)} AS DOUBLE)"
    return f"(isnan({value}) OR abs({value}) = CAST('Infinity' AS DOUBLE))"


def value_aggregates(numeric_cols: list[str], string_cols: list[str] = ()) -> list:
    """Aggregates counting, per numeric column, nulls, NaN and ±inf values, and per string (or boolean) column
    nulls; fold them into a pass the caller makes anyway (``value_problems`` reads the result)."""
    # SQL text, one driver round trip per aggregate: Column objects cost one per call on each column,
    # thousands for a wide table.
    from pyspark.sql import functions as F

    def count(condition: str, alias: str):
        return F.expr(f"sum(CAST(coalesce({condition}, false) AS BIGINT)) AS {sql_column(alias)}")

    aggregates = [F.expr("count(1) AS __rows")]
    for c in numeric_cols:
        value = f"CAST({sql_column(c)} AS DOUBLE)"
        aggregates += [count(f"{sql_column(c)} IS NULL", f"null::{c}"),
                       count(f"isnan({value})", f"nan::{c}"),
                       count(f"abs({value}) = CAST('Infinity' AS DOUBLE)", f"inf::{c}")]
    aggregates += [count(f"{sql_column(c)} IS NULL", f"null::{c}") for c in string_cols]
    return aggregates


def value_problems(row: dict, numeric_cols: list[str], string_cols: list[str] = ()) -> dict[str, dict]:
    """{"nulls": {col: n}, "non_finite": {col: n NaN or ±inf}, "nan": {col: n}, "infinite": {col: n},
    "missing": {col: n null or NaN}, "all_missing": [numeric cols missing in every row],
    "all_null": [string cols null in every row]}."""
    rows = row["__rows"]
    nulls = {c: row[f"null::{c}"] for c in numeric_cols if row[f"null::{c}"]}
    nan = {c: row[f"nan::{c}"] for c in numeric_cols if row[f"nan::{c}"]}
    infinite = {c: row[f"inf::{c}"] for c in numeric_cols if row[f"inf::{c}"]}
    missing = {c: nulls.get(c, 0) + nan.get(c, 0) for c in numeric_cols if c in nulls or c in nan}
    return {
        "nulls": nulls,
        "non_finite": {c: nan.get(c, 0) + infinite.get(c, 0) for c in numeric_cols if c in nan or c in infinite},
        "nan": nan,
        "infinite": infinite,
        "missing": missing,
        "all_missing": [c for c in numeric_cols if rows and missing.get(c) == rows],
        "all_null": [c for c in string_cols if rows and row[f"null::{c}"] == rows],
    }


def describe_value_problems(problems: dict, what: str) -> str:
    """One line for ``value_problems``' numeric findings, or "" when there are none."""
    parts = []
    if problems["nulls"]:
        parts.append("nulls in " + ", ".join(f"{c} ({n} rows)" for c, n in sorted(problems["nulls"].items())))
    if problems["non_finite"]:
        parts.append("NaN or infinite values in " + ", ".join(f"{c} ({n} rows)"
                                                               for c, n in sorted(problems["non_finite"].items())))
    if not parts:
        return ""
    return (f"{what} has {' and '.join(parts)}: impute them (as the book's cleaned data does, with *_na flags) "
            "or drop those rows.")


def describe_infinities(infinite: dict[str, int], what: str) -> str:
    """One line for ±inf values in a model's features where nulls and NaN are imputed, or ""."""
    if not infinite:
        return ""
    listed = ", ".join(f"{c} ({n} rows)" for c, n in sorted(infinite.items()))
    return (f"{what} has infinite values in {listed}: the model imputes nulls and NaN but cannot place an infinity; "
            "replace them with null or drop those rows.")


def check_feature_values(df, numeric_cols: list[str], what: str = "input", imputes_missing: bool = False) -> None:
    """One pass: refuse ±inf in the numeric features a model needs (a tree would split on infinities), and
    nulls and NaN too unless the model imputes them (Spark's VectorAssembler fails on them mid-job)."""
    if not numeric_cols:
        return
    problems = value_problems(df.agg(*value_aggregates(numeric_cols)).first().asDict(), numeric_cols)
    message = describe_infinities(problems["infinite"], what) if imputes_missing else describe_value_problems(
        problems, what)
    if message:
        raise UserInputError(message)


def profile_for_training(df, spec: FeatureSpec) -> dict:
    """One pass over the data: rows, null labels, label minimum, nulls, NaN and ±inf per numeric feature,
    nulls per string and boolean feature, digest."""
    from pyspark.sql import functions as F

    label = sql_column(spec.label_col)
    non_finite = (f"sum(CAST(coalesce({_non_finite(spec.label_col)}, false) AS BIGINT))"
                  if is_numeric(spec.label_type) else "0")
    aggregates = [F.expr(f"count({label}) AS __label_non_null"), F.expr(f"min({label}) AS __label_min"),
                  F.expr(f"{non_finite} AS __label_nonfinite")]
    aggregates += value_aggregates(spec.numeric_cols, spec.categorical_cols + spec.boolean_cols)
    row = df.agg(*_digest_aggregates(df), *aggregates).first().asDict()
    problems = value_problems(row, spec.numeric_cols, spec.categorical_cols + spec.boolean_cols)
    return {
        "rows": row["__n"],
        "null_labels": row["__n"] - row["__label_non_null"],
        "non_finite_labels": row["__label_nonfinite"],
        "label_min": row["__label_min"],
        "numeric_nulls": problems["nulls"],
        "non_finite": problems["non_finite"],
        "infinite": problems["infinite"],
        "missing": problems["missing"],  # numeric column -> rows null or NaN (what the pipeline imputes)
        "all_missing": problems["all_missing"],
        "boolean_nulls": {c: row[f"null::{c}"] for c in spec.boolean_cols if row[f"null::{c}"]},
        "string_nulls": {c: row[f"null::{c}"] for c in spec.categorical_cols if row[f"null::{c}"]},
        "all_null_strings": problems["all_null"],
        "digest": _digest_from(df, row),  # a digests.ContentDigest
    }
