"""check_drift: drift statistics (PSI, KS, null rates, unseen categories), the job's logged results and exit
codes, registry tags, and every refusal."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from conftest import assert_refused, newest_run, python_script, script_in_process

from sparkmlops.monitor import drift_statistics


def test_psi_of_identical_histograms_is_zero_and_grows_with_shift():
    assert drift_statistics.psi([10, 20, 30], [1, 2, 3]) == 0.0
    assert drift_statistics.psi([50, 50], [60, 40]) == pytest.approx(
        0.1 * math.log(0.6 / 0.5) + 0.1 * math.log(0.5 / 0.4)
    )
    assert drift_statistics.psi([50, 50, 0], [40, 40, 20]) > drift_statistics.psi([50, 50], [45, 55])


def test_ks_statistic_from_bucket_counts():
    assert drift_statistics.ks_statistic([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0
    assert drift_statistics.ks_statistic([2, 0], [0, 2]) == 1.0


@pytest.fixture(scope="module")
def airbnb(spark):
    from sparkmlops.data.generators import generate_airbnb
    from sparkmlops.data.schema import infer_feature_spec

    reference = generate_airbnb(spark, 4000, 42)
    return reference, infer_feature_spec(reference, "price")


@pytest.mark.parametrize("relative_error", [0.01, 0.015, 0.0])
def test_quantiles_are_spark_approx_quantiles_in_one_collected_row(spark, airbnb, monkeypatch, relative_error):
    """The bucket edges are exactly DataFrame.approxQuantile's (nulls and NaN ignored, [] for a column with
    no value, the same accuracy for any relative error), collected as one row instead of one driver round
    trip per number."""
    from pyspark.sql import functions as F

    reference, spec = airbnb
    holed = reference.withColumn(
        "bedrooms",
        F.when(F.rand(3) < 0.2, F.lit(None)).when(F.rand(4) < 0.1, F.lit(float("nan"))).otherwise(F.col("bedrooms")),
    ).withColumn("empty", F.lit(None).cast("double"))
    columns = [*spec.numeric_cols, "price", "empty"]
    probabilities = [1 / 7, 2 / 7, *[i / 100 for i in range(1, 100)]]
    cast = holed.select(*[F.col(c).cast("double") for c in columns])
    expected = cast.approxQuantile(columns, probabilities, relative_error)
    collected = []
    frame_type = type(holed)  # the classic or Connect DataFrame, whose own collect is the one called
    collect = frame_type.collect
    monkeypatch.setattr(frame_type, "collect", lambda df: collected.append(collect(df)) or collected[-1])
    assert drift_statistics._quantiles(holed, columns, probabilities, relative_error) == expected
    assert [len(rows) for rows in collected] == [1]
    assert expected[-1] == [] and not any(math.isnan(v) for v in expected[columns.index("bedrooms")])


def test_no_drift_on_a_fresh_sample_of_the_same_generator(spark, airbnb):
    from sparkmlops.data.generators import generate_airbnb

    reference, spec = airbnb
    results = drift_statistics.feature_drift(
        reference, generate_airbnb(spark, 4000, 7), spec.numeric_cols + ["price"], spec.categorical_cols
    )
    assert len(results) == len(spec.numeric_cols) + 1 + len(spec.categorical_cols)
    assert max(r.psi for r in results) < 0.05
    assert max(r.ks for r in results if r.ks is not None) < 0.05


def test_shift_new_categories_and_nulls_are_measured(spark, airbnb):
    import scipy.stats
    from pyspark.sql import functions as F

    reference, spec = airbnb
    current = (
        reference.withColumn("price", F.col("price") * 1.5)
        .withColumn(
            "neighbourhood_cleansed",
            F.when(F.rand(1) < 0.3, F.lit("Atlantis")).otherwise(F.col("neighbourhood_cleansed")),
        )
        .withColumn("bedrooms", F.when(F.rand(2) < 0.2, F.lit(None)).otherwise(F.col("bedrooms")))
    )
    results = {
        r.feature: r
        for r in drift_statistics.feature_drift(
            reference, current, spec.numeric_cols + ["price"], spec.categorical_cols
        )
    }
    assert results["price"].psi > 0.2
    expected_ks = scipy.stats.ks_2samp(
        reference.select("price").toPandas()["price"], current.select("price").toPandas()["price"]
    ).statistic
    assert results["price"].ks == pytest.approx(expected_ks, abs=0.01)  # evaluated on a 200-point grid
    assert results["neighbourhood_cleansed"].unseen_share == pytest.approx(0.3, abs=0.03)
    assert results["neighbourhood_cleansed"].psi > 1
    assert results["bedrooms"].current_null_rate == pytest.approx(0.2, abs=0.03)
    assert results["bedrooms"].reference_null_rate == 0.0
    assert results["accommodates"].psi == 0.0


@pytest.mark.process
def test_check_drift_script_exit_codes_and_logged_results(spark, client, trained_model, default_data, tmp_path):
    """No drift on a fresh sample (exit 0); the generator's drift option is found (exit 3), the run is
    FINISHED either way with the table and metrics logged."""
    import mlflow

    from sparkmlops.data.generators import generate_airbnb
    from sparkmlops.data.writing import write_parquet_atomically

    fresh, drifted = str(tmp_path / "fresh"), str(tmp_path / "drifted")
    write_parquet_atomically(generate_airbnb(spark, 7146, 7), fresh)
    write_parquet_atomically(generate_airbnb(spark, 7146, 7, drift=True), drifted)
    result = script_in_process("check_drift.py", "--model_uri", trained_model[0], "--current_path", fresh)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no drift" in result.stdout
    run = newest_run(client)
    assert run.info.status == "FINISHED" and run.data.metrics["drifted_features"] == 0
    # the exit code a scheduler sees, from a process of its own
    result = python_script("check_drift.py", "--reference_path", default_data, "--current_path", drifted)
    assert result.returncode == 3, ("drift found is exit 3 (README: exit codes)", result.stderr[-2000:])
    run = newest_run(client)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["max_psi"] >= 0.2 and run.data.metrics["drifted_features"] >= 2, run.data.metrics
    table = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="drift/drift_per_feature.csv")
    drifted_features = set(pd.read_csv(table).query("drifted")["feature"])
    assert {"price", "neighbourhood_cleansed"} <= drifted_features


def test_unseen_categories_are_their_own_bucket(spark):
    reference = spark.createDataFrame([("a",)] * 60 + [("b",)] * 40 + [(None,)] * 0, "room string")
    current = spark.createDataFrame([("a",)] * 50 + [("c",)] * 20 + [("d",)] * 10 + [(None,)] * 20, "room string")
    [result] = drift_statistics.categorical_drift(reference, current, ["room"])
    # buckets a, b and unseen (c + d); nulls are not a bucket but a rate
    assert result.buckets == 3
    assert result.unseen_share == pytest.approx(30 / 80)
    assert result.current_null_rate == pytest.approx(0.2) and result.reference_null_rate == 0.0
    assert result.psi == pytest.approx(drift_statistics.psi([60, 40, 0], [50, 0, 30]))
    assert result.psi > 1


def test_same_data_has_zero_drift(client, default_data):
    result = script_in_process("check_drift.py", "--reference_path", default_data, "--current_path", default_data)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "check_drift: no drift: max PSI 0.000 < 0.2" in result.stdout
    run = newest_run(client)
    assert run.data.metrics["max_psi"] == 0.0 and run.data.metrics["max_ks"] == 0.0
    assert run.data.metrics["features_checked"] == 34, "every column of the reference, label included"
    assert run.data.tags["drift_verdict"].startswith("no drift")


def test_registered_model_version_gets_the_drift_result(client, trained_model, tmp_path, spark):
    """A model given by alias: its training data is the reference, its predictions are compared, and the
    registry version it resolved to records the verdict."""
    import mlflow

    from sparkmlops.data.generators import generate_airbnb
    from sparkmlops.data.writing import write_parquet_atomically

    drifted = str(tmp_path / "drifted")
    write_parquet_atomically(generate_airbnb(spark, 3000, 7, drift=True), drifted)
    version = mlflow.register_model(trained_model[0], "drift-check-model")
    client.set_registered_model_alias("drift-check-model", "champion", version.version)
    result = script_in_process(
        "check_drift.py", "--model_uri", "models:/drift-check-model@champion", "--current_path", drifted
    )
    assert result.returncode == 3, ("drift found is exit 3 (README: exit codes)", result.stderr[-2000:])
    run = newest_run(client)
    assert run.info.status == "FINISHED"
    table = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="drift/drift_per_feature.csv")
    )
    assert "prediction (model output)" in set(table["feature"])
    assert table.set_index("feature").loc["neighbourhood_cleansed", "psi"] >= 0.2
    tags = client.get_model_version("drift-check-model", version.version).tags
    assert tags["drift_run_id"] == run.info.run_id and tags["drift_verdict"].startswith("drift:")
    assert float(tags["drift_max_psi"]) == pytest.approx(run.data.metrics["max_psi"], abs=1e-4)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "drift")} == {
        "drift/drift_per_feature.csv",
        "drift/psi_per_feature.png",
    }


@pytest.mark.parametrize(
    "options, message",
    [
        ([], "pass exactly one of model_uri"),
        (
            ["--reference_path", "{data}", "--model_uri", "runs:/x/model", "--current_path", "{data}"],
            "pass exactly one of model_uri",
        ),
        (["--reference_path", "{data}"], "current_path is empty"),
        (
            ["--reference_path", "{data}", "--current_path", "/nonexistent/current.parquet"],
            "/nonexistent/current.parquet",
        ),
        (["--reference_path", "/nonexistent/ref.parquet", "--current_path", "{data}"], "/nonexistent/ref.parquet"),
        (
            ["--reference_path", "{data}", "--current_path", "{data}", "--threshold", "0"],
            "threshold must be in (0, 10]",
        ),
        (["--reference_path", "{data}", "--current_path", "{data}", "--bins", "1"], "bins must be in 2..100"),
        (["--model_uri", "models:/no-such-model@champion", "--current_path", "{data}"], "not found"),
        (
            ["--reference_path", "{data}", "--current_path", "{data}", "--treshold", "0.1"],
            "unknown parameter 'treshold'",
        ),
    ],
)
def test_bad_input_is_refused_before_spark(client, default_data, options, message):
    options = [o.replace("{data}", default_data) for o in options]
    result = script_in_process("check_drift.py", *options)
    if "unknown parameter" in message:  # refused by click, before any run
        assert result.returncode == 2 and message in result.stderr
        return
    assert_refused(result, client, message)


def test_current_data_missing_columns_is_refused(client, default_data, spark, tmp_path):
    narrow = str(tmp_path / "narrow")
    spark.read.parquet(default_data).drop("bedrooms", "room_type").write.parquet(narrow)
    result = script_in_process("check_drift.py", "--reference_path", default_data, "--current_path", narrow)
    run = assert_refused(result, client, "current_path lacks 2 column(s) of the reference", before_spark=False)
    assert "bedrooms" in run.data.tags["error"]


def test_broken_current_data_is_never_no_drift(client, real_data, spark, tmp_path):
    """The real data as reference: empty current data is bad input; columns null in every row, or of
    another type, are drift even though PSI over the remaining values cannot see them."""
    import mlflow
    from pyspark.sql import functions as F

    empty = str(tmp_path / "empty")
    spark.read.parquet(real_data).limit(0).write.parquet(empty)
    result = script_in_process("check_drift.py", "--reference_path", real_data, "--current_path", empty)
    assert_refused(result, client, "has no rows", before_spark=False)

    broken = str(tmp_path / "broken")
    spark.read.parquet(real_data).withColumns(
        {
            "accommodates": F.lit(None).cast("double"),
            "room_type": F.lit(None).cast("string"),
            "bedrooms": F.col("bedrooms").cast("string"),
        }
    ).write.parquet(broken)
    result = script_in_process("check_drift.py", "--reference_path", real_data, "--current_path", broken)
    assert result.returncode == 3, result.stderr[-2000:]
    run = newest_run(client)
    assert run.info.status == "FINISHED" and run.data.tags["exit_code"] == "3"
    table = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="drift/drift_per_feature.csv"),
        keep_default_na=False,
    ).set_index("feature")
    assert table.loc["accommodates", "drift_reason"] == "missing 0% -> 100%"
    assert table.loc["room_type", "drift_reason"] == "missing 0% -> 100%"
    assert table.loc["bedrooms", "drift_reason"] == "type double -> string"
    assert table.loc["bedrooms", "type_change"] == "double -> string"
    assert set(table.index[table["drifted"].astype(str) == "True"]) == {"accommodates", "room_type", "bedrooms"}
    assert run.data.metrics["drifted_features"] == 3
    verdict = run.data.tags["drift_verdict"]
    assert verdict.startswith("drift: 3 of 34 features drifted") and "accommodates (missing 0% -> 100%)" in verdict


@pytest.mark.parametrize(
    "broken", ["30% of bedrooms null", "accommodates null in every row", "bedrooms NaN, inf or not a number (text)"]
)
def test_a_model_check_reports_what_it_cannot_score_instead_of_crashing(
    spark, client, trained_model, default_data, tmp_path, broken
):
    """check_drift -P model_uri=... on current data whose numeric feature went missing: the missing share is
    the drift found (exit 3, run FINISHED). train's model imputes nulls and NaN, so those rows are scored; the
    rows it cannot score (an infinity) are counted and the prediction drift is computed on the others (the
    model's own training data is the reference)."""
    import mlflow
    from pyspark.sql import functions as F

    column, share = {"30%": ("bedrooms", 30), "acc": ("accommodates", 100), "bed": ("bedrooms", 30)}[broken[:3]]
    source = spark.read.parquet(default_data)
    bucket = F.abs(F.xxhash64(*[F.col(c) for c in source.columns], F.lit(11))) % 100
    current = str(tmp_path / "current")
    if broken.startswith("bedrooms NaN"):  # the column drifted to text: numbers, "NaN", "Infinity", "n/a"
        value = (
            F.when(bucket < 10, F.lit("NaN"))
            .when(bucket < 20, F.lit("Infinity"))
            .when(bucket < 30, F.lit("n/a"))
            .otherwise(F.col(column).cast("string"))
        )
    else:
        value = F.when(bucket < share, F.lit(None).cast("double")).otherwise(F.col(column))
    source.withColumn(column, value).write.parquet(current)
    nulls = (
        spark.read.parquet(current)
        .filter(F.col(column).try_cast("double").isNull() | F.isnan(F.col(column).try_cast("double")))
        .count()
    )  # what the model imputes
    unscorable = spark.read.parquet(current).filter(F.col(column).cast("string").isin("Infinity")).count()
    total = source.count()

    result = script_in_process("check_drift.py", "--model_uri", trained_model[0], "--current_path", current)
    assert result.returncode == 3, result.stderr[-3000:]
    run = newest_run(client)
    assert run.info.status == "FINISHED" and run.data.tags["exit_code"] == "3"
    metrics = run.data.metrics
    assert metrics["current_unscorable_rows"] == unscorable and metrics["reference_unscorable_rows"] == 0
    table = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="drift/drift_per_feature.csv"),
        keep_default_na=False,
    ).set_index("feature")
    if broken.startswith("bedrooms NaN"):  # "NaN" and "n/a" are missing values; "Infinity" is a value
        missing = spark.read.parquet(current).filter(F.col(column).isin("NaN", "n/a")).count()
        assert table.loc[column, "drift_reason"] == f"missing 0% -> {missing / total:.0%}; type double -> string"
    else:
        assert table.loc[column, "drift_reason"] == f"missing 0% -> {nulls / total:.0%}"
    prediction = table.loc["prediction (model output)"]
    assert float(prediction["current_null_rate"]) == pytest.approx(unscorable / total)
    assert float(prediction["reference_null_rate"]) == 0.0
    drifted = set(table.index[table["drifted"].astype(str) == "True"])
    assert column in drifted and drifted <= {column, "prediction (model output)"}, drifted
    if unscorable:
        assert f"the model could not score {unscorable} current rows" in result.stdout
    else:
        assert "could not score" not in result.stdout
