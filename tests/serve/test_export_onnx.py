"""ONNX export: parity with Spark for the three tree models (categorical splits, unseen and null
categories, train's expm1 stage) on generated and real rows, refusal of unsupported stages, the logged
pyfunc, and serving through a real `mlflow models serve` process on 127.0.0.1."""

import json
import os
import socket

import mlflow
import numpy as np
import onnx
import pytest
from conftest import assert_logged_model, assert_refused, in_tracked_run, script_in_process, served_model

from sparkmlops.core import mlflow_models, tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.data import schema as data_schema
from sparkmlops.fitting import spark_pipeline
from sparkmlops.serve import onnx_convert, pipeline_plan, saved_pipeline
from sparkmlops.serve.export_onnx import (
    UNSEEN_CATEGORY,
    ExportParams,
    export_and_log,
)
from sparkmlops.train.train import TrainParams, train_and_log
from tools import model_server

# The export's documented parity: relative difference at most 1e-6 (docs/serving.md), a literal here
# so that loosening it in the code fails this test.
PARITY = 1e-6


def _train(spark, data_path, **params):
    _, result = in_tracked_run(TrainParams(data_path=data_path, **params), lambda p: train_and_log(spark, p))
    return result.model_uri


def _log_pipeline(spark, data_path, regressor, extra_stages=()):
    """Fit train's stages up to its VectorAssembler (Imputer, StringIndexer(keep)), then ``regressor`` (after any
    extra stages), and log it as train does."""
    from pyspark.ml import Pipeline

    df = spark.read.parquet(data_path)
    spec = data_schema.infer_feature_spec(df, "price")
    stages = spark_pipeline.build_pipeline(spec, spark_pipeline.PipelineParams()).getStages()[:-1]
    model = Pipeline(stages=[*stages, *extra_stages, regressor]).fit(df.withColumn("price", df["price"].cast("double")))
    sample = df.select(*spec.feature_cols)
    with tracking.tracked_run("export-test-pipeline"):
        info = mlflow_models.log_spark_model(model, sample, model.transform(sample).select("prediction"))
    return info.model_uri


@pytest.fixture(scope="module")
def exported_models(spark, default_data):
    """One model per supported tree type, all on the generated data."""
    from pyspark.ml.regression import DecisionTreeRegressor

    return {
        "random_forest_log_label": _train(spark, default_data, num_trees=20, max_depth=6, max_bins=64, log_label=True),
        "gbt": _train(spark, default_data, model_type="gbt", num_trees=15, max_depth=4, max_bins=64),
        "xgboost": _train(spark, default_data, model_type="xgboost", num_trees=30, max_depth=6, max_bins=64),
        "decision_tree": _log_pipeline(
            spark,
            default_data,
            DecisionTreeRegressor(featuresCol="features", labelCol="price", maxDepth=10, maxBins=64),
        ),
    }


def test_a_decision_tree_classifier_exports_with_the_same_classes(spark, default_data):
    """A pipeline train does not fit, a single tree classifying room_type (3 classes), ending as train's
    classifiers do (IndexToString, CAST): the export gives Spark's classes and probabilities (counts / total)."""
    from dataclasses import replace

    from pyspark.ml import Pipeline
    from pyspark.ml.classification import DecisionTreeClassifier

    df = spark.read.parquet(default_data).drop("price")
    spec = data_schema.infer_feature_spec(
        df, "room_type", data_schema.ColumnChoice(task="classification", can_classify=True)
    )
    spec = replace(spec, classes=tuple(sorted(r[0] for r in df.select("room_type").distinct().collect())))
    stages = spark_pipeline.build_pipeline(spec, spark_pipeline.PipelineParams()).getStages()
    tree = DecisionTreeClassifier(
        featuresCol="features",
        labelCol=spark_pipeline.LABEL_INDEX_COL,
        predictionCol=spark_pipeline.PREDICTION_INDEX_COL,
        probabilityCol="probability",
        rawPredictionCol="__raw_prediction",
        maxDepth=8,
        maxBins=64,
    )
    classifier_at = next(i for i, stage in enumerate(stages) if "Classifier" in type(stage).__name__)
    model = Pipeline(stages=[*stages[:classifier_at], tree, *stages[classifier_at + 1 :]]).fit(
        spark_pipeline.index_label(df, spec)
    )
    sample = df.select(*spec.feature_cols)
    with tracking.tracked_run("export-test-tree-classifier"):
        info = mlflow_models.log_spark_model(model, sample, model.transform(sample).select("prediction"))
    run_id, summary = _export(spark, info.model_uri, parity_data_path=default_data)
    assert summary["parity_rows"] > 1000 and summary["parity_class_mismatches"] == 0
    assert summary["parity_max_abs_diff"] <= 1e-12
    # the logged export itself, on rows with a null and an unseen room category, against Spark's transform
    from pyspark.ml.functions import vector_to_array

    rows = sample.limit(40).toPandas()
    rows.loc[0, "neighbourhood_cleansed"], rows.loc[1, "property_type"] = None, "Igloo"
    expected = (
        model.transform(spark.createDataFrame(rows, schema=sample.schema))
        .withColumn("probability", vector_to_array("probability"))
        .toPandas()
    )
    answered = mlflow.pyfunc.load_model(summary["model_uri"]).predict(rows)
    assert answered["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(np.stack(answered["probability"]), np.stack(expected["probability"]), atol=1e-12)


def test_a_classifier_export_with_another_class_or_a_probability_off_is_refused():
    """The classifier parity gate, on made-up scores: one row with another class, or a probability off by
    more than 1e-6 (docs/serving.md), and nothing is exported; within 1e-6 it passes."""
    import pandas as pd

    from sparkmlops.serve.export_onnx import ParityError, _class_parity, check_parity

    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    spark_scores = pd.DataFrame({"prediction": ["a", "b", "a"], "probability": list(probabilities)})

    def gate(classes, shift):
        parity = _class_parity(spark_scores, {"prediction": np.array(classes, dtype=object), "probability": shift})
        worst = parity.pop("worst")
        check_parity(parity, worst)
        return parity

    same = gate(["a", "b", "a"], probabilities + 5e-7)
    assert same["parity_class_mismatches"] == 0 and same["parity_max_abs_diff"] == pytest.approx(5e-7)
    with pytest.raises(ParityError, match="another class than Spark on 1 of 3 rows"):
        gate(["a", "a", "a"], probabilities)
    with pytest.raises(ParityError, match="differing by up to 2e-06"):
        gate(["a", "b", "a"], probabilities + np.array([[2e-6, -2e-6], [0, 0], [0, 0]]))


def _export(spark, model_uri, **options):
    params = ExportParams(model_uri=model_uri, **options)
    return in_tracked_run(params, lambda plan: export_and_log(spark, plan))


@pytest.fixture(scope="module")
def exports(spark, exported_models):
    """Each model exported once (parity measured on the generated data it was trained on)."""
    return {kind: _export(spark, uri) for kind, uri in exported_models.items()}


@pytest.mark.parametrize("kind", ["random_forest_log_label", "gbt", "decision_tree", "xgboost"])
def test_parity_on_generated_data_with_unseen_and_null_categories(
    spark, client, exported_models, exports, default_data, kind
):
    run_id, summary = exports[kind]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["parity_max_rel_diff"] <= PARITY
    assert metrics["parity_rows"] == summary["parity_rows"] > 7146  # every row plus the edge cases
    assert_logged_model(run_id, ("parity_max_rel_diff", "parity_rows"), dataset=None)  # the exported model
    tags = client.get_run(run_id).data.tags
    assert tags["source_model_uri"] == exported_models[kind]
    assert (
        tags["tree_model"]
        == {
            "random_forest_log_label": "random_forest",
            "gbt": "gbt",
            "decision_tree": "decision_tree",
            "xgboost": "xgboost",
        }[kind]
    )

    # The logged pyfunc, loaded as a user would, predicts what Spark predicts, unseen categories included.
    data = spark.read.parquet(default_data).limit(300)
    rows = data.toPandas()
    rows.loc[:100, "neighbourhood_cleansed"] = "Atlantis"
    rows.loc[100:150, "room_type"] = None
    expected = (
        mlflow.spark.load_model(exported_models[kind])
        .transform(spark.createDataFrame(rows, schema=data.schema))
        .toPandas()["prediction"]
        .to_numpy()
    )
    exported = mlflow.pyfunc.load_model(summary["model_uri"])
    predicted = exported.predict(rows.drop(columns=["price"]))["prediction"].to_numpy()
    np.testing.assert_allclose(predicted, expected, rtol=PARITY, atol=0)


def test_parity_on_every_real_row(spark, exported_models, real_data):
    """Every real row (with the real categories, many unseen by models of the generated data), plus a
    model trained on the real data itself."""
    from pyspark.ml.regression import DecisionTreeRegressor

    from sparkmlops.serve.export_onnx import measure_parity

    real_model = _log_pipeline(
        spark, real_data, DecisionTreeRegressor(featuresCol="features", labelCol="price", maxDepth=12, maxBins=40)
    )
    for model_uri in (real_model, *exported_models.values()):
        parity = measure_parity(spark, ExportParams(model_uri=model_uri).validate(), real_data)
        assert parity["parity_rows"] >= 7146 and parity["parity_max_rel_diff"] <= PARITY, model_uri


def test_xgboost_booster_is_logged_for_plain_python(spark, client, exported_models, default_data):
    import xgboost

    model_uri = exported_models["xgboost"]
    run_id = mlflow.models.get_model_info(model_uri).run_id
    folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/xgboost")
    booster = xgboost.Booster(model_file=os.path.join(folder, "booster.json"))
    names = json.load(open(os.path.join(folder, "feature_names.json")))
    pipeline = mlflow.spark.load_model(model_uri)
    scored = pipeline.transform(spark.read.parquet(default_data).limit(500)).select("features", "prediction").toPandas()
    features = np.stack([v.toArray() for v in scored["features"]])
    assert features.shape[1] == len(names) == booster.num_features()
    np.testing.assert_array_equal(booster.predict(xgboost.DMatrix(features)), scored["prediction"].to_numpy())
    requirements = mlflow.artifacts.load_text(
        f"runs:/{run_id}/model/requirements.txt"
    )  # (models:/m-... takes no subpath)
    assert "xgboost-cpu==3.2.0" in requirements


def test_graph_passes_the_onnx_checker_and_has_categorical_splits(exported_models):
    local = mlflow.artifacts.download_artifacts(exported_models["random_forest_log_label"])
    model, plan = onnx_convert.convert_saved_pipeline(local)
    onnx.checker.check_model(model, full_check=True)
    assert saved_pipeline.BRANCH_MEMBER in plan.trees.modes and plan.expm1 is not None
    assert [i.name for i in model.graph.input] == [c for c, _ in plan.input_columns]


def test_unsupported_stages_are_refused_before_spark(exported_models, pyfunc_model_uri):
    """The refusal reads only the saved files: the DT pipeline with another stage spliced in."""
    folder = mlflow.artifacts.download_artifacts(exported_models["decision_tree"])
    stages = saved_pipeline.read_stages(saved_pipeline.spark_model_dir(folder))
    assert pipeline_plan.plan_pipeline(stages).trees.kind == "decision_tree"
    for cls, params, message in (
        ("org.apache.spark.ml.feature.StandardScalerModel", {}, r"stage 2 \(StandardScalerModel\) is not supported"),
        (
            "org.apache.spark.ml.feature.SQLTransformer",
            {"paramMap": {"statement": "SELECT * FROM __THIS__ WHERE bedrooms > 0"}},
            "SQLTransformer .* is not supported",
        ),
        (
            "org.apache.spark.ml.feature.StringIndexerModel",
            {"paramMap": {"handleInvalid": "skip"}},
            "handleInvalid='skip': the export supports 'keep' and 'error'",
        ),
    ):
        spliced = [*stages[:2], saved_pipeline.Stage(2, cls, "extra", params, ""), stages[2]]
        with pytest.raises(UserInputError, match=message):
            pipeline_plan.plan_pipeline(spliced)
    with pytest.raises(UserInputError, match="is not a Spark model"):
        ExportParams(model_uri=pyfunc_model_uri).validate()


def test_export_script_refuses_bad_input(client):
    assert_refused(
        script_in_process("export_onnx.py", "--model_uri", "runs:/0123456789abcdef0123456789abcdef/model"),
        client,
        "not found",
    )


# ----------------------------------------------------------------------------------------------
# Serving


@pytest.fixture(scope="module")
def served(exports, test_environment, tmp_path_factory):
    """`mlflow models serve` of the exported RF on 127.0.0.1; stopped by PID (its process group).

    The first port it is given is already held by another socket, as happens when another process takes
    a free port before the server binds it: the server must come up on another port anyway."""
    _, summary = exports["random_forest_log_label"]
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with socket.socket() as taken, pytest.MonkeyPatch.context() as patch:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        first = [taken.getsockname()[1]]
        free_port = model_server._free_port
        patch.setattr(model_server, "_free_port", lambda: first.pop() if first else free_port())
        with served_model(summary["model_uri"], log) as url:
            yield url, summary, taken.getsockname()[1], log


@pytest.mark.process
def test_the_server_comes_up_on_another_port_when_its_port_was_taken(served):
    url, _, taken_port, log = served
    assert int(url.rsplit(":", 1)[1]) != taken_port
    assert "address already in use" in log.read_text().lower()  # it did try the taken port first


@pytest.mark.process
def test_served_export_answers_records_like_spark(spark, served, default_data, exported_models):
    url, summary, _, _ = served
    data = spark.read.parquet(default_data).limit(20)
    records = data.drop("price").toPandas()
    records.loc[0, "neighbourhood_cleansed"] = UNSEEN_CATEGORY  # unseen: still a prediction
    records.loc[1, "room_type"] = None
    status, body = model_server.post_invocations(
        url, json.dumps({"dataframe_records": records.to_dict(orient="records")}).encode()
    )
    assert status == 200, body
    predicted = np.array([p["prediction"] if isinstance(p, dict) else p for p in body["predictions"]], dtype=float)
    expected = (
        mlflow.spark.load_model(exported_models["random_forest_log_label"])
        .transform(spark.createDataFrame(records, schema=data.drop("price").schema))
        .toPandas()["prediction"]
        .to_numpy()
    )
    np.testing.assert_allclose(predicted, expected, rtol=PARITY, atol=0)


@pytest.mark.process
def test_served_export_answers_bad_requests_with_4xx(spark, served, exported_models, default_data):
    url = served[0]
    data = spark.read.parquet(default_data).drop("price")
    record = data.limit(1).toPandas().to_dict(orient="records")[0]
    cases = {
        "malformed JSON": b'{"dataframe_records": [',
        "missing column": json.dumps({"dataframe_records": [{k: v for k, v in record.items() if k != "bedrooms"}]}),
        "wrong type": json.dumps({"dataframe_records": [{**record, "bedrooms": "two"}]}),
    }
    for case, body in cases.items():
        status, text = model_server.post_invocations(url, body if isinstance(body, bytes) else body.encode())
        assert 400 <= status < 500, (case, status, text)
        assert "bedrooms" in text or case == "malformed JSON", (case, text)
    # train's model imputes a missing number: the served graph answers as Spark does
    status, body = model_server.post_invocations(
        url, json.dumps({"dataframe_records": [{**record, "bedrooms": None}]}).encode()
    )
    assert status == 200, body
    [answer] = body["predictions"]
    expected = (
        mlflow.spark.load_model(exported_models["random_forest_log_label"])
        .transform(spark.createDataFrame([{**record, "bedrooms": None}], schema=data.schema))
        .first()["prediction"]
    )
    assert (answer["prediction"] if isinstance(answer, dict) else answer) == pytest.approx(expected, rel=PARITY)
