"""Every private MLflow and PySpark symbol the project relies on, and nothing else.

A version bump that moves or removes one fails here first: tests/core/test_layout.py resolves each
symbol below against the pinned versions. Code elsewhere calls these functions, never the private
names themselves.
"""

from __future__ import annotations


def jvm(spark):
    """The driver's py4j gateway view of the JVM (classic sessions only): ``SparkContext._jvm``."""
    return spark.sparkContext._jvm


def hadoop_configuration(spark):
    """The Hadoop configuration Spark's own readers and writers use: ``SparkContext._jsc``."""
    return spark.sparkContext._jsc.hadoopConfiguration()


def jvm_spark_context(spark_context):
    """The Scala SparkContext behind a Python one (its status store and listener bus, for benches)."""
    return spark_context._jsc.sc()


def java_array(spark, java_class, values: list):
    """A Java array of ``java_class`` holding ``values``, for a Java varargs parameter (py4j's
    ``JavaGateway.new_array`` through ``SparkContext._gateway``)."""
    array = spark.sparkContext._gateway.new_array(java_class, len(values))
    for i, value in enumerate(values):
        array[i] = value
    return array


def activate_session(spark) -> None:
    """Make ``spark`` the calling thread's active session, as the builder does for the thread that creates
    it: PySpark keeps the active session per thread (classic: the JVM's thread-local one, through
    ``SparkSession._activeSession`` and ``_jsparkSession``; Connect: ``_set_default_and_active_session``),
    and MLflow and pyspark.ml look it up with ``SparkSession.getActiveSession()``."""
    if type(spark).__module__.startswith("pyspark.sql.connect"):
        type(spark)._set_default_and_active_session(spark)
        return
    from pyspark.sql import SparkSession

    SparkSession._activeSession = spark
    spark._jvm.SparkSession.setActiveSession(spark._jsparkSession)


def spark_model_data_subpath() -> str:
    """The folder inside an MLflow spark-flavor model that holds the saved pipeline ("sparkml")."""
    from mlflow.spark import _SPARK_MODEL_PATH_SUB

    return _SPARK_MODEL_PATH_SUB


def save_spark_model_metadata(**kwargs) -> None:
    """MLflow's writer of a spark-flavor model's MLmodel, environment files and input example, for a
    pipeline whose files are already in place (what ``mlflow.spark.save_model`` does after saving)."""
    from mlflow.spark import _save_model_metadata

    _save_model_metadata(**kwargs)


def parse_serving_input(serving_input: str, signature):
    """The pandas frame MLflow's scoring server makes of a serving payload for a model with this
    signature (``mlflow.pyfunc.scoring_server._parse_json_data``), without loading the model."""
    from mlflow.models import Model
    from mlflow.pyfunc.scoring_server import _parse_json_data

    return _parse_json_data(serving_input, Model(signature=signature), signature.inputs).data


def load_mlflow_project(project_dir: str):
    """MLflow's own reading of an MLproject file (entry points, parameters, commands) as ``mlflow run``
    reads it."""
    from mlflow.projects._project_spec import load_project

    return load_project(project_dir)


def is_generated_run_name(name: str) -> bool:
    """True when ``name`` is one MLflow itself gives an unnamed run (``mlflow run`` without --run-name):
    ``<predicate>-<noun>-<number>`` from the word lists of ``mlflow.utils.name_utils``
    (``_GENERATOR_PREDICATES``, ``_GENERATOR_NOUNS``), at most 20 characters."""
    from mlflow.utils.name_utils import _GENERATOR_NOUNS, _GENERATOR_PREDICATES

    parts = name.split("-")
    if len(parts) != 3 or len(name) > 20 or not parts[2].isdigit() or int(parts[2]) > 1000:
        return False
    return parts[0] in {w.lower() for w in _GENERATOR_PREDICATES} and parts[1] in {w.lower() for w in _GENERATOR_NOUNS}


def optuna_trial_run_id(trial) -> str:
    """The MLflow run of an Optuna trial stored by MLflow's MlflowStorage: the storage's trial id
    (``Trial._trial_id``, ``FrozenTrial._trial_id``), which Optuna keeps private."""
    return trial._trial_id


def warm_local_connect_server() -> dict | None:
    """The warm local Spark Connect server PySpark's ``spark.local.connect.reuse`` opt-in recorded:
    ``{"url", "pid"}``, or None when none is recorded. PySpark documents the opt-in and ``--stop`` but
    keeps its discovery file (``pyspark.sql.connect.local_server.Discovery``) experimental."""
    from pyspark.sql.connect.local_server import Discovery, LocalConnectServer

    with Discovery() as discovery:
        server = LocalConnectServer(discovery)
        return {"url": server.url, "pid": server.pid} if server.pid is not None else None


def stop_warm_local_connect_server() -> bool | None:
    """PySpark's ``--stop`` of that server: True when it signalled the recorded PID, which it does only while
    that PID is still the server; False when none was running; None when the process could not be
    inspected."""
    from pyspark.sql.connect.local_server import stop_local_connect_server

    return stop_local_connect_server()


# (module, attribute) of every private symbol above, for the test that imports each.
PRIVATE_SYMBOLS = (
    ("pyspark.sql", "SparkSession._activeSession"),
    ("pyspark.sql", "SparkSession._jsparkSession"),
    ("pyspark.sql.connect.session", "SparkSession._set_default_and_active_session"),
    ("pyspark", "SparkContext._jvm"),
    ("pyspark", "SparkContext._jsc"),
    ("pyspark", "SparkContext._gateway"),
    ("mlflow.spark", "_SPARK_MODEL_PATH_SUB"),
    ("mlflow.spark", "_save_model_metadata"),
    ("mlflow.pyfunc.scoring_server", "_parse_json_data"),
    ("mlflow.projects._project_spec", "load_project"),
    ("mlflow.utils.name_utils", "_GENERATOR_PREDICATES"),
    ("mlflow.utils.name_utils", "_GENERATOR_NOUNS"),
    ("optuna.trial", "Trial._trial_id"),
    ("optuna.trial", "FrozenTrial._trial_id"),
    ("pyspark.sql.connect.local_server", "Discovery"),
    ("pyspark.sql.connect.local_server", "LocalConnectServer.url"),
    ("pyspark.sql.connect.local_server", "stop_local_connect_server"),
)
