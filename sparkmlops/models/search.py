"""What the two searches (tune_hyperopt, tune_grid) share: parameter checks, the loss sign, the refit of a scikit-learn winner and the summary line.
"""

from __future__ import annotations

from sparkmlops.core import choices
from sparkmlops.core.errors import JobFailed, UserInputError
from sparkmlops.data import splits, validation
from sparkmlops.models import sklearn_forest
from sparkmlops.models.metrics import LOWER_IS_BETTER, METRICS

# loss = sign * metric, minimised: rmse and mae as they are, r2 negated.
METRIC_SIGN = {metric: 1.0 if lower else -1.0 for metric, lower in LOWER_IS_BETTER.items()}

MAX_PARALLELISM = 128  # SparkTrials' own cap


class SearchFailed(JobFailed):
    """No trial succeeded: nothing to report or refit."""


def check_search_params(label_col: str, parallelism: int, metric: str, train_fraction: float,
                        data_path: str) -> None:
    """Checks tune_hyperopt and tune_grid share; they need no data and no Spark."""
    if not label_col:
        raise UserInputError("label_col is empty: pass -P label_col=<numeric column>, e.g. price.")
    if not 1 <= parallelism <= MAX_PARALLELISM:
        raise UserInputError(f"parallelism must be between 1 and {MAX_PARALLELISM}, got {parallelism}.")
    choices.check("metric", metric, METRICS)
    splits.check_train_fraction(train_fraction)
    if data_path:
        validation.check_input_path(data_path)


def summary_line(entry_point: str, result) -> str:
    """The last line tune_hyperopt and tune_grid print: best parameters, test metrics, run ids."""
    metrics = result.test_metrics
    return (f"{entry_point}: best {result.best_params} test rmse={metrics['rmse']:.2f} r2={metrics['r2']:.3f} "
            f"mae={metrics['mae']:.2f} run_id={result.run_id} best_run_id={result.best_run_id}")


def refit_sklearn(prepared: splits.PreparedData, model_params: dict, seed: int, model=None) -> tuple[dict, str]:
    """Fit the chosen forest on the whole training split (unless ``model`` is already fitted on it),
    score the test split and log metrics, figures and the model: (metrics, model URI)."""

    fitted = model is not None
    if model is None:
        model = sklearn_forest.build_forest(prepared.spec, sklearn_forest.ForestParams(**model_params), seed,
                                            n_jobs=-1)
    return sklearn_forest.fit_evaluate_log(prepared, model, fitted=fitted)
