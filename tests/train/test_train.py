"""Training in-process against a real SQLite MLflow store: what is logged, determinism, data checks."""

import dataclasses

import mlflow
import pytest
from conftest import SHARED_TRAIN_PARAMS, assert_logged_model, pinned
from pyspark.sql import functions as F

from sparkmlops.core import tracking
from sparkmlops.core.errors import UserInputError
from sparkmlops.data import generators, validation
from sparkmlops.data import schema as data_schema
from sparkmlops.data.splits import check_against_data, load_labelled, split_train_test
from sparkmlops.fitting import metrics as model_metrics
from sparkmlops.fitting import spark_pipeline
from sparkmlops.fitting.spark_pipeline import PipelineParams, build_pipeline, fit_pipeline
from sparkmlops.train.train import TrainParams, train_and_log


def _train(spark, params):
    with tracking.tracked_run("test-train") as run:
        result = train_and_log(spark, params)
    return run.info.run_id, result


@pytest.fixture(scope="module")
def trained(trained_run):
    """The session's shared `train` run (conftest.SHARED_TRAIN_PARAMS on the generated data)."""
    return trained_run


def test_metrics_and_params_logged(client, trained):
    run_id, result = trained
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for name in ("rmse", "r2", "mae"):
        assert run.data.metrics[name] == pytest.approx(result.metrics[name])
    assert run.data.metrics["r2"] > 0.3, "the generated price must be learnable"
    assert run.data.metrics["train_rows"] + run.data.metrics["test_rows"] == generators.DEFAULT_N_ROWS
    assert run.data.params["data_path_resolved"] == result.data_path
    assert run.data.params["n_categorical_features"] == "7"
    assert run.data.tags["data_digest"] == result.digests["full"]


def test_artifacts_and_model(client, trained, spark, default_data):
    run_id, result = trained
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"feature_importance.csv", "feature_importance.png", "predicted_vs_actual.png"} <= names
    logged = assert_logged_model(run_id)
    importance = mlflow.artifacts.load_text(f"runs:/{run_id}/feature_importance.csv").splitlines()
    assert importance[0] == "feature,importance"
    assert {line.split(",")[0] for line in importance[1:]} == set(result.spec.feature_cols)
    model_files = {a.path for a in client.list_logged_model_artifacts(logged.model_id)}
    assert {"MLmodel", "requirements.txt", "input_example.json", "sparkml"} <= model_files

    info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
    assert [c.name for c in info.signature.inputs.inputs] == result.spec.feature_cols
    requirements = mlflow.artifacts.load_text(f"runs:/{run_id}/model/requirements.txt")
    assert (
        f"pyspark=={pinned('pyspark')}" in requirements.split()
        and f"mlflow=={pinned('mlflow')}" in requirements.split()
    )

    loaded = mlflow.spark.load_model(f"runs:/{run_id}/model")
    rows = spark.read.parquet(default_data).limit(50)
    expected = [r.prediction for r in result.model.transform(rows).collect()]
    assert [r.prediction for r in loaded.transform(rows).collect()] == expected


def test_dataset_inputs(client, trained):
    run_id, result = trained
    inputs = client.get_run(run_id).inputs.dataset_inputs
    by_context = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs}
    assert set(by_context) == {"training", "testing"}
    assert by_context["training"].digest == result.digests["train"]
    assert by_context["testing"].digest == result.digests["test"]
    assert result.data_path in by_context["training"].source


def test_same_params_same_metrics(spark, default_data, trained):
    """Refitting with the run's parameters on its split gives exactly its logged metrics; another seed
    gives others. (A whole run re-run bit-identically is reproduce's test.)"""
    run_id, first = trained
    labelled = load_labelled(spark, default_data, "price")
    params = dataclasses.replace(SHARED_TRAIN_PARAMS, data_path=default_data)

    def refit(seed):
        train_df, test_df = split_train_test(labelled.df, params.train_fraction, seed)
        scored = fit_pipeline(train_df, first.spec, dataclasses.replace(params, seed=seed)).transform(test_df)
        return model_metrics.regression_metrics(scored, "price")

    again = refit(42)
    assert {k: again[k] for k in ("rmse", "r2", "mae")} == {k: first.metrics[k] for k in ("rmse", "r2", "mae")}
    other = refit(7)
    assert other["rmse"] != first.metrics["rmse"]


def test_unseen_categories_are_scored_not_dropped(spark, trained, default_data):
    _, result = trained
    rows = spark.read.parquet(default_data).limit(20).withColumn("neighbourhood_cleansed", F.lit("Atlantis"))
    rows = rows.withColumn("room_type", F.lit(None).cast("string"))
    assert result.model.transform(rows).filter(F.col("prediction").isNotNull()).count() == 20


def test_feature_importance_uses_column_names(trained):
    _, result = trained
    table = result.feature_importance
    assert list(table.columns) == ["feature", "importance"]
    assert table.importance.sum() == pytest.approx(1.0)
    assert table.feature.iloc[0] in (
        "accommodates",
        "room_type",
        "bedrooms",
        "neighbourhood_cleansed",
        "beds",
        "bathrooms",
        "longitude",
        "latitude",
    )


@pytest.mark.parametrize(
    "params, message",
    [
        (TrainParams(num_trees=0), "num_trees must be >= 1"),
        (TrainParams(max_depth=-1), "max_depth must be between 0 and 30"),
        (TrainParams(max_depth=31), "max_depth must be between 0 and 30"),
        (TrainParams(max_bins=1), "max_bins must be >= 2"),
        (TrainParams(train_fraction=0.0), "train_fraction must be strictly between 0 and 1"),
        (TrainParams(train_fraction=1.0), "train_fraction must be strictly between 0 and 1"),
        (TrainParams(label_col=""), "label_col is empty"),
        (TrainParams(min_instances_per_node=0), "min_instances_per_node must be >= 1"),
        (TrainParams(feature_subset_strategy="half"), "feature_subset_strategy 'half' is not valid"),
        (TrainParams(feature_subset_strategy="0"), "feature_subset_strategy '0' is not valid"),
        (TrainParams(data_path="/no/such/path.parquet"), "does not exist"),
        (TrainParams(model_type="lightgbm"), "unknown model_type 'lightgbm'"),
        (
            TrainParams(model_type="xgboost", feature_subset_strategy="sqrt"),
            "feature_subset_strategy applies to rf and gbt",
        ),
        (TrainParams(register_as="a/b"), "cannot contain '/', ':' or '@'"),
    ],
)
def test_parameter_checks(params, message):
    with pytest.raises(UserInputError, match=message):
        params.validate()


def test_max_bins_below_category_count_is_refused_before_the_forest(spark, default_data):
    df = spark.read.parquet(default_data).limit(2000).cache()
    spec = data_schema.infer_feature_spec(df, "price")
    categories = df.select("neighbourhood_cleansed").distinct().count()
    with pytest.raises(
        UserInputError,
        match=rf"max_bins=20 .* neighbourhood_cleansed \({categories} categories\)"
        rf".*max_bins={categories + 1} or more",
    ):
        fit_pipeline(df, spec, PipelineParams(num_trees=1, max_depth=2, max_bins=20))
    # and Spark agrees that categories + 1 bins are enough
    model = fit_pipeline(df, spec, PipelineParams(num_trees=1, max_depth=2, max_bins=categories + 1))
    assert model.stages[-1].numFeatures == len(spec.feature_cols)


def test_stagewise_fit_equals_pipeline_fit(spark, default_data):
    df = spark.read.parquet(default_data).limit(1500)
    spec = data_schema.infer_feature_spec(df, "price")
    params = TrainParams(num_trees=5, max_depth=4)
    staged = fit_pipeline(df, spec, params).transform(df).select("prediction").collect()
    whole = build_pipeline(spec, params).fit(df).transform(df).select("prediction").collect()
    assert staged == whole


def test_nulls_in_numeric_features_are_refused(spark):
    df = spark.createDataFrame(
        [(float(i), None if i == 3 else 1.0, "a") for i in range(20)], "price double, beds double, kind string"
    )
    spec = data_schema.infer_feature_spec(df, "price")
    with pytest.raises(UserInputError, match=r"the data has nulls in beds \(1 rows\)"):
        check_against_data(validation.profile_for_training(df, spec), spec)


def test_failed_run_is_marked_failed(client, spark, tmp_path):
    bad = tmp_path / "strings.parquet"
    spark.createDataFrame([("a", "b")], "price string, x string").write.parquet(str(bad))
    with pytest.raises(UserInputError):
        _train(spark, TrainParams(data_path=str(bad)))
    failed = client.search_runs(
        [mlflow.get_experiment_by_name("sparkmlops-tests").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert failed.info.status == "FAILED"
    assert "price is string, expected double" in failed.data.tags["error"]


@pytest.mark.parametrize("strategy", ["auto", "all", "onethird", "sqrt", "log2", "0.5", "1.0", "8"])
def test_feature_subset_strategies_validate_accepts_are_the_ones_spark_fits(spark, strategy):
    params = TrainParams(feature_subset_strategy=strategy, num_trees=2, max_depth=2).validate()
    df = spark.createDataFrame(
        [(float(i), float(i % 3), float(i % 5), "a" if i % 2 else "b") for i in range(40)],
        "price double, x double, y double, kind string",
    )
    spec = data_schema.infer_feature_spec(df, "price")
    forest = spark_pipeline.forest_of(fit_pipeline(df, spec, params))
    assert forest.getFeatureSubsetStrategy() == strategy and len(forest.trees) == 2


@pytest.mark.parametrize("strategy", ["0", "1.5", "-1", "half", "0.0", ""])
def test_feature_subset_strategies_spark_refuses_are_refused_before_spark(strategy):
    with pytest.raises(UserInputError, match="feature_subset_strategy"):
        TrainParams(feature_subset_strategy=strategy).validate()


def test_log_label_model_predicts_the_label_itself(spark, default_data):
    df = spark.read.parquet(default_data).limit(2000).cache()
    spec = data_schema.infer_feature_spec(df, "price")
    params = TrainParams(
        num_trees=10, max_depth=5, log_label=True, min_instances_per_node=5, feature_subset_strategy="sqrt"
    )
    model = fit_pipeline(df, spec, params)
    forest = spark_pipeline.forest_of(model)
    assert forest.getMinInstancesPerNode() == 5 and forest.getFeatureSubsetStrategy() == "sqrt"
    scored = model.transform(df)
    # the forest works in log space; the pipeline's last stage brings its output back to price
    row = scored.select(
        F.max(F.abs(F.expm1(spark_pipeline.LOG_PREDICTION_COL) - F.col("prediction"))).alias("d"),
        F.avg("prediction").alias("mean_prediction"),
        F.avg("price").alias("mean_price"),
    ).first()
    assert row["d"] < 1e-9
    assert 0.5 < row["mean_prediction"] / row["mean_price"] < 1.5
    assert model_metrics.regression_metrics(scored, "price")["r2"] > 0.3


def test_the_books_notebook_code_applies_the_logged_model(spark, trained, default_data):
    """Chapter 11's own consumers of a run's model: mlflow.spark.load_model and mlflow.pyfunc.spark_udf
    (columns by name: a struct of the features, or no arguments and the signature's columns)."""
    from pyspark.sql.functions import struct

    run_id, result = trained
    rows = spark.read.parquet(default_data).limit(40)
    expected = [r.prediction for r in mlflow.spark.load_model(f"runs:/{run_id}/model").transform(rows).collect()]
    pyfunc_udf = mlflow.pyfunc.spark_udf(spark, f"runs:/{run_id}/model")
    features = [c for c in rows.columns if c != "price"]
    assert [r.p for r in rows.select(pyfunc_udf(struct(*features)).alias("p")).collect()] == expected
    assert [r.p for r in rows.select(pyfunc_udf().alias("p")).collect()] == expected
