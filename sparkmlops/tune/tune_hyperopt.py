"""Hyperparameter search with Hyperopt, tracked as one parent run with one nested run per trial.

engine=mllib: TPE drives the Spark ML pipeline of `train`. Each trial is a distributed fit, trials run
one after another, all in one SparkSession on one cached split: no process, JVM or `mlflow run` per trial.
engine=sklearn: Hyperopt's SparkTrials runs single-node scikit-learn trials in parallel on the
executors; the data are broadcast once and each trial logs its own nested run from the worker.

The search only sees the training split (the rows `train` trains on), divided once more into fit and
validation rows. The test split (the rows `train` holds out) scores only the best configuration, refit
on the whole training split, so the parent run's rmse/r2/mae compare with a `train` run's.
"""

from __future__ import annotations

import functools
import time

from sparkmlops.core import tracking
from sparkmlops.core.entry_points import EntryPoint
from sparkmlops.core.spark import quiet_python_task_warnings, ship_package
from sparkmlops.fitting import sklearn_forest
from sparkmlops.tune.search import (
    SearchData,
    TrialContext,
    TuneParams,
    TuneResult,
    evaluate_mllib,
    family_parameter,
    loss_of,
    no_progress,
    search_and_log,
    sklearn_arrays,
    startup_trials,
    summary_report,
    where_trial_runs,
)


def hyperopt_space(space: dict, family: str = "") -> dict:
    """Hyperopt expressions of a space (tune.search's format). A family choice is an ``hp.choice`` of
    dicts, each holding its family's own parameters under labels unique to it ("rf.max_depth");
    ``flat_params`` turns a sample back into train's parameter names."""
    from hyperopt import hp
    from hyperopt.pyll import scope

    expressions = {}
    for name, (kind, *args) in space.items():
        label = family_parameter(family, name) if family else name
        if kind == "int":
            low, high, step = args
            expressions[name] = scope.int(hp.quniform(label, low, high, step))
        elif kind == "choice":
            expressions[name] = hp.choice(label, list(args[0]))
        elif kind == "family":
            expressions[name] = hp.choice(
                label, [{name: value, **hyperopt_space(own, family=value)} for value, own in args[0].items()]
            )
        else:
            raise ValueError(f"unknown search-space kind {kind!r} for {name}")
    return expressions


def flat_params(sample: dict) -> dict:
    """{"model_type": {"model_type": "gbt", "max_depth": 4}, "log_label": True} ->
    {"model_type": "gbt", "max_depth": 4, "log_label": True}."""
    flat = {}
    for name, value in sample.items():
        flat.update(flat_params(value) if isinstance(value, dict) else {name: value})
    return flat


def early_stop(trials_without_progress: int, trials, *args):
    """Hyperopt's early_stop_fn: tune.search.no_progress over the finished trials, in trial order."""
    from hyperopt import JOB_STATE_DONE, JOB_STATE_ERROR

    finished = sorted(
        (t for t in trials.trials if t["state"] in (JOB_STATE_DONE, JOB_STATE_ERROR)), key=lambda t: t["tid"]
    )
    losses = [
        (t.get("result") or {}).get("loss") if (t.get("result") or {}).get("status") == "ok" else None for t in finished
    ]
    return no_progress(losses, trials_without_progress), args


def run_trial(context: TrialContext, trial_params: dict, evaluate, run_name: str) -> dict:
    """Evaluate one configuration in its own nested run. A failure ends that run FAILED and is
    reported to Hyperopt as a failed trial: the search goes on."""
    from hyperopt import STATUS_FAIL, STATUS_OK

    started = time.perf_counter()
    result = {"params": trial_params, "run_id": None}
    try:
        with tracking.child_run(
            context.parent_run_id,
            context.experiment_id,
            run_name,
            {"engine": context.engine, **where_trial_runs()},
            context.tracking_uri,
        ) as child:
            result["run_id"] = child.run_id
            child.log_params(trial_params)
            metrics = evaluate(trial_params)
            loss = loss_of(metrics, context.metric)
            seconds = time.perf_counter() - started
            child.log_metrics({**{f"val_{k}": v for k, v in metrics.items()}, "loss": loss, "trial_seconds": seconds})
        return {**result, "status": STATUS_OK, "loss": loss, "metrics": metrics, "seconds": seconds}
    except Exception as exc:
        error = " ".join(str(exc).split())[:1000] or type(exc).__name__
        return {
            **result,
            "status": STATUS_FAIL,
            "error": f"{type(exc).__name__}: {error}",
            "seconds": time.perf_counter() - started,
        }


class MllibObjective:
    """Trials of the Spark pipeline on the driver's session, on cached fit and validation rows."""

    def __init__(self, data: SearchData, spec):
        self.data, self.spec = data, spec
        self.calls = 0

    def __call__(self, sample: dict) -> dict:
        trial_params = flat_params(sample)
        number = self.calls  # serial Trials: calls come in trial-id order
        self.calls += 1
        result = run_trial(
            self.data.context,
            trial_params,
            functools.partial(evaluate_mllib, self.data, self.spec),
            f"trial-{number:03d}",
        )
        shown = f"loss={result['loss']:.4f}" if result["status"] == "ok" else f"FAILED ({result['error']})"
        print(f"tune_hyperopt: trial {number}: {shown} {trial_params}", flush=True)
        return result


def sklearn_trial(context: TrialContext, data, seed: int, sample: dict) -> dict:
    """One scikit-learn trial; runs in a Spark Python worker under SparkTrials."""
    trial_params = flat_params(sample)

    x_fit, y_fit, x_valid, y_valid, spec = data.value

    def evaluate(params: dict) -> dict:
        model = sklearn_forest.build_forest(spec, sklearn_forest.ForestParams(**params), seed, n_jobs=1)
        model.fit(x_fit, y_fit)
        return sklearn_forest.answer_metrics(spec, y_valid, sklearn_forest.answers(model, x_valid, spec))

    return run_trial(context, trial_params, evaluate, "trial")


def _trial_rows(trials) -> list[dict]:
    rows = []
    for trial in trials.trials:
        result = trial.get("result") or {}
        status = result.get("status", "fail")
        rows.append(
            {
                "trial": trial["tid"],
                "status": "ok" if status == "ok" else "failed",
                "loss": result.get("loss"),
                "run_id": result.get("run_id"),
                "params": result.get("params", {}),
                "metrics": result.get("metrics", {}),
                "seconds": result.get("seconds"),
                "error": result.get("error", "" if status == "ok" else "cancelled or lost"),
            }
        )
    return rows


def _search(objective, space: dict, params: TuneParams, trials) -> tuple[list[dict], float]:
    import numpy as np
    from hyperopt import fmin, tpe
    from hyperopt.exceptions import AllTrialsFailed

    started = time.perf_counter()
    try:
        fmin(
            objective,
            hyperopt_space(space),
            algo=functools.partial(tpe.suggest, n_startup_jobs=startup_trials(params.max_evals)),
            max_evals=params.max_evals,
            timeout=params.timeout_seconds or None,
            trials=trials,
            early_stop_fn=functools.partial(early_stop, params.early_stop_trials) if params.early_stop_trials else None,
            rstate=np.random.default_rng(params.seed),
            show_progressbar=False,
            return_argmin=False,
        )
    except AllTrialsFailed:
        pass  # reported by log_search_summary, with the trials' errors
    return _trial_rows(trials), time.perf_counter() - started


def tune_and_log(spark, params: TuneParams, space: dict | None = None) -> TuneResult:
    """Run the search inside the active MLflow run (the parent) and log its story; ``space`` overrides
    the engine's default search space (same format as tune.search.mllib_space)."""
    return search_and_log(spark, params, space, "tune_hyperopt", run_trials)


def run_trials(spark, params: TuneParams, data: SearchData, spec) -> tuple[list[dict], float]:
    if params.engine == "mllib":
        from hyperopt import Trials

        return _search(MllibObjective(data, spec), data.space, params, Trials())
    from hyperopt import SparkTrials

    ship_package(spark)
    quiet_python_task_warnings()
    broadcast = spark.sparkContext.broadcast(sklearn_arrays(data, spec))  # the rows, sent once per executor
    try:
        objective = functools.partial(sklearn_trial, data.context, broadcast, params.seed)
        return _search(objective, data.space, params, SparkTrials(parallelism=params.parallelism, spark_session=spark))
    finally:
        broadcast.destroy()


TUNE_HYPEROPT = EntryPoint(
    name="tune_hyperopt",
    script="tune_hyperopt.py",
    summary="Tune the price model with Hyperopt and log the best one.",
    params=TuneParams,
    job=lambda spark, params, checked: tune_and_log(spark, checked),
    run_name=lambda p: f"tune_hyperopt {p.engine} {p.max_evals} trials",
    report=summary_report("tune_hyperopt"),
    needs_spark_context="SparkTrials, broadcasts and RDD partition counts",
)
