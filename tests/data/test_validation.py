"""The schema contract, the generator's determinism and realism, and the loader/validator."""

import pytest
from pyspark.sql import functions as F

from sparkmlops.core.errors import UserInputError
from sparkmlops.data import digests, generators, validation
from sparkmlops.data import schema as data_schema


def _schema_triples(df):
    return [(f.name, f.dataType.simpleString(), f.nullable) for f in df.schema.fields]


def test_generated_schema_is_the_contract(spark):
    df = generators.generate_airbnb(spark, 100, seed=1)
    assert _schema_triples(df) == data_schema.AIRBNB_COLUMNS
    assert len(df.columns) == 34


def test_contract_is_the_real_data_schema(spark, real_data):
    real = spark.read.parquet(real_data)
    assert [(n, t) for n, t, _ in _schema_triples(real)] == [(n, t) for n, t, _ in data_schema.AIRBNB_COLUMNS]


def test_written_default_data_reads_back_with_the_real_schema(spark, default_data):
    df = spark.read.parquet(default_data)
    assert df.count() == generators.DEFAULT_N_ROWS
    assert [(n, t) for n, t, _ in _schema_triples(df)] == [(n, t) for n, t, _ in data_schema.AIRBNB_COLUMNS]


def test_same_seed_same_rows_whatever_the_partitioning(spark):
    one = generators.generate_airbnb(spark, 3000, seed=7, n_partitions=1)
    many = generators.generate_airbnb(spark, 3000, seed=7, n_partitions=6)
    assert digests.content_digest(one) == digests.content_digest(many)
    assert one.collect() == many.orderBy(F.monotonically_increasing_id()).collect()


def test_prefix_stable_and_seed_sensitive(spark):
    small = generators.generate_airbnb(spark, 500, seed=3)
    large = generators.generate_airbnb(spark, 2000, seed=3, n_partitions=3)
    assert small.collect() == large.limit(500).collect()
    other_seed = generators.generate_airbnb(spark, 500, seed=4)
    assert digests.content_digest(small) != digests.content_digest(other_seed)


def test_generated_values_are_realistic(spark):
    pdf = generators.generate_airbnb(spark, 20000, seed=42, n_partitions=2).toPandas()
    assert set(pdf.neighbourhood_cleansed) <= {n[0] for n in generators.NEIGHBOURHOODS}
    assert len(set(pdf.neighbourhood_cleansed)) >= 30
    assert set(pdf.room_type) == {r[0] for r in generators.ROOM_TYPES}
    assert set(pdf.host_is_superhost) == {"t", "f"}
    assert pdf.latitude.between(37.70, 37.82).all() and pdf.longitude.between(-122.52, -122.36).all()
    assert pdf.price.between(10, 10000).all() and 120 < pdf.price.median() < 200
    assert pdf.accommodates.between(1, 16).all()
    assert pdf.isna().sum().sum() == 0
    # the cleaned data imputes missing review scores and flags them
    no_reviews = pdf.number_of_reviews == 0
    assert 0.15 < no_reviews.mean() < 0.25
    assert (pdf.loc[no_reviews, "review_scores_rating_na"] == 1.0).all()
    assert (pdf.loc[~no_reviews, "review_scores_rating_na"] == 0.0).all()
    # price depends on the features: entire homes cost more than shared rooms
    by_room = pdf.groupby("room_type").price.median()
    assert by_room["Entire home/apt"] > by_room["Private room"] > by_room["Shared room"]


def test_check_input_path(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        validation.check_input_path(str(tmp_path / "missing.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="empty folder"):
        validation.check_input_path(str(tmp_path / "empty"))
    assert validation.check_input_path("s3a://bucket/key") == "s3a://bucket/key"  # left to Spark
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"price": [1.0]}), tmp_path / "x.parquet")
    assert validation.check_input_path(f"file://{tmp_path}/x.parquet") == str(tmp_path / "x.parquet")


def test_unreadable_file_is_one_line(spark, tmp_path):
    bad = tmp_path / "not-parquet.parquet"
    bad.write_text("this is not parquet\n")
    with pytest.raises(UserInputError) as info:
        validation.read_dataset(spark, str(bad))
    assert "could not read" in str(info.value) and "\n" not in str(info.value)


def test_a_storage_failure_is_not_bad_input(spark):
    """A filesystem that does not answer (here: nothing listens on the port) is a failure, exit 1, with
    Spark's own error: not "bad input", which would tell the user to fix data that may be fine."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Exception) as info:
        validation.read_dataset(spark, f"hdfs://127.0.0.1:{port}/listings.parquet")
    assert not isinstance(info.value, UserInputError)
    assert "Connection refused" in str(info.value)


def test_csv_is_read_with_header_and_types(spark, tmp_path):
    path = tmp_path / "small.csv"
    path.write_text("room_type,accommodates,price\nPrivate room,2,100\nEntire home/apt,4,250\n")
    df = validation.read_dataset(spark, str(path))
    assert dict(df.dtypes) == {"room_type": "string", "accommodates": "int", "price": "int"}


def test_feature_spec_from_schema(spark):
    df = generators.generate_airbnb(spark, 10, seed=1)
    spec = data_schema.infer_feature_spec(df, "price")
    assert spec.categorical_cols == [c for c, t, _ in data_schema.AIRBNB_COLUMNS if t == "string"]
    assert "price" not in spec.numeric_cols and len(spec.numeric_cols) == 26
    assert spec.ignored_cols == []


def test_feature_spec_errors(spark):
    df = spark.createDataFrame([("a", 1.0, True)], "cat string, price double, flag boolean")
    with pytest.raises(UserInputError, match="label column 'nope' is not in the data"):
        data_schema.infer_feature_spec(df, "nope")
    with pytest.raises(UserInputError, match="label column 'cat' is string, not numeric"):
        data_schema.infer_feature_spec(df, "cat")
    with pytest.raises(UserInputError, match="no feature columns"):
        data_schema.infer_feature_spec(df.selectExpr("price", "DATE'2019-07-01' AS day"), "price")
    train_choice = data_schema.ColumnChoice(can_classify=True)
    assert data_schema.infer_feature_spec(df.select("price", "flag"), "price", train_choice).boolean_cols == ["flag"]
    assert data_schema.infer_feature_spec(df, "price").ignored_cols == ["flag"]


def test_content_digest_sees_a_changed_value(spark):
    df = generators.generate_airbnb(spark, 200, seed=5)
    changed = df.withColumn("price", F.when(F.monotonically_increasing_id() == 17, F.lit(1.0))
                            .otherwise(F.col("price")))
    assert digests.content_digest(df) == digests.content_digest(df.orderBy(F.rand(1)))  # order-free
    assert digests.content_digest(df) != digests.content_digest(changed)


def test_a_split_sides_digest_is_the_whole_minus_the_other_side(spark):
    from sparkmlops.data.splits import split_train_test

    df = generators.generate_airbnb(spark, 300, seed=3)
    train, test = split_train_test(df, 0.8, 42)
    whole = digests.compute(df)
    derived = whole.minus(digests.compute(train))
    assert (derived.hex, derived.rows) == digests.digest_and_count(test)
    assert whole.minus(whole).hex == digests.content_digest(df.limit(0))


def test_nanosecond_timestamps_are_named_before_spark_but_sparks_own_pass(spark, tmp_path):
    """pandas writes timestamps as TIMESTAMP(NANOS), which Spark cannot read at all: refused before Spark, naming
    the column. Spark's own timestamps (INT96, which pyarrow also reads as nanoseconds) pass."""
    import pandas as pd

    frame = pd.DataFrame({"day": pd.to_datetime(["2019-07-01", "2019-07-02"]), "price": [1.0, 2.0]})
    frame.to_parquet(tmp_path / "pandas.parquet")
    with pytest.raises(UserInputError, match="stores day as nanosecond timestamps"):
        validation.check_input_path(str(tmp_path / "pandas.parquet"))
    spark.createDataFrame(frame).write.parquet(str(tmp_path / "spark.parquet"))
    assert validation.check_input_path(str(tmp_path / "spark.parquet")) == str(tmp_path / "spark.parquet")
