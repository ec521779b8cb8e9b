"""The steps every entry point shares, in one place: a tracked MLflow run, its parameters, the checks
that need no Spark, the environment tags, the SparkSession, then the job itself."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import sys

from sparkmlops.core import compat, tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.spark import (
    check_master,
    connect_requested,
    declare_master,
    end_connect_session,
    get_spark,
    spark_master,
)


def check_connect_support(entry_point, master: str) -> None:
    """Refuse, before Spark starts, an entry point that needs a classic SparkContext over Spark Connect."""
    if entry_point.needs_spark_context and connect_requested(master):
        raise UserInputError(
            f"{entry_point.name} needs a classic Spark session ({entry_point.needs_spark_context}), which Spark "
            "Connect does not provide: unset SPARK_REMOTE and use a master instead "
            "(-P spark_master=spark://<host>:7077, PYSPARK_SUBMIT_ARGS or spark-submit --master)."
        )


def short_model_uri(uri: str) -> str:
    """runs:/<32 hex>/model -> runs:/<first 8>, for run names; registry and other URIs stay as they are."""
    if uri.startswith("runs:/"):
        return "runs:/" + uri[len("runs:/") :].split("/", 1)[0][:8]
    return uri


def run_name(entry_point, params) -> str:
    """The UI name of the entry point's run with these parameters: what its declaration says (the entry point
    and its main parameters, the way the book names its run, e.g. "train rf 100x5"), else its name."""
    try:
        return " ".join(entry_point.run_name(params).split())[:250]
    except (KeyError, TypeError, AttributeError, ValueError):
        return entry_point.name


# Modules most jobs import once Spark is up, imported instead while the JVM starts (each only if it is
# still starting): the same work, done in time the process would otherwise spend waiting.
WARM_IMPORTS = ("pyspark.ml", "mlflow.models", "mlflow.spark", "pandas", "matplotlib.pyplot")


def run_entry_point(entry_point, params, master: str):
    """Run ``entry_point``'s job with ``params`` inside a tracked run; the job gets what ``params.validate()``
    returns.

    Bad parameters, paths, models and a missing Java fail before a JVM starts, and the run ends FAILED.
    When the declaration's ``needs_spark(checked)`` is false (a registry-only action), no JVM starts and the
    job's ``spark`` is None. How the run ends, and with which exit code, is the outcome's (core.errors),
    tagged ``exit_code``.

    Once the parameters pass, the SparkSession starts in a background thread while the run is created
    and its parameters and tags logged (a JVM's start and MLflow's store are both seconds of waiting).
    """
    refusal, checked = None, None
    try:
        check_master(master)
        check_connect_support(entry_point, master)
        declare_master(master)
        checked = params.validate()
    except BaseException as exc:  # bad input, a store that is down, Ctrl-C: all end the run (below) as usual
        refusal = exc
    starting = None
    if refusal is None and entry_point.needs_spark(checked):
        starting = _start_in_background(get_spark, entry_point.name, master=master)
    with tracking.tracked_run(run_name=run_name(entry_point, params)):
        tracking.log_params(params.as_dict())
        # entry_point: what `reproduce` re-runs (also for `python <script>.py` runs, which MLflow does not tag)
        tracking.set_tags({**tracking.environment_tags(), "entry_point": entry_point.name})
        if refusal is not None:
            raise refusal
        if starting is None:
            return entry_point.job(None, params, checked)
        _import_while_waiting(starting)
        spark = starting.result()
        compat.activate_session(spark)  # created in another thread: not yet this thread's active session
        try:
            tracking.set_tags(master_tags(master, spark_master(spark)))
            return entry_point.job(spark, params, checked)
        finally:
            end_connect_session(spark)


def master_tags(requested: str, used: str) -> dict[str, str]:
    """The run's tags for the master Spark actually uses. A ``spark_master`` parameter that did not take
    effect (under spark-submit, or in a process whose session already runs, the running JVM's master
    wins) is said once on stderr and tagged ``spark_master_ignored``."""
    tags = {"spark_master": used}
    if requested and used.split(" (server master ", 1)[0] != requested:  # Connect: "<url> (server master ...)"
        print(
            f"warning: spark_master={requested} was not applied: this process's Spark session already runs "
            f"on {used} (spark-submit's --master, or a session started earlier, wins); the run uses {used}.",
            file=sys.stderr,
            flush=True,
        )
        tags["spark_master_ignored"] = requested
    return tags


def _start_in_background(function, *args, **kwargs) -> concurrent.futures.Future:
    # PySpark's SQL modules are imported here first: two threads importing the same modules at once
    # (the session's and the main thread's warm imports) could see each other's half-initialised modules.
    importlib.import_module("pyspark.sql")
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spark-start")
    try:
        return executor.submit(function, *args, **kwargs)
    finally:
        executor.shutdown(wait=False)


def _import_while_waiting(future) -> None:
    for module in WARM_IMPORTS:
        if future.done():
            return
        with contextlib.suppress(Exception):  # only a head start: the job imports what it needs itself
            importlib.import_module(module)
