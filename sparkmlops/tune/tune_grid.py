"""scikit-learn GridSearchCV over a random forest (a regressor or a classifier, by the task), its fits spread
over Spark with joblibspark.

Every (candidate, fold) fit is a joblib task; the "spark" joblib backend runs them as Spark tasks,
``parallelism`` at a time. The search uses the training split only (K folds, stratified by class for a
classifier); the refit best model is scored on the test split `train` holds out, and logged under `model`.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, fields

from sparkmlops.core import choices, tracking
from sparkmlops.core.entry_points import EntryPoint, param
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.spark import quiet_python_task_warnings, ship_package
from sparkmlops.data import parameters, splits
from sparkmlops.data import schema as data_schema
from sparkmlops.fitting.metrics import LOWER_IS_BETTER, METRIC_CHOICES, metric_for
from sparkmlops.fitting.sklearn_forest import (
    MODEL_TYPES,
    ForestEstimator,
    ForestParams,
    _max_features,
    answer_metrics,
    answers,
    check_task,
    to_pandas,
)
from sparkmlops.tune.search import SearchFailed, check_search_params, metric_param, refit_sklearn, summary_report

# 2 x 2 x 2 x 2 = 16 candidates: 48 fits with cv=3.
DEFAULT_GRID = {
    "num_trees": [50, 150],
    "max_depth": [8, 16],
    "min_samples_leaf": [1, 5],
    "max_features": ["0.5", "1.0"],
}
MAX_CANDIDATES = 10_000


def searchable_parameters() -> list[str]:
    """What param_grid may set: the parameters the searched estimator itself takes (get_params), but
    the data spec and the seed, which the entry point sets."""

    return [name for name in ForestEstimator().get_params() if name not in ("spec", "seed")]


def parse_grid(text: str) -> dict[str, list]:
    """The param_grid parameter: a JSON object of the estimator's parameters to lists of values; every
    candidate is checked as train_sklearn checks its parameters, before Spark starts."""

    if not text.strip():
        return dict(DEFAULT_GRID)
    example = '-P param_grid=\'{"num_trees": [50, 100], "max_depth": [8, 0]}\''
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(
            f"param_grid is not valid JSON ({exc.msg} at character {exc.pos}): pass an object of lists, e.g. {example}."
        ) from None
    if not isinstance(grid, dict) or not grid:
        raise UserInputError(f"param_grid must be a non-empty JSON object of lists, e.g. {example}.")
    known = searchable_parameters()
    for name, values in grid.items():
        if name not in known:
            raise UserInputError(f"param_grid has unknown parameter '{name}': use {', '.join(known)}.")
        if not isinstance(values, list) or not values:
            raise UserInputError(f"param_grid['{name}'] must be a non-empty list, got {json.dumps(values)}.")
        for value in values:
            _check_value(name, value, _max_features)
    candidates = 1
    for values in grid.values():
        candidates *= len(values)
    if candidates > MAX_CANDIDATES:
        raise UserInputError(
            f"param_grid has {candidates} candidates (over {MAX_CANDIDATES}): shrink it or "
            "use tune_hyperopt for large spaces."
        )
    defaults = {f.name: f.default for f in fields(ForestParams)}
    for values in itertools.product(*grid.values()):
        candidate = dict(zip(grid, values))
        try:
            ForestParams(
                **{**defaults, **{k: str(v) if k == "max_features" else v for k, v in candidate.items()}}
            ).validate()
        except UserInputError as exc:
            raise UserInputError(f"param_grid candidate {json.dumps(candidate)} is not valid: {exc}") from None
    return grid


def _check_value(name: str, value, max_features_check) -> None:
    if name in ("num_trees", "min_samples_leaf"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserInputError(f"param_grid['{name}'] values must be integers >= 1, got {json.dumps(value)}.")
    elif name == "max_depth":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserInputError(
                f"param_grid['max_depth'] values must be integers >= 0 (0 = unlimited), got {json.dumps(value)}."
            )
    elif name == "log_label":
        if not isinstance(value, bool):
            raise UserInputError(f"param_grid['log_label'] values must be true or false, got {json.dumps(value)}.")
    elif name == "max_features":
        max_features_check(str(value))
    elif name == "impute":
        if value not in parameters.IMPUTE:
            raise UserInputError(
                f"param_grid['impute'] values must be one of {', '.join(parameters.IMPUTE)}, got {json.dumps(value)}."
            )
    elif name == "model_type":
        if value not in MODEL_TYPES:
            raise UserInputError(
                f"param_grid['model_type'] values must be one of {', '.join(MODEL_TYPES)}, got {json.dumps(value)}."
            )


@dataclass(frozen=True)
class GridParams:
    """The `tune_grid` entry point's parameters."""

    data_path: str = parameters.data_path()
    label_col: str = parameters.label_col()
    task: str = parameters.task()
    features: str = parameters.features()
    exclude: str = parameters.exclude()
    param_grid: str = param(
        "",
        "JSON object of lists over num_trees, max_depth (0 = unlimited), min_samples_leaf, max_features, log_label, "
        "model_type, impute; empty = the built-in 16-candidate grid.",
    )
    cv: int = param(3, "Number of folds (stratified by class for a classifier).")
    parallelism: int = param(2, "Concurrent fits (Spark tasks).")
    metric: str = metric_param()
    seed: int = param(42, "Seed of the split, folds and forests.")
    train_fraction: float = parameters.train_fraction()

    def validate(self) -> GridParams:
        parse_grid(self.param_grid)
        if self.cv < 2:
            raise UserInputError(f"cv must be >= 2 (number of folds), got {self.cv}.")
        check_search_params(
            self.label_col, self.parallelism, self.metric, self.train_fraction, self.data_path, METRIC_CHOICES
        )
        choices.check("task", self.task, data_schema.TASKS)
        check_task(self.task, True in parse_grid(self.param_grid).get("log_label", []))
        return self

    def column_choice(self) -> data_schema.ColumnChoice:
        return data_schema.chosen_columns(self.task, self.features, self.exclude)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class GridResult:
    best_params: dict
    best_run_id: str
    cv_score: float
    test_metrics: dict
    candidates: int
    run_id: str = ""


def grid_search_and_log(spark, params: GridParams) -> GridResult:
    prepared = splits.prepare_for_training(spark, params)
    try:
        return _grid_search(spark, params, prepared)
    finally:
        prepared.unpersist()


def _grid_search(spark, params: GridParams, prepared: splits.PreparedData) -> GridResult:
    from joblib import parallel_backend
    from joblibspark import register_spark
    from sklearn.model_selection import GridSearchCV

    spec = prepared.spec
    grid = parse_grid(params.param_grid)
    check_task(spec.task, True in grid.get("log_label", []))  # task=auto resolved by the label's type
    metric = metric_for(params.metric, spec.task, len(spec.classes))
    tracking.log_params({"resolved_metric": metric})
    candidates = len(list(itertools.product(*grid.values())))
    tracking.log_dict(grid, "param_grid.json")
    tracking.log_metrics({"candidates": candidates, "fits": candidates * params.cv})
    x_train, y_train = to_pandas(prepared.train_df, spec)
    if len(y_train) < params.cv:
        raise UserInputError(f"the training split has {len(y_train)} rows, fewer than cv={params.cv} folds.")

    search = GridSearchCV(
        ForestEstimator(spec=spec, seed=params.seed),
        grid,
        scoring=functools.partial(fold_score, spec, metric),
        cv=cv_folds(spec, params.cv, params.seed),
        refit=True,
        n_jobs=params.parallelism,
        error_score=float("nan"),
    )
    ship_package(spark)  # the estimator's class lives in sparkmlops
    register_spark()
    quiet_python_task_warnings()
    started = time.perf_counter()
    with parallel_backend("spark", n_jobs=params.parallelism):
        search.fit(x_train, y_train)
    seconds = time.perf_counter() - started
    tracking.log_metrics({"search_seconds": seconds})

    best_run_id = log_cv_results(search.cv_results_, list(grid), metric, params.cv)
    cv_score = float(_metric_value(search.best_score_, metric))
    tracking.log_params({f"best_{k}": v for k, v in search.best_params_.items()})
    tracking.log_metrics({f"cv_{metric}": cv_score})
    tracking.set_tags({"best_run_id": best_run_id})
    print(
        f"tune_grid: {candidates} candidates x {params.cv} folds in {seconds:.1f} s; best "
        f"cv_{metric}={cv_score:.4f} {search.best_params_}",
        flush=True,
    )
    # GridSearchCV refit the best candidate on the whole training split; log its plain sklearn model.
    test_metrics, _ = refit_sklearn(prepared, {}, params.seed, model=search.best_estimator_.model_)
    return GridResult(
        best_params=dict(search.best_params_),
        best_run_id=best_run_id,
        cv_score=cv_score,
        test_metrics=test_metrics,
        candidates=candidates,
        run_id=tracking.active_run_id(),
    )


def fold_score(spec: data_schema.FeatureSpec, metric: str, estimator, x, y) -> float:
    """A fold's score as GridSearchCV maximises it: the run's own metric (as train_sklearn computes it, on
    probabilities in spec.classes' order, so a class absent from a fold is no error), negated where lower is
    better."""
    value = answer_metrics(spec, y, answers(estimator, x, spec))[metric]
    return -value if LOWER_IS_BETTER[metric] else value


def cv_folds(spec: data_schema.FeatureSpec, folds: int, seed: int):
    """K folds of the training rows; a classifier's stratified by class, so each fold holds every class that
    has at least ``folds`` rows."""
    from sklearn.model_selection import KFold, StratifiedKFold

    return (StratifiedKFold if spec.is_classifier else KFold)(folds, shuffle=True, random_state=seed)


def _metric_value(score: float, metric: str) -> float:
    """GridSearchCV maximises scores: the lower-is-better metrics (rmse, mae, log_loss) come negated."""
    return -score if LOWER_IS_BETTER[metric] else score


def log_cv_results(cv_results: dict, grid_names: list[str], metric: str, folds: int) -> str:
    """cv_results.csv on the parent, one nested run per candidate, the best one tagged. Returns its run id."""

    import pandas as pd

    table = pd.DataFrame({k: v for k, v in cv_results.items() if k != "params"})
    for name in grid_names:
        table[name] = [p[name] for p in cv_results["params"]]
    tracking.log_dataframe_csv(table, "cv_results.csv")
    parent, experiment = tracking.active_run_id(), tracking.experiment_id()
    run_ids, scores = [], []
    for i, candidate in enumerate(cv_results["params"]):
        mean = _metric_value(cv_results["mean_test_score"][i], metric)
        with tracking.child_run(parent, experiment, f"candidate-{i:03d}", {"engine": "sklearn-grid"}) as child:
            child.log_params(candidate)
            child.set_tags({"rank": str(cv_results["rank_test_score"][i])})
            if math.isfinite(mean):
                child.log_metrics(
                    {
                        f"cv_{metric}": mean,
                        f"cv_{metric}_std": cv_results["std_test_score"][i],
                        "mean_fit_seconds": cv_results["mean_fit_time"][i],
                        "folds": folds,
                    }
                )
        run_ids.append(child.run_id)
        scores.append(cv_results["mean_test_score"][i])
    finite = [i for i, s in enumerate(scores) if math.isfinite(s)]
    if not finite:
        raise SearchFailed(f"every candidate failed on every fold ({len(scores)} candidates)")
    best = max(finite, key=lambda i: (scores[i], -i))
    tracking.set_run_tags(run_ids[best], {"best_trial": "true"})
    failed = [run_ids[i] for i in range(len(scores)) if i not in finite]
    for run_id in failed:
        tracking.set_run_tags(run_id, {"error": "every fold failed (see the script's warnings)"})
    return run_ids[best]


TUNE_GRID = EntryPoint(
    name="tune_grid",
    script="tune_grid.py",
    summary="Grid-search the scikit-learn forest (regressor or classifier) on Spark and log the best one.",
    params=GridParams,
    job=lambda spark, params, checked: grid_search_and_log(spark, checked),
    run_name=lambda p: f"tune_grid {p.cv}-fold {p.metric}",
    report=summary_report("tune_grid"),
    needs_spark_context="joblibspark and addPyFile",
)
