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
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass

from sparkmlops import models, scoring
from sparkmlops.errors import UserInputError

METHODS = ("map_in_pandas", "spark_udf")
MAX_BATCH_SIZE = 1_000_000
ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
# MLflow signature type -> the numpy dtype pandas gets it as.
_NUMPY_DTYPE = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32",
                "boolean": "bool", "string": "object"}
_NUMERIC_OUTPUT = ("double", "float", "long", "integer")


@dataclass(frozen=True)
class PandasUdfParams:
    """The `score_pandas_udf` entry point's parameters (names match MLproject)."""

    model_uri: str = ""
    input_path: str = ""
    output_path: str = ""
    method: str = "map_in_pandas"
    batch_size: int = 10_000
    mode: str = "error"

    def validate(self) -> models.ResolvedModel:
        if self.method not in METHODS:
            raise UserInputError(f"unknown method '{self.method}': use map_in_pandas (model loaded once per task) "
                                 "or spark_udf (mlflow.pyfunc.spark_udf).")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise UserInputError(f"batch_size must be between 1 and {MAX_BATCH_SIZE} rows per Arrow batch, "
                                 f"got {self.batch_size}.")
        scoring.check_batch_paths(self.input_path, self.output_path, self.mode)
        return resolve_pyfunc_model(self.model_uri)

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_pyfunc_model(model_uri: str) -> models.ResolvedModel:
    """A python_function model with an input signature and one numeric output; Spark models refused."""
    model = models.resolve_model(model_uri, require_flavor="python_function")
    if "spark" in model.flavors:
        raise UserInputError(f"model '{model_uri}' is a Spark ML model: score it with score_batch (a pandas UDF "
                             "would need a SparkSession inside every task).")
    model.input_columns()  # refuses a model without an input signature
    outputs = model.signature.outputs
    if outputs is not None and outputs.inputs:
        if len(outputs.inputs) != 1 or not _is_one_number(outputs.inputs[0]):
            raise UserInputError(f"model '{model_uri}' does not predict one number per row (its output: "
                                 f"{outputs}): score_pandas_udf writes a numeric prediction column.")
    return model


def _is_one_number(spec) -> bool:
    """A column spec of a numeric type, or a numeric tensor of one value per row (scikit-learn's)."""
    shape = getattr(spec, "shape", None)
    if shape is not None:  # TensorSpec
        return spec.type.kind in "fiu" and tuple(shape) in ((-1,), (-1, 1))
    return getattr(spec.type, "name", "") in _NUMERIC_OUTPUT


def pandas_casts(df, model: models.ResolvedModel) -> dict[str, str]:
    """The model's input columns whose Spark type is not the signature's, with the dtype to cast to in
    pandas (checked against the signature first: missing or mistyped columns fail before any job)."""
    models.check_input_against_signature(df, model)
    spark_types = dict(df.dtypes)
    return {name: _NUMPY_DTYPE[kind] for name, kind in model.input_columns()
            if kind in _NUMPY_DTYPE and spark_types[name] != models._SPARK_TYPE[kind]}


def model_features(batch, columns: list[str], casts: dict[str, str]):
    """The model's input frame from a pandas batch: its columns, in signature order, cast."""
    features = batch[columns]
    return features.astype(casts) if casts else features


def as_prediction(output, rows: int):
    """A model's output as one float64 array of ``rows`` values."""
    import numpy as np
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        if output.shape[1] != 1:
            raise ValueError(f"the model returned {output.shape[1]} columns, expected one prediction per row")
        output = output.iloc[:, 0]
    values = np.asarray(output, dtype="float64").reshape(-1)
    if len(values) != rows:
        raise ValueError(f"the model returned {len(values)} predictions for {rows} rows")
    return values


# ----------------------------------------------------------------------------------------------
# map_in_pandas: the model's files shipped with the job, loaded once per task

_LOADED: dict[str, object] = {}  # per Python worker process: shipped folder name -> loaded model


def ship_model(spark, model: models.ResolvedModel) -> str:
    """Download the model once on the driver and ship it to every executor as one zip file (a cluster
    master refuses addFile of a local folder); return its name."""
    import shutil

    import mlflow

    name = f"sparkmlops-model-{uuid.uuid4().hex[:12]}"
    local = os.path.join(tempfile.mkdtemp(prefix="sparkmlops-ship-"), name)
    # The returned folder holds MLmodel: for runs:/<id>/model it is a subfolder of dst_path, named "model".
    downloaded = mlflow.artifacts.download_artifacts(artifact_uri=model.load_uri, dst_path=local)
    spark.sparkContext.addFile(shutil.make_archive(local, "zip", downloaded))
    return name


def shipped_model_dir(name: str) -> str:
    """The shipped model's folder on this executor, unzipped once per executor (atomically, as several
    Python workers may race)."""
    import shutil
    import zipfile

    from pyspark import SparkFiles

    target = os.path.join(SparkFiles.getRootDirectory(), name)
    if not os.path.isdir(target):
        staging = tempfile.mkdtemp(prefix=f".{name}-", dir=SparkFiles.getRootDirectory())
        with zipfile.ZipFile(SparkFiles.get(f"{name}.zip")) as archive:
            archive.extractall(staging)
        try:
            os.rename(staging, target)
        except OSError:  # another worker got there first
            shutil.rmtree(staging, ignore_errors=True)
    return target


def batch_predictor(model):
    """The function to call on every batch. For a scikit-learn model it is the estimator's own
    ``predict`` (what its pyfunc calls): the input was checked against the signature once on the driver
    and is cast per batch, so pyfunc's per-batch schema enforcement (~3 us/row) is skipped. Any other
    flavor goes through pyfunc ``predict``."""
    flavor = model.metadata.flavors.get("python_function", {})
    if "sklearn" in model.metadata.flavors and flavor.get("predict_fn", "predict") == "predict":
        return model.get_raw_model().predict
    return model.predict


def load_shipped_model(name: str, loads=None):
    """The shipped model's batch predictor, loaded at most once per Python worker (``loads`` counts
    actual loads)."""
    predict = _LOADED.get(name)
    if predict is None:
        import mlflow

        predict = batch_predictor(mlflow.pyfunc.load_model(shipped_model_dir(name)))
        _LOADED.clear()  # a long-lived worker keeps only the newest job's model
        _LOADED[name] = predict
        if loads is not None:
            loads.add(1)
    return predict


def _predict_partition(name: str, columns: list[str], casts: dict[str, str], loads, batches, frames):
    """mapInPandas function: one task's Arrow batches in, the same rows plus ``prediction`` out."""
    predict = load_shipped_model(name, loads)  # once per task, before the first batch
    for frame in frames:
        batches.add(1)
        prediction = as_prediction(predict(model_features(frame, columns, casts)), len(frame))
        yield frame.assign(prediction=prediction)


def score_map_in_pandas(spark, df, model: models.ResolvedModel, counters: dict | None = None):
    """``df`` plus ``prediction``, scored by ``mapInPandas``. ``counters`` receives the accumulators
    ``model_loads`` and ``batches`` (read them after an action)."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    from sparkmlops.spark import ship_package

    casts = pandas_casts(df, model)
    ship_package(spark)  # the function below lives in this package
    name = ship_model(spark, model)
    loads, batches = spark.sparkContext.accumulator(0), spark.sparkContext.accumulator(0)
    if counters is not None:
        counters.update(model_loads=loads, batches=batches)
    columns = [c for c, _ in model.input_columns()]
    schema = StructType(df.schema.fields + [StructField("prediction", DoubleType(), True)])
    return df.mapInPandas(functools.partial(_predict_partition, name, columns, casts, loads, batches), schema)


# ----------------------------------------------------------------------------------------------
# spark_udf: MLflow's wrapper

def score_spark_udf(spark, df, model: models.ResolvedModel):
    """``df`` plus ``prediction``, scored by ``mlflow.pyfunc.spark_udf`` (same process environment)."""
    import mlflow
    from pyspark.sql import functions as F

    pandas_casts(df, model)  # the same up-front check; spark_udf enforces the signature's types itself
    udf = mlflow.pyfunc.spark_udf(spark, model.load_uri, result_type="double", env_manager="local")
    # A struct argument reaches the model as a DataFrame with the struct's field names.
    features = F.struct(*[F.col(c).cast(models._SPARK_TYPE.get(kind, "string")).alias(c)
                          for c, kind in model.input_columns()])
    return df.withColumn("prediction", udf(features))


def score_with_pandas_udf(spark, params: PandasUdfParams, model: models.ResolvedModel) -> dict:
    """The `score_pandas_udf` job: checked input, atomic output, tracked like score_batch."""
    from sparkmlops import tracking
    from sparkmlops.spark import session_conf

    counters: dict = {}
    with session_conf(spark, {ARROW_BATCH_CONF: str(params.batch_size)}):
        if params.method == "map_in_pandas":
            score = functools.partial(score_map_in_pandas, spark, model=model, counters=counters)
        else:
            score = functools.partial(score_spark_udf, spark, model=model)
        summary = scoring.score_input_to_output(spark, params, model, score,
                                                tags={"method": params.method, "batch_size": str(params.batch_size)})
    if counters:
        extra = {"model_loads": counters["model_loads"].value, "arrow_batches": counters["batches"].value}
        tracking.log_metrics(extra)
        summary.update(extra)
    return summary
