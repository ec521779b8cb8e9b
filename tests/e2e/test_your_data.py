"""A user's own table through the entry points' own scripts: real public datasets that PyPI packages ship,
with missing values and string, integer or numeric labels (docs/your-data.md).

- Palmer penguins (palmerpenguins, CC0): 344 rows, numeric measurements missing in 2 rows, `sex` null in 11;
  `species` (string, 3 classes) and `body_mass_g` (numeric) as labels.
- Breast cancer Wisconsin (scikit-learn's bundled copy, BSD): 569 rows, 30 numeric features, `target` a
  0/1 integer.
- Seattle weather (vega_datasets, NOAA data): 1,461 days, `weather` in 5 unbalanced classes, a `date` column.
- Fuel economy `mpg` (ggplot2's, MIT, copied with its licence into tests/data/ggplot2_mpg): 234 cars, six
  string columns, an unnamed row-number column, `class` in 7 classes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    assert_logged_model,
    assert_refused,
    commit_all,
    copy_project,
    last_line,
    newest_run,
    script_in_process,
)

SMALL = ["--num_trees", "20", "--max_depth", "5"]


@pytest.fixture(scope="module")
def penguins(tmp_path_factory) -> str:
    from palmerpenguins import load_penguins

    path = tmp_path_factory.mktemp("penguins") / "penguins.parquet"
    load_penguins().to_parquet(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def breast_cancer(tmp_path_factory) -> str:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    path = tmp_path_factory.mktemp("breast-cancer") / "breast_cancer.parquet"
    frame.to_parquet(path, index=False)
    return str(path)


MPG = str(Path(__file__).resolve().parent.parent / "data" / "ggplot2_mpg" / "mpg.csv")


@pytest.fixture(scope="module")
def seattle_weather(tmp_path_factory) -> str:
    from vega_datasets import local_data

    folder = tmp_path_factory.mktemp("seattle-weather")
    # pandas writes timestamps in nanoseconds by default, which Spark cannot read: microseconds, as the refusal
    # below tells users to write them
    local_data.seattle_weather().to_parquet(folder / "nanos.parquet", index=False)
    path = folder / "seattle_weather.parquet"
    local_data.seattle_weather().to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    return str(path)


def test_nanosecond_timestamps_are_refused_before_spark(client, seattle_weather):
    nanos = str(Path(seattle_weather).parent / "nanos.parquet")
    result = script_in_process("train.py", "--data_path", nanos, "--label_col", "weather")
    assert_refused(result, client, "stores date as nanosecond timestamps (pandas' default)")


def _train(client, *options: str):
    result = script_in_process("train.py", *options)
    assert result.returncode == 0, result.stderr[-3000:]
    run = newest_run(client)
    assert run.info.status == "FINISHED"
    assert run.info.run_id in last_line(result.stdout)
    return run, result


def _score(tmp_path, model_uri: str, input_path: str) -> pd.DataFrame:
    output = tmp_path / "scores"
    result = script_in_process(
        "score_batch.py", "--model_uri", model_uri, "--input_path", input_path, "--output_path", str(output)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return pd.read_parquet(output)


@pytest.fixture(scope="module")
def species_model(client, penguins):
    """`train -P label_col=species` on the penguins as they come (nulls and all): (run, model URI)."""
    run, result = _train(client, "--data_path", penguins, "--label_col", "species", *SMALL)
    return run, f"runs:/{run.info.run_id}/model", result


def test_a_string_label_trains_a_multiclass_model_on_data_with_missing_values(client, species_model):
    run, _, result = species_model
    assert run.data.params["task"] == "auto" and run.data.params["resolved_task"] == "classification"
    assert json.loads(run.data.tags["classes"]) == ["Adelie", "Chinstrap", "Gentoo"]
    # the four measurements miss in 2 rows; sex (a string) is null in 11 and is a category, not imputed
    assert run.data.tags["imputed_columns"] == "bill_depth_mm, bill_length_mm, body_mass_g, flipper_length_mm"
    assert run.data.metrics["accuracy"] > 0.9 and run.data.metrics["f1"] > 0.9
    assert 0 < run.data.metrics["log_loss"] < 0.5
    assert "roc_auc" not in run.data.metrics  # three classes: no single ROC curve
    assert_logged_model(run.info.run_id, test_metrics=("accuracy", "f1", "log_loss"))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "feature_importance.png", "class_counts.json"} <= artifacts
    assert "predicted_vs_actual.png" not in artifacts
    assert last_line(result.stdout).startswith("train: accuracy=")


def test_a_multiclass_model_scores_every_row_in_the_labels_own_values(tmp_path, species_model, penguins):
    _, model_uri, _ = species_model
    scored = _score(tmp_path, model_uri, penguins)
    source = pd.read_parquet(penguins)
    assert len(scored) == len(source)  # the rows with missing measurements too
    assert set(scored["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    probabilities = np.stack(scored["probability"].to_numpy())
    assert probabilities.shape == (len(source), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    # probability[i] is classes[i]'s: the most probable class is the prediction
    classes = np.array(["Adelie", "Chinstrap", "Gentoo"])
    assert (classes[probabilities.argmax(axis=1)] == scored["prediction"].to_numpy()).all()
    assert (scored["prediction"] == scored["species"]).mean() > 0.9
    missing = scored[scored["bill_length_mm"].isna()]
    assert len(missing) == 2 and missing["prediction"].notna().all()


def test_a_stream_and_the_books_consumers_give_the_same_classes(spark, tmp_path, species_model, penguins):
    """score_stream (4 files, rows with nulls among them) writes what score_batch writes; mlflow.spark.load_model
    and mlflow.pyfunc predict the same classes from the logged model."""
    import mlflow

    _, model_uri, _ = species_model
    source = pd.read_parquet(penguins)
    folder = tmp_path / "incoming"
    folder.mkdir()
    for i, part in enumerate(np.array_split(source, 4)):
        part.to_parquet(folder / f"part-{i}.parquet", index=False)
    result = script_in_process(
        "score_stream.py",
        "--model_uri",
        model_uri,
        "--input_path",
        str(folder),
        "--output_path",
        str(tmp_path / "stream-out"),
        "--checkpoint_path",
        str(tmp_path / "ckpt"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    streamed = pd.read_parquet(tmp_path / "stream-out")
    batch = _score(tmp_path, model_uri, penguins)
    # a stream reads the model's columns (its signature), so the label is not in its output
    key = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]
    merged = streamed.merge(batch, on=key, suffixes=("_stream", "_batch"))
    assert len(streamed) == len(source) and len(merged) >= len(source)
    assert (merged["prediction_stream"] == merged["prediction_batch"]).all()
    np.testing.assert_allclose(np.stack(merged["probability_stream"]), np.stack(merged["probability_batch"]))

    features = source.drop(columns=["species"]).head(40)
    pyfunc = mlflow.pyfunc.load_model(model_uri).predict(features)
    pyfunc = list(pyfunc["prediction"] if isinstance(pyfunc, pd.DataFrame) else pyfunc)
    direct = mlflow.spark.load_model(model_uri).transform(spark.createDataFrame(features)).select("prediction")
    assert pyfunc == [row.prediction for row in direct.collect()]
    from_batch = features.merge(batch, on=key, how="left")["prediction"].tolist()
    assert pyfunc == from_batch


def test_check_drift_of_a_classifier_on_data_with_many_nulls(client, tmp_path, species_model, penguins):
    """Current data with a numeric feature 30% null is scored (the model imputes), and the prediction's drift is
    a shift in class shares."""
    _, model_uri, _ = species_model
    frame = pd.read_parquet(penguins)
    frame.loc[frame.sample(frac=0.3, random_state=0).index, "flipper_length_mm"] = np.nan
    current = tmp_path / "current.parquet"
    frame.to_parquet(current, index=False)
    result = script_in_process("check_drift.py", "--model_uri", model_uri, "--current_path", str(current))
    assert result.returncode in (0, 3), result.stderr[-3000:]
    run = newest_run(client)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["current_unscorable_rows"] == 0
    table = pd.read_csv(client.download_artifacts(run.info.run_id, "drift/drift_per_feature.csv"))
    flipper = table[table["feature"] == "flipper_length_mm"].iloc[0]
    assert flipper["drifted"]  # the null rate went from 0.6% to 30%


def test_reproduce_a_classifier_run(client, species_model, tmp_path):
    """reproduce re-runs the classifier (`mlflow.projects.run` of this tree, committed) on the same data: the
    same metrics, bit for bit."""
    run, _, _ = species_model
    project = copy_project(tmp_path / "project")
    client.set_tag(run.info.run_id, "git_commit", commit_all(project))  # the committed copy of this very tree
    client.set_tag(run.info.run_id, "git_dirty", "false")
    result = script_in_process("reproduce.py", "--run_id", run.info.run_id, "--project_uri", str(project))
    assert result.returncode == 0, result.stderr[-3000:]
    [reproduced] = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.reproduction_of = '{run.info.run_id}'"
    )
    for name in ("accuracy", "f1", "log_loss"):
        assert reproduced.data.metrics[name] == run.data.metrics[name], name


def test_a_0_1_integer_label_is_a_binary_classifier_with_curves(client, tmp_path, breast_cancer):
    run, _ = _train(client, "--data_path", breast_cancer, "--label_col", "target", "--task", "classification", *SMALL)
    metrics = run.data.metrics
    assert metrics["roc_auc"] > 0.95 and metrics["pr_auc"] > 0.95 and metrics["accuracy"] > 0.9
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"roc_curve.png", "pr_curve.png", "confusion_matrix.png"} <= artifacts
    scored = _score(tmp_path, f"runs:/{run.info.run_id}/model", breast_cancer)
    assert scored["prediction"].dtype == scored["target"].dtype  # 0/1 integers, not indices or strings
    assert set(scored["prediction"]) == {0, 1}
    assert (scored["prediction"] == scored["target"]).mean() > 0.9


def test_task_auto_takes_a_numeric_label_as_regression(client, breast_cancer):
    run, _ = _train(client, "--data_path", breast_cancer, "--label_col", "target", *SMALL)
    assert run.data.params["resolved_task"] == "regression"
    assert {"rmse", "r2", "mae"} <= set(run.data.metrics)


@pytest.mark.parametrize("model_type", ["linear", "gbt", "xgboost"])
def test_every_model_family_classifies(client, breast_cancer, model_type):
    run, _ = _train(
        client,
        "--data_path",
        breast_cancer,
        "--label_col",
        "target",
        "--task",
        "classification",
        "--model_type",
        model_type,
        *SMALL,
    )
    assert run.data.metrics["accuracy"] > 0.9, model_type


def test_features_and_exclude_choose_the_columns(client, penguins):
    run, result = _train(
        client,
        "--data_path",
        penguins,
        "--label_col",
        "body_mass_g",
        "--features",
        "bill_length_mm,flipper_length_mm,species",
        *SMALL,
    )
    assert run.data.params["n_numeric_features"] == "2" and run.data.params["n_categorical_features"] == "1"
    run, result = _train(client, "--data_path", penguins, "--label_col", "body_mass_g", "--exclude", "year", *SMALL)
    assert run.data.tags["left_out_columns"] == "year (excluded (-P exclude))"
    assert "note: 1 column(s) are not features: year" in result.stderr


def test_a_regression_with_missing_values_exports_to_onnx_with_parity_on_null_rows(client, penguins):
    run, _ = _train(client, "--data_path", penguins, "--label_col", "body_mass_g", *SMALL)
    result = script_in_process("export_onnx.py", "--model_uri", f"runs:/{run.info.run_id}/model")
    assert result.returncode == 0, result.stderr[-3000:]
    export = newest_run(client)
    # the parity rows include copies with each imputed column null, and all of them null
    assert export.data.metrics["parity_rows"] > 344
    assert export.data.metrics["parity_max_rel_diff"] <= 1e-9


@pytest.mark.parametrize(
    "options, message",
    [
        (["--label_col", "bill_length_mm", "--task", "classification"], "classification needs a string, boolean or"),
        (["--label_col", "species", "--task", "regression"], "regression needs a numeric label"),
        (["--label_col", "species", "--model_type", "gbt"], "model_type=gbt classifies two classes only"),
        (["--label_col", "species", "--features", "bill_length_mm,beak_colour"], "beak_colour named in features"),
        (["--label_col", "species", "--features", "species,island"], "features names the label 'species'"),
    ],
)
def test_impossible_task_and_column_choices_are_refused(client, penguins, options, message):
    assert_refused(
        script_in_process("train.py", "--data_path", penguins, *SMALL, *options), client, message, before_spark=False
    )


def test_a_label_with_one_class_is_refused(client, tmp_path, penguins):
    frame = pd.read_parquet(penguins)
    one_class = tmp_path / "adelie.parquet"
    frame[frame["species"] == "Adelie"].to_parquet(one_class, index=False)
    result = script_in_process("train.py", "--data_path", str(one_class), "--label_col", "species", *SMALL)
    assert_refused(result, client, "has only the class 'Adelie'", before_spark=False)


def test_a_label_that_is_nearly_all_one_class_trains_with_a_warning(client, tmp_path, breast_cancer):
    frame = pd.read_parquet(breast_cancer)
    frame = pd.concat([frame] * 4, ignore_index=True)
    frame["target"] = 0
    frame.loc[:1, "target"] = 1  # 2 of 2,276 rows: 99.9% one class
    skewed = tmp_path / "skewed.parquet"
    frame.to_parquet(skewed, index=False)
    run, result = _train(
        client, "--data_path", str(skewed), "--label_col", "target", "--task", "classification", *SMALL
    )
    assert "warning: 99.9% of 'target' is 0" in result.stderr
    assert run.data.metrics["accuracy"] > 0.99


def test_promote_gates_a_classifier_on_log_loss(client, tmp_path, penguins):
    """Two versions of a penguin classifier: the gate compares them on log_loss (metric=auto) over the same
    held-out rows; a regression metric, and held-out rows with a class the model never learnt, are refused."""
    for trees in ("5", "40"):
        _train(
            client,
            "--data_path",
            penguins,
            "--label_col",
            "species",
            "--num_trees",
            trees,
            "--max_depth",
            "4",
            "--register_as",
            "penguin_species",
        )
    result = script_in_process(
        "promote.py", "--model_name", "penguin_species", "--version", "1", "--data_path", penguins
    )
    assert result.returncode == 0, result.stderr[-3000:]
    result = script_in_process("promote.py", "--model_name", "penguin_species", "--data_path", penguins)
    assert result.returncode == 0, result.stderr[-3000:]
    run = newest_run(client)
    metrics = run.data.metrics
    assert {"candidate_log_loss", "champion_log_loss", "candidate_accuracy", "candidate_f1"} <= set(metrics)
    better = metrics["candidate_log_loss"] < metrics["champion_log_loss"]
    assert run.data.tags["decision"] == ("promoted" if better else "rejected")
    version = client.get_model_version("penguin_species", "2")
    assert version.tags["promotion_metric"] == "log_loss"

    refused = script_in_process("promote.py", "--model_name", "penguin_species", "--metric", "rmse")
    assert_refused(refused, client, "metric rmse does not apply to a classification model")
    frame = pd.read_parquet(penguins)
    frame.loc[frame.index[:20], "species"] = "Emperor"
    emperors = tmp_path / "emperors.parquet"
    frame.to_parquet(emperors, index=False)
    client.delete_registered_model_alias("penguin_species", "champion")  # so that v1 is evaluated
    refused = script_in_process(
        "promote.py", "--model_name", "penguin_species", "--version", "1", "--data_path", str(emperors)
    )
    assert_refused(refused, client, "hold class(es) Emperor that the model never learnt", before_spark=False)


def test_a_date_column_is_left_out_and_said(client, tmp_path, seattle_weather):
    """Five weather classes from four measurements; the date cannot be a feature: tagged with the reason and
    said in one line on stderr. The batch scores come back as the label's own strings."""
    run, result = _train(client, "--data_path", seattle_weather, "--label_col", "weather", *SMALL)
    # pandas' datetime64 column reads as a timestamp without time zone
    assert re.fullmatch(r"date \(timestamp(_ntz)? columns cannot be features\)", run.data.tags["left_out_columns"])
    assert [line for line in result.stderr.splitlines() if line.startswith("note:")] == [
        f"note: 1 column(s) are not features: {run.data.tags['left_out_columns']}"
    ]
    assert json.loads(run.data.tags["classes"]) == ["drizzle", "fog", "rain", "snow", "sun"]
    assert run.data.params["n_numeric_features"] == "4" and run.data.metrics["accuracy"] > 0.6
    scored = _score(tmp_path, f"runs:/{run.info.run_id}/model", seattle_weather)
    assert set(scored["prediction"]) <= {"drizzle", "fog", "rain", "snow", "sun"} and len(scored) == 1461


def test_many_string_columns_and_an_id_to_exclude(client, tmp_path):
    """mpg as a CSV, its row numbers excluded: six string features (38 models need max_bins >= 39), class as
    the label; rf and the one-hot linear baseline both train, and the CSV scores."""
    run, _ = _train(client, "--data_path", MPG, "--label_col", "class", "--exclude", "_c0", *SMALL)
    assert run.data.params["n_categorical_features"] == "5" and run.data.params["n_numeric_features"] == "5"
    assert run.data.metrics["accuracy"] > 0.7
    linear, _ = _train(client, "--data_path", MPG, "--label_col", "class", "--exclude", "_c0", "--model_type", "linear")
    assert linear.data.metrics["accuracy"] > 0.7
    scored = _score(tmp_path, f"runs:/{run.info.run_id}/model", MPG)
    assert len(scored) == 234 and scored["prediction"].isin(json.loads(run.data.tags["classes"])).all()
