"""The scikit-learn trainers on a user's own table (docs/your-data.md): train_sklearn, the tuners with
engine=sklearn and tune_grid classify a string, boolean or 0/1 label and impute missing values as train does;
score_pandas_udf and score_batch write the classifier's class and probabilities. The datasets are
test_your_data.py's (Palmer penguins with a boolean feature added, and a boolean label made of `sex`;
breast cancer, a 0/1 label)."""

from __future__ import annotations

import json
import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import (
    assert_logged_model,
    assert_refused,
    in_tracked_run,
    last_line,
    reproduced_from_this_tree,
    script_in_process,
)
from test_your_data import breast_cancer, penguins  # noqa: F401 (module fixtures)

SMALL = ["--num_trees", "20", "--max_depth", "6"]
SPECIES = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.fixture(scope="module")
def penguins_with_boolean(tmp_path_factory, penguins) -> str:  # noqa: F811
    """The penguins as they come (2 rows without measurements, 11 without sex) and `heavy`, a boolean feature
    null where body_mass_g is."""
    frame = pd.read_parquet(penguins)
    frame["heavy"] = (frame["body_mass_g"] > 4000).astype("boolean").mask(frame["body_mass_g"].isna())
    path = tmp_path_factory.mktemp("penguins-boolean") / "penguins.parquet"
    frame.to_parquet(path, index=False)
    return str(path)


def _run_ok(client, script: str, *options: str):
    result = script_in_process(script, *options)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = re.search(r" run_id=([0-9a-f]{32})", last_line(result.stdout)).group(1)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    return run, result


@pytest.fixture(scope="module")
def species_sklearn(client, penguins_with_boolean):
    """`train_sklearn -P label_col=species` on the penguins with nulls and a boolean: (run, model URI)."""
    run, result = _run_ok(
        client, "train_sklearn.py", "--data_path", penguins_with_boolean, "--label_col", "species", *SMALL
    )
    assert "accuracy=" in last_line(result.stdout) and "rmse" not in last_line(result.stdout)
    return run, f"runs:/{run.info.run_id}/model"


def _spark_evaluators(spark, truth: np.ndarray, probability: np.ndarray, n_classes: int) -> dict:
    """Spark's own evaluators on (true class index, probabilities): what train's metrics are."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator
    from pyspark.ml.linalg import Vectors

    rows = [(float(t), float(np.argmax(p)), Vectors.dense(p)) for t, p in zip(truth, probability)]
    frame = spark.createDataFrame(rows, ["label", "prediction", "probability"])
    multiclass = MulticlassClassificationEvaluator()
    metrics = {
        name: multiclass.setMetricName(spark_name).evaluate(frame)
        for name, spark_name in (("accuracy", "accuracy"), ("f1", "f1"), ("log_loss", "logLoss"))
    }
    if n_classes == 2:
        binary = BinaryClassificationEvaluator(rawPredictionCol="probability")
        metrics["roc_auc"] = binary.setMetricName("areaUnderROC").evaluate(frame)
        metrics["pr_auc"] = binary.setMetricName("areaUnderPR").evaluate(frame)
    return metrics


def _test_split_answers(spark, data_path: str, label_col: str, model_uri: str, task: str = "auto"):
    """(true class indices, the logged model's probabilities, classes) on the test split train_sklearn held out."""
    from sparkmlops.data import classes
    from sparkmlops.data.schema import ColumnChoice
    from sparkmlops.data.splits import load_labelled, split_train_test
    from sparkmlops.fitting.sklearn_forest import to_pandas

    labelled = load_labelled(spark, data_path, label_col, ColumnChoice(task, can_classify=True), imputes_missing=True)
    _, test_df = split_train_test(labelled.df, 0.8, 42)
    x_test, y_test = to_pandas(test_df, labelled.spec)
    labelled.cached.unpersist()
    model = mlflow.sklearn.load_model(model_uri)
    order = list(labelled.spec.classes)
    return np.array([order.index(y) for y in y_test]), classes.class_scores(model, x_test, order), order


def test_train_sklearn_classifies_a_string_label_with_missing_values_and_a_boolean(
    client, spark, species_sklearn, penguins_with_boolean
):
    run, model_uri = species_sklearn
    assert run.data.params["resolved_task"] == "classification"
    assert run.data.params["n_boolean_features"] == "1"
    assert set(run.data.tags["imputed_columns"].split(", ")) >= {"bill_length_mm", "body_mass_g"}
    info = mlflow.models.get_model_info(model_uri)
    assert info.metadata["classes"] == SPECIES and info.metadata["imputes_missing"] is True
    assert_logged_model(run.info.run_id, test_metrics=("accuracy", "f1", "log_loss"))
    assert "roc_auc" not in run.data.metrics  # three classes
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "feature_importance.csv", "class_counts.json"} <= artifacts
    importance = pd.read_csv(client.download_artifacts(run.info.run_id, "feature_importance.csv"))
    assert {"heavy", "bill_length_mm_na", "sex", "island"} <= set(importance["feature"])
    # The logged metrics are Spark's evaluators' on the logged model's probabilities for the held-out rows.
    truth, probability, order = _test_split_answers(spark, penguins_with_boolean, "species", model_uri)
    assert order == SPECIES
    expected = _spark_evaluators(spark, truth, probability, 3)
    for name, value in expected.items():
        assert run.data.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert run.data.metrics["accuracy"] > 0.9


@pytest.mark.parametrize("scorer", ["score_pandas_udf", "score_batch"])
def test_scorers_write_the_sklearn_classifiers_class_and_probabilities(
    tmp_path, species_sklearn, penguins_with_boolean, scorer
):
    _, model_uri = species_sklearn
    output = tmp_path / "scores"
    result = script_in_process(
        f"{scorer}.py", "--model_uri", model_uri, "--input_path", penguins_with_boolean, "--output_path", str(output)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = pd.read_parquet(output)
    assert len(scored) == 344  # the rows with missing measurements and a null boolean included
    model = mlflow.sklearn.load_model(model_uri)
    features = scored[list(model.feature_names_in_)].astype({"heavy": "float64"})
    expected = model.predict_proba(features)  # learnt every class: its order is the classes'
    assert list(model.classes_) == SPECIES
    np.testing.assert_allclose(np.stack(scored["probability"].to_numpy()), expected, rtol=0, atol=1e-12)
    assert list(scored["prediction"]) == list(model.predict(features))
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert pq.read_table(output).schema.field("heavy").type == pa.bool_()  # the input's own column, as it was


def test_spark_udf_of_an_sklearn_classifier_is_refused_before_spark(client, tmp_path, species_sklearn, penguins):  # noqa: F811
    _, model_uri = species_sklearn
    result = script_in_process(
        "score_pandas_udf.py", "--model_uri", model_uri, "--input_path", penguins,
        "--output_path", str(tmp_path / "out"), "--method", "spark_udf",
    )  # fmt: skip
    assert_refused(result, client, "pass -P method=map_in_pandas")


def test_a_0_1_label_trains_a_binary_gbt_with_spark_metrics_and_curves(client, spark, tmp_path, breast_cancer):  # noqa: F811
    run, _ = _run_ok(
        client, "train_sklearn.py", "--data_path", breast_cancer, "--label_col", "target",
        "--task", "classification", "--model_type", "gbt", *SMALL,
    )  # fmt: skip
    model_uri = f"runs:/{run.info.run_id}/model"
    assert mlflow.models.get_model_info(model_uri).metadata["classes"] == [0, 1]
    assert {"roc_curve.png", "pr_curve.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    truth, probability, _ = _test_split_answers(spark, breast_cancer, "target", model_uri, "classification")
    expected = _spark_evaluators(spark, truth, probability, 2)
    for name in ("accuracy", "f1", "log_loss", "roc_auc"):
        assert run.data.metrics[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name
    # areaUnderPR: Spark's trapezoids over its own curve points; ours over scikit-learn's
    assert run.data.metrics["pr_auc"] == pytest.approx(expected["pr_auc"], abs=0.01)
    assert run.data.metrics["roc_auc"] > 0.95
    output = tmp_path / "scores"
    scored = script_in_process(
        "score_batch.py", "--model_uri", model_uri, "--input_path", breast_cancer, "--output_path", str(output)
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    predictions = pd.read_parquet(output)
    assert set(predictions["prediction"]) == {0, 1} and predictions["prediction"].dtype == "int64"
    assert (predictions["prediction"] == predictions["target"]).mean() > 0.9


def test_log_label_with_a_classifier_is_refused(client, penguins):  # noqa: F811
    result = script_in_process(
        "train_sklearn.py", "--data_path", penguins, "--label_col", "species", "--task", "classification",
        "--log_label", "true",
    )  # fmt: skip
    assert_refused(result, client, "log_label applies to regression")
    result = script_in_process(
        "train_sklearn.py", "--data_path", penguins, "--label_col", "species", "--log_label", "true"
    )
    assert_refused(result, client, "log_label applies to regression", before_spark=False)  # task=auto: after the read


def test_tune_grid_classifies_on_log_loss_with_stratified_folds(client, penguins):  # noqa: F811
    run, result = _run_ok(
        client, "tune_grid.py", "--data_path", penguins, "--label_col", "species",
        "--param_grid", '{"num_trees": [10, 20], "impute": ["median", "mode"]}', "--cv", "3",
    )  # fmt: skip
    assert run.data.params["resolved_metric"] == "log_loss"
    assert 0 < run.data.metrics["cv_log_loss"] < 0.5  # positive: a loss, not scikit-learn's negated score
    assert run.data.metrics["accuracy"] > 0.9 and "log_loss=" in last_line(result.stdout)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(children) == 4
    best = [c for c in children if c.data.tags.get("best_trial") == "true"]
    assert len(best) == 1
    assert best[0].data.metrics["cv_log_loss"] == min(c.data.metrics["cv_log_loss"] for c in children)
    cv = pd.read_csv(client.download_artifacts(run.info.run_id, "cv_results.csv"))
    assert (cv["mean_test_score"] < 0).all()  # neg_log_loss, as GridSearchCV ranks it


@pytest.mark.parametrize("tuner", ["tune_hyperopt", "tune_optuna"])
def test_the_sklearn_engine_tunes_a_classifier(client, penguins_with_boolean, tuner):
    run, result = _run_ok(
        client, f"{tuner}.py", "--data_path", penguins_with_boolean, "--label_col", "species",
        "--engine", "sklearn", "--max_evals", "2", "--search_space", "smoke",
    )  # fmt: skip
    assert run.data.params["resolved_task"] == "classification"
    assert {"best_val_log_loss", "accuracy", "f1", "log_loss"} <= set(run.data.metrics)
    trials = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert trials and all(t.data.metrics["loss"] == t.data.metrics["val_log_loss"] for t in trials)
    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert info.metadata["classes"] == SPECIES and "sklearn" in info.flavors
    assert json.loads(run.data.tags["classes"]) == SPECIES


def test_a_boolean_label_with_nulls_and_excluded_columns(client, tmp_path, penguins_with_boolean):
    """is_male (null where sex is unknown: those rows are dropped and counted), year and island excluded:
    classes false before true, predictions written as booleans."""
    frame = pd.read_parquet(penguins_with_boolean)
    frame["is_male"] = frame["sex"].map({"male": True, "female": False}).astype("boolean")
    path = tmp_path / "is_male.parquet"
    frame.drop(columns=["sex"]).to_parquet(path, index=False)
    run, _ = _run_ok(
        client, "train_sklearn.py", "--data_path", str(path), "--label_col", "is_male", "--exclude", "year,island",
        *SMALL,
    )  # fmt: skip
    model_uri = f"runs:/{run.info.run_id}/model"
    assert mlflow.models.get_model_info(model_uri).metadata["classes"] == [False, True]
    assert run.data.metrics["rows_null_label_dropped"] == 11 and run.data.metrics["roc_auc"] > 0.8
    assert "year (excluded (-P exclude))" in run.data.tags["left_out_columns"]
    assert list(mlflow.sklearn.load_model(model_uri).feature_names_in_) == [
        "species", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "heavy",
    ]  # fmt: skip
    output = tmp_path / "scores"
    result = script_in_process(
        "score_pandas_udf.py", "--model_uri", model_uri, "--input_path", str(path), "--output_path", str(output)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = pd.read_parquet(output)
    assert scored["prediction"].map(type).eq(bool).all() and len(scored) == 344


def test_reproduce_a_sklearn_classifier_trained_on_data_with_nulls(client, species_sklearn, tmp_path):
    """reproduce checks the data as train_sklearn read it (nulls are the model's to impute), re-runs it from
    this tree, committed, and gets the same metrics."""
    run, _ = species_sklearn
    reproduced = reproduced_from_this_tree(client, run, tmp_path)
    for name in ("accuracy", "f1", "log_loss"):
        assert reproduced.data.metrics[name] == run.data.metrics[name], name


def test_per_group_classifiers_score_with_the_datas_classes(client, tmp_path, capsys, spark, penguins_with_boolean):
    """One species classifier per island: Torgersen's penguins are all Adelie (one class: skipped, scored by
    the fallback), Biscoe's never Chinstrap (its model gives Chinstrap probability 0); score_per_group writes
    every row's class and probabilities in the data's class order."""
    from sparkmlops.train.train_per_group import PerGroupParams, train_per_group_and_log

    # The job, not the script: a script run in-process gives the Spark Python workers its temporary folder,
    # removed when it ends, and the workers that load the models next would look for it.
    params = PerGroupParams(
        data_path=penguins_with_boolean, label_col="species", group_col="island", min_rows=10, num_trees=20,
        max_depth=6,
    )  # fmt: skip
    run_id, _ = in_tracked_run(params, lambda checked: train_per_group_and_log(spark, checked))
    printed = capsys.readouterr().out
    assert "skipped 1 groups with one class" in printed and "Torgersen" in printed
    run = client.get_run(run_id)
    assert run.data.metrics["groups_trained"] == 2 and run.data.metrics["groups_skipped"] == 1
    assert run.data.metrics["accuracy"] > 0.9 and "fallback_accuracy" in run.data.metrics
    table = pd.read_csv(client.download_artifacts(run.info.run_id, "group_models.csv"))
    assert {"accuracy", "f1", "log_loss"} <= set(table.columns) and "rmse" not in table.columns
    output = tmp_path / "scores"
    scored_run = script_in_process(
        "score_per_group.py", "--run_id", run.info.run_id, "--input_path", penguins_with_boolean,
        "--output_path", str(output),
    )  # fmt: skip
    assert scored_run.returncode == 0, scored_run.stderr[-3000:]
    scored = pd.read_parquet(output)
    assert len(scored) == 344 and set(scored["prediction"]) <= set(SPECIES)
    probability = np.stack(scored["probability"].to_numpy())
    np.testing.assert_allclose(probability.sum(axis=1), 1.0)
    assert (np.array(SPECIES)[probability.argmax(axis=1)] == scored["prediction"]).all()
    biscoe = (scored["island"] == "Biscoe").to_numpy()
    assert (scored.loc[biscoe, "scored_with"] == "group").all() and (probability[biscoe, 1] == 0).all()
    assert (scored.loc[scored["island"] == "Torgersen", "scored_with"] == "fallback").all()
    assert (scored["prediction"] == scored["species"]).mean() > 0.9
