"""The IoT dataset (the book's per-device models): schema, determinism, devices, a per-device signal,
and the generate_data script with dataset=iot."""

import numpy as np
import pandas as pd
import pytest
from conftest import assert_refused, newest_run, script_in_process
from pyspark.sql import functions as F

from sparkmlops.core.errors import UserInputError
from sparkmlops.data import digests, generators
from sparkmlops.data import schema as data_schema

SENSORS = ["temperature", "humidity", "pressure", "vibration"]


def test_schema_and_row_count(spark):
    df = generators.generate_iot(spark, 500, seed=1)
    assert df.dtypes == data_schema.IOT_COLUMNS
    assert data_schema.IOT_LABEL == "power" and data_schema.IOT_GROUP_COL == "device_id"
    rows = df.select("device_id", F.col("reading_time").cast("long").alias("epoch")).collect()  # one job
    assert len(rows) == 500
    assert all(row.device_id.startswith("device-") and len(row.device_id) == len("device-000") for row in rows)
    start, step = generators.IOT_START_EPOCH_SECONDS, generators.IOT_SECONDS_BETWEEN_READINGS
    assert [row.epoch for row in rows[:3]] == [start, start + step, start + 2 * step]  # instants, any time zone


def test_same_seed_same_rows_whatever_the_partitioning(spark):
    one = generators.generate_iot(spark, 2000, seed=7, n_devices=10, n_partitions=1).collect()
    many = generators.generate_iot(spark, 2000, seed=7, n_devices=10, n_partitions=5).collect()
    assert one == many  # range partitions keep the row order
    other_seed = generators.generate_iot(spark, 100, seed=8, n_devices=10).collect()
    assert other_seed != one[:100]


def test_every_device_appears_with_its_padded_id(spark):
    rows = generators.generate_iot(spark, 5000, seed=3, n_devices=50).select(data_schema.IOT_GROUP_COL).collect()
    assert {row.device_id for row in rows} == {f"device-{i:03d}" for i in range(50)}
    wide = generators.generate_iot(spark, 20, seed=3, n_devices=generators.MAX_DEVICES).select(data_schema.IOT_GROUP_COL).collect()
    assert {len(row.device_id) for row in wide} == {len("device-00000")}


@pytest.mark.parametrize("kwargs, message", [
    ({"n_rows": 0}, "n_rows must be >= 1, got 0."),
    ({"n_devices": 0}, f"n_devices must be between 1 and {generators.MAX_DEVICES}, got 0."),
    ({"n_devices": generators.MAX_DEVICES + 1}, "n_devices must be between 1 and"),
])
def test_bad_sizes_are_one_line(spark, kwargs, message):
    with pytest.raises(UserInputError, match=message.replace("(", r"\(")) as info:
        generators.generate_iot(spark, **{"n_rows": 10, **kwargs})
    assert "\n" not in str(info.value)


def _rmse(predicted, actual) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(actual)) ** 2)))


def test_per_device_models_beat_one_global_model(spark):
    """The point of the dataset: the sensors' effect on power differs per device."""
    from sklearn.linear_model import LinearRegression

    pdf = generators.generate_iot(spark, 20_000, seed=42, n_devices=6, n_partitions=2).toPandas()
    assert pdf.notna().all().all() and (pdf.power >= 0).all()
    train = pdf.sample(frac=0.8, random_state=0)
    test = pdf.drop(train.index)

    def with_device(frame):  # the global model knows the device as a one-hot category
        return pd.get_dummies(frame[SENSORS + [data_schema.IOT_GROUP_COL]], columns=[data_schema.IOT_GROUP_COL], dtype=float)

    global_model = LinearRegression().fit(with_device(train), train.power)
    global_rmse = _rmse(global_model.predict(with_device(test)), test.power)

    predictions = []
    for device, device_train in train.groupby(data_schema.IOT_GROUP_COL):
        device_test = test[test.device_id == device]
        model = LinearRegression().fit(device_train[SENSORS], device_train.power)
        predictions.append(pd.Series(model.predict(device_test[SENSORS]), index=device_test.index))
    per_device_rmse = _rmse(pd.concat(predictions).loc[test.index], test.power)

    assert per_device_rmse < 0.8 * global_rmse, (per_device_rmse, global_rmse)


def test_generate_data_script_writes_iot(spark, tmp_path, client):
    out = tmp_path / "iot.parquet"
    result = script_in_process("generate_data.py", "--dataset", "iot", "--output_path", str(out),
                               "--n_rows", "2000", "--n_files", "2", "--n_devices", "5", "--seed", "9")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(out.glob("part-*.parquet"))) == 2
    written = spark.read.parquet(str(out))
    assert written.dtypes == data_schema.IOT_COLUMNS
    assert digests.content_digest(written) == digests.content_digest(generators.generate_iot(spark, 2000, seed=9, n_devices=5))
    run = newest_run(client)
    assert run.info.status == "FINISHED" and run.data.metrics["rows_written"] == 2000
    assert run.data.params["dataset"] == "iot" and run.data.params["n_devices"] == "5"


@pytest.mark.parametrize("options, message", [
    (["--dataset", "taxi"], "unknown dataset 'taxi': use airbnb (the SF listings schema) or iot ("),
    (["--dataset", "iot", "--n_devices", "0"], f"n_devices must be between 1 and {generators.MAX_DEVICES}, got 0."),
    (["--n_devices", "5"], "n_devices applies to dataset=iot only, got n_devices=5 with dataset=airbnb"),
])
def test_bad_dataset_options_are_refused(tmp_path, client, options, message):
    out = tmp_path / "never.parquet"
    result = script_in_process("generate_data.py", "--output_path", str(out), "--n_rows", "100", *options)
    assert_refused(result, client, message, before_spark=False)
    assert not out.exists()
