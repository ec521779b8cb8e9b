"""The steps every entry point shares, in one place: a tracked MLflow run, its parameters, the checks
that need no Spark, the environment tags, the SparkSession, then the job itself."""

from __future__ import annotations

from typing import Callable

from sparkmlops import tracking
from sparkmlops.spark import get_spark, spark_master


def run_entry_point(name: str, params, master: str, job: Callable, needs_spark: Callable = lambda checked: True):
    """Run ``job(spark, checked)`` inside a tracked run; ``checked`` is what ``params.validate()`` returns.

    Bad parameters, paths, models and a missing Java fail before a JVM starts, and the run ends FAILED.
    When ``needs_spark(checked)`` is false (a registry-only action), no JVM starts and ``spark`` is None.
    """
    with tracking.tracked_run(run_name=name):
        tracking.log_params(params.as_dict())
        tracking.set_tags(tracking.environment_tags())
        checked = params.validate()
        if not needs_spark(checked):
            return job(None, checked)
        spark = get_spark(name, master=master)
        tracking.set_tags({"spark_master": spark_master(spark)})
        return job(spark, checked)
