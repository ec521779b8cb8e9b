"""The train and generate_data scripts as users run them: one-line errors, exit codes, FAILED runs."""

import re

import pytest
from conftest import assert_refused as _assert_refused
from conftest import last_line, newest_run, python_script, script_in_process


@pytest.mark.parametrize(
    "options, message",
    [
        (["--num_trees", "0"], "num_trees must be >= 1"),
        (["--max_depth", "-1"], "max_depth must be between 0 and 30"),
        (["--max_depth", "31"], "max_depth must be between 0 and 30"),
        (["--max_bins", "1"], "max_bins must be >= 2"),
        (["--train_fraction", "0"], "train_fraction must be strictly between 0 and 1"),
        (["--train_fraction", "1.5"], "train_fraction must be strictly between 0 and 1"),
        (["--min_instances_per_node", "0"], "min_instances_per_node must be >= 1"),
        (["--feature_subset_strategy", "most"], "feature_subset_strategy 'most' is not valid"),
        (["--feature_subset_strategy", "1.5"], "feature_subset_strategy '1.5' is not valid"),
        (["--data_path", "/no/such/listings.parquet"], "'/no/such/listings.parquet' does not exist"),
        (["--model_type", "lightgbm"], "unknown model_type 'lightgbm'"),
    ],
)
def test_bad_parameters(client, options, message):
    _assert_refused(script_in_process("train.py", *options), client, message)  # before Spark: no session


@pytest.mark.process
def test_missing_java_fails_before_spark(client, tmp_path):
    """A process of its own: the Java check runs before a JVM exists, which the test session's already does."""
    result = python_script("train.py", env={"JAVA_HOME": str(tmp_path / "no-jdk")})
    _assert_refused(result, client, "PySpark 4 needs Java 17 or 21")


@pytest.fixture(scope="module")
def bad_datasets(spark, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-data")
    (folder / "garbage.parquet").write_text("not a parquet file\n")
    spark.createDataFrame([("a", 1.0)], "x string, y double").write.parquet(str(folder / "nolabel.parquet"))
    spark.createDataFrame([("a", "1")], "x string, price string").write.parquet(str(folder / "strlabel.parquet"))
    spark.sql("SELECT DATE'2019-07-01' AS day, 1.0 AS price").write.parquet(str(folder / "nofeat.parquet"))
    return folder


@pytest.mark.parametrize(
    "file, message, before_spark",
    [
        ("garbage.parquet", "cannot be read as parquet", True),  # the parquet footers, read without Spark
        ("nolabel.parquet", "label column 'price' is not in the data", False),  # the schema, read by Spark
        # task=auto takes a string label as classes; `price` is the SF Airbnb schema's number
        ("strlabel.parquet", "price is string, expected double", False),
        ("nofeat.parquet", "no feature columns", False),
    ],
)
def test_bad_data(client, bad_datasets, file, message, before_spark):
    result = script_in_process("train.py", "--data_path", str(bad_datasets / file))
    _assert_refused(result, client, message, before_spark)


def test_max_bins_smaller_than_categories(client, default_data):
    result = script_in_process("train.py", "--data_path", default_data, "--max_bins", "30")
    _assert_refused(result, client, "max_bins=30 is smaller than the number of categories", before_spark=False)
    assert re.search(
        r"neighbourhood_cleansed \((\d+) categories\).*pass -P max_bins=(\d+) or more", last_line(result.stderr)
    )


def test_unknown_option_is_refused():
    result = script_in_process("train.py", "--num_tress", "5")
    assert result.returncode == 2
    assert last_line(result.stderr).startswith("error: unknown parameter 'num_tress' for train: valid parameters")


def test_generate_data_writes_files_deterministically(spark, tmp_path, client):
    from sparkmlops.data.digests import content_digest
    from sparkmlops.data.generators import generate_airbnb

    out = tmp_path / "gen.parquet"
    result = script_in_process(
        "generate_data.py", "--output_path", str(out), "--n_rows", "2000", "--n_files", "4", "--seed", "9"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(out.glob("part-*.parquet"))) == 4
    written = spark.read.parquet(str(out))
    assert written.count() == 2000
    assert content_digest(written) == content_digest(generate_airbnb(spark, 2000, seed=9))
    run = newest_run(client)
    assert run.info.status == "FINISHED" and run.data.metrics["rows_written"] == 2000
    again = script_in_process("generate_data.py", "--output_path", str(out), "--n_rows", "10")
    assert again.returncode == 2 and "already exists" in last_line(again.stderr)
    assert spark.read.parquet(str(out)).count() == 2000
