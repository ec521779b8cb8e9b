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
import math
import time
from dataclasses import asdict, dataclass, field

from sparkmlops.core import choices, plots, registry, tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.spark import quiet_python_task_warnings, ship_package
from sparkmlops.data import schema as data_schema
from sparkmlops.data import splits
from sparkmlops.models import metrics as model_metrics
from sparkmlops.models import sklearn_forest, spark_pipeline
from sparkmlops.models.search import (
    METRIC_SIGN,
    SearchFailed,
    check_search_params,
    refit_sklearn,
)

ENGINES = {"mllib": "Spark ML trials, one after another",
           "sklearn": "scikit-learn trials in parallel on the executors"}
VALIDATION_FRACTION = 0.2  # of the training split
MAX_STARTUP_TRIALS = 20  # TPE's default number of random trials before it models the loss


@dataclass(frozen=True)
class TuneParams:
    """The `tune_hyperopt` entry point's parameters (names match MLproject)."""

    data_path: str = ""
    label_col: str = data_schema.DEFAULT_LABEL
    max_evals: int = 16
    parallelism: int = 1
    engine: str = "mllib"
    metric: str = "rmse"
    seed: int = 42
    timeout_seconds: int = 0
    train_fraction: float = 0.8
    register_as: str = ""  # registered model name for the refit best model; empty = do not register

    def validate(self) -> "TuneParams":
        if self.max_evals < 1:
            raise UserInputError(f"max_evals must be >= 1 (the number of trials), got {self.max_evals}.")
        choices.check("engine", self.engine, ENGINES)
        check_search_params(self.label_col, self.parallelism, self.metric, self.train_fraction, self.data_path)
        if self.engine == "mllib" and self.parallelism != 1:
            raise UserInputError("parallelism applies to engine=sklearn: with engine=mllib every trial already "
                                 "trains on the whole cluster, one after another; pass -P parallelism=1 or "
                                 "-P engine=sklearn.")
        if self.timeout_seconds < 0:
            raise UserInputError(f"timeout_seconds must be >= 0 (0 = no limit), got {self.timeout_seconds}.")
        if self.register_as:
            registry.check_model_name(self.register_as)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


# Search spaces as plain data (logged as search_space.json), turned into Hyperopt expressions below.
# ("int", low, high, step) | ("choice", [values])
def mllib_space(min_bins: int, allow_log_label: bool) -> dict:
    return {
        "num_trees": ("int", 20, 200, 10),
        "max_depth": ("int", 3, 15, 1),
        # Never below what the categorical columns need (see spark_pipeline.check_category_bins).
        "max_bins": ("choice", sorted({max(min_bins, b) for b in (32, 64, 128)})),
        "min_instances_per_node": ("int", 1, 20, 1),
        "feature_subset_strategy": ("choice", ["onethird", "sqrt", "log2", "0.5", "all"]),
        "log_label": ("choice", [False, True] if allow_log_label else [False]),
    }


def sklearn_space(allow_log_label: bool) -> dict:
    return {
        "num_trees": ("int", 20, 200, 10),
        "max_depth": ("int", 3, 25, 1),
        "min_samples_leaf": ("int", 1, 20, 1),
        "max_features": ("choice", ["1.0", "0.5", "0.33", "sqrt", "log2"]),
        "log_label": ("choice", [False, True] if allow_log_label else [False]),
    }


def hyperopt_space(space: dict) -> dict:
    from hyperopt import hp
    from hyperopt.pyll import scope

    expressions = {}
    for name, (kind, *args) in space.items():
        if kind == "int":
            low, high, step = args
            expressions[name] = scope.int(hp.quniform(name, low, high, step))
        elif kind == "choice":
            expressions[name] = hp.choice(name, list(args[0]))
        else:
            raise ValueError(f"unknown search-space kind {kind!r} for {name}")
    return expressions


@dataclass(frozen=True)
class TrialContext:
    """What a trial needs to log its nested run, wherever it runs (driver or Spark worker)."""

    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    engine: str
    metric: str


def run_trial(context: TrialContext, trial_params: dict, evaluate, run_name: str) -> dict:
    """Evaluate one configuration in its own nested run. A failure ends that run FAILED and is
    reported to Hyperopt as a failed trial: the search goes on."""
    from hyperopt import STATUS_FAIL, STATUS_OK

    started = time.perf_counter()
    result = {"params": trial_params, "run_id": None}
    try:
        with tracking.child_run(context.parent_run_id, context.experiment_id, run_name,
                                {"engine": context.engine}, context.tracking_uri) as child:
            result["run_id"] = child.run_id
            child.log_params(trial_params)
            metrics = evaluate(trial_params)
            loss = METRIC_SIGN[context.metric] * metrics[context.metric]
            if not math.isfinite(loss):
                raise ValueError(f"validation {context.metric} is {metrics[context.metric]}")
            seconds = time.perf_counter() - started
            child.log_metrics({**{f"val_{k}": v for k, v in metrics.items()}, "loss": loss,
                               "trial_seconds": seconds})
        return {**result, "status": STATUS_OK, "loss": loss, "metrics": metrics, "seconds": seconds}
    except Exception as exc:
        error = " ".join(str(exc).split())[:1000] or type(exc).__name__
        return {**result, "status": STATUS_FAIL, "error": f"{type(exc).__name__}: {error}",
                "seconds": time.perf_counter() - started}


class MllibObjective:
    """Trials of the Spark pipeline on the driver's session, on cached fit and validation rows."""

    def __init__(self, context: TrialContext, fit_df, valid_df, spec, base: spark_pipeline.TrainParams):
        self.context, self.fit_df, self.valid_df, self.spec, self.base = context, fit_df, valid_df, spec, base
        self.calls = 0

    def _evaluate(self, trial_params: dict) -> dict:
        params = self.base.with_model_params(**trial_params)
        model = spark_pipeline.fit_pipeline(self.fit_df, self.spec, params)
        return model_metrics.regression_metrics(model.transform(self.valid_df), self.spec.label_col)

    def __call__(self, trial_params: dict) -> dict:
        number = self.calls  # serial Trials: calls come in trial-id order
        self.calls += 1
        result = run_trial(self.context, trial_params, self._evaluate, f"trial-{number:03d}")
        shown = f"loss={result['loss']:.4f}" if result["status"] == "ok" else f"FAILED ({result['error']})"
        print(f"tune_hyperopt: trial {number}: {shown} {trial_params}", flush=True)
        return result


def sklearn_trial(context: TrialContext, data, seed: int, trial_params: dict) -> dict:
    """One scikit-learn trial; runs in a Spark Python worker under SparkTrials."""

    x_fit, y_fit, x_valid, y_valid, spec = data.value

    def evaluate(params: dict) -> dict:
        model = sklearn_forest.build_forest(spec, sklearn_forest.ForestParams(**params), seed, n_jobs=1)
        model.fit(x_fit, y_fit)
        return model_metrics.array_regression_metrics(y_valid, model.predict(x_valid))

    return run_trial(context, trial_params, evaluate, "trial")


@dataclass
class TuneResult:
    best_params: dict
    best_run_id: str
    best_val_metrics: dict
    test_metrics: dict
    trials: list = field(default_factory=list)  # one dict per trial, in trial order
    run_id: str = ""
    registered_version: str = ""


def startup_trials(max_evals: int) -> int:
    # TPE's default (20 random trials first) would make a 16-trial search a random search.
    return min(MAX_STARTUP_TRIALS, max(2, max_evals // 2))


def _trial_rows(trials) -> list[dict]:
    rows = []
    for trial in trials.trials:
        result = trial.get("result") or {}
        status = result.get("status", "fail")
        rows.append({"trial": trial["tid"], "status": "ok" if status == "ok" else "failed",
                     "loss": result.get("loss"), "run_id": result.get("run_id"),
                     "params": result.get("params", {}), "metrics": result.get("metrics", {}),
                     "seconds": result.get("seconds"),
                     "error": result.get("error", "" if status == "ok" else "cancelled or lost")})
    return rows


def _trials_table(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame([{"trial": r["trial"], "status": r["status"], "loss": r["loss"], "run_id": r["run_id"],
                          **r["params"], **{f"val_{k}": v for k, v in r["metrics"].items()},
                          "seconds": r["seconds"], "error": r["error"]} for r in rows])


def log_search_summary(rows: list[dict], metric: str, parent_run_id: str, search_seconds: float) -> dict:
    """Name and tag the children, then give the parent the best trial's params, metrics and run id,
    the loss-per-trial plot and the trials table. Returns the best row."""
    tracking.fail_unfinished_children(parent_run_id)
    for row in rows:
        if row["run_id"]:
            tracking.set_run_tags(row["run_id"], {"mlflow.runName": f"trial-{row['trial']:03d}",
                                                  "trial_number": str(row["trial"])})
    ok = [r for r in rows if r["status"] == "ok"]
    failed = len(rows) - len(ok)
    tracking.log_metrics({"trials_total": len(rows), "trials_failed": failed, "search_seconds": search_seconds})
    if rows:
        tracking.log_dataframe_csv(_trials_table(rows), "trials.csv")
        fig = plots.loss_per_trial_figure([r["trial"] for r in rows], [r["loss"] for r in rows], metric,
                                          METRIC_SIGN[metric] < 0)
        tracking.log_figure(fig, "loss_per_trial.png")
        plots.close(fig)
    if not ok:
        first = next((r["error"] for r in rows if r["error"]), "no trial ran (timeout too short?)")
        raise SearchFailed(f"all {len(rows)} trials failed, nothing to refit; first error: {first}")
    best = min(ok, key=lambda r: (r["loss"], r["trial"]))
    tracking.log_params({f"best_{k}": v for k, v in best["params"].items()})
    tracking.log_metrics({f"best_val_{k}": v for k, v in best["metrics"].items()})
    tracking.set_tags({"best_run_id": best["run_id"], "best_trial_number": str(best["trial"])})
    tracking.set_run_tags(best["run_id"], {"best_trial": "true"})
    return best


def _search(objective, space: dict, params: TuneParams, trials) -> tuple[list[dict], float]:
    import numpy as np
    from hyperopt import fmin, tpe
    from hyperopt.exceptions import AllTrialsFailed

    started = time.perf_counter()
    try:
        fmin(objective, hyperopt_space(space),
             algo=functools.partial(tpe.suggest, n_startup_jobs=startup_trials(params.max_evals)),
             max_evals=params.max_evals, timeout=params.timeout_seconds or None, trials=trials,
             rstate=np.random.default_rng(params.seed), show_progressbar=False, return_argmin=False)
    except AllTrialsFailed:
        pass  # reported by log_search_summary, with the trials' errors
    return _trial_rows(trials), time.perf_counter() - started


def _category_counts(df, spec) -> dict[str, int]:
    from pyspark.sql import functions as F

    if not spec.categorical_cols:
        return {}
    row = df.agg(*[F.countDistinct(c).alias(c) for c in spec.categorical_cols]).first()
    return row.asDict()


def tune_and_log(spark, params: TuneParams, space: dict | None = None) -> TuneResult:
    """Run the search inside the active MLflow run (the parent) and log its story; ``space`` overrides
    the engine's default search space (same format as mllib_space)."""
    prepared = splits.prepare_data(spark, params.data_path, params.label_col, params.train_fraction, params.seed)
    try:
        return _tune(spark, params, prepared, space)
    finally:
        prepared.unpersist()


def _tune(spark, params: TuneParams, prepared: splits.PreparedData, space: dict | None) -> TuneResult:
    spec = prepared.spec
    fit_df, valid_df = prepared.train_df.randomSplit([1 - VALIDATION_FRACTION, VALIDATION_FRACTION],
                                                     seed=params.seed)
    parallelism = spark.sparkContext.defaultParallelism
    if params.engine == "mllib" and fit_df.rdd.getNumPartitions() < parallelism:
        fit_df = fit_df.repartition(parallelism)  # a one-file dataset would fit every trial on one core
    fit_df, valid_df = fit_df.cache(), valid_df.cache()
    data = None  # the sklearn engine's broadcast
    tracking.log_metrics({"fit_rows": fit_df.count(), "validation_rows": valid_df.count()})
    label_min = prepared.profile["label_min"]
    allow_log = label_min is not None and label_min > -1.0
    context = TrialContext(tracking.active_run_id(), tracking.experiment_id(), tracking.portable_tracking_uri(),
                           params.engine, params.metric)
    base = spark_pipeline.TrainParams(label_col=params.label_col, seed=params.seed, train_fraction=params.train_fraction)
    try:
        if params.engine == "mllib":
            from hyperopt import Trials

            space = space or mllib_space(spark_pipeline.min_bins(_category_counts(prepared.train_df, spec)), allow_log)
            tracking.log_dict(space, "search_space.json")
            objective = MllibObjective(context, fit_df, valid_df, spec, base)
            rows, seconds = _search(objective, space, params, Trials())
        else:
            from hyperopt import SparkTrials


            space = space or sklearn_space(allow_log)
            tracking.log_dict(space, "search_space.json")
            x_fit, y_fit = sklearn_forest.to_pandas(fit_df, spec)
            x_valid, y_valid = sklearn_forest.to_pandas(valid_df, spec)
            ship_package(spark)
            quiet_python_task_warnings()
            data = spark.sparkContext.broadcast((x_fit, y_fit, x_valid, y_valid, spec))  # sent once per executor
            objective = functools.partial(sklearn_trial, context, data, params.seed)
            rows, seconds = _search(objective, space, params, SparkTrials(parallelism=params.parallelism,
                                                                           spark_session=spark))
    finally:
        if data is not None:
            data.destroy()
        fit_df.unpersist()
        valid_df.unpersist()

    best = log_search_summary(rows, params.metric, context.parent_run_id, seconds)
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"tune_hyperopt: {ok}/{len(rows)} trials ok in {seconds:.1f} s; best trial {best['trial']} "
          f"(val_{params.metric}={best['metrics'][params.metric]:.4f}) {best['params']}", flush=True)
    if params.engine == "mllib":
        refit = spark_pipeline.fit_evaluate_log(prepared, base.with_model_params(**best["params"]))
        test_metrics, model_uri = refit.metrics, refit.model_uri
    else:
        test_metrics, model_uri = refit_sklearn(prepared, best["params"], params.seed)
    result = TuneResult(best_params=best["params"], best_run_id=best["run_id"], best_val_metrics=best["metrics"],
                        test_metrics=test_metrics, trials=rows, run_id=context.parent_run_id)
    if params.register_as:
        model_params = {"engine": params.engine, "label_col": params.label_col, "seed": params.seed,
                        "train_fraction": params.train_fraction, **best["params"]}
        result.registered_version = registry.register_result(params.register_as, "tune_hyperopt", model_uri,
                                                             model_params, test_metrics, prepared)
    return result


