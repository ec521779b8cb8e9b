"""Single-node scikit-learn models on the same data, split and metrics as the Spark pipeline.

The features are the Spark pipeline's: string columns ordinal-encoded (unseen and missing values get
their own codes, as StringIndexer's handleInvalid="keep" does), numeric columns as they are. The model
is a random forest (``rf``) or histogram gradient boosting (``gbt``) behind that encoder.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from sparkmlops.core import choices, plots, tracking
from sparkmlops.core.entry_points import param
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.mlflow_models import log_sklearn_model
from sparkmlops.data import schema as data_schema
from sparkmlops.data import splits
from sparkmlops.fitting.metrics import array_regression_metrics

# What a logged scikit-learn model needs at load time (MLflow 3 saves it with skops).
MAX_FEATURES_NAMES = ("sqrt", "log2")
MODEL_TYPES = {"rf": "RandomForestRegressor", "gbt": "HistGradientBoostingRegressor, num_trees = iterations"}


# The forest's settings as parameters (default, help), declared once for ForestParams and for the entry
# points that take them (train_sklearn, train_per_group).
_FOREST_PARAMETERS = {
    "model_type": ("rf", ""),
    "num_trees": (100, "Trees (rf) or boosting iterations (gbt)."),
    "max_depth": (10, "0 = unlimited."),
    "min_samples_leaf": (1, "Fewest training rows in a leaf."),
    "max_features": ("1.0", "Share of features per split in (0, 1]; rf also takes sqrt or log2."),
    "log_label": (False, "Fit log1p(label); the model still predicts the label."),
}


def forest_param(name: str):
    """The parameter ``name`` of a scikit-learn forest (core.entry_points.param)."""
    default, help_text = _FOREST_PARAMETERS[name]
    return param(default, help_text, choices=MODEL_TYPES if name == "model_type" else None)


@dataclass(frozen=True)
class ForestParams:
    """A scikit-learn tree ensemble's settings, named like the MLlib ones where they mean the same."""

    num_trees: int = forest_param("num_trees")
    max_depth: int = forest_param("max_depth")
    min_samples_leaf: int = forest_param("min_samples_leaf")
    max_features: str = forest_param("max_features")  # a fraction in (0, 1], sqrt or log2 (rf only)
    log_label: bool = forest_param("log_label")
    model_type: str = forest_param("model_type")  # rf = RandomForestRegressor, gbt = HistGradientBoostingRegressor

    def validate(self) -> ForestParams:
        """One clear line per bad value, before any data is read."""
        choices.check("model_type", self.model_type, MODEL_TYPES)
        if self.num_trees < 1:
            raise UserInputError(f"num_trees must be >= 1, got {self.num_trees}.")
        if not 0 <= self.max_depth <= 100:
            raise UserInputError(f"max_depth must be between 0 (unlimited) and 100, got {self.max_depth}.")
        if self.min_samples_leaf < 1:
            raise UserInputError(f"min_samples_leaf must be >= 1, got {self.min_samples_leaf}.")
        max_features = _max_features(self.max_features)
        if self.model_type == "gbt" and isinstance(max_features, str):
            raise UserInputError(
                f"max_features '{self.max_features}' applies to rf: gbt takes a fraction in (0, 1], e.g. 1.0."
            )
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def _max_features(value: str):
    if value in MAX_FEATURES_NAMES:
        return value
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if not 0.0 < fraction <= 1.0:
        raise UserInputError(f"max_features '{value}' is not valid: use a fraction in (0, 1] or sqrt or log2.")
    return fraction


def build_forest(spec: data_schema.FeatureSpec, params: ForestParams, seed: int, n_jobs: int = 1):
    """Encoding + tree ensemble as one scikit-learn estimator taking the raw feature columns."""
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    encode = ColumnTransformer(
        [
            (
                "categorical",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2),
                spec.categorical_cols,
            )
        ],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    if params.model_type == "gbt":
        forest = HistGradientBoostingRegressor(
            max_iter=params.num_trees,
            max_depth=params.max_depth or None,
            min_samples_leaf=params.min_samples_leaf,
            max_features=float(params.max_features),
            early_stopping=False,
            random_state=seed,
        )
    else:
        forest = RandomForestRegressor(
            n_estimators=params.num_trees,
            max_depth=params.max_depth or None,
            min_samples_leaf=params.min_samples_leaf,
            max_features=_max_features(params.max_features),
            random_state=seed,
            n_jobs=n_jobs,
        )
    model = Pipeline([("encode", encode), ("forest", forest)])
    if params.log_label:
        return TransformedTargetRegressor(regressor=model, func=np.log1p, inverse_func=np.expm1, check_inverse=False)
    return model


def fit_in_stages(spec: data_schema.FeatureSpec, params: ForestParams, seed: int, x, y, stages: int):
    """Fit ``build_forest``'s model growing its trees (rf) or boosting iterations (gbt) in ``stages``
    warm-started steps, yielding (trees so far, predict function) after each: a search can stop a poor
    configuration early. scikit-learn's warm start draws the new trees' seeds as one fit would, so the
    last stage predicts exactly as ``build_forest``'s model fitted at once (tested)."""
    model = build_forest(spec, replace(params, log_label=False), seed, n_jobs=1)
    model.set_params(forest__warm_start=True)
    size = "forest__n_estimators" if params.model_type == "rf" else "forest__max_iter"
    target = np.log1p(y) if params.log_label else y  # what the TransformedTargetRegressor would fit
    for trees in sorted({max(1, round(params.num_trees * k / stages)) for k in range(1, stages + 1)}):
        model.set_params(**{size: trees})
        model.fit(x, target)
        yield trees, (lambda rows, fitted=model: np.expm1(fitted.predict(rows))) if params.log_label else model.predict


class ForestEstimator(BaseEstimator, RegressorMixin):
    """``build_forest`` as a scikit-learn estimator whose parameters are ForestParams' fields, so a
    GridSearchCV can search them (log_label included). Only ``model_`` (plain scikit-learn) is logged."""

    def __init__(
        self,
        spec=None,
        num_trees=100,
        max_depth=10,
        min_samples_leaf=1,
        max_features="1.0",
        log_label=False,
        model_type="rf",
        seed=42,
    ):
        self.spec = spec
        self.model_type = model_type
        self.num_trees = num_trees
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.log_label = log_label
        self.seed = seed

    def fit(self, x, y):
        params = ForestParams(
            self.num_trees, self.max_depth, self.min_samples_leaf, self.max_features, self.log_label, self.model_type
        )
        self.model_ = build_forest(self.spec, params, self.seed).fit(x, y)
        return self

    def predict(self, x):
        return self.model_.predict(x)


def single_threaded(model):
    """Make a fitted model predict on one thread: under Spark each task already has its own core, and
    a forest's default n_jobs=-1 would start a thread per core in every task."""
    for part in (model, getattr(model, "regressor_", None)):
        steps = getattr(part, "steps", None)
        if steps and hasattr(steps[-1][1], "n_jobs"):
            steps[-1][1].n_jobs = 1
    return model


def stable_order(frame):
    """Rows sorted by every column: Spark returns rows in no fixed order, and a forest fitted on the
    same rows in another order is another forest."""
    return frame.sort_values(list(frame.columns), kind="mergesort", na_position="last").reset_index(drop=True)


def to_pandas(df, spec: data_schema.FeatureSpec):
    """(features, label) as pandas, in a stable row order so the same seed gives the same model."""
    frame = stable_order(df.select(*spec.feature_cols, spec.label_col).toPandas())
    return frame[spec.feature_cols], frame[spec.label_col].to_numpy(dtype=float)


def _log_importance(model, spec: data_schema.FeatureSpec, prefix: str = "") -> None:
    """The forest's impurity importances under the original column names (rf only: gbt has none)."""
    import pandas as pd

    fitted = getattr(model, "regressor_", model)
    estimator = fitted.steps[-1][1]
    if not hasattr(estimator, "feature_importances_"):
        return
    # The encoder outputs the categorical columns first, then the passthrough (numeric) ones.
    table = pd.DataFrame(
        {"feature": spec.categorical_cols + spec.numeric_cols, "importance": estimator.feature_importances_}
    )
    table = table.sort_values(["importance", "feature"], ascending=[False, True]).reset_index(drop=True)
    tracking.log_dataframe_csv(table, f"{prefix}feature_importance.csv")
    fig = plots.feature_importance_figure(table)
    tracking.log_figure(fig, f"{prefix}feature_importance.png")
    plots.close(fig)


def fit_evaluate_log(
    prepared: splits.PreparedData, model, fitted: bool = False, prefix: str = "", name: str = "model"
) -> tuple[dict, str]:
    """Fit ``model`` on the training split (unless ``fitted``), score the test split and log the metrics
    (named ``<prefix>rmse``...), figures and the model under ``name`` (predicting on one thread):
    (metrics, logged model URI)."""
    spec = prepared.spec
    x_train, y_train = to_pandas(prepared.train_df, spec)
    x_test, y_test = to_pandas(prepared.test_df, spec)
    started = time.perf_counter()
    if not fitted:
        model.fit(x_train, y_train)
    fit_seconds = time.perf_counter() - started
    model = single_threaded(model)
    predicted = model.predict(x_test)
    metrics = array_regression_metrics(y_test, predicted)
    fig = plots.predicted_vs_actual_figure(y_test, predicted, spec.label_col)
    tracking.log_figure(fig, f"{prefix}predicted_vs_actual.png")
    plots.close(fig)
    _log_importance(model, spec, prefix)
    info = log_sklearn_model(model, x_test, name=name)
    # Test metrics linked to the logged model and the test split they were measured on.
    tracking.log_metrics(
        {f"{prefix}{k}": v for k, v in metrics.items()}, model_id=info.model_id, dataset=prepared.datasets.get("test")
    )
    tracking.log_metrics({f"{prefix}fit_seconds": fit_seconds}, model_id=info.model_id)
    return metrics, info.model_uri
