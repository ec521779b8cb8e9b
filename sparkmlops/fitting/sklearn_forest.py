"""Single-node scikit-learn models on the same data, split and metrics as the Spark pipeline.

The features are the Spark pipeline's: string columns ordinal-encoded (unseen values get a code of
their own, as StringIndexer's handleInvalid="keep" does, and a null string another: its own category),
numeric and boolean (as 0/1) columns with nulls and NaN imputed (SimpleImputer, ``impute``) and a
``<col>_na`` indicator for each column that had missing values in training (MissingIndicator), as train's
Imputer does. The model is a random forest (``rf``) or histogram gradient boosting (``gbt``), a regressor
or a classifier by the task, behind that encoder. A classifier's answers are class probabilities in
``spec.classes``' order (data.classes.class_scores).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from sklearn.base import BaseEstimator

from sparkmlops.core import choices, plots, tracking
from sparkmlops.core.entry_points import param
from sparkmlops.core.errors import UserInputError
from sparkmlops.core.mlflow_models import log_sklearn_model
from sparkmlops.data import classes, parameters, splits
from sparkmlops.data import schema as data_schema
from sparkmlops.fitting.metrics import array_classification_metrics, array_regression_metrics
from sparkmlops.fitting.spark_pipeline import indicator_cols

# What a logged scikit-learn model needs at load time (MLflow 3 saves it with skops).
MAX_FEATURES_NAMES = ("sqrt", "log2")
MODEL_TYPES = {
    "rf": "RandomForestRegressor or RandomForestClassifier",
    "gbt": "HistGradientBoostingRegressor or HistGradientBoostingClassifier, num_trees = iterations",
}
SIMPLE_IMPUTER_STRATEGY = {"median": "median", "mean": "mean", "mode": "most_frequent"}


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
    if name == "impute":
        return parameters.impute()
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
    model_type: str = forest_param("model_type")  # rf = random forest, gbt = histogram gradient boosting
    impute: str = forest_param("impute")

    def validate(self) -> ForestParams:
        """One clear line per bad value, before any data is read."""
        choices.check("model_type", self.model_type, MODEL_TYPES)
        choices.check("impute", self.impute, parameters.IMPUTE)
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


def check_task(task: str, log_label: bool) -> None:
    """log_label has no meaning for a classifier: one line, before the fit."""
    if task == "classification" and log_label:
        raise UserInputError("log_label applies to regression: a class label has no logarithm; drop -P log_label.")


def encoder(spec: data_schema.FeatureSpec, impute: str = "median"):
    """The features as train's pipeline makes them: categories as codes, numbers (and booleans as 0/1)
    imputed, one missing-value indicator per column in ``spec.missing_cols`` (as train's, none where the
    data has its own ``<col>_na``)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.preprocessing import OrdinalEncoder

    parts = [
        (
            "categorical",
            OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2),
            spec.categorical_cols,
        ),
        (
            "numeric",
            # keep_empty_features: a column missing in every training row of a fold stays a column
            SimpleImputer(strategy=SIMPLE_IMPUTER_STRATEGY[impute], keep_empty_features=True),
            spec.numeric_cols + spec.boolean_cols,
        ),
    ]
    if indicator_cols(spec):
        parts.append(("missing", MissingIndicator(features="all"), indicator_cols(spec)))
    return ColumnTransformer(parts, verbose_feature_names_out=False)


def encoded_feature_names(spec: data_schema.FeatureSpec) -> list[str]:
    """The encoder's output columns under the names users know (``<col>_na`` for an indicator)."""
    return spec.categorical_cols + spec.numeric_cols + spec.boolean_cols + [f"{c}_na" for c in indicator_cols(spec)]


def build_forest(spec: data_schema.FeatureSpec, params: ForestParams, seed: int, n_jobs: int = 1):
    """Encoding + tree ensemble (a classifier for a classification spec) as one scikit-learn estimator
    taking the raw feature columns."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.pipeline import Pipeline

    tree = {"max_depth": params.max_depth or None, "min_samples_leaf": params.min_samples_leaf, "random_state": seed}
    if params.model_type == "gbt":
        boosting = HistGradientBoostingClassifier if spec.is_classifier else HistGradientBoostingRegressor
        forest = boosting(
            max_iter=params.num_trees, max_features=float(params.max_features), early_stopping=False, **tree
        )
    else:
        trees = RandomForestClassifier if spec.is_classifier else RandomForestRegressor
        forest = trees(
            n_estimators=params.num_trees, max_features=_max_features(params.max_features), n_jobs=n_jobs, **tree
        )
    model = Pipeline([("encode", encoder(spec, params.impute)), ("forest", forest)])
    if params.log_label:
        return TransformedTargetRegressor(regressor=model, func=np.log1p, inverse_func=np.expm1, check_inverse=False)
    return model


def answers(model, rows, spec: data_schema.FeatureSpec):
    """What a fitted model answers for ``rows``: predictions, or class probabilities in spec.classes' order."""
    return classes.class_scores(model, rows, spec.classes) if spec.is_classifier else model.predict(rows)


def answer_metrics(spec: data_schema.FeatureSpec, y_true, answered) -> dict[str, float]:
    """The task's metrics of ``answers``' output against the true labels."""
    if spec.is_classifier:
        return array_classification_metrics(y_true, answered, spec.classes)
    return array_regression_metrics(y_true, answered)


def fit_in_stages(spec: data_schema.FeatureSpec, params: ForestParams, seed: int, x, y, stages: int):
    """Fit ``build_forest``'s model growing its trees (rf) or boosting iterations (gbt) in ``stages``
    warm-started steps, yielding (trees so far, ``answers`` function) after each: a search can stop a poor
    configuration early. scikit-learn's warm start draws the new trees' seeds as one fit would, so the
    last stage predicts exactly as ``build_forest``'s model fitted at once (tested)."""
    model = build_forest(spec, replace(params, log_label=False), seed, n_jobs=1)
    model.set_params(forest__warm_start=True)
    size = "forest__n_estimators" if params.model_type == "rf" else "forest__max_iter"
    target = np.log1p(y) if params.log_label else y  # what the TransformedTargetRegressor would fit
    for trees in sorted({max(1, round(params.num_trees * k / stages)) for k in range(1, stages + 1)}):
        model.set_params(**{size: trees})
        model.fit(x, target)
        if params.log_label:
            yield trees, lambda rows, fitted=model: np.expm1(fitted.predict(rows))
        else:
            yield trees, lambda rows, fitted=model: answers(fitted, rows, spec)


class ForestEstimator(BaseEstimator):
    """``build_forest`` as a scikit-learn estimator whose parameters are ForestParams' fields, so a
    GridSearchCV can search them (log_label and impute included); a regressor or a classifier as
    ``spec`` says. Only ``model_`` (plain scikit-learn) is logged."""

    def __init__(
        self,
        spec=None,
        num_trees=100,
        max_depth=10,
        min_samples_leaf=1,
        max_features="1.0",
        log_label=False,
        model_type="rf",
        impute="median",
        seed=42,
    ):
        self.spec = spec
        self.model_type = model_type
        self.num_trees = num_trees
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.log_label = log_label
        self.impute = impute
        self.seed = seed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier" if self.spec is not None and self.spec.is_classifier else "regressor"
        return tags

    def fit(self, x, y):
        params = ForestParams(**{field.name: getattr(self, field.name) for field in fields(ForestParams)})
        self.model_ = build_forest(self.spec, params, self.seed).fit(x, y)
        return self

    @property
    def classes_(self):
        return self.model_.classes_

    def predict(self, x):
        return self.model_.predict(x)

    def predict_proba(self, x):
        return self.model_.predict_proba(x)

    def score(self, x, y):
        """Accuracy for a classifier, r2 for a regressor (GridSearchCV's default scoring)."""
        from sklearn.metrics import accuracy_score, r2_score

        scorer = accuracy_score if self.spec.is_classifier else r2_score
        return scorer(y, self.predict(x))


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


def feature_columns(spec: data_schema.FeatureSpec) -> list:
    """The model's input columns as Spark columns: booleans as 0/1 doubles (null stays null, to impute)."""
    from pyspark.sql import functions as F

    return [F.col(c).cast("double").alias(c) if c in spec.boolean_cols else F.col(c) for c in spec.feature_cols]


def label_array(values, spec: data_schema.FeatureSpec):
    """The label as numbers (regression) or as the label's own values (classification)."""
    return np.asarray(values) if spec.is_classifier else np.asarray(values, dtype=float)


def to_pandas(df, spec: data_schema.FeatureSpec):
    """(features, label) as pandas, in a stable row order so the same seed gives the same model."""
    frame = stable_order(df.select(*feature_columns(spec), spec.label_col).toPandas())
    return frame[spec.feature_cols], label_array(frame[spec.label_col], spec)


def _log_importance(model, spec: data_schema.FeatureSpec, prefix: str = "") -> None:
    """The forest's impurity importances under the original column names (rf only: gbt has none)."""
    import pandas as pd

    fitted = getattr(model, "regressor_", model)
    estimator = fitted.steps[-1][1]
    if not hasattr(estimator, "feature_importances_"):
        return
    table = pd.DataFrame({"feature": encoded_feature_names(spec), "importance": estimator.feature_importances_})
    table = table.sort_values(["importance", "feature"], ascending=[False, True]).reset_index(drop=True)
    tracking.log_dataframe_csv(table, f"{prefix}feature_importance.csv")
    fig = plots.feature_importance_figure(table)
    tracking.log_figure(fig, f"{prefix}feature_importance.png")
    plots.close(fig)


def _log_figures(spec: data_schema.FeatureSpec, y_test, answered, prefix: str) -> None:
    """Predicted vs actual (regression); the confusion matrix and, for two classes, ROC and PR curves."""
    figures = {}
    if spec.is_classifier:
        index = {label: i for i, label in enumerate(spec.classes)}
        truth = np.array([index[label] for label in y_test])
        pairs = np.stack([truth, np.asarray(answered).argmax(axis=1)], axis=1)
        cells, counts = np.unique(pairs, axis=0, return_counts=True)
        figures["confusion_matrix.png"] = plots.confusion_matrix_figure(
            [(t, p, n) for (t, p), n in zip(cells, counts)], [str(c) for c in spec.classes], spec.label_col
        )
        if len(spec.classes) == 2:
            figures.update(plots.binary_curve_figures(truth, np.asarray(answered)[:, 1], str(spec.classes[1])))
    else:
        figures["predicted_vs_actual.png"] = plots.predicted_vs_actual_figure(y_test, answered, spec.label_col)
    for name, fig in figures.items():
        tracking.log_figure(fig, f"{prefix}{name}")
        plots.close(fig)


def model_metadata(spec: data_schema.FeatureSpec) -> dict:
    """What consumers read from the MLmodel file, as train writes it: the task, the label, whether
    missing values are imputed inside the model, and a classifier's classes (data.classes.class_scores' order)."""
    metadata = {"task": spec.task, "label_col": spec.label_col, "label_type": spec.label_type, "imputes_missing": True}
    if spec.is_classifier:
        metadata["classes"] = [c.item() if hasattr(c, "item") else c for c in spec.classes]
    return metadata


def fit_evaluate_log(
    prepared: splits.PreparedData, model, fitted: bool = False, prefix: str = "", name: str = "model"
) -> tuple[dict, str]:
    """Fit ``model`` on the training split (unless ``fitted``), score the test split and log the task's
    metrics (named ``<prefix>rmse``, ``<prefix>accuracy``...), figures and the model under ``name``
    (predicting on one thread): (metrics, logged model URI)."""
    spec = prepared.spec
    x_train, y_train = to_pandas(prepared.train_df, spec)
    x_test, y_test = to_pandas(prepared.test_df, spec)
    started = time.perf_counter()
    if not fitted:
        model.fit(x_train, y_train)
    fit_seconds = time.perf_counter() - started
    model = single_threaded(model)
    answered = answers(model, x_test, spec)
    metrics = answer_metrics(spec, y_test, answered)
    _log_figures(spec, y_test, answered, prefix)
    _log_importance(model, spec, prefix)
    info = log_sklearn_model(model, x_test, name=name, metadata=model_metadata(spec))
    # Test metrics linked to the logged model and the test split they were measured on.
    tracking.log_metrics(
        {f"{prefix}{k}": v for k, v in metrics.items()}, model_id=info.model_id, dataset=prepared.datasets.get("test")
    )
    tracking.log_metrics({f"{prefix}fit_seconds": fit_seconds}, model_id=info.model_id)
    return metrics, info.model_uri
