"""Single-node scikit-learn models on the same data, split and metrics as the Spark pipeline.

The features are the Spark pipeline's: string columns ordinal-encoded (unseen and missing values get
their own codes, as StringIndexer's handleInvalid="keep" does), numeric columns as they are. The model
is a random forest (``rf``) or histogram gradient boosting (``gbt``) behind that encoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from sparkmlops import data as data_lib
from sparkmlops import environment
from sparkmlops.errors import UserInputError

# What a logged scikit-learn model needs at load time (MLflow 3 saves it with skops).
SKLEARN_RUNTIME_PACKAGES = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")
MAX_FEATURES_NAMES = ("sqrt", "log2")
MODEL_TYPES = ("rf", "gbt")


@dataclass(frozen=True)
class ForestParams:
    """A scikit-learn tree ensemble's settings, named like the MLlib ones where they mean the same."""

    num_trees: int = 100  # trees (rf) or boosting iterations (gbt)
    max_depth: int = 10  # 0 = unlimited
    min_samples_leaf: int = 1
    max_features: str = "1.0"  # a fraction in (0, 1], sqrt or log2 (rf only)
    log_label: bool = False
    model_type: str = "rf"  # rf = RandomForestRegressor, gbt = HistGradientBoostingRegressor

    def validate(self) -> "ForestParams":
        """One clear line per bad value, before any data is read."""
        if self.model_type not in MODEL_TYPES:
            raise UserInputError(f"unknown model_type '{self.model_type}': use rf (random forest) or gbt "
                                 "(scikit-learn's histogram gradient boosting).")
        if self.num_trees < 1:
            raise UserInputError(f"num_trees must be >= 1, got {self.num_trees}.")
        if not 0 <= self.max_depth <= 100:
            raise UserInputError(f"max_depth must be between 0 (unlimited) and 100, got {self.max_depth}.")
        if self.min_samples_leaf < 1:
            raise UserInputError(f"min_samples_leaf must be >= 1, got {self.min_samples_leaf}.")
        max_features = _max_features(self.max_features)
        if self.model_type == "gbt" and isinstance(max_features, str):
            raise UserInputError(f"max_features '{self.max_features}' applies to rf: gbt takes a fraction "
                                 "in (0, 1], e.g. 1.0.")
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


def build_forest(spec: data_lib.FeatureSpec, params: ForestParams, seed: int, n_jobs: int = 1):
    """Encoding + tree ensemble as one scikit-learn estimator taking the raw feature columns."""
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    encode = ColumnTransformer(
        [("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                        encoded_missing_value=-2), spec.categorical_cols)],
        remainder="passthrough", verbose_feature_names_out=False)
    if params.model_type == "gbt":
        forest = HistGradientBoostingRegressor(max_iter=params.num_trees, max_depth=params.max_depth or None,
                                               min_samples_leaf=params.min_samples_leaf,
                                               max_features=float(params.max_features), early_stopping=False,
                                               random_state=seed)
    else:
        forest = RandomForestRegressor(n_estimators=params.num_trees, max_depth=params.max_depth or None,
                                       min_samples_leaf=params.min_samples_leaf,
                                       max_features=_max_features(params.max_features), random_state=seed,
                                       n_jobs=n_jobs)
    model = Pipeline([("encode", encode), ("forest", forest)])
    if params.log_label:
        return TransformedTargetRegressor(regressor=model, func=np.log1p, inverse_func=np.expm1,
                                          check_inverse=False)
    return model


class ForestEstimator(BaseEstimator, RegressorMixin):
    """``build_forest`` as a scikit-learn estimator whose parameters are ForestParams' fields, so a
    GridSearchCV can search them (log_label included). Only ``model_`` (plain scikit-learn) is logged."""

    def __init__(self, spec=None, num_trees=100, max_depth=10, min_samples_leaf=1, max_features="1.0",
                 log_label=False, model_type="rf", seed=42):
        self.spec = spec
        self.model_type = model_type
        self.num_trees = num_trees
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.log_label = log_label
        self.seed = seed

    def fit(self, x, y):
        params = ForestParams(self.num_trees, self.max_depth, self.min_samples_leaf, self.max_features,
                              self.log_label, self.model_type)
        self.model_ = build_forest(self.spec, params, self.seed).fit(x, y)
        return self

    def predict(self, x):
        return self.model_.predict(x)


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """rmse, mae and r2 defined exactly as training.regression_metrics does on Spark."""
    y_true = np.asarray(y_true, dtype=float)
    err = np.asarray(y_pred, dtype=float) - y_true
    var = float(np.var(y_true))
    mse = float(np.mean(err * err))
    return {"rmse": mse ** 0.5, "mae": float(np.mean(np.abs(err))), "r2": 1.0 - mse / var if var else float("nan")}


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


def to_pandas(df, spec: data_lib.FeatureSpec):
    """(features, label) as pandas, in a stable row order so the same seed gives the same model."""
    frame = stable_order(df.select(*spec.feature_cols, spec.label_col).toPandas())
    return frame[spec.feature_cols], frame[spec.label_col].to_numpy(dtype=float)


def log_sklearn_model(model, input_sample, name: str = "model", run_id: str | None = None):
    """Log a fitted estimator with signature, input example and pinned requirements (skops format),
    to the active run or to ``run_id`` (from a Spark worker, where no run is active)."""
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    sample = input_sample.head(5)
    signature = infer_signature(input_sample, model.predict(input_sample))
    # MLflow loads skops files only with the types it was told to trust: ours are plain sklearn/numpy types.
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return mlflow.sklearn.log_model(model, name=name, signature=signature, input_example=sample,
                                    pip_requirements=environment.model_pip_requirements(SKLEARN_RUNTIME_PACKAGES),
                                    skops_trusted_types=trusted or None, run_id=run_id)
