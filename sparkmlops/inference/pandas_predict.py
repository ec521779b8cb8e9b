"""A python_function model on the executors: shipped once per application, loaded once per Python worker, fed
pandas batches cast to its signature."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import uuid
import zipfile

from sparkmlops.core import mlflow_models
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.spark import application_files_dir, ship_package
from sparkmlops.data import schema as data_schema
from sparkmlops.data.classes import class_scores
from sparkmlops.inference import resolve

# MLflow signature type -> the numpy dtype pandas gets it as.
_NUMPY_DTYPE = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "object",
}


_NUMERIC_OUTPUT = ("double", "float", "long", "integer")
_SPARK_LABEL_TYPES = ("string", "boolean", *data_schema.INTEGER_TYPES)


def output_fields(model: resolve.ResolvedModel):
    """The Spark fields a pyfunc model's scores are written as: ``prediction`` (double), or a classifier's
    class in the label's own type and ``probability`` (array of doubles, in the order of its classes)."""
    from pyspark.sql import types as T

    if model.task != "classification":
        return [T.StructField("prediction", T.DoubleType(), True)]
    label = {
        "string": T.StringType(),
        "boolean": T.BooleanType(),
        "tinyint": T.ByteType(),
        "smallint": T.ShortType(),
        "int": T.IntegerType(),
        "bigint": T.LongType(),
    }[model.metadata["label_type"]]
    return [T.StructField("prediction", label, True), T.StructField("probability", T.ArrayType(T.DoubleType()), True)]


def _is_one_number(spec) -> bool:
    """A column spec of a numeric type, or a numeric tensor of one value per row (scikit-learn's)."""
    shape = getattr(spec, "shape", None)
    if shape is not None:  # TensorSpec
        return spec.type.kind in "fiu" and tuple(shape) in ((-1,), (-1, 1))
    return getattr(spec.type, "name", "") in _NUMERIC_OUTPUT


def resolve_pyfunc_model(model_uri: str) -> resolve.ResolvedModel:
    """A python_function model with an input signature and one numeric output; Spark models refused."""
    model = resolve.resolve_model(model_uri, require_flavor="python_function")
    if "spark" in model.flavors:
        raise UserInputError(
            f"model '{model_uri}' is a Spark ML model: score it with score_batch (a pandas UDF "
            "would need a SparkSession inside every task)."
        )
    check_pyfunc_model(model)
    return model


def check_pyfunc_model(model: resolve.ResolvedModel) -> None:
    """A python_function model with an input signature and one numeric output (or a classifier's class and
    probabilities, as export_onnx logs them), or one clear line."""
    if "python_function" not in model.flavors:
        raise UserInputError(
            f"model '{model.uri}' has no python_function flavor (its flavors: "
            f"{', '.join(model.flavors)}): pass a Spark model or any pyfunc model."
        )
    model.input_columns()  # refuses a model without an input signature
    if model.task == "classification":
        names = [spec.name for spec in model.signature.outputs.inputs] if model.signature.outputs else []
        # train_sklearn's classifier answers its classes only: batch_predictor asks it for probabilities too
        answers_both = names == ["prediction", "probability"] or "sklearn" in model.flavors
        if not model.classes or model.metadata.get("label_type") not in _SPARK_LABEL_TYPES or not answers_both:
            raise UserInputError(
                f"model '{model.uri}' says it classifies (MLmodel metadata task) but lacks its classes, a label_type "
                f"({', '.join(_SPARK_LABEL_TYPES)}) or the outputs prediction and probability in its signature "
                f"(it has: {', '.join(names) or 'none'}): score a classifier exported by export_onnx or logged by "
                "train_sklearn."
            )
        return
    outputs = model.signature.outputs
    if outputs is not None and outputs.inputs:
        if len(outputs.inputs) != 1 or not _is_one_number(outputs.inputs[0]):
            raise UserInputError(
                f"model '{model.uri}' does not predict one number per row (its output: "
                f"{outputs}): scoring writes one numeric prediction column."
            )


def pandas_casts(df, model: resolve.ResolvedModel) -> dict[str, str]:
    """The model's input columns whose Spark type is not the signature's, with the dtype to cast to in
    pandas (checked against the signature first: missing or mistyped columns fail before any job)."""
    resolve.check_input_against_signature(df, model)
    spark_types = dict(df.dtypes)
    return {
        name: _NUMPY_DTYPE[kind]
        for name, kind in model.input_columns()
        if kind in _NUMPY_DTYPE and spark_types[name] != resolve.SPARK_TYPE[kind]
    }


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


def as_scores(output, rows: int, classifier: bool) -> dict:
    """A model's output as the columns scorers write: ``prediction`` (float64), or a classifier's
    ``prediction`` (its classes as they are) and ``probability`` (one list of floats per row)."""
    import pandas as pd

    if not classifier:
        return {"prediction": as_prediction(output, rows)}
    if not isinstance(output, pd.DataFrame) or not {"prediction", "probability"} <= set(output.columns):
        raise ValueError("the classifier returned no prediction and probability columns")
    if len(output) != rows:
        raise ValueError(f"the model returned {len(output)} predictions for {rows} rows")
    probability = [[float(p) for p in row] for row in output["probability"]]
    return {"prediction": output["prediction"].to_numpy(), "probability": probability}


_LOADED: dict[str, object] = {}  # per Python worker process: shipped folder name -> loaded model


def ship_model(spark, model: resolve.ResolvedModel) -> str:
    """Download the model once on the driver and ship it to every executor as one zip file (a cluster
    master refuses addFile of a local folder); return its name."""

    name = f"sparkmlops-model-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="sparkmlops-ship-") as download:
        # The returned folder holds MLmodel: for runs:/<id>/model it is a subfolder of dst_path, named "model".
        downloaded = mlflow_models.download_artifacts(artifact_uri=model.load_uri, dst_path=download)
        # The zip must outlive this call (executors fetch it while the application runs): Spark's own folder.
        archive = shutil.make_archive(str(application_files_dir(spark) / name), "zip", downloaded)
    spark.sparkContext.addFile(archive)
    return name


def shipped_model_dir(name: str) -> str:
    """The shipped model's folder on this executor, unzipped once per executor (atomically, as several
    Python workers may race)."""

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


def scores_from_estimator(flavors: dict) -> bool:
    """Whether a model is scored through its scikit-learn estimator (pyfunc ``predict`` is the estimator's)."""
    return "sklearn" in flavors and flavors.get("python_function", {}).get("predict_fn", "predict") == "predict"


def estimator_class_scores(estimator, classes: list, rows):
    """A scikit-learn classifier's answer as scorers write it: the most probable class of ``classes`` (the
    MLmodel's, in the label's own values) and the probabilities in their order."""
    import numpy as np
    import pandas as pd

    probability = class_scores(estimator, rows, classes)
    return pd.DataFrame(
        {"prediction": np.asarray(classes)[probability.argmax(axis=1)], "probability": list(probability)}
    )


def batch_predictor(model):
    """The function to call on every batch. For a scikit-learn model it is the estimator's own
    ``predict`` (what its pyfunc calls), or for a classifier its probabilities and most probable class:
    the input was checked against the signature once on the driver and is cast per batch, so pyfunc's
    per-batch schema enforcement (~3 us/row) is skipped. Any other flavor goes through pyfunc ``predict``."""
    if scores_from_estimator(model.metadata.flavors):
        estimator = model.get_raw_model()
        metadata = model.metadata.metadata or {}
        if metadata.get("task") == "classification":
            return functools.partial(estimator_class_scores, estimator, metadata["classes"])
        return estimator.predict
    return model.predict


def load_shipped_model(name: str, loads=None):
    """The shipped model's batch predictor, loaded at most once per Python worker (``loads`` counts
    actual loads)."""
    predict = _LOADED.get(name)
    if predict is None:
        predict = batch_predictor(mlflow_models.load_pyfunc_model(shipped_model_dir(name)))
        _LOADED.clear()  # a long-lived worker keeps only the newest job's model
        _LOADED[name] = predict
        if loads is not None:
            loads.add(1)
    return predict


def predict_partition(
    name: str, columns: list[str], casts: dict[str, str], loads, batches, frames, classifier: bool = False
):
    """mapInPandas function: one task's Arrow batches in, the same rows plus the scores out."""
    predict = load_shipped_model(name, loads)  # once per task, before the first batch
    for frame in frames:
        batches.add(1)
        yield frame.assign(**as_scores(predict(model_features(frame, columns, casts)), len(frame), classifier))


def predict_series(
    name: str, columns: list[str], casts: dict[str, str], loads, batches, frames, classifier: bool = False
):
    """Scalar iterator pandas UDF body: one task's Arrow batches of the model's columns in, per batch one
    prediction Series (a classifier: a frame of prediction and probability) out."""
    import pandas as pd

    predict = load_shipped_model(name, loads)  # once per task, before the first batch
    for frame in frames:
        batches.add(1)
        scores = as_scores(predict(model_features(frame, columns, casts)), len(frame), classifier)
        yield pd.DataFrame(scores) if classifier else pd.Series(scores["prediction"])


def score_with_arrow_udf(spark, df, model: resolve.ResolvedModel, counters: dict | None = None):
    """``df`` plus ``prediction`` from a python_function model run on the executors by a scalar iterator
    pandas UDF: only the model's input columns go through Arrow to the Python workers (the others stay
    in the JVM and are zipped back with the predictions), the model is shipped once and loaded once per
    task. ``counters`` receives the accumulators ``model_loads`` and ``batches``."""
    from collections.abc import Iterator

    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    casts = pandas_casts(df, model)
    ship_package(spark)  # predict_series lives in this package
    name = ship_model(spark, model)
    loads, batches = spark.sparkContext.accumulator(0), spark.sparkContext.accumulator(0)
    if counters is not None:
        counters.update(model_loads=loads, batches=batches)
    columns = [c for c, _ in model.input_columns()]
    classifier = model.task == "classification"
    body = functools.partial(predict_series, name, columns, casts, loads, batches, classifier=classifier)

    def predict(frames):
        return body(frames)

    # The type hints that make it a scalar *iterator* UDF (called once per task with all its batches).
    returned = pd.DataFrame if classifier else pd.Series
    predict.__annotations__ = {"frames": Iterator[pd.DataFrame], "return": Iterator[returned]}
    fields = output_fields(model)
    udf = F.pandas_udf(predict, T.StructType(fields) if classifier else fields[0].dataType)
    scored = udf(F.struct(*[F.col(c) for c in columns]))
    if not classifier:
        return df.withColumn("prediction", scored)
    return df.withColumn("__scores", scored).select(
        *df.columns, *[F.col(f"__scores.{f.name}").alias(f.name) for f in fields]
    )
