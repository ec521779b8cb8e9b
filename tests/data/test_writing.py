"""Atomic parquet output: nothing half-written, previous output kept on failure."""

import os

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from sparkmlops.core.errors import UserInputError
from sparkmlops.data.writing import write_parquet_atomically


def _leftovers(folder):
    return [n for n in os.listdir(folder) if ".staging-" in n or ".previous-" in n]


def _failing_frame(spark):
    @F.udf(DoubleType())
    def explode(x):
        if x == 150:
            raise ValueError("boom in the middle of the write")
        return float(x)

    return spark.range(0, 300, 1, 3).select(explode("id").alias("v"))


def test_write_then_error_mode_refuses(spark, tmp_path):
    out = str(tmp_path / "out")
    write_parquet_atomically(spark.range(5), out)
    assert spark.read.parquet(out).count() == 5
    with pytest.raises(UserInputError, match="already exists"):
        write_parquet_atomically(spark.range(7), out)
    assert spark.read.parquet(out).count() == 5


def test_overwrite_replaces(spark, tmp_path):
    out = str(tmp_path / "out")
    write_parquet_atomically(spark.range(5), out)
    write_parquet_atomically(spark.range(9), out, mode="overwrite")
    assert spark.read.parquet(out).count() == 9
    assert _leftovers(tmp_path) == []


def test_failure_leaves_nothing(spark, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Exception, match="boom"):
        write_parquet_atomically(_failing_frame(spark), str(out))
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_failed_overwrite_keeps_previous_output(spark, tmp_path):
    out = str(tmp_path / "out")
    write_parquet_atomically(spark.range(4), out)
    with pytest.raises(Exception, match="boom"):
        write_parquet_atomically(_failing_frame(spark), out, mode="overwrite")
    assert sorted(r.id for r in spark.read.parquet(out).collect()) == [0, 1, 2, 3]
    assert _leftovers(tmp_path) == []
