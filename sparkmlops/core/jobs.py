"""The steps every entry point shares, in one place: a tracked MLflow run, its parameters, the checks
that need no Spark, the environment tags, the SparkSession, then the job itself."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import os
import sys
from collections.abc import Callable

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

# Entry points that need a classic SparkContext (a JVM on the driver side), which a Spark Connect
# client does not have, and what they use it for.
NEEDS_SPARK_CONTEXT = {
    "tune_hyperopt": "SparkTrials, broadcasts and RDD partition counts",
    "tune_optuna": "broadcasts and RDD partition counts",
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
            "PYSPARK_SUBMIT_ARGS or spark-submit --master)."
        )


def _short_model(uri: str) -> str:
    """runs:/<32 hex>/model -> runs:/<first 8>; registry and other URIs stay as they are."""
    if uri.startswith("runs:/"):
        return "runs:/" + uri[len("runs:/") :].split("/", 1)[0][:8]
    return uri


def _model_run_name(name: str, p: dict) -> str:
    return f"{name} {_short_model(p.get('model_uri', ''))}".strip()


# What each entry point's run is called in the MLflow UI: the entry point and its main parameters, the
# way the book names its run ("random-forest"), e.g. "train rf 100x5".
RUN_NAMES: dict[str, Callable[[str, dict], str]] = {
    "train": lambda n, p: (
        f"{n} {p['model_type']} {p['num_trees']}x{p['max_depth']}" + (" log" if p.get("log_label") else "")
    ),
    "train_sklearn": lambda n, p: (
        f"{n} {p['model_type']} {p['num_trees']}x{p['max_depth']}" + (" log" if p.get("log_label") else "")
    ),
    "train_per_group": lambda n, p: f"{n} {p['model_type']} by {p['group_col']}",
    "tune_hyperopt": lambda n, p: f"{n} {p['engine']} {p['max_evals']} trials",
    "tune_optuna": lambda n, p: f"{n} {p['engine']} {p['max_evals']} trials",
    "tune_grid": lambda n, p: f"{n} {p['cv']}-fold {p['metric']}",
    "generate_data": lambda n, p: f"{n} {p['dataset']} {p['n_rows']} rows" + (" drift" if p.get("drift") else ""),
    "score_batch": _model_run_name,
    "score_stream": _model_run_name,
    "score_pandas_udf": _model_run_name,
    "export_onnx": _model_run_name,
    "score_per_group": lambda n, p: f"{n} {p['run_id'][:8]}",
    "promote": lambda n, p: (
        f"{n} {p['model_name']} {'v' + p['version'] if p['version'].isdigit() else p['version'] or 'newest'}"
        + (" force" if p.get("force") else "")
    ),
    "check_drift": lambda n, p: f"{n} {os.path.basename(str(p['current_path']).rstrip('/'))}",
    "reproduce": lambda n, p: f"{n} {p['run_id'][:8]}",
}


def run_name(name: str, options: dict) -> str:
    """The UI name of entry point ``name``'s run with these parameters (``name`` alone if unknown)."""
    try:
        return " ".join(RUN_NAMES[name](name, options).split())[:250]
    except (KeyError, TypeError, AttributeError):
        return name


# Modules most jobs import once Spark is up, imported instead while the JVM starts (each only if it is
# still starting): the same work, done in time the process would otherwise spend waiting.
WARM_IMPORTS = ("pyspark.ml", "mlflow.models", "mlflow.spark", "pandas", "matplotlib.pyplot")


def run_entry_point(name: str, params, master: str, job: Callable, needs_spark: Callable = lambda checked: True):
    """Run ``job(spark, checked)`` inside a tracked run; ``checked`` is what ``params.validate()`` returns.

    Bad parameters, paths, models and a missing Java fail before a JVM starts, and the run ends FAILED.
    When ``needs_spark(checked)`` is false (a registry-only action), no JVM starts and ``spark`` is None.
    How the run ends, and with which exit code, is the outcome's (core.errors), tagged ``exit_code``.

    Once the parameters pass, the SparkSession starts in a background thread while the run is created
    and its parameters and tags logged (a JVM's start and MLflow's store are both seconds of waiting).
    """
    refusal, checked = None, None
    try:
        check_master(master)
        check_connect_support(name, master)
        declare_master(master)
        checked = params.validate()
    except BaseException as exc:  # bad input, a store that is down, Ctrl-C: all end the run (below) as usual
        refusal = exc
    starting = None
    if refusal is None and needs_spark(checked):
        starting = _start_in_background(get_spark, name, master=master)
    with tracking.tracked_run(run_name=run_name(name, params.as_dict())):
        tracking.log_params(params.as_dict())
        # entry_point: what `reproduce` re-runs (also for `python <script>.py` runs, which MLflow does not tag)
        tracking.set_tags({**tracking.environment_tags(), "entry_point": name})
        if refusal is not None:
            raise refusal
        if starting is None:
            return job(None, checked)
        _import_while_waiting(starting)
        spark = starting.result()
        compat.activate_session(spark)  # created in another thread: not yet this thread's active session
        try:
            tracking.set_tags(master_tags(master, spark_master(spark)))
            return job(spark, checked)
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
