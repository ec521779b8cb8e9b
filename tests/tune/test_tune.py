"""Hyperparameter search in-process against the real SQLite store: nested runs, best-run tagging,
failed trials, determinism by seed, both engines, the grid search, and the refit models. The sequential
tuners (tune_hyperopt, tune_optuna) meet the same tests; pruning is Optuna's alone."""

import json
import os

import mlflow
import pytest
from conftest import assert_logged_model

from sparkmlops.core import tracking
from sparkmlops.fitting import metrics as model_metrics
from sparkmlops.fitting import spark_pipeline
from sparkmlops.tune import tune_hyperopt, tune_optuna
from sparkmlops.tune.search import SearchFailed, TuneParams
from sparkmlops.tune.tune_grid import GridParams, grid_search_and_log

TUNERS = {"hyperopt": tune_hyperopt.tune_and_log, "optuna": tune_optuna.tune_and_log}

# Small spaces keep each trial to a second or two; the default spaces are exercised by the CLI tests.
SMALL_MLLIB_SPACE = {
    "num_trees": ("int", 5, 15, 5),
    "max_depth": ("int", 2, 4, 1),
    "max_bins": ("choice", [64, 128]),
    "feature_subset_strategy": ("choice", ["onethird", "all"]),
    "log_label": ("choice", [False, True]),
}
SMALL_SKLEARN_SPACE = {
    "num_trees": ("int", 5, 15, 5),
    "max_depth": ("int", 2, 6, 1),
    "min_samples_leaf": ("int", 1, 5, 1),
    "max_features": ("choice", ["1.0", "sqrt"]),
    "log_label": ("choice", [False, True]),
}


def _tune(spark, params, space, tuner="hyperopt"):
    with tracking.tracked_run("test-tune") as run:
        result = TUNERS[tuner](spark, params.validate(), space)
    return run.info.run_id, result


@pytest.fixture(scope="module", params=sorted(TUNERS))
def tuner(request):
    return request.param


def _children(client, parent_id):
    runs = client.search_runs(
        [client.get_run(parent_id).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    return sorted(runs, key=lambda r: int(r.data.tags["trial_number"]))


def _test_split(spark, data_path):
    """The rows train and tune hold out (same read, cast and seed as splits.prepare_data)."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(data_path).withColumn("price", F.col("price").cast("double"))
    return df.randomSplit([0.8, 0.2], seed=42)[1]


@pytest.fixture(scope="module")
def mllib_search(spark, default_data, tuner):
    return _tune(spark, TuneParams(data_path=default_data, max_evals=4), SMALL_MLLIB_SPACE, tuner)


def test_mllib_nested_runs_and_best_tagging(client, mllib_search):
    parent_id, result = mllib_search
    parent = client.get_run(parent_id)
    children = _children(client, parent_id)
    assert parent.info.status == "FINISHED"
    # Every search here is named test-tune: tune_optuna's study needs a unique name only while it runs.
    assert parent.info.run_name == "test-tune", parent.info.run_name
    assert [c.data.tags["trial_number"] for c in children] == ["0", "1", "2", "3"]
    assert [c.info.run_name for c in children] == ["trial-000", "trial-001", "trial-002", "trial-003"]
    # engine=mllib: each trial is a distributed fit driven from the driver, which is this process
    assert {(c.data.tags["trial_ran_on"], c.data.tags["trial_process"]) for c in children} == {
        ("driver", str(os.getpid()))
    }
    assert all(c.info.status == "FINISHED" for c in children)
    for child, trial in zip(children, result.trials):
        assert child.info.run_id == trial["run_id"]
        assert child.data.params["num_trees"] == str(trial["params"]["num_trees"])
        assert child.data.metrics["val_rmse"] == pytest.approx(trial["metrics"]["rmse"])
        assert child.data.metrics["loss"] == pytest.approx(trial["metrics"]["rmse"])
    best = min(children, key=lambda c: c.data.metrics["val_rmse"])
    assert parent.data.tags["best_run_id"] == best.info.run_id == result.best_run_id
    assert [c.info.run_id for c in children if c.data.tags.get("best_trial") == "true"] == [best.info.run_id]
    assert parent.data.metrics["best_val_rmse"] == pytest.approx(best.data.metrics["val_rmse"])
    for name, value in best.data.params.items():
        assert parent.data.params[f"best_{name}"] == value
    assert parent.data.metrics["trials_total"] == 4 and parent.data.metrics["trials_failed"] == 0
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"trials.csv", "loss_per_trial.png", "search_space.json", "feature_importance.csv"} <= artifacts
    assert_logged_model(parent_id)
    trials_csv = mlflow.artifacts.load_text(f"runs:/{parent_id}/trials.csv").splitlines()
    assert len(trials_csv) == 5 and trials_csv[0].startswith("trial,status,loss,run_id")


def test_mllib_refit_model_is_the_best_and_scores_the_test_split(spark, client, mllib_search, default_data):
    parent_id, result = mllib_search
    parent = client.get_run(parent_id)
    model = mlflow.spark.load_model(f"runs:/{parent_id}/model")
    forest = spark_pipeline.forest_of(model)
    assert forest.getNumTrees == result.best_params["num_trees"]
    assert forest.getMaxDepth() == result.best_params["max_depth"]
    expm1 = [stage for stage in model.stages if "expm1" in str(stage.extractParamMap())]
    assert bool(expm1) == result.best_params["log_label"]  # the expm1 stage
    metrics = model_metrics.regression_metrics(model.transform(_test_split(spark, default_data)), "price")
    assert metrics["rmse"] == pytest.approx(parent.data.metrics["rmse"], rel=1e-9)
    assert metrics["r2"] == pytest.approx(result.test_metrics["r2"], rel=1e-9)
    info = mlflow.models.get_model_info(f"runs:/{parent_id}/model")
    columns = spark.read.parquet(default_data).columns
    assert {c.name for c in info.signature.inputs.inputs} == set(columns) - {"price"}


def test_same_seed_same_trials_other_seed_other_trials(spark, default_data, mllib_search, tuner):
    _, first = mllib_search
    _, again = _tune(spark, TuneParams(data_path=default_data, max_evals=4), SMALL_MLLIB_SPACE, tuner)
    assert [t["params"] for t in again.trials] == [t["params"] for t in first.trials]
    assert [t["loss"] for t in again.trials] == [t["loss"] for t in first.trials]
    assert again.best_params == first.best_params and again.test_metrics == first.test_metrics
    # another seed draws another first trial (TPE's first trials are random draws from the seed)
    _, other = _tune(spark, TuneParams(data_path=default_data, max_evals=1, seed=7), SMALL_MLLIB_SPACE, tuner)
    assert other.trials[0]["params"] != first.trials[0]["params"]


# Each family with its own small parameters; xgboost has no feature_subset_strategy (train refuses one).
SMALL_FAMILY_SPACE = {
    "model_type": (
        "family",
        {
            "rf": {
                "num_trees": ("int", 5, 10, 5),
                "max_depth": ("int", 2, 4, 1),
                "feature_subset_strategy": ("choice", ["onethird", "all"]),
            },
            "gbt": {"num_trees": ("int", 3, 6, 3), "max_depth": ("int", 2, 3, 1)},
            "xgboost": {"num_trees": ("int", 5, 20, 5), "max_depth": ("int", 2, 5, 1)},
        },
    ),
    "log_label": ("choice", [False, True]),
}
FAMILY_PARAMETERS = {
    "rf": {"num_trees", "max_depth", "feature_subset_strategy"},
    "gbt": {"num_trees", "max_depth"},
    "xgboost": {"num_trees", "max_depth"},
}


def test_family_search_gives_each_trial_its_familys_parameters_and_refits_the_best_family(
    spark, client, default_data, tuner
):
    parent_id, result = _tune(spark, TuneParams(data_path=default_data, max_evals=8), SMALL_FAMILY_SPACE, tuner)
    assert len({t["params"]["model_type"] for t in result.trials}) >= 2, "8 seeded draws reach two families"
    for child, trial in zip(_children(client, parent_id), result.trials):
        family = trial["params"]["model_type"]
        assert set(trial["params"]) == FAMILY_PARAMETERS[family] | {"model_type", "log_label"}
        assert child.info.status == "FINISHED", child.data.tags.get("error")
        # the trial's run carries train's parameter names, as a train run does
        assert {k: child.data.params[k] for k in trial["params"]} == {k: str(v) for k, v in trial["params"].items()}
    model = mlflow.spark.load_model(f"runs:/{parent_id}/model")
    stage = type(spark_pipeline.forest_of(model)).__name__
    assert (
        stage
        == {"rf": "RandomForestRegressionModel", "gbt": "GBTRegressionModel", "xgboost": "SparkXGBRegressorModel"}[
            result.best_params["model_type"]
        ]
    )
    assert client.get_run(parent_id).data.params["best_model_type"] == result.best_params["model_type"]


def test_early_stop_ends_the_search_after_trials_without_progress(spark, client, default_data, tuner):
    # One configuration: every trial has the first one's loss, so none improves on it.
    space = {
        "num_trees": ("choice", [5]),
        "max_depth": ("choice", [2]),
        "max_bins": ("choice", [64]),
        "feature_subset_strategy": ("choice", ["all"]),
        "log_label": ("choice", [False]),
    }
    parent_id, result = _tune(
        spark, TuneParams(data_path=default_data, max_evals=10, early_stop_trials=2), space, tuner
    )
    assert len(result.trials) == 3  # the best (first) trial, then two without progress
    assert client.get_run(parent_id).data.metrics["trials_total"] == 3


def test_no_progress_counts_trials_since_the_first_best_loss():
    from sparkmlops.tune.search import no_progress

    assert not no_progress([5.0, 4.0, 4.5], 2) and no_progress([5.0, 4.0, 4.5, 4.0], 2)  # a tie is no progress
    assert no_progress([None, None], 2) and not no_progress([None], 2)  # failed trials make no progress
    assert not no_progress([3.0, 4.0, 5.0, 6.0], 0)  # 0 = never stop


def test_default_spaces_leave_out_the_costly_corner_unless_wide_is_asked():
    """The issue's corner: about 200 trees of depth 15 on every feature, minutes per trial."""
    from sparkmlops.tune.search import mllib_space, sklearn_space

    def reaches_corner(space):
        return (
            space["num_trees"][2] >= 200
            and space["max_depth"][2] >= 15
            and any(v in ("all", "1.0") for v in space.get("feature_subset_strategy", space.get("max_features"))[1])
        )

    families = mllib_space(37, True)["model_type"][1]
    assert set(families) == {"rf", "gbt", "xgboost"}
    assert not reaches_corner(families["rf"]) and not reaches_corner(sklearn_space(True))
    assert reaches_corner(mllib_space(37, True, "wide")["model_type"][1]["rf"])
    assert reaches_corner(sklearn_space(True, "wide"))
    assert mllib_space(37, False)["log_label"] == ("choice", [False])


def test_the_smoke_space_keeps_to_small_forests():
    from sparkmlops.tune.search import mllib_space, sklearn_space

    for families in (
        mllib_space(37, True, "smoke")["model_type"][1],
        mllib_space(37, True, "smoke", True)["model_type"][1],
    ):
        assert list(families) == ["rf"]
        assert families["rf"]["num_trees"][1:3] == (3, 10) and families["rf"]["max_depth"][1:3] == (2, 4)
        assert families["rf"]["max_bins"][1][0] >= 37  # still what the categories need
    space = sklearn_space(True, "smoke")
    assert space["num_trees"][1:3] == (3, 10) and space["max_depth"][1:3] == (2, 4)


def test_failed_trials_end_failed_and_the_search_goes_on(spark, client, default_data, tuner):
    # max_bins=4 cannot hold the 36 neighbourhoods: those trials fail inside the fit.
    space = {**SMALL_MLLIB_SPACE, "max_bins": ("choice", [4, 64])}
    parent_id, result = _tune(spark, TuneParams(data_path=default_data, max_evals=6), space, tuner)
    children = _children(client, parent_id)
    failed = [c for c in children if c.info.status == "FAILED"]
    ok = [c for c in children if c.info.status == "FINISHED"]
    assert failed and ok, "seed 42 draws both max_bins values"
    assert all(c.data.params["max_bins"] == "4" for c in failed)
    assert all("max_bins=4 is smaller than the number of categories" in c.data.tags["error"] for c in failed)
    assert all("val_rmse" not in c.data.metrics for c in failed)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_failed"] == len(failed)
    assert parent.data.tags["best_run_id"] in {c.info.run_id for c in ok}
    assert result.best_params["max_bins"] == 64


def test_all_trials_failing_fails_the_run(spark, client, default_data, tuner):
    space = {**SMALL_MLLIB_SPACE, "max_bins": ("choice", [4])}
    with pytest.raises(SearchFailed, match="all 2 trials failed, nothing to refit; first error: UserInputError"):
        _tune(spark, TuneParams(data_path=default_data, max_evals=2), space, tuner)
    runs = client.search_runs(
        [mlflow.get_experiment_by_name("sparkmlops-tests").experiment_id],
        filter_string="attributes.run_name = 'test-tune'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].info.status == "FAILED" and "all 2 trials failed" in runs[0].data.tags["error"]
    assert {c.info.status for c in _children(client, runs[0].info.run_id)} == {"FAILED"}


def test_sklearn_engine_runs_trials_on_executors(spark, client, default_data, tuner):
    parent_id, result = _tune(
        spark,
        TuneParams(data_path=default_data, max_evals=4, engine="sklearn", parallelism=2),
        SMALL_SKLEARN_SPACE,
        tuner,
    )
    children = _children(client, parent_id)
    pruned = {t["run_id"] for t in result.trials if t["status"] == "pruned"}  # tune_optuna's pruner may stop some
    assert len(children) == 4 and all(
        c.info.status == ("KILLED" if c.info.run_id in pruned else "FINISHED") for c in children
    )
    assert all(c.data.tags["engine"] == "sklearn" for c in children)
    # Where the trials ran, as each trial's own process saw it: in Spark tasks (Python workers, not this
    # driver process), spread over as many tasks as the parallelism allows.
    assert {c.data.tags["trial_ran_on"] for c in children} == {"spark task"}
    assert all(c.data.tags["trial_process"] != str(os.getpid()) for c in children)
    assert len({c.data.tags["spark_task_attempt_id"] for c in children}) >= 2
    best = min((c for c in children if c.info.run_id not in pruned), key=lambda c: c.data.metrics["val_rmse"])
    parent = client.get_run(parent_id)
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert best.data.tags["best_trial"] == "true"

    # The logged model is plain scikit-learn (skops), loads without Spark and reproduces the test metrics.
    assert_logged_model(parent_id)
    model = mlflow.sklearn.load_model(f"runs:/{parent_id}/model")
    test = _test_split(spark, default_data).toPandas()
    predicted = model.predict(test.drop(columns=["price"]))
    rmse = float(((predicted - test["price"]) ** 2).mean() ** 0.5)
    assert rmse == pytest.approx(parent.data.metrics["rmse"], rel=1e-9)
    requirements = mlflow.artifacts.load_text(f"runs:/{parent_id}/model/requirements.txt")
    assert "scikit-learn==1.9.1" in requirements and "skops==" in requirements
    assert result.test_metrics["r2"] > 0.3


def test_sklearn_engine_is_deterministic_with_one_worker(spark, default_data, tuner):
    params = TuneParams(data_path=default_data, max_evals=2, engine="sklearn", parallelism=1)
    _, first = _tune(spark, params, SMALL_SKLEARN_SPACE, tuner)
    _, again = _tune(spark, params, SMALL_SKLEARN_SPACE, tuner)
    assert [t["params"] for t in again.trials] == [t["params"] for t in first.trials]
    assert [t["loss"] for t in again.trials] == [t["loss"] for t in first.trials]


def test_grid_search_nested_runs_cv_results_and_model(spark, client, default_data):
    grid = {"num_trees": [5, 10], "max_depth": [4], "log_label": [False, True]}
    params = GridParams(data_path=default_data, param_grid=json.dumps(grid), cv=2, parallelism=2).validate()
    with tracking.tracked_run("test-grid") as run:
        result = grid_search_and_log(spark, params)
    parent = client.get_run(run.info.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(children) == result.candidates == 4
    by_rank = sorted(children, key=lambda c: int(c.data.tags["rank"]))
    assert by_rank[0].info.run_id == parent.data.tags["best_run_id"] == result.best_run_id
    assert by_rank[0].data.tags["best_trial"] == "true"
    assert by_rank[0].data.metrics["cv_rmse"] == pytest.approx(parent.data.metrics["cv_rmse"])
    assert by_rank[0].data.metrics["cv_rmse"] == min(c.data.metrics["cv_rmse"] for c in children)
    cv_results = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/cv_results.csv").splitlines()
    assert len(cv_results) == 5 and "mean_test_score" in cv_results[0]
    assert_logged_model(run.info.run_id)
    model = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/model")
    test = _test_split(spark, default_data).toPandas()
    rmse = float(((model.predict(test.drop(columns=["price"])) - test["price"]) ** 2).mean() ** 0.5)
    assert rmse == pytest.approx(parent.data.metrics["rmse"], rel=1e-9)


def test_forest_grown_in_stages_equals_the_forest_fitted_at_once(spark, default_data):
    """What makes pruning free for the trials that run to the end: the last stage is the same model."""
    from sparkmlops.data import schema as data_schema
    from sparkmlops.fitting import sklearn_forest

    frame = spark.read.parquet(default_data).limit(800).toPandas()
    spec = data_schema.infer_feature_spec(spark.read.parquet(default_data), "price")
    x, y = frame[spec.feature_cols], frame["price"].to_numpy(dtype=float)
    for model_type, log_label in (("rf", False), ("rf", True), ("gbt", False)):
        params = sklearn_forest.ForestParams(num_trees=12, max_depth=6, log_label=log_label, model_type=model_type)
        # (each stage's predict holds until the next stage grows the model)
        stages = [(trees, predict(x)) for trees, predict in sklearn_forest.fit_in_stages(spec, params, 42, x, y, 4)]
        assert [trees for trees, _ in stages] == [3, 6, 9, 12]
        at_once = sklearn_forest.build_forest(spec, params, 42).fit(x, y).predict(x)
        assert (stages[-1][1] == at_once).all(), (model_type, log_label)
        assert not (stages[0][1] == at_once).all()


def test_optuna_prunes_trials_worse_than_the_median_at_the_same_stage(spark, client, default_data):
    # Depth-1 forests are far worse than depth-12 ones at every stage: once the first trials have
    # finished, the pruner stops the depth-1 trials TPE still draws before their last stage.
    space = {
        "num_trees": ("int", 20, 20, 1),
        "max_depth": ("choice", [1, 12]),
        "min_samples_leaf": ("int", 1, 1, 1),
        "max_features": ("choice", ["1.0"]),
        "log_label": ("choice", [False]),
    }
    parent_id, result = _tune(
        spark, TuneParams(data_path=default_data, max_evals=10, engine="sklearn"), space, "optuna"
    )
    children = {c.info.run_id: c for c in _children(client, parent_id)}
    pruned = [t for t in result.trials if t["status"] == "pruned"]
    assert pruned, [(t["params"]["max_depth"], t["status"]) for t in result.trials]
    assert all(t["params"]["max_depth"] == 1 for t in pruned)
    for trial in pruned:
        run = children[trial["run_id"]]
        assert run.info.status == "KILLED" and "val_rmse" not in run.data.metrics
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "intermediate_value")]
        assert 2 <= len(steps) < 4  # reported at each stage it grew, stopped before the last
    parent = client.get_run(parent_id)
    assert parent.data.metrics["trials_pruned"] == len(pruned) and parent.data.metrics["trials_failed"] == 0
    assert result.best_params["max_depth"] == 12
