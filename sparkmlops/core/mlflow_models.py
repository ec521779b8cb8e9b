"""Models in MLflow: logging each kind the project makes (Spark pipelines, scikit-learn, pyfunc,
XGBoost boosters), loading them back, and reading a model's metadata; Spark models also over Spark
Connect, where MLflow's own spark flavor needs a JVM the client does not have.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from sparkmlops.core import compat, environment
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.imports import lazy_module
from sparkmlops.core.spark import is_connect

mlflow = lazy_module("mlflow")

# The name of every model the project logs: runs:/<run_id>/model resolves to the run's logged model.
MODEL_NAME = "model"


# What a logged scikit-learn model needs to load and predict (its pinned requirements).
SKLEARN_RUNTIME_PACKAGES = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")

# The types beyond skops' defaults that the project's own scikit-learn models need (build_forest's random
# forest and histogram gradient boosting trees; tested). MLflow writes the trusted list into the MLmodel
# file and trusts it at load: taken from the model itself, it would trust whatever a malicious file holds.
SKOPS_TRUSTED_TYPES = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "numpy.dtype",  # SimpleImputer's fitted dtype: builds a dtype, runs no code
)


def model_info(model_uri: str):
    """MLflow's ModelInfo (flavors, signature, run) of ``model_uri``, read from its MLmodel file alone. The
    file is downloaded into a folder removed after: ``mlflow.models.get_model_info`` leaves its download in
    a temp folder for good."""
    from mlflow.models import Model

    if "://" not in model_uri and not model_uri.startswith(("runs:", "models:")) or model_uri.startswith("file:"):
        return Model.load(model_uri).get_model_info()  # a local folder: read in place
    logged = LOGGED_MODEL_URI.match(model_uri)
    # MLflow 3's logged-model URI (models:/m-<id>) takes no sub-path: the MLmodel is at its artifact location.
    location = mlflow.get_logged_model(logged.group(1)).artifact_location if logged else model_uri
    with tempfile.TemporaryDirectory(prefix="sparkmlops-mlmodel-") as download:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"{location.rstrip('/')}/MLmodel", dst_path=download)
        return Model.load(local).get_model_info()


LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]{32})/?$")


def download_artifacts(**kwargs) -> str:
    """mlflow.artifacts.download_artifacts: a local copy of a model or a run's artifact; its path."""
    return mlflow.artifacts.download_artifacts(**kwargs)


def load_pyfunc_model(model_uri: str):
    """The python_function model at ``model_uri``, after ``check_skops_trust`` of its MLmodel."""
    check_skops_trust(model_uri, model_info(model_uri).flavors)
    return mlflow.pyfunc.load_model(model_uri)


def python_model_of(pyfunc_model):
    """The PythonModel a pyfunc model wraps (an export's ``OnnxPipelineModel``), or None for another flavor."""
    try:
        return pyfunc_model.unwrap_python_model()
    except (mlflow.exceptions.MlflowException, AttributeError):
        return None


def answer_as_mlflow_serves(pyfunc_model, input_schema, body: bytes, content_type: str) -> tuple[int, bytes, str]:
    """(status, body, media type) that ``mlflow models serve`` answers to ``POST /invocations`` with ``body``:
    MLflow's own handler, its errors turned into responses as its server turns them."""
    from mlflow.pyfunc import scoring_server

    try:
        result = scoring_server.invocations(body, content_type or "", pyfunc_model, input_schema)
    except mlflow.exceptions.MlflowException as exc:
        return exc.get_http_status_code(), exc.serialize_as_json().encode(), "application/json"
    response = result.response
    return result.status, response.encode() if isinstance(response, str) else response, result.mimetype


def mlflow_version() -> str:
    return mlflow.version.VERSION


def check_skops_trust(model_uri: str, flavors: dict) -> None:
    """Refuse a scikit-learn model whose MLmodel tells MLflow to trust, when loading it, types beyond
    SKOPS_TRUSTED_TYPES: MLflow takes that list from the file itself, so a tampered file could make skops
    build any object, which is skops' way to run code."""
    trusted = (flavors.get("sklearn") or {}).get("skops_trusted_types") or []
    beyond = sorted(set(trusted) - set(SKOPS_TRUSTED_TYPES))
    if beyond:
        raise UserInputError(
            f"model '{model_uri}' asks to be loaded trusting types beyond the project's allow-list "
            f"({', '.join(beyond)}): a skops file can run code through them, so it is not loaded. "
            "Use a model logged by this project's trainers, or review it and load it yourself."
        )


def pyfunc_spark_udf(spark, model_uri: str, result_type: object = "double"):
    """MLflow's own Spark UDF of a python_function model, in this process's environment. Use it inside
    ``spark_udf_copies_removed``: MLflow keeps a copy of the model per UDF until the process exits."""
    return mlflow.pyfunc.spark_udf(spark, model_uri, result_type=result_type, env_manager="local")


@contextlib.contextmanager
def spark_udf_copies_removed():
    """Remove, when the block ends, the model copies ``mlflow.pyfunc.spark_udf`` made in it: MLflow downloads
    each UDF's model into ``<its per-process temp folder>/models`` and removes that folder only when the
    process exits, so a long-lived process (a notebook, a service) would keep one copy per call."""
    from mlflow.utils.file_utils import get_or_create_tmp_dir

    copies = Path(get_or_create_tmp_dir()) / "models"
    before = set(os.listdir(copies)) if copies.is_dir() else set()
    try:
        yield
    finally:
        for name in (set(os.listdir(copies)) if copies.is_dir() else set()) - before:
            shutil.rmtree(copies / name, ignore_errors=True)


def local_model_signature(model_dir: str):
    """The input/output signature of the MLflow model in a local folder (None without an MLmodel file or one)."""
    if not os.path.exists(os.path.join(model_dir, "MLmodel")):
        return None
    signature = mlflow.models.Model.load(model_dir).signature
    return signature if signature is not None and signature.inputs is not None else None


def classifier_signature(inputs, label_type: str):
    """A classifier pyfunc's signature: ``inputs``, and the outputs ``prediction`` (the label's type: string,
    boolean or an integer as long) and ``probability`` (an array of doubles, one per class)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    prediction = {"string": DataType.string, "boolean": DataType.boolean}.get(label_type, DataType.long)
    outputs = Schema([ColSpec(prediction, "prediction"), ColSpec(Array(DataType.double), "probability")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_pyfunc_model(**kwargs):
    """mlflow.pyfunc.log_model into the active run (a python_function model with its own code)."""
    return mlflow.pyfunc.log_model(**kwargs)


def log_spark_model(
    model,
    input_sample_df,
    output_sample_df,
    input_example_rows: int = 5,
    extra_packages: tuple[str, ...] = (),
    metadata: dict | None = None,
):
    """Log a fitted Spark model as the run's logged model ``model`` (MLflow 3: listed by
    search_logged_models, with the run's params; ``runs:/<run_id>/model`` resolves to it), with
    signature, input example and pinned requirements.

    ``mlflow.spark.log_model`` (MLflow 3.17) still writes the legacy run-artifact layout, so the model
    is logged with ``Model.log`` and the spark flavor's own writer. Over Spark Connect that writer cannot
    work (it copies the saved model through the client's JVM, and a Connect client has none): the model is
    saved by the server with its own writer and the folder logged in the same layout, so
    ``mlflow.spark.load_model`` loads it either way.

    The input example is checked for serving by ``check_serving_example`` before anything is logged,
    instead of MLflow's own check, which loads the saved copy back through Spark (a third of the logging
    time) only to warn when it fails.
    """
    from mlflow.models import infer_signature

    signature = infer_signature(input_sample_df, output_sample_df)
    input_example = input_sample_df.limit(input_example_rows).toPandas()
    check_serving_example(model, input_sample_df.sparkSession, input_example, signature)
    # Explicit pins: MLflow's requirement inference would start a second Spark JVM (30-60 s).
    pip_requirements = environment.model_pip_requirements(environment.MODEL_RUNTIME_PACKAGES + extra_packages)
    connect = is_connect(input_sample_df.sparkSession)
    return mlflow.models.Model.log(
        None,
        flavor=_ConnectSparkFlavor if connect else mlflow.spark,
        name=MODEL_NAME,
        spark_model=model,
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements,
        validate_serving_input=False,
        metadata=metadata,
    )


def check_serving_example(model, spark, input_example, signature) -> None:
    """What MLflow's serving-input validation proves, on the model in memory: the example, turned into
    the serving payload (``serving_input_example.json``) and parsed back as the scoring server parses it,
    matches the signature, and the model predicts it as it predicts the example itself (through
    ``createDataFrame`` and ``transform``, as the pyfunc flavor does). Raises if not: the model is not
    logged with an example that cannot be served."""
    from mlflow.models import convert_input_example_to_serving_input, validate_schema

    parsed = compat.parse_serving_input(convert_input_example_to_serving_input(input_example), signature)
    validate_schema(parsed, signature.inputs)

    import pandas as pd

    # One Spark job for both: the parsed payload's rows, then the example's.
    both = pd.concat([parsed, input_example[list(parsed.columns)]], ignore_index=True)
    predicted = [row[0] for row in model.transform(spark.createDataFrame(both)).select("prediction").collect()]
    served, direct = predicted[: len(parsed)], predicted[len(parsed) :]
    if served != direct or len(served) != len(input_example):
        raise RuntimeError(
            f"the model's input example does not survive serving: predicted {served} from the "
            f"serving payload, {direct} from the example itself."
        )


def connect_staging_dir() -> str:
    """Where a Spark Connect server writes a model for the client to log, and reads one the client
    downloaded: a folder both sides reach. The default (the client's temp dir) works when the server
    runs on the same machine; otherwise set SPARKMLOPS_CONNECT_STAGING_DIR to a shared mount."""
    return os.environ.get("SPARKMLOPS_CONNECT_STAGING_DIR") or tempfile.gettempdir()


class _ConnectSparkFlavor:
    """A flavor module for ``Model.log`` that writes mlflow.spark's layout without a JVM."""

    __name__ = "mlflow.spark"

    @staticmethod
    def save_model(path, mlflow_model, spark_model, signature=None, input_example=None, pip_requirements=None, **_):

        from pyspark.ml import PipelineModel

        if not isinstance(spark_model, PipelineModel):
            spark_model = PipelineModel([spark_model])
        staging = Path(connect_staging_dir()).resolve() / f"sparkmlops-model-{uuid.uuid4().hex[:12]}"
        try:
            spark_model.write().save(str(staging))  # runs on the server
            if not staging.is_dir():
                raise RuntimeError(
                    f"the Spark Connect server saved the model to {staging}, which this machine "
                    "cannot see: set SPARKMLOPS_CONNECT_STAGING_DIR to a folder both share."
                )
            shutil.move(str(staging), str(Path(path) / compat.spark_model_data_subpath()))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        # MLflow's own metadata writer for the spark flavor: the same MLmodel, env files and example.
        compat.save_spark_model_metadata(
            dst_dir=path,
            spark_model=spark_model,
            mlflow_model=mlflow_model,
            conda_env=None,
            code_paths=None,
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
        )


def load_spark_model(model_uri: str):
    """The Spark model at ``model_uri``. Over Spark Connect, the files are downloaded to a folder the
    server reads (see ``connect_staging_dir``) and loaded with the model's own reader."""
    from pyspark.sql.utils import is_remote

    if not is_remote():
        # Downloaded into a folder deleted once Spark has read the model (PipelineModel.load reads it all):
        # left to MLflow, a remote artifact store's copy stays in the temp dir.
        with tempfile.TemporaryDirectory(prefix="sparkmlops-model-") as download:
            return mlflow.spark.load_model(model_uri, dst_path=download)

    from mlflow.models import Model
    from pyspark.ml import PipelineModel

    local = Path(tempfile.mkdtemp(prefix="sparkmlops-model-", dir=connect_staging_dir())).resolve()
    try:
        mlflow.artifacts.download_artifacts(model_uri, dst_path=str(local))
        folder = next(p.parent for p in local.rglob("MLmodel"))
        data = Model.load(str(folder)).flavors["spark"]["model_data"]
        return PipelineModel.load(str(folder / data))  # the server reads the files and keeps the model
    finally:
        shutil.rmtree(local, ignore_errors=True)


def log_xgboost_booster(booster, names: list[str], artifact_dir: str = "xgboost") -> None:
    """The booster as XGBoost's JSON model plus the feature order it expects."""

    with tempfile.TemporaryDirectory() as tmp:
        booster.save_model(str(Path(tmp) / "booster.json"))
        (Path(tmp) / "feature_names.json").write_text(json.dumps(names, indent=1))
        mlflow.log_artifacts(tmp, artifact_dir)


def log_sklearn_model(model, input_sample, name: str = MODEL_NAME, run_id: str | None = None, metadata=None):
    """Log a fitted estimator with signature, input example, pinned requirements (skops format) and
    ``metadata`` (the MLmodel file's: task, classes...), to the active run or to ``run_id`` (from a Spark
    worker, where no run is active)."""
    import skops.io
    from mlflow.models import infer_signature

    # Checked before anything is logged: a type outside SKOPS_TRUSTED_TYPES is a model the project does not
    # make (a bug here), and a file MLflow would refuse to load.
    needed = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    outside = [t for t in needed if t not in SKOPS_TRUSTED_TYPES]
    if outside:
        raise RuntimeError(
            f"{type(model).__name__} holds types outside SKOPS_TRUSTED_TYPES, which MLflow would "
            f"not load: {', '.join(outside)}"
        )

    sample = input_sample.head(5)
    signature = infer_signature(input_sample, model.predict(input_sample))
    # Only the allowed types this model holds, not the whole list: its MLmodel trusts no more than it needs.
    return mlflow.sklearn.log_model(
        model,
        name=name,
        signature=signature,
        input_example=sample,
        pip_requirements=environment.model_pip_requirements(SKLEARN_RUNTIME_PACKAGES),
        skops_trusted_types=needed or None,
        run_id=run_id,
        metadata=metadata,
    )
