"""Distributed inference of single-node models (scikit-learn or any pyfunc) with pandas UDFs.

Two ways to run a python_function model on the executors, both fed by Arrow batches of ``batch_size``
rows (``spark.sql.execution.arrow.maxRecordsPerBatch``):

- ``map_in_pandas``: ``DataFrame.mapInPandas`` with a function that loads the model once per task (and
  keeps it for the next task of the same Python worker), then predicts batch after batch. The model's
  files are downloaded once on the driver and shipped with ``SparkContext.addFile``, so executors need
  no access to the tracking server.
- ``spark_udf``: ``mlflow.pyfunc.spark_udf(env_manager="local")``, MLflow's own wrapper.

Both give exactly the model's own ``predict`` on every row: the input columns are cast to the
signature's types in pandas, as the model was trained on them, and the output keeps the input's own
columns and types plus ``prediction``.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

from sparkmlops.core import choices, mlflow_models, tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.jobs import short_model_uri
from sparkmlops.core.spark import session_conf, ship_package
from sparkmlops.data import parameters
from sparkmlops.inference import resolve, scoring
from sparkmlops.inference.pandas_predict import (
    output_fields,
    pandas_casts,
    predict_partition,
    resolve_pyfunc_model,
    ship_model,
)

METHODS = {"map_in_pandas": "model loaded once per task", "spark_udf": "mlflow.pyfunc.spark_udf"}
MAX_BATCH_SIZE = 1_000_000
ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"


@dataclass(frozen=True)
class PandasUdfParams:
    """The `score_pandas_udf` entry point's parameters."""

    model_uri: str = parameters.model_uri()
    input_path: str = parameters.input_path()
    output_path: str = parameters.output_path()
    method: str = param("map_in_pandas", "", choices=METHODS)
    batch_size: int = param(10_000, "Rows per Arrow batch.")
    mode: str = parameters.output_mode()

    def validate(self) -> resolve.ResolvedModel:
        choices.check("method", self.method, METHODS)
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise UserInputError(
                f"batch_size must be between 1 and {MAX_BATCH_SIZE} rows per Arrow batch, got {self.batch_size}."
            )
        scoring.check_batch_paths(self.input_path, self.output_path, self.mode)
        model = resolve_pyfunc_model(self.model_uri)
        if self.method == "spark_udf" and model.task == "classification" and "sklearn" in model.flavors:
            raise UserInputError(
                f"model '{self.model_uri}' is a scikit-learn classifier, whose pyfunc (what spark_udf calls) "
                "answers the class only: pass -P method=map_in_pandas for the class and its probabilities."
            )
        return model

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# map_in_pandas: the model's files shipped with the job, loaded once per task


def score_map_in_pandas(spark, df, model: resolve.ResolvedModel, counters: dict | None = None):
    """``df`` plus the scores (``output_fields``), scored by ``mapInPandas``. ``counters`` receives the
    accumulators ``model_loads`` and ``batches`` (read them after an action)."""
    from pyspark.sql.types import StructType

    casts = pandas_casts(df, model)
    ship_package(spark)  # the function below lives in this package
    name = ship_model(spark, model)
    loads, batches = spark.sparkContext.accumulator(0), spark.sparkContext.accumulator(0)
    if counters is not None:
        counters.update(model_loads=loads, batches=batches)
    columns = [c for c, _ in model.input_columns()]
    schema = StructType(df.schema.fields + output_fields(model))
    classifier = model.task == "classification"
    predict = functools.partial(predict_partition, name, columns, casts, loads, batches, classifier=classifier)
    return df.mapInPandas(predict, schema)


# ----------------------------------------------------------------------------------------------
# spark_udf: MLflow's wrapper


def score_spark_udf(spark, df, model: resolve.ResolvedModel):
    """``df`` plus the scores (``output_fields``), scored by ``mlflow.pyfunc.spark_udf`` (same process
    environment); a classifier's as a struct of its prediction and probability columns."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    pandas_casts(df, model)  # the same up-front check; spark_udf enforces the signature's types itself
    fields = output_fields(model)
    classifier = model.task == "classification"
    udf = mlflow_models.pyfunc_spark_udf(
        spark, model.load_uri, result_type=StructType(fields) if classifier else "double"
    )
    # A struct argument reaches the model as a DataFrame with the struct's field names.
    features = F.struct(
        *[F.col(c).cast(resolve.SPARK_TYPE.get(kind, "string")).alias(c) for c, kind in model.input_columns()]
    )
    if not classifier:
        return df.withColumn("prediction", udf(features))
    return df.withColumn("__scores", udf(features)).select(
        *df.columns, *[F.col(f"__scores.{f.name}").alias(f.name) for f in fields]
    )


def score_with_pandas_udf(spark, params: PandasUdfParams, model: resolve.ResolvedModel) -> dict:
    """The `score_pandas_udf` job: checked input, atomic output, tracked like score_batch."""

    counters: dict = {}
    with session_conf(spark, {ARROW_BATCH_CONF: str(params.batch_size)}), mlflow_models.spark_udf_copies_removed():
        if params.method == "map_in_pandas":
            score = functools.partial(score_map_in_pandas, spark, model=model, counters=counters)
        else:
            score = functools.partial(score_spark_udf, spark, model=model)
        summary = scoring.score_input_to_output(
            spark, params, model, score, tags={"method": params.method, "batch_size": str(params.batch_size)}
        )
    if counters:
        extra = {"model_loads": counters["model_loads"].value, "arrow_batches": counters["batches"].value}
        tracking.log_metrics(extra)
        summary.update(extra)
    return summary


SCORE_PANDAS_UDF = EntryPoint(
    name="score_pandas_udf",
    script="score_pandas_udf.py",
    summary="Score a dataset with a pyfunc model in pandas UDFs.",
    params=PandasUdfParams,
    job=score_with_pandas_udf,
    run_name=lambda p: f"score_pandas_udf {short_model_uri(p.model_uri)}",
    report=lambda p, summary: (
        f"score_pandas_udf: {summary['rows_scored']} rows -> {p.output_path} in {summary['seconds']:.1f} s "
        f"({summary['rows_per_second']:.0f} rows/s, {p.method}), model {summary['model']}"
    ),
    needs_spark_context="addFile, addPyFile and accumulators",
)
