"""train_sklearn and score_pandas_udf: a scikit-learn model on train's split, scored on Spark with
mapInPandas and with mlflow.pyfunc.spark_udf, both equal to the model's own predict."""

import os

import numpy as np
import pytest
from conftest import assert_logged_model, assert_refused, script_in_process

from sparkmlops.data import generators
from sparkmlops.train.train_sklearn import SklearnTrainParams


@pytest.fixture(scope="module")
def scoring_input(spark, default_data, workdir) -> str:
    """The generated data in 3 files with a row id the model does not know and `accommodates` as int
    (the signature says double: it is cast for the model and written back as int)."""
    from pyspark.sql import functions as F

    path = workdir / "pandas-udf-input.parquet"
    if not path.exists():
        (
            spark.read.parquet(default_data)
            .withColumn("row_id", F.monotonically_increasing_id())
            .withColumn("accommodates", F.col("accommodates").cast("int"))
            .repartition(3)
            .write.parquet(str(path))
        )
    return str(path)


def _expected(spark, scoring_input, model_uri):
    """row_id -> the model's own predict on the same rows (in pandas, one process)."""
    import mlflow

    frame = spark.read.parquet(scoring_input).toPandas()
    model = mlflow.sklearn.load_model(model_uri)
    features = frame[model.feature_names_in_].astype({"accommodates": "float64"})
    return dict(zip(frame["row_id"], model.predict(features)))


def test_train_sklearn_uses_trains_split_and_logs_metrics_and_model(
    client, spark, sklearn_model, trained_model, default_data
):
    import mlflow

    from sparkmlops.data.splits import load_labelled, split_train_test
    from sparkmlops.fitting.metrics import array_regression_metrics as regression_metrics

    run_id, model_uri, result = sklearn_model
    run = client.get_run(run_id)
    train_run = client.get_run(trained_model[0].split("/")[1])
    # Same rows in the test split as `train` for the same seed and fraction (content digests).
    digests = {r.dataset.name: r.dataset.digest for r in run.inputs.dataset_inputs}
    train_digests = {r.dataset.name: r.dataset.digest for r in train_run.inputs.dataset_inputs}
    assert digests["test"] == train_digests["test"] and digests["train"] == train_digests["train"]
    assert run.data.metrics["test_rows"] == train_run.data.metrics["test_rows"]
    # The logged metrics are the logged model's on those rows.
    labelled = load_labelled(spark, default_data, "price")
    _, test_df = split_train_test(labelled.df, 0.8, 42)
    test = test_df.toPandas()
    model = mlflow.sklearn.load_model(model_uri)  # skops with the recorded trusted types
    expected = regression_metrics(test["price"], model.predict(test[model.feature_names_in_]))
    for name in ("rmse", "mae", "r2"):
        assert run.data.metrics[name] == pytest.approx(expected[name], rel=1e-12)
    info = mlflow.models.get_model_info(model_uri)
    assert {"sklearn", "python_function"} <= set(info.flavors)
    assert [s.name for s in info.signature.inputs.inputs] == list(model.feature_names_in_)
    requirements = mlflow.pyfunc.get_model_dependencies(model_uri)
    assert any(line.startswith("scikit-learn==") for line in open(requirements).read().splitlines())
    assert model.steps[-1][1].n_jobs == 1  # one thread per Spark task
    assert "feature_importance.csv" in [a.path for a in client.list_artifacts(run_id)]
    assert_logged_model(run_id)


@pytest.mark.parametrize("method", ["map_in_pandas", "spark_udf"])
def test_score_pandas_udf_equals_the_models_own_predict(client, spark, sklearn_model, scoring_input, tmp_path, method):
    train_run_id, model_uri, _ = sklearn_model
    assert model_uri.startswith("models:/m-")  # MLflow 3's logged-model URI
    out = str(tmp_path / "scored")
    result = script_in_process(
        "score_pandas_udf.py",
        "--model_uri",
        model_uri,
        "--input_path",
        scoring_input,
        "--output_path",
        out,
        "--method",
        method,
        "--batch_size",
        "500",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = spark.read.parquet(out)
    assert scored.columns == spark.read.parquet(scoring_input).columns + ["prediction"]
    assert dict(scored.dtypes)["accommodates"] == "int"  # the input's own type is kept
    rows = scored.select("row_id", "prediction").toPandas()
    expected = _expected(spark, scoring_input, model_uri)
    assert len(rows) == len(expected) == generators.DEFAULT_N_ROWS
    got = rows.set_index("row_id")["prediction"]
    assert np.array_equal(got.loc[list(expected)].to_numpy(), np.array(list(expected.values())))
    run = client.search_runs(
        [client.get_experiment_by_name("sparkmlops-tests").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert run.info.status == "FINISHED" and run.data.tags["method"] == method
    assert run.data.metrics["rows_scored"] == generators.DEFAULT_N_ROWS
    # a logged model is tagged with its run, not mistaken for a registered model
    assert run.data.tags["model_run_id"] == train_run_id and run.data.tags["model_registered_name"] == ""
    if method == "map_in_pandas":
        # 3 tasks, 500-row Arrow batches: at least 15 batches, and the model loaded at most once per task.
        assert run.data.metrics["arrow_batches"] >= 15
        assert 1 <= run.data.metrics["model_loads"] <= 3


INT_EXTENSION_DTYPE = "spark.sql.execution.pythonUDF.pandas.preferIntExtensionDtype"


def test_integer_columns_as_pandas_nullable_int_dtypes_score_the_same(spark, sklearn_model, scoring_input):
    """Since PySpark 4.2 integer columns can reach pandas UDFs as pandas' nullable Int32/Int64 instead of
    int32/float64 (off by default in 4.3; a cluster's spark-defaults.conf may turn it on): the batch the
    model gets is the same either way (the int feature cast to the signature's double)."""
    import mlflow

    from sparkmlops.inference import pandas_predict, resolve

    _, model_uri, _ = sklearn_model
    assert spark.conf.get(INT_EXTENSION_DTYPE) == "false"  # the pinned PySpark's default
    df = spark.read.parquet(scoring_input)
    model = resolve.resolve_model(model_uri, require_flavor="python_function")
    columns = [name for name, _ in model.input_columns()]
    casts = pandas_predict.pandas_casts(df, model)
    assert casts == {"accommodates": "float64"}
    frame = df.limit(500).toPandas()
    as_extension = frame.astype({"accommodates": "Int32"})  # what the batch holds with the setting on
    predict = mlflow.sklearn.load_model(model_uri).predict
    plain = predict(pandas_predict.model_features(frame, columns, casts))
    extension = pandas_predict.model_features(as_extension, columns, casts)
    assert str(extension["accommodates"].dtype) == "float64"
    assert np.array_equal(predict(extension), plain)


def test_a_failing_model_leaves_no_output(client, spark, scoring_input, tmp_path):
    """A model that fails on some rows: exit 1, the run FAILED, nothing at the output path."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    class FailsOnLargeListings(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            if (model_input["accommodates"] > 8).any():
                raise ValueError("cannot price large listings")
            return model_input["accommodates"] * 10.0

    example = pd.DataFrame({"accommodates": [2.0, 4.0]})
    with mlflow.start_run(run_name="fixture-failing-model"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=FailsOnLargeListings(),
            pip_requirements=["mlflow"],
            signature=infer_signature(example, example["accommodates"] * 10.0),
        )
    out = tmp_path / "scored"
    result = script_in_process(
        "score_pandas_udf.py",
        "--model_uri",
        info.model_uri,
        "--input_path",
        scoring_input,
        "--output_path",
        str(out),
        "--batch_size",
        "1000",
    )
    assert result.returncode == 1 and "cannot price large listings" in result.stderr
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if "staging" in n]
    run = client.search_runs(
        [client.get_experiment_by_name("sparkmlops-tests").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert run.info.status == "FAILED"


def test_bad_inputs_are_refused(client, spark, sklearn_model, trained_model, pyfunc_model_uri, scoring_input, tmp_path):
    _, model_uri, _ = sklearn_model
    out = str(tmp_path / "scored")

    def score(uri, inp=scoring_input, output=out, *extra):
        return script_in_process(
            "score_pandas_udf.py", "--model_uri", uri, "--input_path", inp, "--output_path", output, *extra
        )

    # before Spark starts (assert_refused: the run has no spark_master tag) up to the data's columns
    assert_refused(score(model_uri, scoring_input, out, "--method", "apply"), client, "unknown method 'apply'")
    assert_refused(score(model_uri, scoring_input, out, "--batch_size", "0"), client, "batch_size must be between")
    assert_refused(score(model_uri, str(tmp_path / "missing")), client, "does not exist")
    (tmp_path / "exists").mkdir()
    assert_refused(score(model_uri, scoring_input, str(tmp_path / "exists")), client, "already exists")
    assert_refused(score(trained_model[0]), client, "is a Spark ML model: score it with score_batch")
    assert_refused(score(pyfunc_model_uri), client, "has no input signature")
    assert_refused(score("runs:/0123456789abcdef0123456789abcdef/model"), client, "not found")
    wrong = str(tmp_path / "wrong.parquet")
    spark.read.parquet(scoring_input).limit(5).drop("latitude").write.parquet(wrong)
    assert_refused(score(model_uri, wrong), client, "missing columns latitude", before_spark=False)
    taken = str(tmp_path / "taken.parquet")
    spark.read.parquet(scoring_input).limit(5).withColumnRenamed("row_id", "prediction").write.parquet(taken)
    assert_refused(score(model_uri, taken), client, "already has a column named prediction", before_spark=False)
    assert not os.path.exists(out)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"model_type": "svm"}, "unknown model_type 'svm'"),
        ({"num_trees": 0}, "num_trees must be >= 1"),
        ({"max_features": "half"}, "max_features 'half' is not valid"),
        ({"model_type": "gbt", "max_features": "sqrt"}, "applies to rf"),
        ({"train_fraction": 1.0}, "train_fraction must be strictly between 0 and 1"),
        ({"register_as": "bad/name"}, "is not a valid registered model name"),
    ],
)
def test_train_sklearn_parameter_checks(params, message):
    from sparkmlops.core.errors import UserInputError

    with pytest.raises(UserInputError, match=message):
        SklearnTrainParams(**params).validate()


def test_train_sklearn_gbt_through_the_script(client, default_data):
    result = script_in_process(
        "train_sklearn.py",
        "--data_path",
        default_data,
        "--model_type",
        "gbt",
        "--num_trees",
        "20",
        "--max_depth",
        "4",
        "--log_label",
        "true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = client.search_runs(
        [client.get_experiment_by_name("sparkmlops-tests").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert run.info.status == "FINISHED" and run.data.metrics["r2"] > 0.3
    assert run.data.params["model_type"] == "gbt"
