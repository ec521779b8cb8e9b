"""Drift statistics (work in progress for issue 9: the check_drift entry point is not written yet)."""

from __future__ import annotations

import math

import pytest

from sparkmlops import drift


def test_psi_of_identical_histograms_is_zero_and_grows_with_shift():
    assert drift.psi([10, 20, 30], [1, 2, 3]) == 0.0
    assert drift.psi([50, 50], [60, 40]) == pytest.approx(0.1 * math.log(0.6 / 0.5) + 0.1 * math.log(0.5 / 0.4))
    assert drift.psi([50, 50, 0], [40, 40, 20]) > drift.psi([50, 50], [45, 55])


def test_ks_statistic_from_bucket_counts():
    assert drift.ks_statistic([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0
    assert drift.ks_statistic([2, 0], [0, 2]) == 1.0


@pytest.fixture(scope="module")
def airbnb(spark):
    from sparkmlops.data import generate_airbnb, infer_feature_spec

    reference = generate_airbnb(spark, 4000, 42)
    return reference, infer_feature_spec(reference, "price")


def test_no_drift_on_a_fresh_sample_of_the_same_generator(spark, airbnb):
    from sparkmlops.data import generate_airbnb

    reference, spec = airbnb
    results = drift.feature_drift(reference, generate_airbnb(spark, 4000, 7), spec.numeric_cols + ["price"],
                                  spec.categorical_cols)
    assert len(results) == len(spec.numeric_cols) + 1 + len(spec.categorical_cols)
    assert max(r.psi for r in results) < 0.05
    assert max(r.ks for r in results if r.ks is not None) < 0.05


def test_shift_new_categories_and_nulls_are_measured(spark, airbnb):
    import scipy.stats
    from pyspark.sql import functions as F

    reference, spec = airbnb
    current = (reference.withColumn("price", F.col("price") * 1.5)
               .withColumn("neighbourhood_cleansed", F.when(F.rand(1) < 0.3, F.lit("Atlantis"))
                           .otherwise(F.col("neighbourhood_cleansed")))
               .withColumn("bedrooms", F.when(F.rand(2) < 0.2, F.lit(None)).otherwise(F.col("bedrooms"))))
    results = {r.feature: r for r in drift.feature_drift(reference, current, spec.numeric_cols + ["price"],
                                                          spec.categorical_cols)}
    assert results["price"].psi > 0.2
    expected_ks = scipy.stats.ks_2samp(reference.select("price").toPandas()["price"],
                                       current.select("price").toPandas()["price"]).statistic
    assert results["price"].ks == pytest.approx(expected_ks, abs=0.01)  # evaluated on a 200-point grid
    assert results["neighbourhood_cleansed"].unseen_share == pytest.approx(0.3, abs=0.03)
    assert results["neighbourhood_cleansed"].psi > 1
    assert results["bedrooms"].current_null_rate == pytest.approx(0.2, abs=0.03)
    assert results["bedrooms"].reference_null_rate == 0.0
    assert results["accommodates"].psi == 0.0


def test_check_drift_script_exit_codes_and_logged_results(spark, client, trained_model, default_data, tmp_path):
    """No drift on a fresh sample (exit 0); the generator's drift option is found (exit 3), the run is
    FINISHED either way with the table and metrics logged."""
    import mlflow

    from tests.conftest import newest_run, python_script

    fresh, drifted = tmp_path / "fresh", tmp_path / "drifted"
    for path, extra in ((fresh, []), (drifted, ["--drift", "true"])):
        result = python_script("generate_data.py", "--output_path", str(path), "--seed", "7", *extra)
        assert result.returncode == 0, result.stderr[-2000:]
    result = python_script("check_drift.py", "--model_uri", trained_model[0], "--current_path", str(fresh))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no drift" in result.stdout
    run = newest_run(client)
    assert run.info.status == "FINISHED" and run.data.metrics["drifted_features"] == 0
    result = python_script("check_drift.py", "--reference_path", default_data, "--current_path", str(drifted))
    assert result.returncode == drift.DRIFT_EXIT_CODE, result.stderr[-2000:]
    run = newest_run(client)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["max_psi"] >= 0.2 and run.data.metrics["drifted_features"] >= 2  # price, neighbourhood
    table = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="drift/drift_per_feature.csv")
    import pandas as pd

    drifted_features = set(pd.read_csv(table).query("drifted")["feature"])
    assert {"price", "neighbourhood_cleansed"} <= drifted_features
