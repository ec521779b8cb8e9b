"""The steps every entry point shares, in one place: a tracked MLflow run, its parameters, the checks
that need no Spark, the environment tags, the SparkSession, then the job itself."""

from __future__ import annotations

from typing import Callable

from sparkmlops import tracking
from sparkmlops.errors import UserInputError
from sparkmlops.spark import check_master, connect_requested, end_connect_session, get_spark, spark_master

# Entry points that need a classic SparkContext (a JVM on the driver side), which a Spark Connect
# client does not have, and what they use it for.
NEEDS_SPARK_CONTEXT = {
    "tune_hyperopt": "SparkTrials, broadcasts and RDD partition counts",
    "tune_grid": "joblibspark and addPyFile",
    "score_pandas_udf": "addFile, addPyFile and accumulators",
    "train_per_group": "addPyFile for the per-group function",
    "score_per_group": "addPyFile for the per-group function",
}


def check_connect_support(name: str, master: str) -> None:
    if name in NEEDS_SPARK_CONTEXT and connect_requested(master):
        raise UserInputError(
            f"{name} needs a classic Spark session ({NEEDS_SPARK_CONTEXT[name]}), which Spark Connect does not "
            "provide: unset SPARK_REMOTE and use a master instead (-P spark_master=spark://<host>:7077, "
            "PYSPARK_SUBMIT_ARGS or spark-submit --master).")


def run_entry_point(name: str, params, master: str, job: Callable, needs_spark: Callable = lambda checked: True):
    """Run ``job(spark, checked)`` inside a tracked run; ``checked`` is what ``params.validate()`` returns.

    Bad parameters, paths, models and a missing Java fail before a JVM starts, and the run ends FAILED.
    When ``needs_spark(checked)`` is false (a registry-only action), no JVM starts and ``spark`` is None.
    """
    with tracking.tracked_run(run_name=name):
        tracking.log_params(params.as_dict())
        # entry_point: what `reproduce` re-runs (also for `python <script>.py` runs, which MLflow does not tag)
        tracking.set_tags({**tracking.environment_tags(), "entry_point": name})
        check_master(master)
        check_connect_support(name, master)
        checked = params.validate()
        if not needs_spark(checked):
            return job(None, checked)
        spark = get_spark(name, master=master)
        try:
            tracking.set_tags({"spark_master": spark_master(spark)})
            return job(spark, checked)
        finally:
            end_connect_session(spark)
