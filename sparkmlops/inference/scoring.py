"""Scoring with a logged model, checked and atomic: the steps every scoring entry point shares.

``score_input_to_output`` reads the input, checks it against the model's signature (columns, types,
then values) before any work, scores it with the caller's function and writes the input's columns plus
``prediction`` through a staging folder renamed into place only on success, logging what it did.
"""

from __future__ import annotations

import time

from sparkmlops.core import mlflow_models, tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.data import validation, writing
from sparkmlops.data.schema import sql_column
from sparkmlops.inference import resolve

OUTPUT_MODES = ("error", "overwrite")


def check_batch_paths(input_path: str, output_path: str, mode: str) -> None:
    """The checks every batch-scoring entry point makes on its paths, before Spark starts."""
    if mode not in OUTPUT_MODES:
        raise UserInputError(f"mode must be 'error' or 'overwrite', got '{mode}'.")
    if not output_path:
        raise UserInputError("output_path is empty: pass -P output_path=<folder to create>.")
    validation.check_input_path(input_path, "input_path")
    validation.check_output_path(output_path, mode, input_path)


def check_no_prediction_column(df, columns: tuple[str, ...] = ("prediction",)) -> None:
    taken = [c for c in columns if c in df.columns]
    if taken:
        raise UserInputError(
            f"the input already has a column named {', '.join(taken)}: rename or drop it, the scores are written there."
        )


def output_columns(model: resolve.ResolvedModel) -> tuple[str, ...]:
    """What a scorer adds to the input: ``prediction``, and a classifier's ``probability`` (one per class, in
    the order of the model's ``classes`` metadata)."""
    return ("prediction", "probability") if model.task == "classification" else ("prediction",)


def check_scorable(df, model: resolve.ResolvedModel, what: str = "input") -> None:
    """The model's columns are there with its types, and its numeric ones hold no ±inf, nor null or NaN
    unless the model imputes them (one pass; Spark models fail on them mid-write)."""
    resolve.check_input_against_signature(df, model, what)
    numeric = [c for c, kind in model.input_columns() if kind in ("double", "float", "long", "integer")]
    validation.check_feature_values(df, numeric, what, imputes_missing=model.imputes_missing)


def load_spark_model(model: resolve.ResolvedModel):
    return mlflow_models.load_spark_model(model.load_uri)


def score_frame(spark_model, df, model: resolve.ResolvedModel):
    """The input's columns plus ``output_columns(model)`` (the pipeline's intermediate columns are dropped;
    ``probability`` becomes an array of doubles)."""
    from pyspark.ml.functions import vector_to_array

    # Keep a copy of the model's columns: those cast for the model are written back with their own types.
    # (SQL text: a Column object costs one driver round trip per call on each column.)
    copies = {c: f"__input__{c}" for c, _ in model.input_columns() if c in df.columns}
    checked = resolve.check_input_against_signature(
        df.selectExpr("*", *[f"{sql_column(c)} AS {sql_column(alias)}" for c, alias in copies.items()]), model
    )
    scored = spark_model.transform(checked)
    cast = {c for c in copies if dict(checked.dtypes)[c] != dict(df.dtypes)[c]}
    outputs = output_columns(model)
    selected = scored.selectExpr(
        *[f"{sql_column(copies[c])} AS {sql_column(c)}" if c in cast else sql_column(c) for c in df.columns], *outputs
    )
    return selected.withColumn("probability", vector_to_array("probability")) if "probability" in outputs else selected


def score_input_to_output(spark, params, model: resolve.ResolvedModel, score, tags: dict | None = None) -> dict:
    """Read ``params.input_path``, score it with ``score(input_df) -> scored_df``, write the result
    atomically to ``params.output_path`` and log what was scored: the steps every batch scorer shares."""
    started = time.perf_counter()
    input_df = validation.read_dataset(spark, params.input_path)
    check_no_prediction_column(input_df, output_columns(model))
    digest, n_files = writing.files_digest(spark, params.input_path)
    scored = score(input_df)  # lazy: a scorer's own checks of the schema come first
    check_scorable(input_df, model)
    rows = writing.write_parquet_atomically(scored, params.output_path, mode=params.mode).rows
    seconds = time.perf_counter() - started
    summary = {
        "rows_scored": rows,
        "seconds": seconds,
        "rows_per_second": rows / seconds if seconds else 0.0,
        "input_files": n_files,
    }
    tracking.set_tags(
        {
            **model.tags(),
            "input_path": params.input_path,
            "input_digest": digest,
            "output_path": params.output_path,
            **(tags or {}),
        }
    )
    tracking.log_metrics(summary)
    tracking.log_spark_dataset(input_df, params.input_path, "scoring_input", "scoring", digest, num_rows=rows)
    return {**summary, "model": model.identity}
