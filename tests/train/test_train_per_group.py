"""train_per_group and score_per_group: one model per group on the executors, nested runs tagged with
their group, each group scored by its own model, unknown groups handled as documented."""

import numpy as np
import pytest
from conftest import PER_GROUP_MIN_ROWS, assert_logged_model, assert_refused, in_tracked_run, script_in_process

from sparkmlops.data import generators
from sparkmlops.train.train_per_group import PerGroupParams, train_per_group_and_log

MIN_ROWS = PER_GROUP_MIN_ROWS  # the shared per_group_run's (conftest)


def _training_rows_per_group(spark, default_data) -> dict:
    """Training rows per neighbourhood, from train's own split rebuilt independently."""
    from sparkmlops.data.splits import load_labelled, split_train_test

    train_df, _ = split_train_test(load_labelled(spark, default_data, "price").df, 0.8, 42)
    return {r[0]: r[1] for r in train_df.groupBy("neighbourhood_cleansed").count().collect()}


def test_each_group_is_a_nested_run_tagged_with_its_group(client, spark, default_data, per_group_run):
    run_id, result = per_group_run
    counts = _training_rows_per_group(spark, default_data)
    big = {g for g, n in counts.items() if n >= MIN_ROWS}
    assert 3 <= len(big) < len(counts)  # the test covers both trained and skipped groups
    table = result.table
    assert set(table.loc[table["status"] == "trained", "group"]) == big
    assert set(table.loc[table["status"] == "skipped", "group"]) == set(counts) - big
    assert dict(zip(table["group"], table["train_rows"])) == counts

    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["group_col"] == "neighbourhood_cleansed"
    assert parent.data.metrics["groups_trained"] == len(big)
    assert parent.data.metrics["groups_skipped"] == len(counts) - len(big)
    for group in set(counts) - big:
        assert group in parent.data.tags["skipped_groups"]
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == len(big)
    by_run = dict(zip(table["run_id"], table.to_dict("records")))
    for child in children:
        row = by_run[child.info.run_id]
        assert child.info.status == "FINISHED"
        assert child.data.tags["group"] == row["group"] and child.data.tags["group_col"] == "neighbourhood_cleansed"
        assert child.data.metrics["rmse"] == pytest.approx(row["rmse"], rel=1e-12)
        assert child.data.metrics["train_rows"] == counts[row["group"]]
    # The table is logged with the parent, as are the fallback model and both sets of metrics.
    import mlflow

    assert "group_models.csv" in {a.path for a in client.list_artifacts(run_id)}
    assert_logged_model(run_id, ("fallback_rmse", "fallback_r2", "fallback_mae"), name="fallback_model")
    for child in children:  # each group's model, its metrics on the group's own test rows
        assert_logged_model(child.info.run_id, ("rmse", "r2", "mae"), dataset=None)
    assert "sklearn" in mlflow.models.get_model_info(f"runs:/{run_id}/fallback_model").flavors
    assert {"rmse", "r2", "fallback_rmse", "fallback_r2"} <= set(parent.data.metrics)


def test_a_groups_metrics_are_its_own_models(spark, default_data, per_group_run):
    import mlflow

    from sparkmlops.data.splits import load_labelled, split_train_test
    from sparkmlops.fitting.metrics import array_regression_metrics as regression_metrics

    _, result = per_group_run
    row = result.table[result.table["status"] == "trained"].iloc[0]
    _, test_df = split_train_test(load_labelled(spark, default_data, "price").df, 0.8, 42)
    test = test_df.filter(test_df["neighbourhood_cleansed"] == row["group"]).toPandas()
    model = mlflow.sklearn.load_model(row["model_uri"])
    assert "neighbourhood_cleansed" not in model.feature_names_in_  # constant within a group
    expected = regression_metrics(test["price"], model.predict(test[model.feature_names_in_]))
    assert row["rmse"] == pytest.approx(expected["rmse"], rel=1e-12)


@pytest.fixture(scope="module")
def per_group_input(spark, default_data, workdir) -> str:
    """The generated data with a row id, some rows moved to an unseen neighbourhood and some to null."""
    from pyspark.sql import functions as F

    path = workdir / "per-group-input.parquet"
    if not path.exists():
        df = spark.read.parquet(default_data).withColumn("row_id", F.monotonically_increasing_id())
        group = F.col("neighbourhood_cleansed")
        df = df.withColumn(
            "neighbourhood_cleansed",
            F.when(F.col("row_id") % 50 == 0, F.lit("Atlantis"))
            .when(F.col("row_id") % 50 == 1, F.lit(None).cast("string"))
            .otherwise(group),
        )
        df.repartition(2).write.parquet(str(path))
    return str(path)


def _score(run_id, inp, out, *extra):
    return script_in_process(
        "score_per_group.py", "--run_id", run_id, "--input_path", inp, "--output_path", out, *extra
    )


def test_score_per_group_uses_each_groups_model_and_the_fallback(
    client, spark, per_group_run, per_group_input, tmp_path
):
    import mlflow

    run_id, result = per_group_run
    out = str(tmp_path / "scored")
    scoring = _score(run_id, per_group_input, out)
    assert scoring.returncode == 0, scoring.stderr[-3000:]
    scored = spark.read.parquet(out).toPandas()
    assert len(scored) == generators.DEFAULT_N_ROWS and scored["prediction"].notna().all()
    trained = dict(zip(*[result.table.loc[result.table["status"] == "trained", c] for c in ("group", "model_uri")]))
    own = scored["neighbourhood_cleansed"].isin(list(trained))
    assert (scored.loc[own, "scored_with"] == "group").all() and (scored.loc[~own, "scored_with"] == "fallback").all()
    # Every row's prediction is exactly what its model predicts for it.
    for group, uri in list(trained.items())[:2]:
        rows = scored[scored["neighbourhood_cleansed"] == group]
        model = mlflow.sklearn.load_model(uri)
        assert np.array_equal(rows["prediction"].to_numpy(), model.predict(rows[model.feature_names_in_]))
    fallback = mlflow.sklearn.load_model(f"runs:/{run_id}/fallback_model")
    rows = scored[~own]
    assert rows["neighbourhood_cleansed"].isna().any() and (rows["neighbourhood_cleansed"] == "Atlantis").any()
    assert np.array_equal(rows["prediction"].to_numpy(), fallback.predict(rows[fallback.feature_names_in_]))
    run = client.search_runs(
        [client.get_run(run_id).info.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    assert run.info.status == "FINISHED" and run.data.metrics["rows_unknown_group"] == (~own).sum()


def test_unknown_groups_null_and_error(client, spark, per_group_run, per_group_input, tmp_path):
    run_id, result = per_group_run
    out = str(tmp_path / "nulls")
    assert _score(run_id, per_group_input, out, "--unknown_groups", "null").returncode == 0
    scored = spark.read.parquet(out).toPandas()
    unknown = scored["scored_with"].isna()
    assert unknown.any() and scored.loc[unknown, "prediction"].isna().all()
    assert scored.loc[~unknown, "prediction"].notna().all()
    refused = _score(run_id, per_group_input, str(tmp_path / "error"), "--unknown_groups", "error")
    assert_refused(refused, client, "have no model: Atlantis", before_spark=False)
    assert not (tmp_path / "error").exists()


def test_per_group_on_the_iot_example(client, spark, workdir):
    """The book's classic case: one model per device beats one model for all devices."""
    path = workdir / "iot-per-group.parquet"
    generators.generate_iot(spark, 6000, n_devices=4).write.parquet(str(path))
    params = PerGroupParams(
        data_path=str(path), label_col="power", group_col="device_id", min_rows=100, num_trees=20, max_depth=8
    )
    run_id, result = in_tracked_run(params, lambda checked: train_per_group_and_log(spark, checked))
    assert (result.table["status"] == "trained").sum() == 4
    # mae: a few readings with extreme vibration (power grows with its square) dominate both rmse
    assert result.metrics["mae"] < 0.8 * result.fallback_metrics["mae"]
    assert client.get_run(run_id).data.tags["group_col"] == "device_id"


def test_bad_inputs_are_refused(client, spark, default_data, per_group_run, trained_model, per_group_input, tmp_path):
    run_id, _ = per_group_run
    out = str(tmp_path / "out")
    train = lambda *options: script_in_process("train_per_group.py", "--data_path", default_data, *options)  # noqa
    # parameters and models before Spark starts (assert_refused: no spark_master tag); the data's columns after
    assert_refused(train("--min_rows", "1"), client, "min_rows must be >= 2")
    assert_refused(train("--min_rows", "0"), client, "min_rows must be >= 2")
    assert_refused(train("--group_col", "price"), client, "group_col and label_col are both 'price'")
    assert_refused(
        train("--group_col", "zipcode"), client, "group_col 'zipcode' is not in the data", before_spark=False
    )
    assert_refused(train("--group_col", "accommodates"), client, "is double, not a string column", before_spark=False)
    assert_refused(_score(run_id, per_group_input, out, "--unknown_groups", "skip"), client, "unknown unknown_groups")
    assert_refused(_score("0123456789abcdef0123456789abcdef", per_group_input, out), client, "not found")
    train_run_id = trained_model[0].split("/")[1]
    assert_refused(_score(train_run_id, per_group_input, out), client, "is not a train_per_group run")
    wrong = str(tmp_path / "wrong.parquet")
    spark.read.parquet(per_group_input).limit(5).drop("neighbourhood_cleansed").write.parquet(wrong)
    assert_refused(
        _score(run_id, wrong, out), client, "group_col 'neighbourhood_cleansed' is not in the data", before_spark=False
    )


def test_a_failing_group_fails_its_nested_run_and_the_parent(client, spark, default_data, tmp_path):
    """One group that cannot be fitted (a feature too large for scikit-learn's float32 trees, though a
    finite double, so the data's own checks pass it): its nested run ends FAILED with the error, the
    other groups' runs finish, and the parent fails with one line naming the group."""
    from pyspark.sql import functions as F

    path = str(tmp_path / "bad-group.parquet")
    huge = F.when(F.col("neighbourhood_cleansed") == "Mission", F.lit(1e300)).otherwise(F.col("accommodates"))
    spark.read.parquet(default_data).withColumn("accommodates", huge).write.parquet(path)
    result = script_in_process(
        "train_per_group.py", "--data_path", path, "--min_rows", "300", "--num_trees", "3", "--max_depth", "3"
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 6 group models failed" in result.stderr and "group 'Mission'" in result.stderr.strip().splitlines()[-1]
    parent = client.search_runs(
        [client.get_experiment_by_name("sparkmlops-tests").experiment_id],
        "attributes.run_name = 'train_per_group rf by neighbourhood_cleansed'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]  # the children started after it
    assert parent.info.status == "FAILED"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    status = {c.data.tags["group"]: c.info.status for c in children}
    assert status.pop("Mission") == "FAILED" and status and set(status.values()) == {"FINISHED"}
    failed = next(c for c in children if c.data.tags["group"] == "Mission")
    assert "infinity" in failed.data.tags["error"].lower()
