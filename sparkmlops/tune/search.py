"""What the searches share: parameter checks, the loss sign, the refit of a scikit-learn winner and the
summary line (tune_hyperopt, tune_optuna, tune_grid); the parameters, search spaces, fit/validation
rows, trial evaluation, summary of the trials and refit of the sequential tuners (tune_hyperopt,
tune_optuna), which differ only in the library that proposes the trials.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from sparkmlops.core import choices, model_registry, plots, tracking
from sparkmlops.core.entry_points import param
from sparkmlops.core.errors import JobFailed, UserInputError
from sparkmlops.data import parameters, splits, validation
from sparkmlops.data import schema as data_schema
from sparkmlops.fitting import metrics as model_metrics
from sparkmlops.fitting import sklearn_forest, spark_pipeline
from sparkmlops.fitting.metrics import LOWER_IS_BETTER, METRIC_CHOICES, METRICS

# loss = sign * metric, minimised: rmse and mae as they are, r2 negated.
METRIC_SIGN = {metric: 1.0 if lower else -1.0 for metric, lower in LOWER_IS_BETTER.items()}

MAX_PARALLELISM = 128  # SparkTrials' own cap


class SearchFailed(JobFailed):
    """No trial succeeded: nothing to report or refit."""


def check_search_params(
    label_col: str, parallelism: int, metric: str, train_fraction: float, data_path: str, metrics: dict = METRICS
) -> None:
    """Checks tune_hyperopt and tune_grid share; they need no data and no Spark."""
    if not label_col:
        raise UserInputError("label_col is empty: pass -P label_col=<column to predict>, e.g. price.")
    if not 1 <= parallelism <= MAX_PARALLELISM:
        raise UserInputError(f"parallelism must be between 1 and {MAX_PARALLELISM}, got {parallelism}.")
    choices.check("metric", metric, metrics)
    splits.check_train_fraction(train_fraction)
    if data_path:
        validation.check_input_path(data_path)


def summary_line(entry_point: str, result) -> str:
    """The last line tune_hyperopt and tune_grid print: best parameters, test metrics, run ids."""
    return (
        f"{entry_point}: best {result.best_params} test {model_metrics.headline(result.test_metrics)} "
        f"run_id={result.run_id} best_run_id={result.best_run_id}"
    )


def refit_sklearn(prepared: splits.PreparedData, model_params: dict, seed: int, model=None) -> tuple[dict, str]:
    """Fit the chosen forest on the whole training split (unless ``model`` is already fitted on it),
    score the test split and log metrics, figures and the model: (metrics, model URI)."""

    fitted = model is not None
    if model is None:
        model = sklearn_forest.build_forest(prepared.spec, sklearn_forest.ForestParams(**model_params), seed, n_jobs=-1)
    return sklearn_forest.fit_evaluate_log(prepared, model, fitted=fitted)


ENGINES = {"mllib": "Spark ML trials, one after another", "sklearn": "scikit-learn trials in parallel on the executors"}
SEARCH_SPACES = {
    "default": "cost-aware: rf, gbt and xgboost families of moderate size",
    "wide": "also the costly corner: up to 200 trees, depth 15 (25 single-node), every feature per split",
    "smoke": "rf only, 3 to 10 trees of depth 2 to 4: with a few trials, a quick check that a search runs on your data",
}
VALIDATION_FRACTION = 0.2  # of the training split
MAX_STARTUP_TRIALS = 20  # TPE's default number of random trials before it models the loss


def metric_param(metrics: dict = METRIC_CHOICES, default: str = "auto"):
    """What a search optimises (every tuner's ``metric``)."""
    return param(default, "{choices}: what the search optimises.", choices=metrics)


def summary_report(entry_point: str):
    """The line a tuner's script prints: its ``summary_line``."""
    return lambda params, result: summary_line(entry_point, result)


@dataclass(frozen=True)
class TuneParams:
    """The parameters of the sequential tuners, tune_hyperopt and tune_optuna."""

    data_path: str = parameters.data_path()
    label_col: str = parameters.label_col()
    task: str = parameters.task()
    features: str = parameters.features()
    exclude: str = parameters.exclude()
    max_evals: int = param(16, "Number of trials.")
    parallelism: int = param(1, "Concurrent trials (engine=sklearn; Spark task slots are the real limit).")
    engine: str = param("mllib", "", choices=ENGINES)
    metric: str = metric_param()
    seed: int = param(42, "Seed of the splits, the models and the sampler.")
    timeout_seconds: int = param(0, "Stop starting trials after this many seconds; 0 = no limit.")
    early_stop_trials: int = param(
        0, "Stop when this many trials in a row have not improved the best loss; 0 = run all."
    )
    search_space: str = param("default", "", choices=SEARCH_SPACES)
    train_fraction: float = parameters.train_fraction()
    register_as: str = parameters.register_as()

    def validate(self) -> TuneParams:
        if self.max_evals < 1:
            raise UserInputError(f"max_evals must be >= 1 (the number of trials), got {self.max_evals}.")
        choices.check("engine", self.engine, ENGINES)
        check_search_params(
            self.label_col, self.parallelism, self.metric, self.train_fraction, self.data_path, METRIC_CHOICES
        )
        self.base_pipeline().validate()  # task, features and exclude as train checks them
        if self.engine == "mllib" and self.parallelism != 1:
            raise UserInputError(
                "parallelism applies to engine=sklearn: with engine=mllib every trial already "
                "trains on the whole cluster, one after another; pass -P parallelism=1 or "
                "-P engine=sklearn."
            )
        if self.timeout_seconds < 0:
            raise UserInputError(f"timeout_seconds must be >= 0 (0 = no limit), got {self.timeout_seconds}.")
        if self.early_stop_trials < 0:
            raise UserInputError(
                f"early_stop_trials must be >= 0 (0 = run all max_evals trials), got {self.early_stop_trials}."
            )
        choices.check("search_space", self.search_space, SEARCH_SPACES)
        if self.register_as:
            model_registry.check_model_name(self.register_as)
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    def column_choice(self) -> data_schema.ColumnChoice:
        return self.base_pipeline().column_choice()

    def base_pipeline(self) -> spark_pipeline.PipelineParams:
        """train's pipeline settings for this search's data and task: what each trial's parameters change."""
        return spark_pipeline.PipelineParams(
            label_col=self.label_col, task=self.task, features=self.features, exclude=self.exclude, seed=self.seed
        )


SMOKE_FOREST = {"num_trees": ("int", 3, 10, 1), "max_depth": ("int", 2, 4, 1)}


# Search spaces as plain data (logged as search_space.json), turned into Hyperopt expressions or Optuna
# suggestions by the tuners: ("int", low, high, step) | ("choice", [values]) | ("family", {name: space}),
# the last a choice whose every value brings its own parameters (a conditional space).
def mllib_space(min_bins: int, allow_log_label: bool, preset: str = "default", multiclass: bool = False) -> dict:
    """train's pipeline with each model family's own parameters. The default keeps every trial around
    the cost of train's own forest (at most 100 trees of depth 12, 40 boosting iterations of depth 6);
    ``wide`` adds the corner where one trial of ~200 depth-15 trees on all features costs minutes."""
    # Never below what the categorical columns need (see spark_pipeline.check_category_bins).
    bins = ("choice", sorted({max(min_bins, b) for b in (32, 64)}))
    leaf = ("int", 1, 20, 1)
    wide = preset == "wide"
    families = {
        "rf": {
            "num_trees": ("int", 20, 200 if wide else 100, 10),
            "max_depth": ("int", 3, 15 if wide else 12, 1),
            "max_bins": bins,
            "min_instances_per_node": leaf,
            "feature_subset_strategy": ("choice", ["onethird", "sqrt", "log2", "0.5"] + (["all"] if wide else [])),
        },
        "gbt": {
            "num_trees": ("int", 10, 100 if wide else 40, 10),
            "max_depth": ("int", 2, 8 if wide else 6, 1),
            "max_bins": bins,
            "min_instances_per_node": leaf,
            "feature_subset_strategy": ("choice", ["all", "0.5", "onethird"]),
        },
        "xgboost": {
            "num_trees": ("int", 20, 300 if wide else 200, 20),
            "max_depth": ("int", 2, 10 if wide else 8, 1),
            "max_bins": bins,
            "min_instances_per_node": leaf,
        },
    }
    if multiclass:  # MLlib's GBT classifier takes two classes only
        del families["gbt"]
    if preset == "smoke":
        families = {"rf": {**families["rf"], **SMOKE_FOREST, "feature_subset_strategy": ("choice", ["onethird"])}}
    return {"model_type": ("family", families), "log_label": ("choice", [False, True] if allow_log_label else [False])}


def sklearn_space(allow_log_label: bool, preset: str = "default") -> dict:
    wide = preset == "wide"
    return {
        "num_trees": ("int", 20, 200 if wide else 100, 10),
        "max_depth": ("int", 3, 25 if wide else 20, 1),
        **(SMOKE_FOREST if preset == "smoke" else {}),
        "min_samples_leaf": ("int", 1, 20, 1),
        "max_features": ("choice", ["0.5", "0.33", "sqrt", "log2"] + (["1.0"] if wide else [])),
        "log_label": ("choice", [False, True] if allow_log_label else [False]),
    }


def check_space(space: dict) -> None:
    """A space in the format above, or ValueError naming the bad entry."""
    for name, entry in space.items():
        kind = entry[0] if isinstance(entry, (tuple, list)) and entry else None
        if kind == "family":
            for family in entry[1].values():
                check_space(family)
        elif kind not in ("int", "choice"):
            raise ValueError(f"unknown search-space kind {kind!r} for {name}")


def family_parameter(family: str, name: str) -> str:
    """The sampler's name for a family's own parameter (unique across families, as samplers need)."""
    return f"{family}.{name}"


@dataclass(frozen=True)
class TrialContext:
    """What a trial needs to log its nested run, wherever it runs (driver or Spark worker)."""

    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    engine: str
    metric: str


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


def trials_table(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "trial": r["trial"],
                "status": r["status"],
                "loss": r["loss"],
                "run_id": r["run_id"],
                **r["params"],
                **{f"val_{k}": v for k, v in r["metrics"].items()},
                "seconds": r["seconds"],
                "error": r["error"],
            }
            for r in rows
        ]
    )


def log_search_summary(rows: list[dict], metric: str, parent_run_id: str, search_seconds: float) -> dict:
    """Name and tag the children, then give the parent the best trial's params, metrics and run id,
    the loss-per-trial plot and the trials table. Returns the best row."""
    tracking.fail_unfinished_children(parent_run_id)
    for row in rows:
        if row["run_id"]:
            tracking.set_run_tags(
                row["run_id"], {"mlflow.runName": f"trial-{row['trial']:03d}", "trial_number": str(row["trial"])}
            )
    ok = [r for r in rows if r["status"] == "ok"]
    pruned = sum(r["status"] == "pruned" for r in rows)  # stopped early by the pruner (tune_optuna)
    tracking.log_metrics(
        {
            "trials_total": len(rows),
            "trials_failed": len(rows) - len(ok) - pruned,
            "trials_pruned": pruned,
            "search_seconds": search_seconds,
        }
    )
    if rows:
        tracking.log_dataframe_csv(trials_table(rows), "trials.csv")
        fig = plots.loss_per_trial_figure(
            [r["trial"] for r in rows], [r["loss"] for r in rows], metric, METRIC_SIGN[metric] < 0
        )
        tracking.log_figure(fig, "loss_per_trial.png")
        plots.close(fig)
    if not ok:
        first = next((r["error"] for r in rows if r["error"]), "no trial ran to the end (timeout too short?)")
        raise SearchFailed(f"all {len(rows)} trials failed, nothing to refit; first error: {first}")
    best = min(ok, key=lambda r: (r["loss"], r["trial"]))
    tracking.log_params({f"best_{k}": v for k, v in best["params"].items()})
    tracking.log_metrics({f"best_val_{k}": v for k, v in best["metrics"].items()})
    tracking.set_tags({"best_run_id": best["run_id"], "best_trial_number": str(best["trial"])})
    tracking.set_run_tags(best["run_id"], {"best_trial": "true"})
    return best


def category_counts(df, spec) -> dict[str, int]:
    from pyspark.sql import functions as F

    if not spec.categorical_cols:
        return {}
    row = df.agg(*[F.countDistinct(c).alias(c) for c in spec.categorical_cols]).first()
    # countDistinct skips nulls; where null is a category (train's pipeline), it takes a bin too
    return {c: n + (c in spec.null_category_cols) for c, n in row.asDict().items()}


@dataclass
class SearchData:
    """What every trial of a search reads: the training split divided into cached fit and validation
    rows, the search space (logged as search_space.json), where trials log, and train's defaults."""

    fit_df: object
    valid_df: object
    space: dict
    context: TrialContext
    base: spark_pipeline.PipelineParams

    def unpersist(self) -> None:
        self.fit_df.unpersist()
        self.valid_df.unpersist()


def prepare_search(spark, params: TuneParams, prepared: splits.PreparedData, space: dict | None) -> SearchData:
    """Split the training split once more (the test split is never seen by a trial), cache both parts
    and log their sizes and the space: ``space``, or the engine's default for these data."""
    fit_df, valid_df = prepared.train_df.randomSplit([1 - VALIDATION_FRACTION, VALIDATION_FRACTION], seed=params.seed)
    parallelism = spark.sparkContext.defaultParallelism
    if params.engine == "mllib" and fit_df.rdd.getNumPartitions() < parallelism:
        fit_df = fit_df.repartition(parallelism)  # a one-file dataset would fit every trial on one core
    fit_df, valid_df = fit_df.cache(), valid_df.cache()
    tracking.log_metrics({"fit_rows": fit_df.count(), "validation_rows": valid_df.count()})
    spec = prepared.spec
    label_min = prepared.profile["label_min"]
    allow_log = not spec.is_classifier and label_min is not None and label_min > -1.0
    if space is None:
        space = (
            mllib_space(
                spark_pipeline.min_bins(category_counts(prepared.train_df, spec)),
                allow_log,
                params.search_space,
                multiclass=len(spec.classes) > 2,
            )
            if params.engine == "mllib"
            else sklearn_space(allow_log, params.search_space)
        )
    check_space(space)
    tracking.log_dict(space, "search_space.json")
    context = TrialContext(
        tracking.active_run_id(),
        tracking.experiment_id(),
        tracking.portable_tracking_uri(),
        params.engine,
        model_metrics.metric_for(params.metric, spec.task, len(spec.classes)),
    )
    return SearchData(fit_df, valid_df, space, context, params.base_pipeline())


def evaluate_mllib(data: SearchData, spec: data_schema.FeatureSpec, trial_params: dict) -> dict:
    """One configuration of train's Spark pipeline: fitted on the fit rows, scored on the validation rows."""
    model = spark_pipeline.fit_pipeline(data.fit_df, spec, data.base.with_model_params(**trial_params))
    metrics, predictions = spark_pipeline.evaluate(model, data.valid_df, spec)
    predictions.unpersist()
    return metrics


def sklearn_arrays(data: SearchData, spec: data_schema.FeatureSpec) -> tuple:
    """(x_fit, y_fit, x_valid, y_valid, spec): what single-node trials need, to broadcast once."""
    x_fit, y_fit = sklearn_forest.to_pandas(data.fit_df, spec)
    x_valid, y_valid = sklearn_forest.to_pandas(data.valid_df, spec)
    return x_fit, y_fit, x_valid, y_valid, spec


def no_progress(losses: list, trials: int) -> bool:
    """Early stopping: true once the last ``trials`` finished trials (in trial order; None for a failed or
    pruned one) have not improved on the best loss before them. Stateless, so every Spark task of a
    parallel search can ask it of the trials stored so far."""
    if not trials or len(losses) < trials:
        return False
    finished = [loss for loss in losses if loss is not None]
    if not finished:
        return True  # ``trials`` trials in a row without one loss
    best_at = losses.index(min(finished))  # the first trial to reach the best loss
    return len(losses) - 1 - best_at >= trials


def where_trial_runs() -> dict[str, str]:
    """Tags saying where a trial ran: in a Spark task (its stage, partition and attempt id, the Python
    worker's process and host), or on the driver. The UI shows it; the tests check it."""
    import os
    import socket

    from pyspark import TaskContext

    tags = {"trial_process": str(os.getpid()), "trial_host": socket.gethostname()}
    task = TaskContext.get()
    if task is None:
        return {**tags, "trial_ran_on": "driver"}
    return {
        **tags,
        "trial_ran_on": "spark task",
        "spark_task_attempt_id": str(task.taskAttemptId()),
        "spark_stage_id": str(task.stageId()),
        "spark_partition_id": str(task.partitionId()),
    }


def loss_of(metrics: dict, metric: str) -> float:
    """The minimised loss of a trial's validation metrics; a trial without a finite one failed."""
    loss = METRIC_SIGN[metric] * metrics[metric]
    if not math.isfinite(loss):
        raise ValueError(f"validation {metric} is {metrics[metric]}")
    return loss


def refit_and_log(
    prepared: splits.PreparedData, params: TuneParams, rows: list[dict], best: dict, entry_point: str
) -> TuneResult:
    """Refit the best configuration on the whole training split, score the test split, log the model
    (and register it with ``register_as``) as `train` would."""
    if params.engine == "mllib":
        refit = spark_pipeline.fit_evaluate_log(prepared, params.base_pipeline().with_model_params(**best["params"]))
        test_metrics, model_uri = refit.metrics, refit.model_uri
    else:
        test_metrics, model_uri = refit_sklearn(prepared, best["params"], params.seed)
    result = TuneResult(
        best_params=best["params"],
        best_run_id=best["run_id"],
        best_val_metrics=best["metrics"],
        test_metrics=test_metrics,
        trials=rows,
        run_id=tracking.active_run_id(),
    )
    if params.register_as:
        model_params = {
            "engine": params.engine,
            "label_col": params.label_col,
            "task": prepared.spec.task,
            "seed": params.seed,
            "train_fraction": params.train_fraction,
            **best["params"],
        }
        result.registered_version = model_registry.register_result(
            params.register_as, entry_point, model_uri, model_params, test_metrics, prepared
        )
    return result


def report_search(entry_point: str, rows: list[dict], best: dict, seconds: float, metric: str) -> None:
    ok = sum(r["status"] == "ok" for r in rows)
    pruned = sum(r["status"] == "pruned" for r in rows)
    print(
        f"{entry_point}: {ok}/{len(rows)} trials ok{f' ({pruned} pruned)' if pruned else ''} in {seconds:.1f} s; "
        f"best trial {best['trial']} (val_{metric}={best['metrics'][metric]:.4f}) {best['params']}",
        flush=True,
    )


def search_and_log(spark, params: TuneParams, space: dict | None, entry_point: str, run_trials) -> TuneResult:
    """A sequential tuner's whole job inside the active MLflow run (the parent): read, check and split
    the data, prepare the search (``space``, or the engine's default), ``run_trials(spark, params, data,
    spec) -> (trial rows, seconds)``, then the trials' summary and the refit and logging of the best."""
    # both engines classify and impute, as train and train_sklearn do
    prepared = splits.prepare_for_training(spark, params)
    try:
        data = prepare_search(spark, params, prepared, space)
        try:
            rows, seconds = run_trials(spark, params, data, prepared.spec)
        finally:
            data.unpersist()
        best = log_search_summary(rows, data.context.metric, data.context.parent_run_id, seconds)
        report_search(entry_point, rows, best, seconds, data.context.metric)
        return refit_and_log(prepared, params, rows, best, entry_point)
    finally:
        prepared.unpersist()
