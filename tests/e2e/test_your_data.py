"""A user's own table through the entry points' own scripts: real public datasets that PyPI packages ship,
with missing values and string, integer or numeric labels (docs/your-data.md).

- Palmer penguins (palmerpenguins, CC0): 344 rows, numeric measurements missing in 2 rows, `sex` null in 11;
  `species` (string, 3 classes) and `body_mass_g` (numeric) as labels.
- Breast cancer Wisconsin (scikit-learn's bundled copy, BSD): 569 rows, 30 numeric features, `target` a
  0/1 integer.
- Seattle weather (vega_datasets, NOAA data): 1,461 days, `weather` in 5 unbalanced classes, a `date` column.
- Fuel economy `mpg` (ggplot2's, MIT, copied with its licence into tests/data/ggplot2_mpg): 234 cars, six
  string columns (five features and the label `class`, 7 classes), an unnamed row-number column.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import (
    PROJECT_ROOT,
    assert_logged_model,
    assert_refused,
    last_line,
    launched_run_id,
    newest_run,
    reproduced_from_this_tree,
    run_entry,
    script_in_process,
    served_model,
)
from test_mlflow_run import MLFLOW

from tools import model_server

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
    # what every consumer reads from the MLmodel file
    metadata = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model").metadata
    assert metadata == {
        "task": "classification",
        "label_col": "species",
        "label_type": "string",
        "imputes_missing": True,
        "classes": ["Adelie", "Chinstrap", "Gentoo"],
        "probability_column": "probability",
    }


def test_a_null_string_is_a_category_of_its_own(spark, penguins, species_model, species_export):
    """sex is null in 11 penguins: null is a category the forest learnt, apart from the unseen-category bucket,
    in Spark and in the export's graph."""
    import onnx
    from pyspark.sql import functions as F

    from sparkmlops.serve.onnx_convert import NULL_SENTINEL

    model = mlflow.spark.load_model(species_model[1])
    rows = spark.read.parquet(penguins).drop("species").limit(1)
    rows = (
        rows.withColumn("sex", F.lit(None).cast("string"))
        .unionByName(rows.withColumn("sex", F.lit("unknown")))
        .unionByName(rows.withColumn("sex", F.lit("__null__")))
    )
    indexer = next(s for s in model.stages if type(s).__name__ == "StringIndexerModel")
    labels = indexer.labelsArray[indexer.getInputCols().index("sex__category")]
    assert "__null__" in labels and len(labels) == 3  # female, male and null
    indexed = [r["sex_index"] for r in model.transform(rows).select("sex_index").collect()]
    # null: its category; unseen: the extra bucket; the literal '__null__' (documented): null's category
    assert indexed == [labels.index("__null__"), len(labels), labels.index("__null__")]
    graph = onnx.load(mlflow.artifacts.download_artifacts(f"runs:/{species_export[0].info.run_id}/onnx/model.onnx"))
    encoder = next(n for n in graph.graph.node if n.op_type == "LabelEncoder" and n.input[0] == "sex")
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in encoder.attribute}
    keys = [k.decode() for k in attributes["keys_strings"]]
    assert attributes["values_floats"][keys.index(NULL_SENTINEL)] == labels.index("__null__")


def _export(client, model_uri: str):
    """export_onnx.py of ``model_uri``: the export run."""
    result = script_in_process("export_onnx.py", "--model_uri", model_uri)
    assert result.returncode == 0, result.stderr[-3000:]
    export = newest_run(client)
    assert export.info.status == "FINISHED" and export.info.run_id in last_line(result.stdout)
    return export


@pytest.fixture(scope="module")
def species_export(client, species_model):
    """export_onnx of the penguins' species classifier: (export run, the exported model's URI)."""
    export = _export(client, species_model[1])
    return export, f"runs:/{export.info.run_id}/model"


def test_a_multiclass_model_exports_to_onnx_with_the_same_classes_and_probabilities(client, species_export):
    export, exported_uri = species_export
    # every row, 2 x 50 with both string features (island, sex) unseen or null, 5 per string column, 50 with
    # every imputed column (4 measurements and year) null and 5 per imputed column
    assert export.data.metrics["parity_rows"] == 344 + 2 * 50 + 2 * 5 + 50 + 5 * 5
    assert export.data.metrics["parity_class_mismatches"] == 0
    assert export.data.metrics["parity_max_abs_diff"] <= 1e-12
    info = mlflow.models.get_model_info(exported_uri)
    assert info.metadata["classes"] == ["Adelie", "Chinstrap", "Gentoo"] and info.metadata["task"] == "classification"
    outputs = info.signature.outputs.to_dict()
    assert [o["name"] for o in outputs] == ["prediction", "probability"] and outputs[0]["type"] == "string"


def test_a_pyfunc_that_says_it_classifies_without_probabilities_is_refused_before_spark(client, tmp_path, penguins):
    class Labels(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return ["Adelie"] * len(model_input)

    frame = pd.read_parquet(penguins).drop(columns=["species"]).head(5)
    with mlflow.start_run(run_name="fixture-classifier-without-probabilities"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Labels(),
            signature=mlflow.models.infer_signature(frame, pd.Series(["Adelie"] * 5, name="prediction")),
            metadata={"task": "classification", "classes": ["Adelie"], "label_type": "string"},
            pip_requirements=["mlflow"],
        )
    output = str(tmp_path / "scores")
    result = script_in_process(
        "score_pandas_udf.py", "--model_uri", info.model_uri, "--input_path", penguins, "--output_path", output
    )
    assert_refused(result, client, "or the outputs prediction and probability in its signature")


@pytest.mark.process
def test_a_served_classifier_answers_classes_and_probabilities_like_spark(
    spark, tmp_path, species_model, species_export, penguins
):
    """`mlflow models serve` of the export: records with nulls in a number and a string, and an unseen island,
    answered with the labels and the probabilities Spark gives."""
    from pyspark.ml.functions import vector_to_array

    frame = spark.read.parquet(penguins).drop("species")
    records = frame.limit(12).toPandas()
    records.loc[0, "island"] = "Atlantis"
    records.loc[1, "sex"] = None
    records.loc[2, ["bill_length_mm", "body_mass_g"]] = None
    spark_model = mlflow.spark.load_model(species_model[1])
    scored = spark_model.transform(spark.createDataFrame(records, schema=frame.schema))
    expected = scored.withColumn("probability", vector_to_array("probability")).toPandas()
    with served_model(species_export[1], tmp_path / "server.log") as url:
        status, body = model_server.post_invocations(
            url, json.dumps({"dataframe_records": records.to_dict(orient="records")}).encode()
        )
    assert status == 200, body
    answers = body["predictions"]
    assert [a["prediction"] for a in answers] == expected["prediction"].tolist()
    assert set(expected["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    np.testing.assert_allclose(
        np.array([a["probability"] for a in answers]), np.stack(expected["probability"]), rtol=0, atol=1e-12
    )


def test_a_multiclass_model_scores_every_row_in_the_labels_own_values(tmp_path, species_model, penguins):
    """Every row, those with missing values too, in the label's own strings with one probability per class; a
    `<col>_na` column of the input's own (the model makes one of that name inside) is kept as it was."""
    _, model_uri, _ = species_model
    source = pd.read_parquet(penguins).assign(bill_length_mm_na=7.0)
    with_flag = tmp_path / "with_flag.parquet"
    source.to_parquet(with_flag, index=False)
    scored = _score(tmp_path, model_uri, str(with_flag))
    assert (scored["bill_length_mm_na"] == 7.0).all()
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


@pytest.mark.parametrize(
    "script, options",
    [
        ("score_batch.py", []),
        ("score_pandas_udf.py", ["--method", "map_in_pandas"]),
        ("score_pandas_udf.py", ["--method", "spark_udf"]),
    ],
)
def test_the_exported_classifier_scores_on_spark_like_the_spark_model(
    tmp_path, species_model, species_export, penguins, script, options
):
    """The ONNX export of the classifier is a pyfunc: score_batch and score_pandas_udf (both methods) run it in
    pandas UDFs and write the class in the label's own values and the probabilities, as the Spark model does."""
    expected = _score(tmp_path / "spark", species_model[1], penguins)
    output = tmp_path / "exported"
    result = script_in_process(
        script, "--model_uri", species_export[1], "--input_path", penguins, "--output_path", str(output), *options
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = pd.read_parquet(output)
    key = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "island", "sex", "year"]
    merged = expected.merge(scored, on=[*key, "species"], suffixes=("_spark", "_onnx"))
    assert len(scored) == len(expected) == 344 and len(merged) >= 344
    assert (merged["prediction_spark"] == merged["prediction_onnx"]).all()
    assert scored["prediction"].dtype == object and set(scored["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    np.testing.assert_allclose(
        np.stack(merged["probability_onnx"]), np.stack(merged["probability_spark"]), rtol=0, atol=1e-12
    )


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
    assert result.returncode == 3, result.stderr[-3000:]  # the null rate of flipper_length_mm: 0.6% -> 30%
    run = newest_run(client)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["current_unscorable_rows"] == 0
    table = pd.read_csv(client.download_artifacts(run.info.run_id, "drift/drift_per_feature.csv")).set_index("feature")
    assert table.loc["flipper_length_mm", "drifted"]
    # the predicted classes as categories: a PSI over their shares, no KS (which needs numbers)
    prediction = table.loc["prediction (model output)"]
    assert np.isfinite(prediction["psi"]) and pd.isna(prediction["ks"])
    assert table.loc["species", "current_null_rate"] == 0.0  # the label, as a category


def test_reproduce_a_classifier_run(client, species_model, tmp_path):
    """reproduce re-runs the classifier (`mlflow.projects.run` of this tree, committed) on the same data: the
    same metrics, bit for bit."""
    run, _, _ = species_model
    reproduced = reproduced_from_this_tree(client, run, tmp_path)
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
    # the export answers the same 0/1 integers and probabilities, through MLflow's pyfunc
    export = _export(client, f"runs:/{run.info.run_id}/model")
    assert export.data.metrics["parity_class_mismatches"] == 0 and export.data.metrics["parity_max_abs_diff"] <= 1e-12
    answered = mlflow.pyfunc.load_model(f"runs:/{export.info.run_id}/model").predict(scored.drop(columns=["target"]))
    assert answered["prediction"].tolist() == scored["prediction"].tolist()
    np.testing.assert_allclose(np.stack(answered["probability"]), np.stack(scored["probability"]), rtol=0, atol=1e-12)
    # and on Spark's executors, in pandas UDFs: integers again, as the Spark model wrote them
    output = tmp_path / "exported-scores"
    result = script_in_process(
        "score_pandas_udf.py",
        "--model_uri",
        f"runs:/{export.info.run_id}/model",
        "--input_path",
        breast_cancer,
        "--output_path",
        str(output),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    udf_scored = pd.read_parquet(output).sort_values(list(scored.columns[:30])).reset_index(drop=True)
    spark_scored = scored.sort_values(list(scored.columns[:30])).reset_index(drop=True)
    assert udf_scored["prediction"].dtype == spark_scored["prediction"].dtype  # the label's own integer type
    assert udf_scored["prediction"].tolist() == spark_scored["prediction"].tolist()


def test_task_auto_takes_a_numeric_label_as_regression(client, breast_cancer):
    run, _ = _train(client, "--data_path", breast_cancer, "--label_col", "target", *SMALL)
    assert run.data.params["resolved_task"] == "regression"
    assert {"rmse", "r2", "mae"} <= set(run.data.metrics)


@pytest.mark.parametrize("model_type", ["linear", "gbt", "xgboost"])
def test_every_model_family_classifies(client, tmp_path, breast_cancer, model_type):
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
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert ("feature_importance.png" in artifacts) == (model_type != "linear")  # a linear model has none
    scored = _score(tmp_path, f"runs:/{run.info.run_id}/model", breast_cancer)
    probabilities = np.stack(scored["probability"].to_numpy())
    assert probabilities.shape == (569, 2)
    assert (probabilities.argmax(axis=1) == scored["prediction"].to_numpy()).all()  # classes [0, 1]
    if model_type == "gbt":  # the margin's logistic, as Spark's GBTClassificationModel computes it
        export = _export(client, f"runs:/{run.info.run_id}/model")
        assert export.data.metrics["parity_class_mismatches"] == 0
        assert export.data.metrics["parity_max_abs_diff"] <= 1e-12
        exported = mlflow.pyfunc.load_model(f"runs:/{export.info.run_id}/model")
        answered = exported.predict(scored.drop(columns=["target", "prediction", "probability"]))
        assert answered["prediction"].tolist() == scored["prediction"].tolist()
        np.testing.assert_allclose(np.stack(answered["probability"]), probabilities, rtol=0, atol=1e-12)
    else:
        stage = {"linear": "LogisticRegressionModel", "xgboost": "SparkXGBClassifierModel"}[model_type]
        refused = script_in_process("export_onnx.py", "--model_uri", f"runs:/{run.info.run_id}/model")
        assert_refused(refused, client, f"({stage}) is not supported by the ONNX export")


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


@pytest.mark.parametrize("impute", ["median", "mean"])
def test_a_regression_with_missing_values_exports_to_onnx_with_parity_on_null_rows(client, penguins, impute):
    run, _ = _train(client, "--data_path", penguins, "--label_col", "body_mass_g", "--impute", impute, *SMALL)
    result = script_in_process("export_onnx.py", "--model_uri", f"runs:/{run.info.run_id}/model")
    assert result.returncode == 0, result.stderr[-3000:]
    export = newest_run(client)
    # every row, plus 50 with unseen and 50 with null categories, 5 per string column (species, island, sex)
    # with one of them unseen or null, 50 with every imputed column (the 4 numeric features) null and 5 per
    # imputed column with it null
    assert export.data.metrics["parity_rows"] == 344 + 2 * 50 + 3 * 5 + 50 + 4 * 5
    assert export.data.metrics["parity_max_rel_diff"] <= 1e-9
    exported = mlflow.models.get_model_info(f"runs:/{export.info.run_id}/model").metadata
    assert exported["imputes_missing"] is True


@pytest.mark.parametrize(
    "options, message",
    [
        (["--label_col", "bill_length_mm", "--task", "classification"], "classification needs a string, boolean or"),
        (["--label_col", "species", "--task", "regression"], "regression needs a numeric label"),
        (["--label_col", "species", "--model_type", "gbt"], "model_type=gbt classifies two classes only"),
        (["--label_col", "species", "--features", "bill_length_mm,beak_colour"], "beak_colour named in features"),
        (["--label_col", "species", "--features", "species,island"], "features names the label 'species'"),
        (["--label_col", "species", "--features", "island,sex", "--exclude", "sex"], "sex are both in features and"),
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
    refused = script_in_process("promote.py", "--model_name", "penguin_species", "--metric", "roc_auc")
    assert_refused(refused, client, "metric roc_auc needs two classes, the label has 3")
    frame = pd.read_parquet(penguins)
    frame.loc[frame.index[:20], "species"] = "Emperor"
    emperors = tmp_path / "emperors.parquet"
    frame.to_parquet(emperors, index=False)
    client.delete_registered_model_alias("penguin_species", "champion")  # so that v1 is evaluated
    refused = script_in_process(
        "promote.py", "--model_name", "penguin_species", "--version", "1", "--data_path", str(emperors)
    )
    assert_refused(refused, client, "hold class(es) Emperor that the model never learnt", before_spark=False)

    # a regression registered under the same name cannot be compared with the classifier @champion
    _train(client, "--data_path", penguins, "--label_col", "body_mass_g", *SMALL, "--register_as", "penguin_species")
    client.set_registered_model_alias("penguin_species", "champion", "1")
    refused = script_in_process("promote.py", "--model_name", "penguin_species", "--version", "3")
    assert_refused(refused, client, "versions of one registered model must predict the same thing")


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
    """mpg as a CSV, its row numbers excluded: five string features (38 models need max_bins >= 39), class as
    the label; rf and the one-hot linear baseline both train, and the CSV scores."""
    run, _ = _train(client, "--data_path", MPG, "--label_col", "class", "--exclude", "_c0", *SMALL)
    assert run.data.params["n_categorical_features"] == "5" and run.data.params["n_numeric_features"] == "5"
    assert run.data.metrics["accuracy"] > 0.7
    linear, _ = _train(client, "--data_path", MPG, "--label_col", "class", "--exclude", "_c0", "--model_type", "linear")
    assert linear.data.metrics["accuracy"] > 0.7
    scored = _score(tmp_path, f"runs:/{run.info.run_id}/model", MPG)
    assert len(scored) == 234 and scored["prediction"].isin(json.loads(run.data.tags["classes"])).all()


@pytest.mark.parametrize("tuner", ["tune_hyperopt", "tune_optuna"])
def test_a_search_tunes_a_classifier_on_log_loss(client, penguins, tuner):
    """engine=mllib searches train's pipeline on a string label with missing values: every trial is scored by
    log_loss (metric=auto), the best is refit and logged with the classifier's test metrics."""
    result = script_in_process(f"{tuner}.py", "--data_path", penguins, "--label_col", "species", "--max_evals", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    parent = client.get_run(re.search(r" run_id=([0-9a-f]{32})", last_line(result.stdout)).group(1))
    assert parent.data.params["resolved_task"] == "classification"
    assert {"best_val_log_loss", "best_val_accuracy", "accuracy", "f1", "log_loss"} <= set(parent.data.metrics)
    assert parent.data.metrics["accuracy"] > 0.9
    trials = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(trials) == 2
    for trial in trials:  # the loss is the validation log_loss itself (lower is better: not negated)
        assert trial.data.metrics["loss"] == trial.data.metrics["val_log_loss"]
        assert trial.data.params.get("model_type", "rf") != "gbt"  # three classes: no GBT family
    assert "log_loss=" in last_line(result.stdout)


def test_boolean_label_and_feature(client, tmp_path, penguins):
    """A boolean label (null where sex is unknown: those rows are dropped) and a boolean feature with nulls:
    classes false before true, predictions booleans; the export refuses the boolean feature's cast."""
    frame = pd.read_parquet(penguins)
    frame["is_male"] = frame["sex"].map({"male": True, "female": False}).astype("boolean")
    frame["heavy"] = (frame["body_mass_g"] > 4000).astype("boolean").mask(frame["body_mass_g"].isna())
    booleans = tmp_path / "booleans.parquet"
    frame.drop(columns=["sex"]).to_parquet(booleans, index=False)
    run, _ = _train(client, "--data_path", str(booleans), "--label_col", "is_male", *SMALL)
    assert json.loads(run.data.tags["classes"]) == [False, True]
    assert run.data.params["n_boolean_features"] == "1" and run.data.metrics["rows_null_label_dropped"] == 11
    assert run.data.metrics["roc_auc"] > 0.8
    scored = _score(tmp_path, f"runs:/{run.info.run_id}/model", str(booleans))
    assert scored["prediction"].map(type).eq(bool).all() and len(scored) == 344
    refused = script_in_process("export_onnx.py", "--model_uri", f"runs:/{run.info.run_id}/model")
    assert_refused(refused, client, "__as_double")  # the SQLTransformer casting the boolean, named


def test_more_than_100_classes_are_refused(client, tmp_path):
    rows = pd.DataFrame({"code": [f"c{i % 101}" for i in range(1010)], "x": np.arange(1010.0)})
    path = tmp_path / "codes.parquet"
    rows.to_parquet(path, index=False)
    result = script_in_process("train.py", "--data_path", str(path), "--label_col", "code")
    assert_refused(result, client, "label 'code' has more than 100 distinct values", before_spark=False)


def test_an_indicator_is_not_made_twice():
    """The book's cleaned data carries its own `bedrooms_na`: no second indicator of that name is made."""
    from sparkmlops.data.schema import FeatureSpec
    from sparkmlops.fitting.spark_pipeline import assembled_features, indicator_cols

    spec = FeatureSpec("price", [], ["bedrooms", "beds", "bedrooms_na"], [], missing_cols=("bedrooms", "beds"))
    assert indicator_cols(spec) == ["beds"]
    assert assembled_features(spec) == ["bedrooms", "beds", "bedrooms_na", "beds_na"]


@pytest.mark.process
def test_mlflow_run_classifies_the_generated_data(client):
    """The README's command: `mlflow run . -P label_col=room_type` trains a three-class model on the embedded
    generated data, no download."""
    result = run_entry(
        [
            MLFLOW,
            "run",
            str(PROJECT_ROOT),
            "--env-manager",
            "local",
            "-P",
            "label_col=room_type",
            "-P",
            "num_trees=10",
            "-P",
            "max_depth=4",
        ]
    )
    run = client.get_run(launched_run_id(result))
    assert run.data.params["resolved_task"] == "classification" and run.data.params["n_classes"] == "3"
    assert json.loads(run.data.tags["classes"]) == ["Entire home/apt", "Private room", "Shared room"]
    assert run.data.metrics["accuracy"] > 0.7
