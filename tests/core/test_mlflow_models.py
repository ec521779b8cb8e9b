"""log_sklearn_model: the skops types MLflow trusts at load time come from a fixed allow-list, not from
the model file itself. Each kind of scikit-learn model the project logs, built by the project's own
builders on a small SF Airbnb-like frame (no Spark), needs only allowed types; a model needing another
type is refused before anything is logged; a logged project model loads back and predicts. A real
MLflow SQLite store (the session's, see conftest's ``test_environment``)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io

from sparkmlops.core import mlflow_models
from sparkmlops.data import schema
from sparkmlops.fitting import sklearn_forest
from sparkmlops.inference.group_models import group_spec
from sparkmlops.train.train_per_group import PerGroupParams

SEED = 7
SMALL = {"num_trees": 5, "max_depth": 4}


def _airbnb_like(rows: int = 80) -> tuple[schema.FeatureSpec, pd.DataFrame, np.ndarray]:
    """The SF Airbnb feature columns (strings and doubles, some missing) and a price label."""
    rng = np.random.default_rng(SEED)
    frame = {}
    for name, kind, _ in schema.AIRBNB_COLUMNS:
        if name == schema.DEFAULT_LABEL:
            continue
        if kind == "string":
            frame[name] = pd.Series(rng.choice(["a", "b", "c", None], rows), dtype=object)
        else:
            values = rng.normal(size=rows)
            values[rng.random(rows) < 0.1] = np.nan
            frame[name] = values
    x = pd.DataFrame(frame)
    spec = schema.FeatureSpec(
        schema.DEFAULT_LABEL, [c for c in x if x[c].dtype == object], [c for c in x if x[c].dtype != object], []
    )
    return spec, x[spec.feature_cols], rng.uniform(50, 500, rows)


def _project_models():
    """(kind, unfitted estimator, spec) for each kind of model the project logs with log_sklearn_model."""
    spec, _, _ = _airbnb_like()
    forest = sklearn_forest.ForestParams
    yield "train_sklearn rf", sklearn_forest.build_forest(spec, forest(**SMALL), SEED), spec
    yield (
        "train_sklearn rf sqrt log_label",
        sklearn_forest.build_forest(spec, forest(**SMALL, max_features="sqrt", log_label=True), SEED),
        spec,
    )
    yield "train_sklearn gbt", sklearn_forest.build_forest(spec, forest(**SMALL, model_type="gbt"), SEED), spec
    yield (
        "train_sklearn gbt log_label",
        sklearn_forest.build_forest(spec, forest(**SMALL, model_type="gbt", max_features="0.5", log_label=True), SEED),
        spec,
    )
    # tune_grid logs the refitted best candidate's plain model (ForestEstimator.model_).
    yield "tune_grid", sklearn_forest.ForestEstimator(spec=spec, seed=SEED, **SMALL), spec
    # train_per_group: each group's model (without the group column) and the fallback model.
    for model_type in ("rf", "gbt"):
        params = PerGroupParams(model_type=model_type, **SMALL)
        per_group = group_spec(spec, params.group_col)
        yield (
            f"train_per_group {model_type}",
            sklearn_forest.build_forest(per_group, params.forest_params(), SEED, n_jobs=1),
            per_group,
        )
        yield (
            f"train_per_group fallback {model_type}",
            sklearn_forest.build_forest(spec, params.forest_params(), SEED, n_jobs=-1),
            spec,
        )


KINDS = [kind for kind, _, _ in _project_models()]


def _fitted(model, spec: schema.FeatureSpec):
    """Fitted as the project fits it before logging (fit_evaluate_log: one thread to predict)."""
    _, x, y = _airbnb_like()
    model.fit(x[spec.feature_cols], y)
    if isinstance(model, sklearn_forest.ForestEstimator):
        model = model.model_
    return sklearn_forest.single_threaded(model), x[spec.feature_cols]


def _fitted_kind(kind: str):
    return next(_fitted(model, spec)[0] for name, model, spec in _project_models() if name == kind)


def _needed_types(model) -> set[str]:
    """What skops does not trust by default in ``model``'s file."""
    return set(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_project_model_needs_only_allowed_skops_types(kind):
    needed = _needed_types(_fitted_kind(kind))
    assert needed, f"{kind}: a tree model needs its tree type trusted"
    assert needed <= set(mlflow_models.SKOPS_TRUSTED_TYPES), needed - set(mlflow_models.SKOPS_TRUSTED_TYPES)


def test_the_allow_list_is_exactly_what_the_project_models_need():
    needed = set().union(*(_needed_types(_fitted_kind(kind)) for kind in KINDS))
    assert needed == set(mlflow_models.SKOPS_TRUSTED_TYPES)


def _add_one(values):
    """Not a project type: a skops file naming it must not be loaded as trusted."""
    return values + 1.0


def test_a_model_with_a_type_outside_the_allow_list_is_refused_before_anything_is_logged(test_environment):
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    _, x, y = _airbnb_like()
    x = x[["accommodates", "bedrooms"]].fillna(0.0)
    model = Pipeline([("shift", FunctionTransformer(_add_one)), ("linear", LinearRegression())]).fit(x, y)
    outside = f"{__name__}._add_one"  # a function of this module: skops would call it at load
    assert outside in _needed_types(model)

    with mlflow.start_run() as run:
        with pytest.raises(RuntimeError) as refused:
            mlflow_models.log_sklearn_model(model, x)
    message = str(refused.value)
    assert "\n" not in message and outside in message, message
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )
    assert models == []
    assert mlflow.MlflowClient().list_artifacts(run.info.run_id) == []


@pytest.mark.parametrize("model_type", ["rf", "gbt"])
def test_a_logged_project_model_loads_and_predicts(test_environment, model_type):
    spec, _, _ = _airbnb_like()
    params = sklearn_forest.ForestParams(**SMALL, model_type=model_type, log_label=True)
    model, x = _fitted(sklearn_forest.build_forest(spec, params, SEED), spec)

    with mlflow.start_run():
        info = mlflow_models.log_sklearn_model(model, x)

    # The MLmodel file trusts only what this model needs, all of it from the allow-list.
    flavor = mlflow_models.model_info(info.model_uri).flavors["sklearn"]
    assert set(flavor["skops_trusted_types"]) == _needed_types(model)
    expected = model.predict(x)
    np.testing.assert_allclose(mlflow.sklearn.load_model(info.model_uri).predict(x), expected)
    np.testing.assert_allclose(np.asarray(mlflow.pyfunc.load_model(info.model_uri).predict(x)).ravel(), expected)


def test_a_model_whose_mlmodel_trusts_more_is_not_loaded(test_environment, tmp_path):
    """MLflow trusts, at load, the types a model's MLmodel lists: a tampered file (here one that adds
    `builtins.eval`) is refused by every way the project loads or resolves a model, before anything runs."""
    import yaml

    from sparkmlops.core.errors import UserInputError
    from sparkmlops.inference import resolve

    spec, _, _ = _airbnb_like()
    model, x = _fitted(sklearn_forest.build_forest(spec, sklearn_forest.ForestParams(**SMALL), SEED), spec)
    with mlflow.start_run():
        info = mlflow_models.log_sklearn_model(model, x)
    folder = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path))
    mlmodel = tmp_path / "MLmodel" if (tmp_path / "MLmodel").exists() else next(tmp_path.rglob("MLmodel"))
    content = yaml.safe_load(mlmodel.read_text())
    content["flavors"]["sklearn"]["skops_trusted_types"].append("builtins.eval")
    mlmodel.write_text(yaml.safe_dump(content))

    for load in (
        lambda: resolve.resolve_model(folder, require_flavor="python_function"),
        lambda: mlflow_models.load_pyfunc_model(folder),
    ):
        with pytest.raises(
            UserInputError,
            match=r"asks to be loaded trusting types beyond the project's "
            r"allow-list \(builtins\.eval\)",
        ):
            load()
    mlflow_models.check_skops_trust(info.model_uri, mlflow_models.model_info(info.model_uri).flavors)  # untouched: fine
